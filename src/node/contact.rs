//! Whether this node is in contact with the cluster, so watch streams never serve a stale view
//! for long: a node cut off from the leader (a follower whose leader is gone, a leader no
//! longer acknowledged by a quorum) ends its watch streams with `UNAVAILABLE`, and the
//! subscribers resume on another node. etcd's `WithRequireLeader` does the same for its watches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;

use crate::node::Node;

/// How long a node may be out of contact before its watches end.
pub const LOST_AFTER: Duration = Duration::from_secs(3);
/// How often contact is checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The node's view of its contact with the cluster (set by [`contact_loop`]).
#[derive(Debug)]
pub struct Contact {
    lost: AtomicBool,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            lost: AtomicBool::new(false),
        }
    }
}

impl Contact {
    /// Whether the node has been out of contact for longer than [`LOST_AFTER`] (as of the last
    /// check, at most 250 ms ago).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

/// Whether `node` should stop serving watches: out of contact for longer than [`LOST_AFTER`]
/// and still out of contact now (so a node that just found its leader again serves at once).
pub fn is_cut_off(node: &Node) -> bool {
    node.contact().is_lost() && !in_contact(node)
}

/// Whether the node is in contact right now: it leads and a quorum acknowledged it within
/// [`LOST_AFTER`] (or it is the only voter), or it follows a known leader. Learners always
/// count as in contact: they have no election timer to notice a lost leader.
fn in_contact(node: &Node) -> bool {
    let m = node.raft().metrics().borrow_watched().clone();
    match m.state {
        ServerState::Leader => {
            let voters = m.membership_config.membership().voter_ids().count();
            voters <= 1 || m.last_quorum_acked.is_some_and(|t| t.elapsed() < LOST_AFTER)
        }
        ServerState::Follower => m.current_leader.is_some(),
        ServerState::Learner => true,
        ServerState::Candidate | ServerState::Shutdown => false,
    }
}

/// Runs for the node's lifetime, keeping [`Contact`] current.
pub async fn contact_loop(node: Arc<Node>) {
    let mut since: Option<Instant> = None;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if node.is_shut_down() {
            return;
        }
        let now = Instant::now();
        if in_contact(&node) {
            since = None;
        } else if since.is_none() {
            since = Some(now);
        }
        let lost = since.is_some_and(|s| now.duration_since(s) >= LOST_AFTER);
        let was = node.contact().lost.swap(lost, Ordering::AcqRel);
        if lost != was {
            if lost {
                tracing::warn!("out of contact with the cluster's leader; ending watch streams");
            } else {
                tracing::info!("in contact with the cluster's leader again");
            }
        }
    }
}
