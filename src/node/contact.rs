//! Whether this node can vouch for its data, so it never serves a stale view: a node cut off
//! from the leader (a follower or learner that has not heard from it, a leader no quorum has
//! acknowledged), removed from the cluster, or whose storage failed ends its watch and flagd
//! streams with `UNAVAILABLE` at once (the hub interrupts them), refuses new ones and
//! linearizable reads, and says so on health. A node that is behind (just restarted, catching
//! up) refuses new streams until it has applied what the leader had committed. etcd's
//! `WithRequireLeader` does the same for its watches.
//!
//! Contact is measured directly, with no second timer on top: a follower's is the time since
//! the last append-entries it accepted from the leader (recorded by the internal service), a
//! leader's the time since a quorum last acknowledged it; past [`LOST_AFTER`] the node is cut
//! off. [`contact_loop`] looks every [`CHECK_EVERY`], so streams end within
//! `LOST_AFTER + CHECK_EVERY` of the last contact.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;

use crate::error::{Error, Result};
use crate::node::Node;
use crate::watch::Interruption;

/// How long a node may be out of contact before it stops serving.
pub(crate) const LOST_AFTER: Duration = Duration::from_secs(3);
/// How often contact is checked.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How many looks back a node compares its applied index with the leader's commit (300 ms:
/// a healthy node under load trails the latest commit by a little, never by that much).
const BEHIND_WINDOW: usize = 3;
/// How long a new stream may wait for a node that is slightly behind to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// The node's contact with the cluster.
#[derive(Debug)]
pub(crate) struct Contact {
    /// Set by [`contact_loop`]: the node cannot vouch for its data.
    lost: AtomicBool,
    /// When the node last accepted append-entries from a leader (ms since `start`, plus one;
    /// 0: never since it started).
    leader_heard_ms: AtomicU64,
    /// When [`contact_loop`] last looked (ms since `start`).
    checked_ms: AtomicU64,
    /// At that look, the node had not yet applied what the leader had committed a few looks
    /// before (see [`BEHIND_WINDOW`]).
    behind: AtomicBool,
    start: Instant,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            // Until it has heard from a leader (or leads), a starting node vouches for nothing.
            lost: AtomicBool::new(true),
            leader_heard_ms: AtomicU64::new(0),
            checked_ms: AtomicU64::new(0),
            behind: AtomicBool::new(true),
            start: Instant::now(),
        }
    }
}

impl Contact {
    /// Whether the node could not vouch for its data at the last check (at most
    /// [`CHECK_EVERY`] ago).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Whether a stream may tell its subscriber "you have everything through my revision"
    /// now: the node could vouch for its data and was caught up with the leader's commit at a
    /// check that is recent. After a stall (a long pause, a frozen VM) the last check is old,
    /// and the answer is no until the loop has looked again, so a node waking up never
    /// reports its old revision as current.
    pub(crate) fn is_current(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        let recent =
            now.saturating_sub(self.checked_ms.load(Ordering::Acquire)) <= 3 * CHECK_EVERY.as_millis() as u64;
        recent && !self.is_lost() && !self.behind.load(Ordering::Acquire)
    }

    /// The leader was heard from just now (append-entries or a snapshot accepted).
    pub(crate) fn heard_from_leader(&self) {
        let ms = self.start.elapsed().as_millis() as u64 + 1;
        self.leader_heard_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// How long ago the leader was last heard from (none: never since start).
    fn since_leader(&self) -> Option<Duration> {
        match self.leader_heard_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.start.elapsed().saturating_sub(Duration::from_millis(ms - 1))),
        }
    }
}

impl Node {
    /// Why this node cannot vouch for its data right now, if it cannot: its storage failed, it
    /// is not a member, or it is cut off from the leader.
    pub(crate) fn cannot_vouch(&self) -> Option<String> {
        let m = self.raft().metrics().borrow_watched().clone();
        if let Err(fatal) = &m.running_state {
            return Some(format!("its storage or Raft core failed ({fatal})"));
        }
        let membership = m.membership_config.membership();
        if membership.get_node(&self.id()).is_none() {
            return Some("it is not a member of the cluster (removed)".into());
        }
        match m.state {
            ServerState::Leader => {
                let voters = membership.voter_ids().count();
                let acked = m.last_quorum_acked.map(|t| t.elapsed());
                if voters > 1 && acked.is_none_or(|a| a >= LOST_AFTER) {
                    return Some(match acked {
                        Some(a) => {
                            format!("no quorum has acknowledged it as leader for {} ms", a.as_millis())
                        }
                        None => "no quorum has acknowledged it as leader".into(),
                    });
                }
                None
            }
            ServerState::Follower | ServerState::Learner => match self.contact().since_leader() {
                None => Some("it has not heard from a leader since it started".into()),
                Some(d) if d >= LOST_AFTER || m.current_leader.is_none() => Some(format!(
                    "it has not heard from the leader for {} ms",
                    d.as_millis()
                )),
                Some(_) => None,
            },
            ServerState::Candidate => Some("it is electing a leader".into()),
            ServerState::Shutdown => Some("it is shutting down".into()),
        }
    }

    /// `Ok` when this node can vouch for its data now (see [`Node::cannot_vouch`]).
    pub(crate) fn can_serve(&self) -> Result<()> {
        match self.cannot_vouch() {
            None => Ok(()),
            Some(why) => Err(Error::unavailable(format!(
                "this node cannot vouch for its data: {why}; use another node"
            ))),
        }
    }

    /// Admits a new stream or a read this node serves from its own state: it must vouch for
    /// its data and have applied what the leader had committed (waiting up to 2 s for that),
    /// so a node that is behind never serves a view older than one already seen elsewhere.
    pub(crate) async fn admit_reader(&self) -> Result<()> {
        self.can_serve()?;
        let m = self.raft().metrics().borrow_watched().clone();
        let Some(committed) = m.cluster_committed.map(|c| c.index()) else {
            return Err(Error::unavailable(
                "this node has not learned the leader's commit yet; use another node",
            ));
        };
        let applied = m.last_applied.map_or(0, |l| l.index());
        if applied < committed {
            self.raft()
                .wait(Some(CATCH_UP_WAIT))
                .applied_index_at_least(Some(committed), "catching up before serving")
                .await
                .map_err(|_| {
                    Error::unavailable(format!(
                        "this node is catching up (applied {applied} of {committed} committed); use another node"
                    ))
                })?;
        }
        Ok(())
    }
}

/// Runs for the node's lifetime: keeps [`Contact`] current, and the moment the node can no
/// longer vouch for its data, ends every live stream (the hub interrupts them).
pub(crate) async fn contact_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The leader's commit index at the last BEHIND_WINDOW looks, oldest first.
    let mut commits: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    loop {
        tick.tick().await;
        if node.is_shut_down() {
            return;
        }
        let why = node.cannot_vouch();
        let lost = why.is_some();
        let m = node.raft().metrics().borrow_watched().clone();
        let committed = m.cluster_committed.map_or(0, |c| c.index());
        // Commits seen while out of contact (a node just restarted knows only its own) say
        // nothing of where the leader is: start the window again once back in contact.
        if lost {
            commits.clear();
        }
        commits.push_back(committed);
        if commits.len() > BEHIND_WINDOW {
            commits.pop_front();
        }
        let applied = m.last_applied.map_or(0, |a| a.index());
        // Until the window is full, the latest commit is the bar: a node that just came back
        // must first catch up with it.
        let bar = if commits.len() < BEHIND_WINDOW {
            committed
        } else {
            commits.front().copied().unwrap_or(committed)
        };
        node.contact().behind.store(applied < bar, Ordering::Release);
        node.contact().checked_ms.store(
            node.contact().start.elapsed().as_millis() as u64,
            Ordering::Release,
        );
        let was = node.contact().lost.swap(lost, Ordering::AcqRel);
        if lost && !was {
            tracing::warn!(
                reason = why.as_deref().unwrap_or(""),
                "cannot vouch for its data; ending watch streams and refusing new ones"
            );
            node.hub().interrupt(Interruption::CannotVouch);
        } else if lost {
            // A stream admitted between two looks (admission checks afresh) while this loop
            // still counted the node as out of contact, and the node lost it again before the
            // next look: no transition was seen, so end such streams here.
            node.hub().interrupt_live(Interruption::CannotVouch);
        } else if !lost && was {
            tracing::info!("serving: in contact with the cluster's leader");
        }
    }
}
