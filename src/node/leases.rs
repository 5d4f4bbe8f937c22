//! Lease expiry, decided by the leader: it tracks keepalives in memory (they never enter the
//! Raft log) and proposes `RevokeLease` when a lease's TTL runs out. A node that becomes leader
//! restarts every lease's countdown at its full TTL, so a leader change never expires a healthy
//! instance (etcd does the same).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::Error;
use crate::node::Node;
use crate::state::command::{Command, Request};

/// How often the leader looks for expired leases.
pub const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// The leader's keepalive deadlines, by lease id.
#[derive(Default)]
pub struct LeaseTracker {
    deadlines: Mutex<HashMap<u64, Instant>>,
}

impl LeaseTracker {
    /// Renews leases (on the leader): each lease's TTL, or `None` if it does not exist.
    pub fn renew(&self, node: &Node, ids: &[u64]) -> Vec<(u64, Option<u64>)> {
        let ttls: Vec<(u64, Option<u64>)> = node.read_state(|m| {
            ids.iter()
                .map(|id| (*id, m.state.registry().lease(*id).map(|l| l.ttl_ms)))
                .collect()
        });
        let now = Instant::now();
        let mut deadlines = self.deadlines.lock();
        for (id, ttl) in &ttls {
            if let Some(ttl) = ttl {
                deadlines.insert(*id, now + Duration::from_millis(*ttl));
            }
        }
        ttls
    }
}

/// Runs for the node's lifetime: while this node leads, revokes leases whose deadline passed.
pub async fn expiry_loop(node: Arc<Node>) {
    let mut leading = false;
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if node.is_shut_down() {
            return;
        }
        if !node.is_leader() {
            if leading {
                node.leases().deadlines.lock().clear();
                leading = false;
            }
            continue;
        }
        let now = Instant::now();
        // Sync with the state machine: new leases start a full TTL; gone ones are forgotten.
        // On becoming leader every lease restarts at its full TTL.
        let leases: Vec<(u64, u64)> =
            node.read_state(|m| m.state.registry().leases().map(|l| (l.id, l.ttl_ms)).collect());
        let expired: Vec<u64> = {
            let mut deadlines = node.leases().deadlines.lock();
            if !leading {
                deadlines.clear();
                leading = true;
            }
            let mut live = HashMap::with_capacity(leases.len());
            for (id, ttl) in leases {
                let deadline = deadlines
                    .get(&id)
                    .copied()
                    .unwrap_or(now + Duration::from_millis(ttl));
                live.insert(id, deadline);
            }
            *deadlines = live;
            deadlines
                .iter()
                .filter(|(_, d)| **d <= now)
                .map(|(id, _)| *id)
                .collect()
        };
        for lease in expired {
            let req = Request {
                client_id: String::new(),
                request_id: 0,
                proposed_at_ms: 0,
                actor: "switchyard (lease expiry)".into(),
                reason: "TTL ran out without keepalive".into(),
                command: Command::RevokeLease { lease, expired: true },
            };
            match node.propose_here(req).await {
                Ok(_) | Err(Error::NotFound(_)) => {
                    tracing::info!(lease, "lease expired and revoked");
                    node.leases().deadlines.lock().remove(&lease);
                }
                Err(e) => {
                    tracing::warn!(lease, error = %e, "could not revoke expired lease");
                    break;
                }
            }
        }
    }
}
