//! Membership changes: adding a learner, promoting it to voter, removing a member, handing
//! leadership to another voter. They are made by the leader; a follower asked for one passes it
//! to the leader over the internal service, as it does a write.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::node::peer::Rpc;
use crate::node::{Leader, Node};
use crate::raft::NodeId;

/// How long adding a learner may wait for it to catch up.
const LEARNER_CATCH_UP: Duration = Duration::from_secs(60);
/// How long a membership change may take to commit.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a leadership transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// A membership change, as passed to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    /// Add a non-voting member at an address, and wait until it has caught up.
    AddLearner {
        /// Its id.
        id: NodeId,
        /// Its `host:port`.
        address: String,
    },
    /// Make a learner a voter.
    Promote {
        /// Its id.
        id: NodeId,
    },
    /// Remove a member, voter or learner.
    Remove {
        /// Its id.
        id: NodeId,
    },
    /// Hand leadership to a voter (none: the most caught-up one), and wait until another
    /// node leads.
    TransferLeader {
        /// The voter to lead next.
        to: Option<NodeId>,
    },
}

impl Node {
    /// Makes `change` on the leader, wherever it is.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<()> {
        let deadline = Instant::now() + LEARNER_CATCH_UP + CHANGE_TIMEOUT;
        match self.leader(Instant::now() + Duration::from_secs(5)).await? {
            Leader::Here => self.change_membership_here(change).await,
            Leader::At(addr) => {
                let answer: Result<()> = self
                    .peers()
                    .call(&addr, Rpc::ChangeMembership, &change, deadline)
                    .await?;
                answer
            }
        }
    }

    /// Makes `change` on this node, which must lead.
    pub async fn change_membership_here(&self, change: MembershipChange) -> Result<()> {
        match change {
            MembershipChange::AddLearner { id, address } => self.add_learner(id, address).await,
            MembershipChange::Promote { id } => self.promote(id).await,
            MembershipChange::Remove { id } => self.remove(id).await,
            MembershipChange::TransferLeader { to } => self.transfer_leader_here(to, TRANSFER_TIMEOUT).await,
        }
    }

    /// Hands this node's leadership to `to` (none: the voter whose log matches the leader's
    /// furthest), then waits up to `within` until another node leads. The target campaigns at
    /// once and the other voters stop honouring this leader's lease, so the cluster is without
    /// a leader for about one round trip and a vote instead of an election timeout.
    pub(crate) async fn transfer_leader_here(&self, to: Option<NodeId>, within: Duration) -> Result<()> {
        let m = self.raft().metrics().borrow_watched().clone();
        if !self.is_leader() {
            return Err(Error::unavailable("this node does not lead"));
        }
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        let to = match to {
            Some(id) if id == self.id() => return Ok(()),
            Some(id) if !voters.contains(&id) => {
                return Err(Error::FailedPrecondition(format!(
                    "node {id} is not a voter; only a voter can lead"
                )))
            }
            Some(id) => id,
            None => {
                let matched = |id: &NodeId| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map_or(0, |l| l.index())
                };
                voters
                    .iter()
                    .filter(|id| **id != self.id())
                    .max_by_key(|id| matched(id))
                    .copied()
                    .ok_or_else(|| Error::FailedPrecondition("there is no other voter to lead".into()))?
            }
        };
        tracing::info!(to, "handing leadership over");
        self.raft()
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| Error::unavailable(format!("the Raft core stopped: {e}")))?;
        let me = self.id();
        self.raft()
            .wait(Some(within))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "another node leads",
            )
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "node {to} did not take over within {within:?}; this node may still lead"
                ))
            })?;
        Ok(())
    }

    async fn add_learner(&self, id: NodeId, address: String) -> Result<()> {
        if id == 0 {
            return Err(Error::invalid("node id must be 1 or more"));
        }
        crate::node::config::parse_initial_cluster(&format!("{id}={address}"))?;
        if self.members().contains_key(&id) {
            return Err(Error::AlreadyExists(format!("node {id} is already a member")));
        }
        let fut = self.raft().add_learner(id, BasicNode { addr: address }, true);
        match tokio::time::timeout(LEARNER_CATCH_UP, fut).await {
            Err(_) => Err(Error::Timeout(format!(
                "node {id} was added as a learner but has not caught up within {LEARNER_CATCH_UP:?}"
            ))),
            Ok(r) => r.map(|_| ()).map_err(membership_error),
        }
    }

    async fn promote(&self, id: NodeId) -> Result<()> {
        if !self.members().contains_key(&id) {
            return Err(Error::NotFound(format!(
                "node {id} is not a member; add it as a learner first"
            )));
        }
        self.change(ChangeMembers::AddVoterIds([id].into())).await
    }

    async fn remove(&self, id: NodeId) -> Result<()> {
        let m = self.raft().metrics().borrow_watched().clone();
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
            // One change: a removed voter is not kept as a learner (`change` does not retain).
            // A leader removing itself steps down once it is committed.
            return self.change(ChangeMembers::RemoveVoters(ids)).await;
        }
        self.change(ChangeMembers::RemoveNodes(ids)).await
    }

    async fn change(&self, change: ChangeMembers<NodeId, BasicNode>) -> Result<()> {
        match tokio::time::timeout(CHANGE_TIMEOUT, self.raft().change_membership(change, false)).await {
            Err(_) => Err(Error::Timeout(format!(
                "membership change not committed within {CHANGE_TIMEOUT:?}"
            ))),
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
