//! Where flagd's protocols and OFREP take their flags from: a node's replicated state
//! ([`super::resolver::Resolver`]), or the local copy of an agent beside one instance
//! ([`crate::agent`]). The services ([`super::sync`], [`super::evaluation`],
//! [`super::evaluation_v2`], [`crate::ofrep`]) are written once against this.

use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::Status;

use crate::error::Error;
use crate::eval::{Flag, InstanceFacts};
use crate::flagd::configuration::{Configuration, Selector};

/// Why a flag cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No such toggle in effect (or not in the caller's selection).
    NotFound,
    /// Its targeting does not compile.
    Parse(String),
}

/// One picked toggle as a source holds it at some instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToggleState {
    /// The feature.
    pub feature: String,
    /// The revision of the change in effect (0: none in effect yet).
    pub revision: u64,
    /// When the change in effect took effect (unix ms; 0: unknown).
    pub since_ms: i64,
    /// When a change waiting for its `effective_at` takes effect (unix ms, local clock).
    pub next_change_ms: Option<i64>,
}

/// A source of flags for the flagd services and OFREP.
pub(crate) trait FlagSource: Send + Sync + 'static {
    /// Refuses when the source cannot vouch for its copy (a node cut off from the leader,
    /// removed, or with failed storage).
    fn can_serve(&self) -> Result<(), Error>;

    /// Completes once the copy holds every write acknowledged before the call (a node's
    /// linearizable read; a local copy has nothing to wait for).
    fn barrier(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// The flag `key` as in effect now, compiled, if `selector` picks it.
    fn flag(&self, key: &str, selector: &Selector) -> Result<Arc<Flag>, Lookup>;

    /// The keys of the toggles `selector` picks, sorted.
    fn keys(&self, selector: &Selector) -> Vec<String>;

    /// The instance evaluations stand for when the caller names none (an agent's own).
    fn instance(&self) -> Option<&InstanceFacts>;

    /// The flag configuration for in-process providers at `now_ms` (see
    /// [`super::configuration`]).
    fn configuration(&self, selector: &Selector, now_ms: i64) -> Configuration;

    /// The toggles `selector` picks, as held at `now_ms`.
    fn toggles(&self, selector: &Selector, now_ms: i64) -> Vec<ToggleState>;

    /// The revision of the copy.
    fn revision(&self) -> u64;

    /// Opens a feed of changes for one stream (admitted against the source's limits).
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Changes>, Status>>;
}

/// The changes one stream follows.
pub(crate) trait Changes: Send {
    /// Waits for the next change: `Ok(Some(feature))` for a change to that feature, `Ok(None)`
    /// when anything may have changed (some were missed), or the status ending the stream
    /// (the source stopped vouching for its copy, or shuts down).
    fn next(&mut self) -> BoxFuture<'_, Result<Option<String>, Status>>;
}

/// The next instant (unix ms) a waiting change takes effect, with its feature.
pub(crate) fn next_scheduled(source: &dyn FlagSource, now_ms: i64) -> Option<(i64, String)> {
    source
        .toggles(&Selector::All, now_ms)
        .into_iter()
        .filter_map(|t| t.next_change_ms.map(|at| (at, t.feature)))
        .min()
}
