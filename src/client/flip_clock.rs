//! The flip clock: one thread per process that puts staged changes into effect at their
//! instant, to a few microseconds.
//!
//! A tokio timer fires on the next millisecond tick after its deadline and then waits for a
//! worker, so instances flipping on tokio timers spread over a millisecond or more. Instead the
//! SDK's applier prepares the flag set a change will produce ahead of time and stages it here;
//! this thread sleeps until just before the instant, spins the last few hundred microseconds,
//! and swaps the prepared set in with a compare-and-swap (one pointer store per SDK). If the
//! flags changed meanwhile the swap fails and the applier applies the change itself. Either
//! way the applier does the bookkeeping (callbacks, reports) after the instant.
//!
//! Written by hand: timer crates give millisecond wheels or async sleeps; none performs a
//! prepared swap at a precise instant.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use crate::client::flags::FlagSet;
use crate::clock::now_us;

/// The thread spins (instead of sleeping) this close to an instant.
const SPIN_US: i64 = 400;

/// `Outcome::state` values besides a swap time (> 0).
const WAITING: i64 = 0;
const NOT_SWAPPED: i64 = -1;
const SWAPPING: i64 = -2;

/// How a staged flip went. Whoever moves it out of "waiting" first decides: the clock (to swap)
/// or the applier (to cancel), so a flip is never both cancelled and swapped in.
#[derive(Debug, Default)]
pub struct Outcome {
    /// WAITING, SWAPPING, NOT_SWAPPED (the flags changed after staging, or cancelled), or the
    /// local time (unix µs) it was swapped in.
    state: AtomicI64,
    /// Woken when the clock has dealt with the flip.
    pub done: Notify,
}

impl Outcome {
    /// Whether the clock has dealt with the flip (swapped in or given up).
    pub fn settled(&self) -> bool {
        !matches!(self.state.load(Ordering::Acquire), WAITING | SWAPPING)
    }

    /// Takes the flip back from the clock: `None` if it was not swapped in (and now never will
    /// be), or the time it was swapped in.
    pub fn cancel(&self) -> Option<i64> {
        loop {
            match self
                .state
                .compare_exchange(WAITING, NOT_SWAPPED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return None,
                // The clock is swapping right now: a matter of nanoseconds.
                Err(SWAPPING) => std::hint::spin_loop(),
                Err(t) if t > 0 => return Some(t),
                Err(_) => return None,
            }
        }
    }
}

/// A prepared flip: at `at_us` (local clock), swap `next` in for `expected`.
pub struct Flip {
    /// When (unix µs, local clock).
    pub at_us: i64,
    /// The SDK's flags.
    pub flags: Arc<ArcSwap<FlagSet>>,
    /// The set the flip was prepared from.
    pub expected: Arc<FlagSet>,
    /// The set with the change in effect.
    pub next: Arc<FlagSet>,
    /// Where the result goes.
    pub outcome: Arc<Outcome>,
}

struct Entry {
    at_us: i64,
    seq: u64,
    flip: Flip,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: the earliest instant is the heap's top.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

struct Clock {
    queue: Mutex<BinaryHeap<Entry>>,
    wake: Condvar,
    seq: AtomicU64,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let c: &'static Clock = Box::leak(Box::new(Clock {
            queue: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
            seq: AtomicU64::new(0),
        }));
        let spawned = std::thread::Builder::new()
            .name("switchyard-flip-clock".into())
            .spawn(move || run(c));
        if let Err(e) = spawned {
            // Without the thread, staged flips never settle and appliers fall back to their
            // own timers after the grace period.
            tracing::error!(error = %e, "cannot start the flip clock thread");
        }
        c
    })
}

/// Stages a flip.
pub fn stage(flip: Flip) {
    let c = clock();
    let seq = c.seq.fetch_add(1, Ordering::Relaxed);
    let at_us = flip.at_us;
    let mut q = c.queue.lock();
    // The thread only needs waking when this flip comes before everything it waits for.
    let earliest = q.peek().is_none_or(|e| at_us < e.at_us);
    q.push(Entry { at_us, seq, flip });
    drop(q);
    if earliest {
        c.wake.notify_one();
    }
}

fn run(c: &'static Clock) {
    loop {
        let mut q = c.queue.lock();
        let Some(at) = q.peek().map(|e| e.at_us) else {
            c.wake.wait(&mut q);
            continue;
        };
        let left = at - now_us();
        if left > SPIN_US {
            c.wake
                .wait_for(&mut q, Duration::from_micros((left - SPIN_US) as u64));
            continue;
        }
        drop(q);
        while now_us() < at {
            std::hint::spin_loop();
        }
        let now = now_us();
        let mut due = Vec::new();
        {
            let mut q = c.queue.lock();
            while q.peek().is_some_and(|e| e.at_us <= now) {
                if let Some(e) = q.pop() {
                    due.push(e.flip);
                }
            }
        }
        // Swap first, for every SDK, then wake the appliers: the swaps are what must be
        // simultaneous.
        for f in &due {
            let claimed = f
                .outcome
                .state
                .compare_exchange(WAITING, SWAPPING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if !claimed {
                continue;
            }
            let prev = f.flags.compare_and_swap(&f.expected, f.next.clone());
            let state = if Arc::ptr_eq(&*prev, &f.expected) {
                now_us().max(1)
            } else {
                NOT_SWAPPED
            };
            f.outcome.state.store(state, Ordering::Release);
        }
        for f in due {
            f.outcome.done.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::flags::Flag;

    fn set_with(key: &str) -> FlagSet {
        let json = r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}"#;
        FlagSet::default().with(Arc::new(Flag::compile(key, 1, 0, json).unwrap()))
    }

    /// Stages a flip from `expected` to a set holding flag `f`, and waits for the clock.
    async fn stage_and_wait(
        flags: &Arc<ArcSwap<FlagSet>>,
        expected: Arc<FlagSet>,
        at_us: i64,
    ) -> Arc<Outcome> {
        let outcome = Arc::new(Outcome::default());
        stage(Flip {
            at_us,
            flags: flags.clone(),
            expected,
            next: Arc::new(set_with("f")),
            outcome: outcome.clone(),
        });
        tokio::time::timeout(Duration::from_secs(5), outcome.done.notified())
            .await
            .unwrap();
        assert!(outcome.settled());
        outcome
    }

    #[tokio::test]
    async fn a_staged_flip_happens_at_its_instant() {
        let flags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
        let at = now_us() + 30_000;
        let outcome = stage_and_wait(&flags, flags.load_full(), at).await;
        let applied = outcome.cancel().unwrap();
        assert!(applied >= at, "flipped {} µs early", at - applied);
        assert!(flags.load().get("f").is_some());
    }

    #[tokio::test]
    async fn a_flip_prepared_from_a_stale_set_is_not_swapped_in() {
        let flags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
        let expected = flags.load_full();
        // Something else changed the flags after the flip was prepared.
        flags.store(Arc::new(set_with("other")));
        let outcome = stage_and_wait(&flags, expected, now_us() + 1_000).await;
        assert_eq!(outcome.cancel(), None);
        assert!(flags.load().get("other").is_some(), "the newer set is kept");
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::*;

    #[test]
    fn a_cancelled_flip_is_never_swapped_in() {
        let flags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
        let expected = flags.load_full();
        let outcome = Arc::new(Outcome::default());
        stage(Flip {
            at_us: now_us() + 2_000,
            flags: flags.clone(),
            expected: expected.clone(),
            next: Arc::new(FlagSet::default()),
            outcome: outcome.clone(),
        });
        assert_eq!(outcome.cancel(), None);
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            Arc::ptr_eq(&flags.load_full(), &expected),
            "the flags were not touched"
        );
    }
}
