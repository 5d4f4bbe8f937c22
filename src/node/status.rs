//! Status: this member's own view (role, term, log, applied index, revision, digest), every
//! member's (asked over the internal service), the members and leader this node knows, and the
//! state gauges its metrics show.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use crate::metrics::StateGauges;
use crate::node::peer::Rpc;
use crate::node::{rollout, Node};
use crate::raft::NodeId;

/// How long a peer has to answer a status query.
pub(crate) const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// One member's view of itself, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

impl Node {
    /// This node's own status.
    pub fn local_status(&self) -> MemberStatus {
        let m = self.raft().metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voter = membership.voter_ids().any(|id| id == self.id);
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower if voter => "follower",
            ServerState::Follower | ServerState::Learner => "learner",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
        };
        // The digest of an applied index already hashed; else clone under the lock and hash
        // outside it, so apply is not held up by the digest.
        let (applied, revision) = self.read_state(|mc| (mc.last_applied, mc.state.revision()));
        let index = applied.map_or(0, |l| l.index());
        let cached = self
            .digest
            .lock()
            .as_ref()
            .filter(|(at, _)| *at == index)
            .map(|(_, d)| d.clone());
        let (applied, revision, digest) = match cached {
            Some(d) => (applied, revision, d),
            None => {
                let (applied, state) = self.read_state(|mc| (mc.last_applied, mc.state.clone()));
                let digest = state.digest();
                *self.digest.lock() = Some((applied.map_or(0, |l| l.index()), digest.clone()));
                (applied, state.revision(), digest)
            }
        };
        MemberStatus {
            id: self.id,
            address: self.address.clone(),
            role: role.to_string(),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: applied.map_or(0, |l| l.index()),
            revision,
            digest,
            leader_id: m.current_leader.unwrap_or(0),
            voter,
            snapshot_index: m.snapshot.map_or(0, |l| l.index()),
            purged_index: m.purged.map_or(0, |l| l.index()),
            error: String::new(),
        }
    }

    /// Every member's status, asked in parallel; a member that does not answer within
    /// [`STATUS_TIMEOUT`] is listed as unreachable, with why.
    pub async fn cluster_status(&self) -> Vec<MemberStatus> {
        let voters: std::collections::BTreeSet<NodeId> = self
            .raft()
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let voters = &voters;
        let asks = self.members().into_iter().map(|(id, address)| async move {
            if id == self.id {
                return self.local_status();
            }
            let deadline = Instant::now() + STATUS_TIMEOUT;
            match self
                .peers()
                .call(&address, Rpc::MemberStatus, &(), deadline)
                .await
            {
                Ok(s) => s,
                Err(e) => MemberStatus {
                    id,
                    address,
                    role: "unreachable".into(),
                    error: e.to_string(),
                    // As this node knows the membership: the member cannot say.
                    voter: voters.contains(&id),
                    ..Default::default()
                },
            }
        });
        futures::future::join_all(asks).await
    }

    /// Every member's rollout reports about `feature`, and the members that could not be asked.
    pub async fn collect_reports(&self, feature: &str) -> (Vec<rollout::Report>, Vec<NodeId>) {
        let asks = self.members().into_iter().map(|(id, addr)| async move {
            if id == self.id {
                return Ok(self.reports().for_feature(feature, id));
            }
            let deadline = Instant::now() + STATUS_TIMEOUT;
            self.peers()
                .call::<_, Vec<rollout::Report>>(&addr, Rpc::Reports, &feature.to_string(), deadline)
                .await
                .map_err(|e| {
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

    /// Every member (voters and learners) with its address, from the membership this node has.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        let m = self.raft().metrics().borrow_watched().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// Every member (id, address, whether it votes) in this node's copy of the membership.
    pub fn membership(&self) -> Vec<(NodeId, String, bool)> {
        let m = self.raft().metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone(), voters.contains(id)))
            .collect()
    }

    /// Admits one more stream (a watch, a flagd or OFREP event stream), or sheds it with
    /// `UNAVAILABLE` naming the other members, learners first (they are there to serve them).
    pub(crate) fn admit_stream(&self) -> crate::error::Result<crate::watch::hub::StreamSlot> {
        self.hub().admit(|| {
            let mut others: Vec<(NodeId, String, bool)> = self
                .membership()
                .into_iter()
                .filter(|(id, _, _)| *id != self.id())
                .collect();
            others.sort_by_key(|(_, _, voter)| *voter);
            let names: Vec<String> = others.into_iter().map(|(_, address, _)| address).collect();
            if names.is_empty() {
                "none: this is the only member".into()
            } else {
                names.join(", ")
            }
        })
    }

    /// The leader this node knows of right now, with its address (no waiting).
    pub fn known_leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft().metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// The state the metrics show, read now.
    pub fn state_gauges(&self) -> StateGauges {
        let m = self.raft().metrics().borrow_watched().clone();
        let (revision, leases, instances, features, pending) = self.read_state(|s| {
            let s = &s.state;
            (
                s.revision(),
                s.registry().leases().count(),
                s.registry().instances().count(),
                s.features().count(),
                s.pending().count(),
            )
        });
        StateGauges {
            revision,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index()),
            is_leader: self.is_leader(),
            lost_contact: self.contact().is_lost(),
            leases,
            instances,
            features,
            pending_activations: pending,
            events_published: self.hub().published(),
            watch_streams: self.hub().open_streams(),
        }
    }
}
