//! Waking a thread's watch streams together.
//!
//! A commit wakes every watch stream of the node. Woken one by one from the thread that
//! published (as a broadcast channel wakes its receivers), streams on a serving thread start
//! running while the rest are still being woken, and each connection flushes after a frame or
//! two: at 10,000 subscribers that was ~20,000 socket writes per change, against ~540 when
//! the streams and their connections all ran on the publishing thread. So watch streams do
//! not wait on the broadcast channel itself. A stream with nothing to read leaves its waker
//! at its thread's bell; the hub rings every bell once per publication (a `watch` channel
//! counting rings), and each thread's ringer task, running on that thread, wakes its streams
//! there in one go: they all take their events and queue their frames before any connection
//! writes, and each connection then writes them in one system call (~610 writes per change).
//!
//! A ring says what was published. Registry events (instances up and gone) concern only the
//! streams that watch the registry, and in a fleet they are the common kind: every instance
//! that starts or stops makes one, and most streams (SDKs following their toggles) read the
//! hub's channel without them ([`super::hub::Channel`]). Woken for each, 100,000 such streams
//! would cost a node 100,000 wake-ups per instance restarting, for nothing. So each bell keeps
//! the two kinds of streams apart, and a ring for registry events alone wakes only the
//! registry's watchers.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::Waker;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::watch;

/// One stream's place at a bell.
#[derive(Default)]
struct Waiter {
    waker: AtomicWaker,
    /// In its bell's list now (so a stream polled twice is listed once).
    listed: AtomicBool,
}

/// The rings of one hub so far: a stream's bell wakes it when a count it cares about moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rings {
    /// Rings for every stream: a publication with a catalog or toggle event, or an
    /// interruption.
    pub(crate) everyone: u64,
    /// Rings for the registry's watchers alone (a publication of registry events only).
    pub(crate) registry: u64,
}

/// The streams of one thread (and one hub) waiting for the next ring: those watching the
/// registry, and the others.
#[derive(Default)]
struct ThreadBell {
    registry_watchers: Mutex<Vec<Arc<Waiter>>>,
    others: Mutex<Vec<Arc<Waiter>>>,
    /// Its ringer task is running (it ends when the hub is gone; one idle task per thread and
    /// hub otherwise).
    ringing: AtomicBool,
}

impl ThreadBell {
    fn list(&self, registry: bool) -> &Mutex<Vec<Arc<Waiter>>> {
        if registry {
            &self.registry_watchers
        } else {
            &self.others
        }
    }

    /// Wakes the registry's watchers, and with `everyone` the others too.
    fn wake(&self, everyone: bool) {
        let others = if everyone {
            std::mem::take(&mut *self.others.lock())
        } else {
            Vec::new()
        };
        let registry_watchers = std::mem::take(&mut *self.registry_watchers.lock());
        for w in registry_watchers.into_iter().chain(others) {
            w.listed.store(false, Ordering::Release);
            w.waker.wake();
        }
    }
}

thread_local! {
    /// This thread's bells, by hub.
    static BELLS: RefCell<Vec<(u64, Weak<ThreadBell>)>> = const { RefCell::new(Vec::new()) };
}

/// A stream's registration with its thread's bell.
pub(crate) struct BellWaiter {
    bell: Arc<ThreadBell>,
    me: Arc<Waiter>,
    /// The stream watches the registry (is woken by its events).
    registry: bool,
}

impl BellWaiter {
    /// The bell of the current thread for the hub with id `hub` and ring channel `rings`,
    /// starting its ringer task (on the current runtime) if there is none yet; for a stream
    /// that watches the registry when `registry`.
    pub(super) fn here(hub: u64, rings: &watch::Receiver<Rings>, registry: bool) -> BellWaiter {
        let bell = BELLS.with(|bells| {
            let mut bells = bells.borrow_mut();
            bells.retain(|(_, b)| b.upgrade().is_some_and(|b| b.ringing.load(Ordering::Acquire)));
            if let Some(b) = bells
                .iter()
                .find(|(id, _)| *id == hub)
                .and_then(|(_, b)| b.upgrade())
            {
                return b;
            }
            let bell = Arc::new(ThreadBell {
                ringing: AtomicBool::new(true),
                ..ThreadBell::default()
            });
            bells.push((hub, Arc::downgrade(&bell)));
            tokio::spawn(ringer(rings.clone(), bell.clone()));
            bell
        });
        BellWaiter {
            bell,
            me: Arc::default(),
            registry,
        }
    }

    /// Waits for the next ring: `waker` is woken once the hub publishes what this stream may
    /// want (or ends a channel).
    /// The caller looks at the channel again after this, or it could miss a publication made
    /// just before.
    pub(crate) fn wait(&self, waker: &Waker) {
        self.me.waker.register(waker);
        if !self.bell.ringing.load(Ordering::Acquire) {
            // The hub is gone: its channel is closed, which the caller finds on its next look.
            waker.wake_by_ref();
            return;
        }
        if !self.me.listed.swap(true, Ordering::AcqRel) {
            self.bell.list(self.registry).lock().push(self.me.clone());
        }
    }
}

/// Wakes `bell`'s streams at every ring meant for them, on the thread they run on, until the
/// hub is gone.
async fn ringer(mut rings: watch::Receiver<Rings>, bell: Arc<ThreadBell>) {
    // A ring may have come between the stream's look and this task's start: wake everyone
    // once first.
    rings.mark_changed();
    let mut everyone_seen = None;
    while rings.changed().await.is_ok() {
        let everyone = rings.borrow_and_update().everyone;
        bell.wake(everyone_seen != Some(everyone));
        everyone_seen = Some(everyone);
    }
    bell.ringing.store(false, Ordering::Release);
    bell.wake(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn ring_everyone(n: &mut Rings) {
        n.everyone += 1;
    }

    fn ring_registry(n: &mut Rings) {
        n.registry += 1;
    }

    #[tokio::test]
    async fn a_ring_wakes_each_waiting_stream_once() {
        let (ring, rings) = watch::channel(Rings::default());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let a = BellWaiter::here(1, &rings, false);
        let b = BellWaiter::here(1, &rings, true);
        assert!(Arc::ptr_eq(&a.bell, &b.bell), "one bell per thread and hub");
        let other = BellWaiter::here(2, &rings, false);
        assert!(!Arc::ptr_eq(&a.bell, &other.bell), "another hub has its own");
        // The ringer's first wake-up (it may have missed a ring) finds nobody.
        tokio::task::yield_now().await;
        a.wait(&waker);
        a.wait(&waker); // polled twice: still listed once
        b.wait(&waker);
        ring.send_modify(ring_everyone);
        tokio::task::yield_now().await;
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // Not waiting: not woken.
        ring.send_modify(ring_everyone);
        tokio::task::yield_now().await;
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // The hub gone: the ringer ends and waiting wakes at once.
        drop(ring);
        tokio::task::yield_now().await;
        a.wait(&waker);
        assert_eq!(count.0.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_registry_ring_wakes_only_the_registrys_watchers() {
        let (ring, rings) = watch::channel(Rings::default());
        let toggles = Arc::new(Count(AtomicUsize::new(0)));
        let registry = Arc::new(Count(AtomicUsize::new(0)));
        let (toggles_waker, registry_waker) = (Waker::from(toggles.clone()), Waker::from(registry.clone()));
        let sdk = BellWaiter::here(1, &rings, false);
        let balancer = BellWaiter::here(1, &rings, true);
        tokio::task::yield_now().await;
        let woken = || {
            (
                toggles.0.load(Ordering::SeqCst),
                registry.0.load(Ordering::SeqCst),
            )
        };
        for round in 1..=3 {
            sdk.wait(&toggles_waker);
            balancer.wait(&registry_waker);
            ring.send_modify(ring_registry);
            tokio::task::yield_now().await;
            assert_eq!(woken(), (0, round), "a registry ring leaves the others waiting");
        }
        // Rings coming together: one for everyone among them wakes everyone.
        balancer.wait(&registry_waker);
        ring.send_modify(ring_registry);
        ring.send_modify(ring_everyone);
        ring.send_modify(ring_registry);
        tokio::task::yield_now().await;
        assert_eq!(woken(), (1, 4));
        // Still listed once each after all that.
        sdk.wait(&toggles_waker);
        balancer.wait(&registry_waker);
        ring.send_modify(ring_everyone);
        tokio::task::yield_now().await;
        assert_eq!(woken(), (2, 5));
    }
}
