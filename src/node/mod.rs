//! A running member of the cluster: Raft, its storage and the state machine, and what the
//! services ask of them. One file per concern:
//! - `write`: writes through the leader (proposed here, or forwarded), retried across leader
//!   changes;
//! - `read`: linearizable read barriers and waiting for a revision;
//! - `membership`: adding, promoting and removing members, on the leader;
//! - `status`: this member's status, every member's, the state gauges for metrics;
//! - `peer`: calls to other members' internal service (one way to encode, time out, decode);
//! - `leases`: lease expiry on the leader (`LeaseTracker`);
//! - `contact`: whether this node is in contact with the leader;
//! - `rollout`: the rollout reports of instances whose keepalives this node holds;
//! - [`config`]: a node's settings.
//!
//! [`crate::server`] starts a node and serves it.

pub mod config;
pub(crate) mod contact;
pub(crate) mod leases;
pub(crate) mod membership;
pub(crate) mod peer;
pub(crate) mod read;
pub(crate) mod rollout;
pub(crate) mod status;
pub(crate) mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::raft::{NodeId, Raft};
use crate::store::{Machine, StateMachineStore};
use crate::watch::WatchHub;

pub use config::{Bootstrap, NodeConfig};
pub(crate) use status::MemberStatus;

/// A node's shared handle, used by every service.
pub(crate) struct Node {
    id: NodeId,
    address: String,
    raft: Raft,
    machine: StateMachineStore,
    peers: peer::Peers,
    leases: leases::LeaseTracker,
    reports: rollout::RolloutReports,
    contact: contact::Contact,
    metrics: Metrics,
    /// Set when the node starts shutting down, for long-lived streams to end.
    stopping: tokio::sync::watch::Sender<bool>,
    shut_down: AtomicBool,
    hub: Arc<WatchHub>,
    /// The state's digest at an applied index (a pure function of the log up to it), so
    /// status calls in a row hash the state once.
    digest: parking_lot::Mutex<Option<(u64, String)>>,
}

/// Where the leader is, as far as this node knows.
pub(crate) enum Leader {
    /// This node leads.
    Here,
    /// Another member leads, at this address.
    At(String),
}

impl Node {
    /// Wires a node's parts together (see [`crate::server::start`]).
    pub(crate) fn new(
        id: NodeId,
        address: String,
        raft: Raft,
        machine: StateMachineStore,
        peers: peer::Peers,
        hub: Arc<WatchHub>,
    ) -> Node {
        Node {
            id,
            address,
            raft,
            machine,
            peers,
            leases: Default::default(),
            reports: Default::default(),
            contact: Default::default(),
            metrics: Default::default(),
            stopping: tokio::sync::watch::channel(false).0,
            shut_down: AtomicBool::new(false),
            hub,
            digest: parking_lot::Mutex::new(None),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The Raft handle (for the internal service).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The watch hub (event history and live fan-out).
    pub fn hub(&self) -> &WatchHub {
        &self.hub
    }

    /// Other members' internal service.
    pub fn peers(&self) -> &peer::Peers {
        &self.peers
    }

    /// The leader's lease deadlines.
    pub fn leases(&self) -> &leases::LeaseTracker {
        &self.leases
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether this node is in contact with the cluster (see [`contact`]).
    pub fn contact(&self) -> &contact::Contact {
        &self.contact
    }

    /// The rollout reports of the instances whose keepalive streams this node holds.
    pub fn reports(&self) -> &rollout::RolloutReports {
        &self.reports
    }

    /// Runs `f` on the applied state of this node.
    pub fn read_state<T>(&self, f: impl FnOnce(&Machine) -> T) -> T {
        self.machine.read(f)
    }

    /// This node's applied revision.
    pub fn revision(&self) -> u64 {
        self.machine.read(|m| m.state.revision())
    }

    /// Whether this node leads right now.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Whether the node has been shut down.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Relaxed)
    }

    /// Marks the node shut down (stops its background loops).
    pub fn mark_shut_down(&self) {
        self.shut_down.store(true, Ordering::Relaxed);
        self.stopping.send_replace(true);
        // Live watch streams end once they have sent what they have.
        self.hub.close();
    }

    /// A signal that turns true when the node starts shutting down (long-lived streams end).
    pub fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Where the leader is, waiting up to `deadline` for one to be known.
    pub(crate) async fn leader(&self, deadline: Instant) -> Result<Leader> {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(leader) = m.current_leader {
                    if leader == self.id {
                        return Ok(Leader::Here);
                    }
                    if let Some(node) = m.membership_config.membership().get_node(&leader) {
                        return Ok(Leader::At(node.addr.clone()));
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::unavailable(
                    "no leader: the cluster has no quorum or is electing; retry",
                ));
            }
            // Wake on the next metrics change, or re-check after a short while.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), metrics.changed()).await;
        }
    }
}
