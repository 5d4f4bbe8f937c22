//! Events: what changed at a revision, as the watch streams deliver it. The state machine
//! records them while applying (a pure function of state and command, like everything else in
//! apply); the store hands them to the watch hub once the change is applied.

use serde::{Deserialize, Serialize};

use crate::state::catalog::Feature;
use crate::state::registry::Instance;
use crate::state::toggle::Toggle;

/// One change to watched data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A catalog entry was created or replaced.
    Feature(Feature),
    /// A catalog entry (and its toggle) was deleted.
    FeatureDeleted(String),
    /// A toggle was set (its `effective_at_ms` says when it takes effect).
    Toggle(Toggle),
    /// An instance registered (or re-registered).
    Instance(Instance),
    /// An instance left: deregistered, or its lease was revoked or expired.
    InstanceGone {
        /// The instance id.
        id: String,
        /// Its service.
        service: String,
    },
}

/// A change at a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The cluster revision of the change.
    pub revision: u64,
    /// What changed.
    pub change: Change,
}

impl Event {
    /// The feature the event concerns, if any.
    pub fn feature(&self) -> Option<&str> {
        match &self.change {
            Change::Feature(f) => Some(&f.spec.name),
            Change::FeatureDeleted(name) => Some(name),
            Change::Toggle(t) => Some(&t.feature),
            Change::Instance(_) | Change::InstanceGone { .. } => None,
        }
    }

    /// The service the event concerns, for registry events.
    pub fn service(&self) -> Option<&str> {
        match &self.change {
            Change::Instance(i) => Some(&i.spec.service),
            Change::InstanceGone { service, .. } => Some(service),
            _ => None,
        }
    }
}
