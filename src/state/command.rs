//! Commands: what a client asks the replicated state machine to do, as it travels through the
//! Raft log, and what applying it answers.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::state::activation::{PendingActivation, Timing};
use crate::state::auth::{Role, StoredToken};
use crate::state::catalog::{Feature, FeatureSpec};
use crate::state::definition::FlagDefinition;
use crate::state::registry::{Instance, InstanceSpec, Lease};
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
        /// When it takes effect (`WhenReady` waits for the gate).
        timing: Timing,
    },
    /// Switch a toggle's state (ENABLED / DISABLED) and keep the rest of its definition.
    /// `activate` is this with `enabled: true`.
    SetToggleState {
        /// The feature.
        feature: String,
        /// ENABLED or DISABLED.
        enabled: bool,
        /// Compare-and-set on the toggle's revision.
        expected_revision: Option<u64>,
        /// When it takes effect (`WhenReady` waits for the gate).
        timing: Timing,
    },
    /// Drop a feature's pending activation.
    CancelActivation {
        /// The feature.
        feature: String,
    },
    /// Restore a toggle's definition as it was at an earlier revision.
    Rollback {
        /// The feature.
        feature: String,
        /// The revision to restore (None: the definition before the current one).
        to_revision: Option<u64>,
        /// When it takes effect.
        timing: Timing,
    },
    /// Grant a lease.
    GrantLease {
        /// Its id: random, chosen by the proposing node (apply stays free of randomness).
        id: u64,
        /// Its time to live without keepalives.
        ttl_ms: u64,
        /// The identity granted it (empty while authentication is off).
        owner: String,
    },
    /// Revoke a lease and remove its instances.
    RevokeLease {
        /// The lease.
        lease: u64,
        /// True when the leader revokes it because its TTL ran out.
        expired: bool,
        /// Only if owned by this identity (`None`: any; an admin, or the leader's expiry).
        scope: Option<String>,
    },
    /// Register (or re-register) an instance under a lease.
    Register {
        /// The instance.
        instance: InstanceSpec,
        /// Its lease.
        lease: u64,
        /// Only under a lease owned by this identity (`None`: any).
        scope: Option<String>,
    },
    /// Remove an instance.
    Deregister {
        /// The instance id.
        instance: String,
        /// Only if under a lease owned by this identity (`None`: any).
        scope: Option<String>,
    },
    /// Turn authentication on or off.
    SetAuthEnabled {
        /// On or off.
        enabled: bool,
    },
    /// Store a token (its secret's hash only).
    CreateToken {
        /// The token as stored.
        token: StoredToken,
    },
    /// Revoke a token.
    RevokeToken {
        /// Its public id.
        id: String,
    },
    /// Give a client-certificate identity a role, or take it away (`None`).
    MapCertificate {
        /// The certificate's identity.
        identity: String,
        /// The role.
        role: Option<Role>,
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
            Command::CancelActivation { .. } => "activation.cancel",
            Command::Rollback { .. } => "rollback",
            Command::GrantLease { .. } => "lease.grant",
            Command::RevokeLease { expired: true, .. } => "lease.expire",
            Command::RevokeLease { expired: false, .. } => "lease.revoke",
            Command::Register { .. } => "instance.register",
            Command::Deregister { .. } => "instance.deregister",
            Command::SetAuthEnabled { .. } => "auth.enable",
            Command::CreateToken { .. } => "auth.token.create",
            Command::RevokeToken { .. } => "auth.token.revoke",
            Command::MapCertificate { .. } => "auth.certificate",
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
    /// The activation was stored as pending (the feature is not ready yet).
    Pending(PendingActivation),
    /// A pending activation was dropped.
    Cancelled,
    /// A lease was granted.
    Lease(Lease),
    /// A lease was revoked; these instances went with it.
    Revoked(Vec<String>),
    /// An instance was registered.
    Instance(Box<Instance>),
    /// An instance was removed.
    Deregistered,
    /// Authentication settings changed (no revision is taken).
    AuthChanged,
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
    /// When the leader applied it (unix µs, its clock; 0 where unknown): the instant from which
    /// watch lag is counted. Stamped at apply, not replicated or stored (a retried write's
    /// stored answer carries 0).
    #[serde(skip)]
    pub committed_at_us: i64,
}

/// The answer of the state machine to one command: applied, or rejected with nothing changed.
pub type Response = Result<Applied, Error>;
