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

/// The streams of one thread (and one hub) waiting for the next ring.
#[derive(Default)]
struct ThreadBell {
    waiting: Mutex<Vec<Arc<Waiter>>>,
    /// Its ringer task is running (it ends when the hub is gone; one idle task per thread and
    /// hub otherwise).
    ringing: AtomicBool,
}

impl ThreadBell {
    fn wake_all(&self) {
        let waiting = std::mem::take(&mut *self.waiting.lock());
        for w in waiting {
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
}

impl BellWaiter {
    /// The bell of the current thread for the hub with id `hub` and ring channel `rings`,
    /// starting its ringer task (on the current runtime) if there is none yet.
    pub(super) fn here(hub: u64, rings: &watch::Receiver<u64>) -> BellWaiter {
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
                waiting: Mutex::default(),
                ringing: AtomicBool::new(true),
            });
            bells.push((hub, Arc::downgrade(&bell)));
            tokio::spawn(ringer(rings.clone(), bell.clone()));
            bell
        });
        BellWaiter {
            bell,
            me: Arc::default(),
        }
    }

    /// Waits for the next ring: `waker` is woken once the hub publishes (or ends a channel).
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
            self.bell.waiting.lock().push(self.me.clone());
        }
    }
}

/// Wakes `bell`'s streams at every ring, on the thread they run on, until the hub is gone.
async fn ringer(mut rings: watch::Receiver<u64>, bell: Arc<ThreadBell>) {
    // A ring may have come between the stream's look and this task's start: wake once first.
    rings.mark_changed();
    while rings.changed().await.is_ok() {
        bell.wake_all();
    }
    bell.ringing.store(false, Ordering::Release);
    bell.wake_all();
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

    #[tokio::test]
    async fn a_ring_wakes_each_waiting_stream_once() {
        let (ring, rings) = watch::channel(0u64);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let a = BellWaiter::here(1, &rings);
        let b = BellWaiter::here(1, &rings);
        assert!(Arc::ptr_eq(&a.bell, &b.bell), "one bell per thread and hub");
        let other = BellWaiter::here(2, &rings);
        assert!(!Arc::ptr_eq(&a.bell, &other.bell), "another hub has its own");
        // The ringer's first wake-up (it may have missed a ring) finds nobody.
        tokio::task::yield_now().await;
        a.wait(&waker);
        a.wait(&waker); // polled twice: still listed once
        b.wait(&waker);
        ring.send_modify(|n| *n += 1);
        tokio::task::yield_now().await;
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // Not waiting: not woken.
        ring.send_modify(|n| *n += 1);
        tokio::task::yield_now().await;
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // The hub gone: the ringer ends and waiting wakes at once.
        drop(ring);
        tokio::task::yield_now().await;
        a.wait(&waker);
        assert_eq!(count.0.load(Ordering::SeqCst), 3);
    }
}
