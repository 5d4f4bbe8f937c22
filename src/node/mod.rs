//! A running node: Raft, storage and the state machine wired together, and the operations the
//! gRPC services call on them: writes (proposed here or forwarded to the leader), linearizable
//! read barriers, status and membership changes. [`server`] starts it and serves gRPC.

pub mod config;
pub mod contact;
pub mod leases;
pub mod rollout;
pub mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ReadPolicy, ServerState};

use crate::error::{Error, Result};
use crate::pb::raft::Payload;
use crate::raft::network::ChannelPool;
use crate::raft::{decode, encode, NodeId, Raft};
use crate::state::command::{Applied, Request};
use crate::store::{Machine, StateMachineStore};

pub use config::{Bootstrap, NodeConfig};

/// How long a write may take, forwarding and leader changes included.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a linearizable read may wait for the leader and for this node to catch up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer has to answer a status query.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// One member's view of itself, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// Address.
    pub address: String,
    /// leader, follower, candidate, learner, shutdown, or unreachable.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Index of the last applied entry.
    pub applied_index: u64,
    /// Cluster revision of the applied state.
    pub revision: u64,
    /// SHA-256 of the applied state.
    pub digest: String,
    /// The leader this member knows (0: none).
    pub leader_id: NodeId,
    /// Whether it votes.
    pub voter: bool,
    /// Index covered by its last snapshot.
    pub snapshot_index: u64,
    /// Index up to which its log is purged.
    pub purged_index: u64,
    /// Why it could not be asked (role "unreachable").
    pub error: String,
}

/// A node's shared handle, used by every gRPC service.
pub struct Node {
    id: NodeId,
    address: String,
    raft: Raft,
    machine: StateMachineStore,
    pool: ChannelPool,
    leases: leases::LeaseTracker,
    reports: rollout::RolloutReports,
    contact: contact::Contact,
    metrics: crate::metrics::Metrics,
    /// Set when the node starts shutting down, for long-lived streams to end.
    stopping: tokio::sync::watch::Sender<bool>,
    shut_down: std::sync::atomic::AtomicBool,
    hub: std::sync::Arc<crate::watch::WatchHub>,
}

impl Node {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The Raft handle (for the internal service).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The watch hub (event history and live fan-out).
    pub fn hub(&self) -> &crate::watch::WatchHub {
        &self.hub
    }

    /// This node's applied revision.
    pub fn revision(&self) -> u64 {
        self.machine.read(|m| m.state.revision())
    }

    /// Waits (up to `timeout`) until this node has applied `revision`.
    pub async fn wait_for_revision(&self, revision: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut metrics = self.raft.metrics();
        loop {
            if self.revision() >= revision {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!(
                    "this node is at revision {}, behind the requested {revision}",
                    self.revision()
                )));
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), metrics.changed()).await;
        }
    }

    /// The leader's lease deadlines.
    pub fn leases(&self) -> &leases::LeaseTracker {
        &self.leases
    }

    /// Whether this node leads right now.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Whether the node has been shut down.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the node shut down (stops its background loops).
    pub fn mark_shut_down(&self) {
        self.shut_down.store(true, std::sync::atomic::Ordering::Relaxed);
        self.stopping.send_replace(true);
        // Live watch streams end once they have sent what they have.
        self.hub.close();
    }

    /// A signal that turns true when the node starts shutting down (long-lived streams end).
    pub fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Renews leases: on the leader directly, from a follower through the leader. Returns each
    /// lease's TTL, or `None` for a lease that does not exist.
    pub async fn keepalive(&self, ids: Vec<u64>) -> Result<Vec<(u64, Option<u64>)>> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let (leader, addr) = self.leader(deadline).await?;
        if leader == self.id {
            return Ok(self.leases.renew(self, &ids));
        }
        let mut client = self
            .pool
            .raft_client(&addr)
            .map_err(|e| Error::unavailable(format!("leader address {addr}: {e}")))?;
        let payload = Payload {
            data: encode(&ids).map_err(Error::internal)?,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let resp = tokio::time::timeout(left, client.keep_alive(payload))
            .await
            .map_err(|_| Error::unavailable("the leader did not renew the lease in time"))?
            .map_err(|s| Error::unavailable(format!("renewing through the leader: {}", s.message())))?;
        decode(&resp.into_inner().data).map_err(Error::internal)
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
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

    /// Every member's rollout reports about `feature`, and the members that could not be asked.
    pub async fn collect_reports(&self, feature: &str) -> (Vec<rollout::Report>, Vec<NodeId>) {
        let asks = self.members().into_iter().map(|(id, addr)| async move {
            if id == self.id {
                return Ok(self.reports.for_feature(feature, id));
            }
            let asked = async {
                let mut client = self.pool.raft_client(&addr).map_err(|e| e.to_string())?;
                let payload = Payload {
                    data: encode(&feature.to_string()).map_err(|e| e.to_string())?,
                };
                let resp = tokio::time::timeout(STATUS_TIMEOUT, client.reports(payload))
                    .await
                    .map_err(|_| "no answer in time".to_string())?
                    .map_err(|s| s.message().to_string())?;
                decode::<Vec<rollout::Report>>(&resp.into_inner().data).map_err(|e| e.to_string())
            };
            asked.await.map_err(|e| {
                tracing::debug!(member = id, error = %e, "could not collect rollout reports");
                id
            })
        });
        let mut reports = Vec::new();
        let mut unreachable = Vec::new();
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok(r) => reports.extend(r),
                Err(id) => unreachable.push(id),
            }
        }
        (reports, unreachable)
    }

    /// The channel pool shared with peers' clients.
    pub fn pool(&self) -> &ChannelPool {
        &self.pool
    }

    /// Runs `f` on the applied state of this node.
    pub fn read_state<T>(&self, f: impl FnOnce(&Machine) -> T) -> T {
        self.machine.read(f)
    }

    /// The current leader's id and address, waiting up to `deadline` for one to be known.
    async fn leader(&self, deadline: Instant) -> Result<(NodeId, String)> {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(leader) = m.current_leader {
                    if let Some(node) = m.membership_config.membership().get_node(&leader) {
                        return Ok((leader, node.addr.clone()));
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

    /// Applies a write through the leader: proposed here when this node leads, forwarded
    /// otherwise, retried across leader changes until [`WRITE_TIMEOUT`]. The answer comes only
    /// after a majority has the entry on disk and it is applied.
    pub async fn write(&self, req: Request) -> Result<Applied> {
        let started = Instant::now();
        let result = self.write_through_leader(req).await;
        self.metrics.observe_write(started.elapsed(), &result);
        result
    }

    async fn write_through_leader(&self, req: Request) -> Result<Applied> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            let (leader, addr) = self.leader(deadline).await?;
            let attempt = if leader == self.id {
                self.propose_here(req.clone()).await
            } else {
                self.forward(&addr, &req, deadline).await
            };
            match attempt {
                Err(Error::Unavailable(why)) => {
                    if Instant::now() >= deadline {
                        return Err(Error::Unavailable(why));
                    }
                    tracing::debug!(%why, "write not accepted; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Proposes a write on this node, which must be the leader. The leader's clock stamps it.
    pub async fn propose_here(&self, mut req: Request) -> Result<Applied> {
        req.proposed_at_ms = crate::clock::now_ms();
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(req)).await {
            Err(_) => Err(Error::Timeout(format!(
                "the write was not committed within {WRITE_TIMEOUT:?}; it may still be applied"
            ))),
            Ok(Ok(resp)) => resp.data,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(Error::unavailable("this node is no longer the leader"))
            }
            Ok(Err(e)) => Err(Error::unavailable(e.to_string())),
        }
    }

    async fn forward(&self, addr: &str, req: &Request, deadline: Instant) -> Result<Applied> {
        let mut client = self
            .pool
            .raft_client(addr)
            .map_err(|e| Error::unavailable(format!("leader address {addr}: {e}")))?;
        let payload = Payload {
            data: encode(req).map_err(Error::internal)?,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let resp = tokio::time::timeout(left, client.forward(payload))
            .await
            .map_err(|_| {
                Error::Timeout("the leader did not answer in time; the write may still be applied".into())
            })?
            .map_err(|s| {
                Error::unavailable(format!("forwarding to the leader at {addr}: {}", s.message()))
            })?;
        let (result, committed_at_us) =
            decode::<(Result<Applied>, i64)>(&resp.into_inner().data).map_err(Error::internal)?;
        result.map(|applied| Applied {
            committed_at_us,
            ..applied
        })
    }

    /// Waits until this node's applied state reflects every write acknowledged before the call
    /// (ReadIndex, through the leader when this node follows). `serializable` skips the wait.
    pub async fn read_barrier(&self, serializable: bool) -> Result<()> {
        if serializable {
            return Ok(());
        }
        let deadline = Instant::now() + READ_TIMEOUT;
        let (leader, addr) = self.leader(deadline).await?;
        let index = if leader == self.id {
            let linearizer = self
                .raft
                .get_read_linearizer(ReadPolicy::ReadIndex)
                .await
                .map_err(|e| Error::unavailable(format!("cannot confirm leadership: {e}")))?;
            linearizer.read_log_id().index()
        } else {
            let mut client = self
                .pool
                .raft_client(&addr)
                .map_err(|e| Error::unavailable(e.to_string()))?;
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, client.read_index(crate::pb::raft::ReadIndexRequest {}))
                .await
                .map_err(|_| Error::unavailable("the leader did not confirm a read index in time"))?
                .map_err(|s| Error::unavailable(format!("read index from the leader: {}", s.message())))?
                .into_inner()
                .index
        };
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| Error::unavailable(format!("this node did not catch up in time: {e}")))?;
        Ok(())
    }

    /// This node's own status.
    pub fn local_status(&self) -> MemberStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voter = membership.voter_ids().any(|id| id == self.id);
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower if voter => "follower",
            ServerState::Follower | ServerState::Learner => "learner",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
        };
        // Clone under the lock, hash outside it, so apply is not held up by the digest.
        let (applied, state) = self.machine.read(|mc| (mc.last_applied, mc.state.clone()));
        MemberStatus {
            id: self.id,
            address: self.address.clone(),
            role: role.to_string(),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: applied.map_or(0, |l| l.index()),
            revision: state.revision(),
            digest: state.digest(),
            leader_id: m.current_leader.unwrap_or(0),
            voter,
            snapshot_index: m.snapshot.map_or(0, |l| l.index()),
            purged_index: m.purged.map_or(0, |l| l.index()),
            error: String::new(),
        }
    }

    /// Every member (voters and learners) with its address, from the membership this node has.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        let m = self.raft.metrics().borrow_watched().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// The leader this node knows of right now, with its address (no waiting).
    pub fn known_leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// The leader's address if another node leads, so a membership change can be sent there.
    pub async fn leader_elsewhere(&self) -> Result<Option<String>> {
        let (leader, addr) = self.leader(Instant::now() + WRITE_TIMEOUT).await?;
        Ok((leader != self.id).then_some(addr))
    }

    /// Adds a learner and waits (up to a minute) until it has caught up.
    pub async fn add_learner(&self, id: NodeId, address: String) -> Result<()> {
        if id == 0 {
            return Err(Error::invalid("node id must be 1 or more"));
        }
        crate::node::config::parse_initial_cluster(&format!("{id}={address}"))?;
        if self.members().contains_key(&id) {
            return Err(Error::AlreadyExists(format!("node {id} is already a member")));
        }
        let fut = self.raft.add_learner(id, BasicNode { addr: address }, true);
        match tokio::time::timeout(Duration::from_secs(60), fut).await {
            Err(_) => Err(Error::Timeout(format!(
                "node {id} was added as a learner but has not caught up within a minute"
            ))),
            Ok(r) => r.map(|_| ()).map_err(membership_error),
        }
    }

    /// Makes a learner a voter.
    pub async fn promote(&self, id: NodeId) -> Result<()> {
        let members = self.members();
        if !members.contains_key(&id) {
            return Err(Error::NotFound(format!(
                "node {id} is not a member; add it as a learner first"
            )));
        }
        let ids: BTreeSet<NodeId> = [id].into();
        self.change(ChangeMembers::AddVoterIds(ids)).await
    }

    /// Removes a member, voter or learner.
    pub async fn remove(&self, id: NodeId) -> Result<()> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == id);
        if !self.members().contains_key(&id) {
            return Err(Error::NotFound(format!("node {id} is not a member")));
        }
        let ids: BTreeSet<NodeId> = [id].into();
        if is_voter {
            if membership.voter_ids().count() == 1 {
                return Err(Error::FailedPrecondition("cannot remove the last voter".into()));
            }
            self.change(ChangeMembers::RemoveVoters(ids.clone())).await?;
        }
        self.change(ChangeMembers::RemoveNodes(ids)).await
    }

    async fn change(&self, change: ChangeMembers<NodeId, BasicNode>) -> Result<()> {
        match tokio::time::timeout(
            Duration::from_secs(30),
            self.raft.change_membership(change, false),
        )
        .await
        {
            Err(_) => Err(Error::Timeout(
                "membership change not committed within 30s".into(),
            )),
            Ok(r) => r.map(|_| ()).map_err(membership_error),
        }
    }
}

fn membership_error(
    e: RaftError<crate::raft::TypeConfig, ClientWriteError<crate::raft::TypeConfig>>,
) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            Error::unavailable("the leader changed during the membership change; retry")
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::FailedPrecondition(e.to_string())
        }
        other => Error::unavailable(other.to_string()),
    }
}
