//! Checkers: each reads what a run recorded and names every way it broke a promise. Each is
//! shown, in its unit tests, to catch a planted bug.
//!
//! - [`linearizable`]: the operations on each feature could have happened one at a time, in
//!   an order that respects real time (a register with compare-and-set).
//! - [`state`]: every acknowledged write is on every node after the heal, the nodes agree, and
//!   serializable reads only returned values that were written.
//! - [`watch`]: every watch was ordered, unique, atomic, gap-free, resumable and never went back
//!   in time.
//! - [`gate`]: a `when-ready` activation never took effect while an instance failed its
//!   requirement.
//! - [`sdk`]: SDK instances never applied a change early and applied each feature's changes
//!   in order.

pub mod gate;
pub mod linearizable;
pub mod sdk;
pub mod state;
pub mod watch;

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Which checker found it.
    pub checker: &'static str,
    pub detail: String,
}

impl Anomaly {
    pub fn new(checker: &'static str, detail: impl Into<String>) -> Anomaly {
        Anomaly {
            checker,
            detail: detail.into(),
        }
    }
}
