//! The watch hub of one node: a bounded history of recent events (for resuming subscribers)
//! and broadcast channels to live subscribers: one with every event, and one with the catalog
//! and toggle events alone, for the subscribers that do not watch the registry. In a fleet
//! the registry's events are the common kind (every instance starting or stopping makes one)
//! and most subscribers (SDKs following their toggles) want none of them: on the second
//! channel they neither wake for them nor read past them.
//!
//! Publishing appends to the history and broadcasts under one lock, and subscribing takes the
//! history's tail and a receiver under the same lock, so a subscriber gets every event exactly
//! once: either from the replayed tail or from its receiver. The broadcast channel is a shared
//! ring: memory does not grow per subscriber, publishing never waits for anyone, and a
//! subscriber that falls a full ring behind learns it (`Lagged`) and is disconnected to resume.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::error::Error;
use crate::pb::{convert, v1};
use crate::state::event::Event;
use crate::watch::bell::Rings;

/// Events kept for resuming subscribers.
pub const HISTORY_EVENTS: usize = 100_000;
/// Events a live subscriber may fall behind before it is disconnected.
pub const BROADCAST_EVENTS: usize = 4_096;

/// An event as published: shared by every subscriber, with the services its feature requires
/// (so service filters need no state lookup) and its wire form, made once for all of them.
#[derive(Debug)]
pub struct Published {
    /// The event.
    pub event: Event,
    /// For feature and toggle events: the services the feature requires.
    pub services: Vec<String>,
    /// The event as one gRPC message frame of a `switchyard.v1.WatchResponse`: what every
    /// subscriber's stream sends for it.
    pub frame: Bytes,
}

impl Published {
    /// Wraps an applied event, encoding it for the wire.
    pub fn new(event: Event, services: Vec<String>) -> Self {
        let frame = crate::pb::grpc_frame(&v1::WatchResponse {
            kind: Some(v1::watch_response::Kind::Event(convert::event(&event))),
        });
        Published {
            event,
            services,
            frame,
        }
    }
}

struct Inner {
    history: VecDeque<Arc<Published>>,
    /// Revision of the newest event dropped from the history (0: none dropped).
    dropped_through: u64,
    /// The live channels; gone once the hub is closed (the node is shutting down), which ends
    /// every receiver after the events it has not read yet. An interruption replaces them.
    live: Option<[broadcast::Sender<Arc<Published>>; 2]>,
    /// Bumped by every interruption; a subscription remembers the one it started in.
    generation: u64,
    /// The latest interruptions, with the generation each ended.
    interruptions: VecDeque<(u64, Interruption)>,
}

/// Why the hub ended the live streams it fed (each ends after what it has not sent yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The node is shutting down.
    ShuttingDown,
    /// The node installed a snapshot: its state jumped to this revision, past events it never
    /// had, so no stream can go on without a gap.
    Jumped(u64),
    /// The node can no longer vouch for its data: cut off from the leader, removed from the
    /// cluster, or its storage failed.
    CannotVouch,
}

/// Which live channel a subscriber reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Every event.
    Everything = 0,
    /// Catalog and toggle events: what a subscriber not watching the registry can use.
    Features = 1,
}

impl Channel {
    /// The channel for a subscriber that does (or does not) watch the registry.
    pub fn for_registry(registry: bool) -> Channel {
        if registry {
            Channel::Everything
        } else {
            Channel::Features
        }
    }

    /// Whether this channel carries `p`.
    fn carries(self, p: &Published) -> bool {
        self == Channel::Everything || p.event.service().is_none()
    }
}

/// Both live channels, new.
fn live_channels() -> [broadcast::Sender<Arc<Published>>; 2] {
    [
        broadcast::channel(BROADCAST_EVENTS).0,
        broadcast::channel(BROADCAST_EVENTS).0,
    ]
}

/// Interruptions remembered, so a stream that ends late still learns why.
const INTERRUPTIONS_KEPT: usize = 16;

/// Most streams (watch and flagd) one node serves at once; more get `RESOURCE_EXHAUSTED`.
pub const MAX_STREAMS: usize = 50_000;

/// The hub.
pub struct WatchHub {
    inner: Mutex<Inner>,
    /// Events published since start (for metrics).
    published: std::sync::atomic::AtomicU64,
    /// Streams open now (see [`WatchHub::admit`]).
    streams: Arc<AtomicUsize>,
    max_streams: usize,
    /// The revision through which every event has been published. Progress messages report
    /// this, never the state machine's revision: the state moves first and its events are
    /// published a moment later, so a progress message taken from the state could claim a
    /// revision whose events the stream has not sent yet (a subscriber resuming from it would
    /// skip them).
    through: std::sync::atomic::AtomicU64,
    /// Rung after each publication and interruption, for the watch streams' bells.
    rings: tokio::sync::watch::Sender<Rings>,
    /// Events sent on each live channel (by [`Channel`]) so far, and the current generation: with
    /// them a stream tells it has read everything without asking its channel (see
    /// [`WatchHub::quiet`]).
    sent: [AtomicU64; 2],
    generation: AtomicU64,
    /// This hub among others in the process (the bells' key).
    id: u64,
}

/// Hub ids, unique in the process.
static HUB_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One admitted stream; dropping it frees its place.
#[derive(Debug)]
pub struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub {
            inner: Mutex::new(Inner {
                history: VecDeque::new(),
                dropped_through: 0,
                live: Some(live_channels()),
                generation: 0,
                interruptions: VecDeque::new(),
            }),
            published: Default::default(),
            streams: Arc::default(),
            max_streams: MAX_STREAMS,
            through: Default::default(),
            rings: tokio::sync::watch::channel(Rings::default()).0,
            sent: Default::default(),
            generation: AtomicU64::new(0),
            id: HUB_IDS.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// What a new subscriber starts from.
pub struct Subscription {
    /// The events after the requested revision, or `None` when the history no longer reaches
    /// back that far (the subscriber needs a snapshot).
    pub replay: Option<Vec<Arc<Published>>>,
    /// Every event of its channel published from now on; it ends when the hub is interrupted or
    /// closed ([`WatchHub::why_ended`] says which).
    pub receiver: broadcast::Receiver<Arc<Published>>,
    /// The hub's generation when the subscription was made.
    pub generation: u64,
    /// Events sent on its live channel before the receiver was made (see
    /// [`WatchHub::quiet`]).
    pub sent_before: u64,
}

/// Subscribing to a closed hub (the node is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the node is shutting down")]
pub struct Closed;

impl WatchHub {
    /// Publishes applied events (in revision order), the state being at revision `through`
    /// once they are out. Never blocks on subscribers.
    pub fn publish(&self, events: Vec<Published>, through: u64) {
        if events.is_empty() {
            self.through.fetch_max(through, Ordering::AcqRel);
            return;
        }
        self.published
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let registry_only = events.iter().all(|p| !Channel::Features.carries(p));
        let mut inner = self.inner.lock();
        for p in events {
            let p = Arc::new(p);
            if inner.history.len() == HISTORY_EVENTS {
                if let Some(old) = inner.history.pop_front() {
                    inner.dropped_through = old.event.revision;
                }
            }
            inner.history.push_back(p.clone());
            if let Some(live) = &inner.live {
                for channel in [Channel::Everything, Channel::Features] {
                    if channel.carries(&p) {
                        // No receiver is not an error: nobody watches.
                        let _ = live[channel as usize].send(p.clone());
                        self.sent[channel as usize].fetch_add(1, Ordering::Release);
                    }
                }
            }
        }
        drop(inner);
        self.through.fetch_max(through, Ordering::AcqRel);
        if registry_only {
            self.rings
                .send_modify(|n| n.registry = n.registry.wrapping_add(1));
        } else {
            self.ring();
        }
    }

    /// Wakes every watch stream waiting at a bell (after the channels changed).
    fn ring(&self) {
        self.rings
            .send_modify(|n| n.everyone = n.everyone.wrapping_add(1));
    }

    /// A stream's place at the current thread's bell for this hub (see [`super::bell`]), for a
    /// stream reading `channel`.
    pub(crate) fn bell_waiter(&self, channel: Channel) -> super::bell::BellWaiter {
        super::bell::BellWaiter::here(self.id, &self.rings.subscribe(), channel == Channel::Everything)
    }

    /// Whether a receiver of generation `generation` that has taken `taken` events since it
    /// was made (counting from its subscription's `sent_before`) has nothing to read: no event
    /// after them and no interruption. Two loads of lines that change once per publication,
    /// where asking the channel takes its lock: a commit has every stream of the node look
    /// after each event it sends, on every serving thread at once.
    ///
    /// A `false` may be stale by the time it is used; a stream that then waits at its bell
    /// looks again after registering, and the publication rings after both counters moved.
    pub(crate) fn quiet(&self, channel: Channel, generation: u64, taken: u64) -> bool {
        self.generation.load(Ordering::Acquire) == generation
            && self.sent[channel as usize].load(Ordering::Acquire) == taken
    }

    /// The revision through which every event has been published.
    pub fn through(&self) -> u64 {
        self.through.load(Ordering::Acquire)
    }

    /// A hub that serves at most `max_streams` streams at once.
    pub fn with_max_streams(max_streams: usize) -> Self {
        WatchHub {
            max_streams,
            ..WatchHub::default()
        }
    }

    /// Admits one more stream, unless the hub's bound is reached: then the node sheds it with
    /// `UNAVAILABLE` (another member should serve it; `elsewhere` names them, for the
    /// message). The slot is freed when dropped.
    pub fn admit(&self, elsewhere: impl FnOnce() -> String) -> Result<StreamSlot, Error> {
        let before = self.streams.fetch_add(1, Ordering::AcqRel);
        let slot = StreamSlot(self.streams.clone());
        if before >= self.max_streams {
            return Err(Error::Unavailable(format!(
                "this node serves {} watch streams, its bound (serve --max-watches): watch from another member ({})",
                self.max_streams,
                elsewhere()
            )));
        }
        Ok(slot)
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Events published since the node started.
    pub fn published(&self) -> u64 {
        self.published.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets the history and ends every live stream: a snapshot install replaced the state,
    /// jumping to `through_revision`. Resuming subscribers get a snapshot instead.
    pub fn reset(&self, through_revision: u64) {
        let mut inner = self.inner.lock();
        inner.history.clear();
        inner.dropped_through = through_revision;
        // After the interruption: a stream that reads the new mark then finds its ring closed,
        // so it never reports the jumped-to revision over events it never had.
        self.interrupt_locked(&mut inner, Interruption::Jumped(through_revision));
        self.through.store(through_revision, Ordering::Release);
        drop(inner);
        self.ring();
    }

    /// Ends every live stream (after what each has not sent yet) for `why`; new subscribers
    /// get a new channel.
    pub fn interrupt(&self, why: Interruption) {
        self.interrupt_locked(&mut self.inner.lock(), why);
        self.ring();
    }

    /// Like [`WatchHub::interrupt`], but only if a live stream would be ended by it (a
    /// receiver subscribed since the last interruption); returns whether it interrupted.
    pub fn interrupt_live(&self, why: Interruption) -> bool {
        let mut inner = self.inner.lock();
        let live = inner
            .live
            .as_ref()
            .is_some_and(|l| l.iter().any(|s| s.receiver_count() > 0));
        if live {
            self.interrupt_locked(&mut inner, why);
        }
        drop(inner);
        if live {
            self.ring();
        }
        live
    }

    fn interrupt_locked(&self, inner: &mut Inner, why: Interruption) {
        inner.interruptions.push_back((inner.generation, why));
        if inner.interruptions.len() > INTERRUPTIONS_KEPT {
            inner.interruptions.pop_front();
        }
        inner.generation += 1;
        self.generation.store(inner.generation, Ordering::Release);
        if inner.live.is_some() {
            inner.live = Some(live_channels());
        }
    }

    /// Why the live channel of generation `generation` ended.
    pub fn why_ended(&self, generation: u64) -> Interruption {
        let inner = self.inner.lock();
        inner
            .interruptions
            .iter()
            .find(|(g, _)| *g >= generation)
            .map_or(Interruption::ShuttingDown, |(_, why)| *why)
    }

    /// Closes the live channel for good: each receiver ends once it has read what was
    /// published before. Called when the node shuts down, so its watch streams end without
    /// each watching a stop signal of its own.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        self.interrupt_locked(&mut inner, Interruption::ShuttingDown);
        inner.live = None;
        drop(inner);
        self.ring();
    }

    /// Subscribes to `channel`; with `after` set, also returns the events after that revision if
    /// the history still holds them all (every kind: the caller filters).
    pub fn subscribe(&self, channel: Channel, after: Option<u64>) -> Result<Subscription, Closed> {
        let inner = self.inner.lock();
        let receiver = inner.live.as_ref().ok_or(Closed)?[channel as usize].subscribe();
        let generation = inner.generation;
        let sent_before = self.sent[channel as usize].load(Ordering::Acquire);
        let replay = after.and_then(|after| {
            if after < inner.dropped_through {
                return None;
            }
            let start = inner.history.partition_point(|p| p.event.revision <= after);
            Some(inner.history.range(start..).cloned().collect())
        });
        Ok(Subscription {
            replay,
            receiver,
            generation,
            sent_before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::event::Event;

    fn published(revision: u64) -> Published {
        Published::new(
            Event {
                revision,
                change: crate::state::event::Change::FeatureDeleted(format!("f{revision}")),
            },
            Vec::new(),
        )
    }

    fn instance_gone(revision: u64) -> Published {
        Published::new(
            Event {
                revision,
                change: crate::state::event::Change::InstanceGone {
                    id: format!("i{revision}"),
                    service: "cart".into(),
                },
            },
            Vec::new(),
        )
    }

    #[test]
    fn registry_events_reach_only_the_everything_channel_and_ring_only_its_readers() {
        let hub = WatchHub::default();
        let rings = hub.rings.subscribe();
        let rung = || *rings.borrow();
        let all = hub.subscribe(Channel::Everything, None).unwrap();
        let toggles = hub.subscribe(Channel::Features, None).unwrap();
        let (mut all_taken, mut toggles_taken) = (all.sent_before, toggles.sent_before);
        let (mut all, mut toggles) = (
            (all.generation, all.receiver),
            (toggles.generation, toggles.receiver),
        );
        hub.publish(vec![instance_gone(1), instance_gone(2)], 2);
        assert_eq!(
            rung(),
            Rings {
                everyone: 0,
                registry: 1
            }
        );
        assert!(
            hub.quiet(Channel::Features, toggles.0, toggles_taken),
            "nothing for it"
        );
        assert!(matches!(
            toggles.1.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        // A catalog or toggle event in the batch: everyone is rung, and each channel has what it
        // carries, in order.
        hub.publish(vec![instance_gone(3), published(4)], 4);
        assert_eq!(
            rung(),
            Rings {
                everyone: 1,
                registry: 1
            }
        );
        for revision in [1, 2, 3, 4] {
            assert!(!hub.quiet(Channel::Everything, all.0, all_taken));
            assert_eq!(all.1.try_recv().unwrap().event.revision, revision);
            all_taken += 1;
        }
        assert!(!hub.quiet(Channel::Features, toggles.0, toggles_taken));
        assert_eq!(toggles.1.try_recv().unwrap().event.revision, 4);
        toggles_taken += 1;
        assert!(hub.quiet(Channel::Everything, all.0, all_taken));
        assert!(hub.quiet(Channel::Features, toggles.0, toggles_taken));
        // Registry churn far past the channel's size costs the other channel nothing: no lag.
        for revision in 5..5 + 2 * BROADCAST_EVENTS as u64 {
            hub.publish(vec![instance_gone(revision)], revision);
        }
        assert!(hub.quiet(Channel::Features, toggles.0, toggles_taken));
        assert!(matches!(
            all.1.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        // An interruption ends both channels, and rings everyone.
        hub.interrupt(Interruption::CannotVouch);
        assert_eq!(rung().everyone, 2);
        assert!(!hub.quiet(Channel::Features, toggles.0, toggles_taken));
        assert!(matches!(
            toggles.1.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        // Resuming replays every kind (the stream's filter picks).
        let resumed = hub.subscribe(Channel::Features, Some(2)).unwrap();
        let replayed: Vec<u64> = resumed
            .replay
            .unwrap()
            .iter()
            .take(3)
            .map(|p| p.event.revision)
            .collect();
        assert_eq!(replayed, [3, 4, 5]);
    }

    #[test]
    fn progress_never_gets_ahead_of_what_was_published() {
        let hub = WatchHub::default();
        hub.reset(5);
        assert_eq!(hub.through(), 5);
        // The state is at 7 (a revision with no event, then one with an event) only once the
        // events are out.
        hub.publish(Vec::new(), 6);
        assert_eq!(hub.through(), 6);
        hub.publish(vec![published(7)], 7);
        assert_eq!(hub.through(), 7);
        // Never backwards.
        hub.publish(Vec::new(), 3);
        assert_eq!(hub.through(), 7);
    }

    #[test]
    fn closing_ends_receivers_after_what_they_have_not_read() {
        let hub = WatchHub::default();
        let mut live = hub.subscribe(Channel::Everything, None).unwrap().receiver;
        hub.publish(vec![published(1), published(2)], 2);
        hub.close();
        hub.publish(vec![published(3)], 3);
        assert_eq!(live.try_recv().unwrap().event.revision, 1);
        assert_eq!(live.try_recv().unwrap().event.revision, 2);
        assert!(matches!(
            live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert!(hub.subscribe(Channel::Everything, Some(0)).is_err());
    }

    #[test]
    fn the_stream_limit_is_enforced_and_released() {
        let hub = WatchHub::with_max_streams(2);
        let elsewhere = || "10.0.0.4:7700".to_string();
        let a = hub.admit(elsewhere).expect("first");
        let _b = hub.admit(elsewhere).expect("second");
        let err = hub.admit(elsewhere).expect_err("over the limit");
        assert!(
            matches!(&err, Error::Unavailable(m) if m.contains("10.0.0.4:7700")),
            "{err}"
        );
        assert_eq!(hub.open_streams(), 2, "a refused stream holds no place");
        drop(a);
        assert!(hub.admit(elsewhere).is_ok());
    }

    #[test]
    fn quiet_means_a_receiver_has_read_everything_and_was_not_interrupted() {
        let hub = WatchHub::default();
        // Sent before anyone watched: not counted against a later subscriber.
        hub.publish(vec![published(1)], 1);
        let sub = hub.subscribe(Channel::Everything, None).unwrap();
        let (generation, mut taken, mut r) = (sub.generation, sub.sent_before, sub.receiver);
        assert!(hub.quiet(Channel::Everything, generation, taken));
        hub.publish(vec![published(2), published(3)], 3);
        for revision in [2, 3] {
            assert!(
                !hub.quiet(Channel::Everything, generation, taken),
                "event {revision} unread"
            );
            assert_eq!(r.try_recv().unwrap().event.revision, revision);
            taken += 1;
        }
        assert!(hub.quiet(Channel::Everything, generation, taken));
        // A second subscriber counts from its own start.
        let late = hub.subscribe(Channel::Everything, None).unwrap();
        assert!(hub.quiet(Channel::Everything, late.generation, late.sent_before));
        // An interruption is news, with nothing sent: the receiver must look to find its end.
        hub.interrupt(Interruption::CannotVouch);
        assert!(!hub.quiet(Channel::Everything, generation, taken));
        assert!(matches!(
            r.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        let next = hub.subscribe(Channel::Everything, None).unwrap();
        assert!(hub.quiet(Channel::Everything, next.generation, next.sent_before));
        hub.close();
        assert!(!hub.quiet(Channel::Everything, next.generation, next.sent_before));
    }

    #[test]
    fn interrupting_live_streams_only_ends_a_generation_someone_subscribed_to() {
        let hub = WatchHub::default();
        assert!(!hub.interrupt_live(Interruption::CannotVouch), "nobody to end");
        let sub = hub.subscribe(Channel::Everything, None).expect("open");
        assert!(hub.interrupt_live(Interruption::CannotVouch));
        assert_eq!(hub.why_ended(sub.generation), Interruption::CannotVouch);
        let mut r = sub.receiver;
        assert!(matches!(
            r.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert!(
            !hub.interrupt_live(Interruption::CannotVouch),
            "its receiver is on the old channel"
        );
    }

    #[tokio::test]
    async fn an_interruption_ends_live_receivers_and_says_why() {
        let hub = WatchHub::default();
        let before = hub.subscribe(Channel::Everything, None).expect("open");
        hub.publish(
            vec![Published::new(
                Event {
                    revision: 1,
                    change: crate::state::event::Change::FeatureDeleted("f1".into()),
                },
                Vec::new(),
            )],
            1,
        );
        hub.reset(40);
        let mut r = before.receiver;
        assert_eq!(r.recv().await.expect("the event before").event.revision, 1);
        assert!(r.recv().await.is_err(), "then the end");
        assert_eq!(hub.why_ended(before.generation), Interruption::Jumped(40));
        // A subscriber after the jump is fed, and resuming from before the jump needs a snapshot.
        let after = hub.subscribe(Channel::Everything, Some(1)).expect("open");
        assert!(after.replay.is_none());
        hub.interrupt(Interruption::CannotVouch);
        assert_eq!(hub.why_ended(after.generation), Interruption::CannotVouch);
        hub.close();
        assert!(hub.subscribe(Channel::Everything, None).is_err());
    }
}
