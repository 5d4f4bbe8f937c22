//! Toggles: the served value of a feature (its flagd definition) and the per-feature history of
//! every change, kept for audit and rollback.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::state::definition::FlagDefinition;

/// Most history entries kept per feature; older ones are dropped first.
pub const MAX_HISTORY_PER_FEATURE: usize = 1000;
/// Most bytes of definitions a feature's history keeps (so its answer always fits a client's
/// message limit); older entries are dropped first.
pub const MAX_HISTORY_BYTES: usize = 4 * 1024 * 1024;

/// A feature's toggle as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Toggle {
    /// The feature it belongs to.
    pub feature: String,
    /// The flagd definition.
    pub definition: FlagDefinition,
    /// Revision of the last change.
    pub revision: u64,
    /// When the definition takes effect (unix ms).
    pub effective_at_ms: i64,
}

/// One change to a feature, as recorded in its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The cluster revision the change produced.
    pub revision: u64,
    /// When the leader proposed it (unix ms).
    pub at_ms: i64,
    /// Who made it.
    pub actor: String,
    /// What kind of change (`feature.put`, `toggle.set`, `toggle.off`, ...).
    pub change: String,
    /// Why, as the actor said.
    pub reason: String,
    /// The toggle definition after the change, when the change concerns the toggle.
    pub definition: Option<FlagDefinition>,
}

/// A feature's history, oldest first, bounded by [`MAX_HISTORY_PER_FEATURE`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    entries: VecDeque<HistoryEntry>,
}

impl History {
    /// Records a change, dropping the oldest entries when full.
    pub fn push(&mut self, entry: HistoryEntry) {
        self.entries.push_back(entry);
        let weight = |e: &HistoryEntry| 128 + e.definition.as_ref().map_or(0, |d| d.as_str().len());
        let mut bytes: usize = self.entries.iter().map(weight).sum();
        while self.entries.len() > 1
            && (self.entries.len() > MAX_HISTORY_PER_FEATURE || bytes > MAX_HISTORY_BYTES)
        {
            if let Some(old) = self.entries.pop_front() {
                bytes -= weight(&old);
            }
        }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.entries.iter()
    }
}
