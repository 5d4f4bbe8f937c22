//! Seeding an empty data directory with a state, as a member of a new cluster: the state as
//! the snapshot on disk at a given Raft position with the new membership, the log empty
//! behind it, and the vote in the position's term (so the new cluster's first leader is
//! elected in a later term, and terms in the log only grow). Used by backup restore.

use std::io;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftLogStorage;
use openraft::vote::RaftLeaderIdExt;
use openraft::{BasicNode, Membership};

use crate::error::{Error, Result};
use crate::raft::{LogId, NodeId, SnapshotMeta, StoredMembership, TypeConfig, Vote};
use crate::store::backend::Backend;
use crate::store::{LogStore, SledBackend};

/// A Raft log position: the last entry a state includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub term: u64,
    pub leader: NodeId,
    pub index: u64,
}

impl Position {
    /// Where a state taken after applying `log_id` stands.
    pub(crate) fn of(log_id: &LogId) -> Position {
        Position {
            term: log_id.committed_leader_id().term,
            leader: log_id.committed_leader_id().node_id,
            index: log_id.index(),
        }
    }

    fn log_id(self) -> LogId {
        type LeaderId = <TypeConfig as openraft::RaftTypeConfig>::LeaderId;
        LogId::new(LeaderId::new_committed(self.term, self.leader), self.index)
    }
}

/// Seeds `data_dir` (which must hold no node's data) as a member of `members` with `state` (an
/// encoded state whose digest is `digest`) at `at`.
pub(crate) async fn seed(
    data_dir: &Path,
    at: Position,
    members: &[(NodeId, String)],
    state: Vec<u8>,
    digest: String,
) -> Result<()> {
    let raft_dir = data_dir.join("raft");
    if raft_dir.exists() {
        return Err(Error::FailedPrecondition(format!(
            "{} already holds a node's data; restore into an empty directory",
            data_dir.display()
        )));
    }
    let disk =
        |what: &str, e: io::Error| Error::Unavailable(format!("{what} in {}: {e}", data_dir.display()));
    std::fs::create_dir_all(data_dir).map_err(|e| disk("creating the data directory", e))?;
    let backend = Arc::new(SledBackend::open(&raft_dir).map_err(|e| disk("opening storage", e))?);
    let log_id = at.log_id();
    let nodes: std::collections::BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    let voters = nodes.keys().copied().collect();
    let membership = Membership::new(vec![voters], nodes).map_err(|e| Error::invalid(e.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
    };
    crate::store::state_machine::seed_snapshot(backend.as_ref(), meta, state, digest)
        .map_err(|e| disk("writing the snapshot", e))?;
    let mut log = LogStore::new(backend.clone()).map_err(|e| disk("opening the log", e))?;
    log.purge(log_id).await.map_err(|e| disk("writing the log", e))?;
    log.save_committed(Some(log_id))
        .await
        .map_err(|e| disk("writing the log", e))?;
    log.save_vote(&Vote::new(at.term, at.leader))
        .await
        .map_err(|e| disk("writing the vote", e))?;
    backend.flush().map_err(|e| disk("flushing", e))?;
    Ok(())
}
