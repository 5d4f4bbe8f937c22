//! Lease expiry, decided by the leader: it tracks keepalives in memory (they never enter the
//! Raft log) and proposes `RevokeLease` when a lease's TTL runs out. A node that becomes leader
//! restarts every lease's countdown at its full TTL, so a leader change never expires a healthy
//! instance (etcd's lessor does the same: promote, demote, expired).
//!
//! [`Deadlines`] makes the decisions from the time it is given, so they are tested without a
//! clock or a cluster; [`LeaseTracker`] shares it between the keepalive handlers and
//! [`expiry_loop`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::node::peer::Rpc;
use crate::node::{Leader, Node};
use crate::state::command::{Command, Request};

/// How long a keepalive may take, through the leader.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the leader looks for expired leases.
pub(crate) const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// The keepalive deadline of every lease, while this node leads.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    leading: bool,
    deadlines: HashMap<u64, Instant>,
}

impl Deadlines {
    /// This node became leader: every lease starts a full TTL at the next [`Deadlines::sync`].
    pub(crate) fn promote(&mut self) {
        self.leading = true;
        self.deadlines.clear();
    }

    /// This node no longer leads: it decides nothing.
    pub(crate) fn demote(&mut self) {
        self.leading = false;
        self.deadlines.clear();
    }

    /// Whether this node tracks deadlines (it leads).
    pub(crate) fn is_leading(&self) -> bool {
        self.leading
    }

    /// Follows the registry's leases (id, TTL ms): a lease new to the tracker gets a full TTL
    /// from `now`, a lease gone from the registry is forgotten.
    pub(crate) fn sync(&mut self, leases: impl IntoIterator<Item = (u64, u64)>, now: Instant) {
        let old = std::mem::take(&mut self.deadlines);
        self.deadlines = leases
            .into_iter()
            .map(|(id, ttl)| {
                let deadline = old.get(&id).copied().unwrap_or(now + Duration::from_millis(ttl));
                (id, deadline)
            })
            .collect();
    }

    /// A keepalive for a lease whose TTL is `ttl_ms`: its countdown starts again.
    pub(crate) fn renew(&mut self, id: u64, ttl_ms: u64, now: Instant) {
        if self.leading {
            self.deadlines.insert(id, now + Duration::from_millis(ttl_ms));
        }
    }

    /// The leases whose deadline has passed at `now`.
    pub(crate) fn expired(&self, now: Instant) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A lease was revoked: forget it.
    pub(crate) fn forget(&mut self, id: u64) {
        self.deadlines.remove(&id);
    }
}

/// The leader's keepalive deadlines, shared by the keepalive handlers and the expiry loop.
#[derive(Default)]
pub(crate) struct LeaseTracker {
    deadlines: Mutex<Deadlines>,
}

impl LeaseTracker {
    /// Renews leases (on the leader): each lease's TTL, or `None` if it does not exist.
    pub(crate) fn renew(&self, node: &Node, ids: &[u64]) -> Vec<(u64, Option<u64>)> {
        let ttls: Vec<(u64, Option<u64>)> = node.read_state(|m| {
            ids.iter()
                .map(|id| (*id, m.state.registry().lease(*id).map(|l| l.ttl_ms)))
                .collect()
        });
        let now = Instant::now();
        let mut deadlines = self.deadlines.lock();
        for (id, ttl) in &ttls {
            if let Some(ttl) = ttl {
                deadlines.renew(*id, *ttl, now);
            }
        }
        ttls
    }
}

impl Node {
    /// Renews leases: on the leader directly, from a follower through the leader. Returns each
    /// lease's TTL, or `None` for a lease that does not exist.
    pub async fn keepalive(&self, ids: Vec<u64>) -> Result<Vec<(u64, Option<u64>)>> {
        let deadline = Instant::now() + KEEPALIVE_TIMEOUT;
        match self.leader(deadline).await? {
            Leader::Here => Ok(self.leases().renew(self, &ids)),
            Leader::At(addr) => self.peers().call(&addr, Rpc::KeepAlive, &ids, deadline).await,
        }
    }
}

/// Runs for the node's lifetime: while this node leads, revokes leases whose deadline passed.
pub(crate) async fn expiry_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if node.is_shut_down() {
            return;
        }
        let tracker = &node.leases().deadlines;
        if !node.is_leader() {
            tracker.lock().demote();
            continue;
        }
        let now = Instant::now();
        let leases: Vec<(u64, u64)> =
            node.read_state(|m| m.state.registry().leases().map(|l| (l.id, l.ttl_ms)).collect());
        let expired = {
            let mut d = tracker.lock();
            if !d.is_leading() {
                d.promote();
            }
            d.sync(leases, now);
            d.expired(now)
        };
        for lease in expired {
            let req = Request {
                client_id: String::new(),
                request_id: 0,
                proposed_at_ms: 0,
                actor: "switchyard (lease expiry)".into(),
                reason: "TTL ran out without keepalive".into(),
                command: Command::RevokeLease {
                    lease,
                    expired: true,
                    scope: None,
                },
            };
            match node.propose_here(req).await {
                Ok(_) | Err(Error::NotFound(_)) => {
                    tracing::info!(lease, "lease expired and revoked");
                    tracker.lock().forget(lease);
                }
                Err(e) => {
                    tracing::warn!(lease, error = %e, "could not revoke expired lease");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_lease_expires_its_ttl_after_the_last_keepalive() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.promote();
        d.sync([(1, 1000)], t0);
        d.renew(1, 1000, t0 + ms(600));
        assert!(d.expired(t0 + ms(1599)).is_empty());
        assert_eq!(d.expired(t0 + ms(1600)), vec![1]);
    }

    #[test]
    fn a_new_leader_restarts_every_countdown_at_its_full_ttl() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.promote();
        d.sync([(1, 1000), (2, 5000)], t0);
        // Leadership moves away and comes back much later: nobody renewed meanwhile, yet no
        // lease expires at once.
        d.demote();
        assert!(
            d.expired(t0 + ms(10_000)).is_empty(),
            "a follower decides nothing"
        );
        let back = t0 + ms(10_000);
        d.promote();
        d.sync([(1, 1000), (2, 5000)], back);
        assert!(d.expired(back + ms(999)).is_empty());
        assert_eq!(d.expired(back + ms(1000)), vec![1]);
        assert_eq!(d.expired(back + ms(5000)), vec![1, 2]);
    }

    #[test]
    fn leases_follow_the_registry_and_renewals_need_leadership() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.renew(1, 1000, t0);
        assert!(
            d.expired(t0 + ms(5000)).is_empty(),
            "not leading: nothing tracked"
        );
        d.promote();
        d.sync([(1, 1000), (2, 1000)], t0);
        // Lease 2 is revoked in the registry: forgotten at the next sync.
        d.sync([(1, 1000)], t0 + ms(100));
        assert_eq!(d.expired(t0 + ms(2000)), vec![1]);
        d.forget(1);
        assert!(d.expired(t0 + ms(2000)).is_empty());
    }
}
