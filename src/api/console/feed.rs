//! The console's one subscription per node: a task follows the node's watch hub and turns its
//! events into Server-Sent Events frames that every open console page shares (a broadcast of
//! pre-encoded frames). Changes are batched (at most four frames a second, naming what
//! changed), so a burst of changes costs each page a few refetches, not one per change. While
//! pages are open, a second task gathers the cluster's status every [`STATUS_EVERY`] for them.
//!
//! The feed also keeps what no single read can answer: the leader changes this node saw in
//! the last hour, and for features waiting on the readiness gate (and those a page looked
//! at), how the count of blocking instances went over time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::node::Node;
use crate::state::event::Event;
use crate::watch::hub::Channel;

/// How often changes are gathered into one frame.
const BATCH_EVERY: Duration = Duration::from_millis(250);
/// How often the cluster's status goes to open pages.
pub(super) const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Frames a slow page may fall behind before it is told to reload everything.
const FRAMES_BUFFERED: usize = 64;
/// Names listed in one change frame; past this the frame says "everything".
const NAMES_PER_FRAME: usize = 200;
/// How long leader changes are remembered.
const LEADER_WINDOW_MS: i64 = 3_600_000;
/// Leader changes remembered at most (a flapping cluster does not grow the list).
const LEADER_CHANGES_KEPT: usize = 512;
/// Features whose blocker count is followed at once.
const TRACKED_FEATURES: usize = 16;
/// Points kept per followed feature.
const POINTS_KEPT: usize = 512;
/// How long a feature a page looked at stays followed.
const LOOKED_AT_MS: i64 = 3_600_000;
/// Blocker counts are recomputed at most this often (the gate's cost grows with instances).
const READINESS_EVERY: Duration = Duration::from_secs(1);

/// A leader change this node saw.
#[derive(Debug, Clone, Serialize)]
pub(super) struct LeaderChange {
    /// When (unix ms, this node's clock).
    pub at_ms: i64,
    /// The term.
    pub term: u64,
    /// The new leader; 0 when none is known.
    pub leader_id: u64,
}

/// One point of a feature's blocker count.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Point {
    /// When (unix ms).
    pub at_ms: i64,
    /// Blocking instances (and missing services) then.
    pub blockers: usize,
}

#[derive(Default)]
struct Series {
    points: VecDeque<Point>,
    /// Followed until then because a page looked at it (0: only while pending).
    looked_at_until_ms: i64,
}

/// The shared feed of one node's console.
pub(crate) struct Feed {
    node: Arc<Node>,
    frames: broadcast::Sender<Bytes>,
    leaders: Mutex<VecDeque<LeaderChange>>,
    readiness: Mutex<BTreeMap<String, Series>>,
}

/// What changed since the last frame.
#[derive(Default)]
struct Batch {
    features: BTreeSet<String>,
    services: BTreeSet<String>,
    everything: bool,
}

impl Batch {
    fn add(&mut self, event: &Event) {
        if self.everything {
            return;
        }
        if let Some(f) = event.feature() {
            self.features.insert(f.to_string());
        }
        if let Some(s) = event.service() {
            self.services.insert(s.to_string());
        }
        if self.features.len() + self.services.len() > NAMES_PER_FRAME {
            self.everything = true;
            self.features.clear();
            self.services.clear();
        }
    }

    fn is_empty(&self) -> bool {
        !self.everything && self.features.is_empty() && self.services.is_empty()
    }
}

/// A Server-Sent Events frame.
pub(super) fn frame(event: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

impl Feed {
    /// Starts the feed of `node` (it ends when the node shuts down).
    pub(crate) fn start(node: Arc<Node>) -> Arc<Feed> {
        let feed = Arc::new(Feed {
            node,
            frames: broadcast::channel(FRAMES_BUFFERED).0,
            leaders: Mutex::new(VecDeque::new()),
            readiness: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(feed.clone().follow());
        tokio::spawn(feed.clone().report_status());
        feed
    }

    /// A page's share of the feed.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.frames.subscribe()
    }

    /// Pages following the feed now.
    pub(super) fn pages(&self) -> usize {
        self.frames.receiver_count()
    }

    /// The leader changes of the last hour, oldest first.
    pub(super) fn leader_changes(&self) -> Vec<LeaderChange> {
        let cutoff = now_ms() - LEADER_WINDOW_MS;
        self.leaders
            .lock()
            .iter()
            .filter(|c| c.at_ms >= cutoff)
            .cloned()
            .collect()
    }

    /// How `feature`'s blocker count went, and follows it for the next hour.
    pub(super) fn blocker_counts(&self, feature: &str, now: Point) -> Vec<Point> {
        let mut tracked = self.readiness.lock();
        if !tracked.contains_key(feature) && tracked.len() >= TRACKED_FEATURES {
            // Make room by forgetting the feature looked at longest ago.
            if let Some(oldest) = tracked
                .iter()
                .min_by_key(|(_, s)| s.looked_at_until_ms)
                .map(|(name, _)| name.clone())
            {
                tracked.remove(&oldest);
            }
        }
        let series = tracked.entry(feature.to_string()).or_default();
        series.looked_at_until_ms = now.at_ms + LOOKED_AT_MS;
        push_point(&mut series.points, now);
        series.points.iter().copied().collect()
    }

    fn send(&self, frame: Bytes) {
        // No page open: nothing to do.
        let _ = self.frames.send(frame);
    }

    /// Follows the hub for as long as the node runs.
    async fn follow(self: Arc<Self>) {
        let mut stopped = self.node.stop_signal();
        loop {
            if self.node.is_shut_down() {
                return;
            }
            // A node that cannot vouch for its data serves no watch: the feed waits, and the
            // pages show the node's state from the status frames.
            if self.node.can_serve().is_err() {
                self.note_leader();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stopped.changed() => {}
                }
                continue;
            }
            let Ok(subscription) = self.node.hub().subscribe(Channel::Everything, None) else {
                return;
            };
            let mut receiver = subscription.receiver;
            // Pages may have missed changes while the feed was away.
            let mut batch = Batch {
                everything: true,
                ..Batch::default()
            };
            let mut last_revision = 0;
            let mut last_pending = self.pending();
            let mut last_readiness = tokio::time::Instant::now() - READINESS_EVERY;
            let mut readiness_due = true;
            // Blocker counts follow every frame of changes, at most once a READINESS_EVERY.
            let mut tick = tokio::time::interval(BATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(published) => batch.add(&published.event),
                        Err(broadcast::error::RecvError::Lagged(_)) => batch.everything = true,
                        // Interrupted (the node stopped vouching, jumped, or shuts down).
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tick.tick() => {
                        self.note_leader();
                        let revision = self.node.revision();
                        if batch.is_empty() && revision == last_revision {
                            continue;
                        }
                        last_revision = revision;
                        // Pending activations come and go without a watch event: name those
                        // that did, so pages refetch them.
                        let pending = self.pending();
                        for name in pending.symmetric_difference(&last_pending) {
                            batch.features.insert(name.0.clone());
                        }
                        last_pending = pending;
                        let done = std::mem::take(&mut batch);
                        self.send(frame("change", &json!({
                            "revision": revision,
                            "everything": done.everything,
                            "features": done.features,
                            "services": done.services,
                        })));
                        readiness_due = true;
                    }
                }
                if readiness_due && last_readiness.elapsed() >= READINESS_EVERY {
                    readiness_due = false;
                    last_readiness = tokio::time::Instant::now();
                    self.count_blockers();
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// The pending activations now (feature and requesting revision).
    fn pending(&self) -> BTreeSet<(String, u64)> {
        self.node.read_state(|m| {
            m.state
                .pending()
                .map(|p| (p.feature.clone(), p.requested_revision))
                .collect()
        })
    }

    /// Records a leader change if the node's view of the leader moved.
    fn note_leader(&self) {
        let metrics = self.node.raft().metrics();
        let (term, leader) = {
            let m = metrics.borrow_watched();
            (m.current_term, m.current_leader.unwrap_or(0))
        };
        let mut leaders = self.leaders.lock();
        if leaders
            .back()
            .is_some_and(|last| last.leader_id == leader && last.term == term)
        {
            return;
        }
        // A term with no leader yet, then the same term with one: one change, not two.
        if leaders
            .back()
            .is_some_and(|last| last.term == term && last.leader_id == 0)
        {
            leaders.pop_back();
        }
        leaders.push_back(LeaderChange {
            at_ms: now_ms(),
            term,
            leader_id: leader,
        });
        let cutoff = now_ms() - LEADER_WINDOW_MS;
        while leaders
            .front()
            .is_some_and(|c| c.at_ms < cutoff || leaders.len() > LEADER_CHANGES_KEPT)
        {
            leaders.pop_front();
        }
    }

    /// Adds a point to every followed feature whose blocker count moved: features with a
    /// pending activation, and those a page looked at in the last hour.
    fn count_blockers(&self) {
        let now = now_ms();
        let pending: Vec<String> = self
            .node
            .read_state(|m| m.state.pending().map(|p| p.feature.clone()).collect());
        let mut tracked = self.readiness.lock();
        tracked.retain(|name, s| s.looked_at_until_ms > now || pending.contains(name));
        for name in pending {
            if tracked.len() >= TRACKED_FEATURES {
                break;
            }
            tracked.entry(name).or_default();
        }
        for (name, series) in tracked.iter_mut() {
            let Ok(readiness) = self.node.read_state(|m| m.state.readiness(name, false)) else {
                continue;
            };
            push_point(
                &mut series.points,
                Point {
                    at_ms: now,
                    blockers: readiness.blockers.len(),
                },
            );
        }
    }

    /// While pages are open, sends them the cluster's status (members, leader changes) every
    /// [`STATUS_EVERY`].
    async fn report_status(self: Arc<Self>) {
        let cluster = crate::api::cluster::ClusterApi::new(self.node.clone());
        let mut stopped = self.node.stop_signal();
        let mut tick = tokio::time::interval(STATUS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => return,
            }
            if self.node.is_shut_down() {
                return;
            }
            if self.pages() == 0 {
                continue;
            }
            let status = cluster.gather_status().await;
            self.send(frame("status", &self.cluster_json(status)));
        }
    }

    /// The cluster pane's data: the members' status, the leader changes, and whether this node
    /// serves.
    pub(super) fn cluster_json(&self, status: crate::pb::v1::StatusResponse) -> serde_json::Value {
        json!({
            "node": self.node.id(),
            "serving": self.node.can_serve().err().map(|e| e.to_string()),
            "revision": self.node.revision(),
            "members": status.members,
            "leader_id": status.leader_id,
            "leader_changes": self.leader_changes(),
            "pages": self.pages(),
        })
    }
}

fn push_point(points: &mut VecDeque<Point>, point: Point) {
    if points.back().is_some_and(|p| p.blockers == point.blockers) {
        return;
    }
    points.push_back(point);
    if points.len() > POINTS_KEPT {
        points.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::event::Change;

    #[test]
    fn a_batch_names_what_changed_and_gives_up_naming_past_its_bound() {
        let mut batch = Batch::default();
        assert!(batch.is_empty());
        batch.add(&Event {
            revision: 1,
            change: Change::FeatureDeleted("checkout".into()),
        });
        batch.add(&Event {
            revision: 2,
            change: Change::InstanceGone {
                id: "cart-1".into(),
                service: "cart".into(),
            },
        });
        assert_eq!(batch.features.iter().collect::<Vec<_>>(), ["checkout"]);
        assert_eq!(batch.services.iter().collect::<Vec<_>>(), ["cart"]);
        for i in 0..NAMES_PER_FRAME {
            batch.add(&Event {
                revision: 3 + i as u64,
                change: Change::FeatureDeleted(format!("f{i}")),
            });
        }
        assert!(batch.everything);
        assert!(batch.features.is_empty() && !batch.is_empty());
    }

    #[test]
    fn a_series_keeps_only_moves_and_is_bounded() {
        let mut points = VecDeque::new();
        push_point(
            &mut points,
            Point {
                at_ms: 1,
                blockers: 3,
            },
        );
        push_point(
            &mut points,
            Point {
                at_ms: 2,
                blockers: 3,
            },
        );
        push_point(
            &mut points,
            Point {
                at_ms: 3,
                blockers: 2,
            },
        );
        assert_eq!(points.len(), 2);
        for i in 0..(POINTS_KEPT * 2) {
            push_point(
                &mut points,
                Point {
                    at_ms: 4 + i as i64,
                    blockers: i,
                },
            );
        }
        assert_eq!(points.len(), POINTS_KEPT);
    }
}
