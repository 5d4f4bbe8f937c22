//! The flip clock: one thread per process that marks instants as they pass, to a few
//! microseconds, so every SDK in the process flips a staged change at once.
//!
//! A tokio timer fires on the next millisecond tick after its deadline and then waits for a
//! worker, so instances flipping on tokio timers spread over a millisecond or more. Instead the
//! SDK's applier puts a waiting change into its flag set ahead of time, tied to a [`Flip`]
//! (see [`FlagSet::with_scheduled`](crate::eval::FlagSet::with_scheduled)): evaluation uses
//! the change once the instant has fired. This thread sleeps until just before the instant,
//! spins the last few hundred microseconds, and fires it with one store, which flips every flag
//! set tied to it, however many SDKs share the process. The appliers then do the bookkeeping
//! (callbacks, reports) with the instant's firing time.
//!
//! On a busy machine a thread that wakes (or spins) on time can still wait milliseconds for a
//! core, so the thread asks Linux for a real-time priority (SCHED_FIFO, the lowest level) and
//! a 1 µs timer slack; without the privilege it settles for a higher nice priority. It runs for
//! microseconds per instant, so it cannot starve anything.
//!
//! Written by hand: timer crates give millisecond wheels or async sleeps; none marks an instant
//! for lock-free readers.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::clock::now_us;
use crate::eval::Flip;

/// The thread spins (instead of sleeping) this close to an instant.
const SPIN_US: i64 = 100;

struct Clock {
    /// Instants not fired yet, by time. SDKs share an instant when they stage a change for the
    /// same moment (they share the clock offset), so one store flips them all.
    queue: Mutex<BTreeMap<i64, Arc<Flip>>>,
    wake: Condvar,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let c: &'static Clock = Box::leak(Box::new(Clock {
            queue: Mutex::new(BTreeMap::new()),
            wake: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("switchyard-flip-clock".into())
            .spawn(move || {
                raise_priority();
                run(c)
            });
        if let Err(e) = spawned {
            // Without the thread, appliers fire their instants themselves after a grace period.
            tracing::error!(error = %e, "cannot start the flip clock thread");
        }
        c
    })
}

/// The flip at `at_us` (local clock, unix µs), created and scheduled if new.
pub(crate) fn flip_at(at_us: i64) -> Arc<Flip> {
    let c = clock();
    let mut q = c.queue.lock();
    if let Some(i) = q.get(&at_us) {
        return i.clone();
    }
    // The thread only needs waking when this instant comes before everything it waits for.
    let earliest = q.first_key_value().is_none_or(|(first, _)| at_us < *first);
    let i = Arc::new(Flip::at(at_us));
    q.insert(at_us, i.clone());
    drop(q);
    if earliest {
        c.wake.notify_one();
    }
    i
}

/// Makes this thread wake on time (see the module doc). Best effort.
#[cfg(target_os = "linux")]
fn raise_priority() {
    // SAFETY: plain system calls on the calling thread with valid arguments; no memory is
    // shared with the kernel beyond the parameter struct, which outlives the call.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
        let param = libc::sched_param { sched_priority: 1 };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 {
            tracing::debug!("flip clock runs at real-time priority");
            return;
        }
        if libc::setpriority(libc::PRIO_PROCESS, 0, -10) == 0 {
            tracing::debug!("flip clock runs at nice -10");
            return;
        }
    }
    tracing::info!(
        "flip clock runs at normal priority (no CAP_SYS_NICE): flips may be late by a scheduler slice on a busy host"
    );
}

#[cfg(not(target_os = "linux"))]
fn raise_priority() {}

fn run(c: &'static Clock) {
    loop {
        let mut q = c.queue.lock();
        let Some(at) = q.first_key_value().map(|(at, _)| *at) else {
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
            while q.first_key_value().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, i)) = q.pop_first() {
                    due.push(i);
                }
            }
        }
        for i in due {
            i.fire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_instant_fires_at_its_time_once_for_everyone() {
        let at = now_us() + 30_000;
        let a = flip_at(at);
        let b = flip_at(at);
        assert!(Arc::ptr_eq(&a, &b), "one instant per moment");
        assert!(!a.has_fired());
        tokio::time::timeout(Duration::from_secs(5), async {
            while !a.has_fired() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        let fired = a.fired_at().unwrap();
        assert!(fired >= at, "fired {} µs early", at - fired);
        assert!(b.has_fired());
    }

    #[test]
    fn firing_twice_keeps_the_first_time() {
        let i = Flip::at(0);
        i.fire();
        let first = i.fired_at().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        i.fire();
        assert_eq!(i.fired_at(), Some(first));
    }
}
