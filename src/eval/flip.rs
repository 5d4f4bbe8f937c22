//! A [`Flip`]: the moment a staged change takes effect. It fires once; from then on every
//! [`FlagSet`](crate::eval::FlagSet) tied to it serves the change, with no lock and no swap.
//! The SDK's flip clock fires it on time (`sdk::flip_clock`).

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

use crate::clock::now_us;

/// A moment (local clock, unix µs) that fires once.
#[derive(Debug)]
pub struct Flip {
    /// When it is due.
    pub at_us: i64,
    /// 0 until fired, then when it fired (unix µs).
    fired_at: AtomicI64,
    /// Woken when it fires.
    pub fired: Notify,
}

impl Flip {
    /// A flip due at `at_us` (local clock, unix µs), not fired yet.
    pub fn at(at_us: i64) -> Flip {
        Flip {
            at_us,
            fired_at: AtomicI64::new(0),
            fired: Notify::new(),
        }
    }

    /// Whether it has fired (one atomic load: this is on the evaluation path).
    #[inline]
    pub fn has_fired(&self) -> bool {
        self.fired_at.load(Ordering::Acquire) != 0
    }

    /// When it fired, if it has.
    pub fn fired_at(&self) -> Option<i64> {
        let t = self.fired_at.load(Ordering::Acquire);
        (t != 0).then_some(t)
    }

    /// Fires it now (by the clock; or by an applier whose clock thread could not start).
    pub fn fire(&self) {
        let _ = self
            .fired_at
            .compare_exchange(0, now_us().max(1), Ordering::AcqRel, Ordering::Acquire);
        self.fired.notify_waiters();
    }
}
