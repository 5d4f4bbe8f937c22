//! Commands: what a client asks the replicated state machine to do, as it travels through the
//! Raft log, and what applying it answers.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::state::catalog::{Feature, FeatureSpec};
use crate::state::definition::FlagDefinition;
use crate::state::toggle::Toggle;

/// One entry of the Raft log's application data: a command plus the metadata that makes applying
/// it deterministic (`proposed_at_ms`) and idempotent (`client_id`, `request_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The writing client's session id; empty disables de-duplication.
    pub client_id: String,
    /// Strictly increasing per `client_id`.
    pub request_id: u64,
    /// The leader's wall clock when it proposed the command (unix ms). Apply uses this, never the
    /// local clock.
    pub proposed_at_ms: i64,
    /// Who asked (recorded in history).
    pub actor: String,
    /// Why (recorded in history).
    pub reason: String,
    /// What to do.
    pub command: Command,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} by {:?} ({}#{})",
            self.command.kind(),
            self.actor,
            self.client_id,
            self.request_id
        )
    }
}

/// The state changes a client can ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create or replace a catalog entry.
    PutFeature {
        /// The entry.
        feature: FeatureSpec,
        /// Compare-and-set on the entry's revision (0: must not exist).
        expected_revision: Option<u64>,
    },
    /// Delete a catalog entry with its toggle and history.
    DeleteFeature {
        /// The feature.
        name: String,
        /// Compare-and-set on the entry's revision.
        expected_revision: Option<u64>,
    },
    /// Replace a feature's toggle definition.
    SetToggle {
        /// The feature.
        feature: String,
        /// The validated flagd definition.
        definition: FlagDefinition,
        /// Compare-and-set on the toggle's revision (0: no toggle yet).
        expected_revision: Option<u64>,
    },
    /// Switch a toggle's state (ENABLED / DISABLED) and keep the rest of its definition.
    SetToggleState {
        /// The feature.
        feature: String,
        /// ENABLED or DISABLED.
        enabled: bool,
        /// Compare-and-set on the toggle's revision.
        expected_revision: Option<u64>,
    },
}

impl Command {
    /// A short name for logs and history.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::PutFeature { .. } => "feature.put",
            Command::DeleteFeature { .. } => "feature.delete",
            Command::SetToggle { .. } => "toggle.set",
            Command::SetToggleState { enabled: true, .. } => "toggle.on",
            Command::SetToggleState { enabled: false, .. } => "toggle.off",
        }
    }
}

/// What a successfully applied command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The feature as stored.
    Feature(Feature),
    /// The feature was deleted.
    Deleted,
    /// The toggle as stored.
    Toggle(Toggle),
    /// A Raft-internal entry (leader blank, membership change): no application data changed.
    Internal,
}

/// A command applied: the cluster revision it produced and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The cluster revision after this command.
    pub revision: u64,
    /// What it produced.
    pub outcome: Outcome,
}

/// The answer of the state machine to one command: applied, or rejected with nothing changed.
pub type Response = Result<Applied, Error>;
