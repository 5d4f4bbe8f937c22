//! The `switchyard.v1.Cluster` service: every member's status (gathered by the node asked) and
//! membership changes (made by the leader; the node asked passes them on).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::node::membership::MembershipChange;
use crate::node::{MemberStatus, Node};
use crate::pb::v1 as pb;
use crate::pb::v1::cluster_server::Cluster;

/// Backups one node streams at once (each holds a copy of the encoded state in memory).
const CONCURRENT_BACKUPS: usize = 2;
/// Bytes of state per backup message.
const BACKUP_CHUNK: usize = 1 << 20;

/// The cluster service of one node.
pub struct ClusterApi {
    node: Arc<Node>,
    backups: Arc<Semaphore>,
}

impl ClusterApi {
    /// The service for `node`.
    pub(crate) fn new(node: Arc<Node>) -> Self {
        ClusterApi {
            node,
            backups: Arc::new(Semaphore::new(CONCURRENT_BACKUPS)),
        }
    }

    /// Every member's status, as gathered by this node.
    pub(crate) async fn gather_status(&self) -> pb::StatusResponse {
        let members = self.node.cluster_status().await;
        pb::StatusResponse {
            members: members.iter().map(member).collect(),
            leader_id: self.node.known_leader().map_or(0, |(id, _)| id),
        }
    }

    async fn change(&self, change: MembershipChange) -> Result<Response<pb::MembershipResponse>, Status> {
        self.node.change_membership(change).await?;
        Ok(Response::new(pb::MembershipResponse {
            status: Some(self.gather_status().await),
        }))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    type BackupStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

    async fn backup(&self, _: Request<pb::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        let permit = self.backups.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{CONCURRENT_BACKUPS} backups are being taken from this node; try again when one is done"
            ))
        })?;
        let (header, data) = self.node.take_backup().await?;
        let header_json = serde_json::to_string(&header)
            .map_err(|e| Status::internal(format!("encoding the header: {e}")))?;
        let pieces = (0..data.len()).step_by(BACKUP_CHUNK).map(move |at| {
            pb::backup_chunk::Kind::Data(data[at..(at + BACKUP_CHUNK).min(data.len())].to_vec())
        });
        let chunks = std::iter::once(pb::backup_chunk::Kind::HeaderJson(header_json))
            .chain(pieces)
            .map(move |kind| {
                // The permit is held until the last piece is taken.
                let _held = &permit;
                Ok(pb::BackupChunk { kind: Some(kind) })
            });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.gather_status().await))
    }

    async fn local_status(
        &self,
        _: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::MemberStatus>, Status> {
        Ok(Response::new(member(&self.node.local_status())))
    }

    async fn leader(&self, _: Request<pb::LeaderRequest>) -> Result<Response<pb::LeaderResponse>, Status> {
        let (leader_id, address) = self.node.known_leader().unwrap_or_default();
        Ok(Response::new(pb::LeaderResponse { leader_id, address }))
    }

    async fn members(&self, _: Request<pb::MembersRequest>) -> Result<Response<pb::MembersResponse>, Status> {
        let members = self
            .node
            .membership()
            .into_iter()
            .map(|(id, address, voter)| pb::Member { id, address, voter })
            .collect();
        let leader_id = self.node.known_leader().map_or(0, |(id, _)| id);
        Ok(Response::new(pb::MembersResponse { members, leader_id }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = request.into_inner();
        self.change(MembershipChange::AddLearner {
            id: req.id,
            address: req.address,
        })
        .await
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.change(MembershipChange::Promote {
            id: request.into_inner().id,
        })
        .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.change(MembershipChange::Remove {
            id: request.into_inner().id,
        })
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let to = request.into_inner().to;
        self.change(MembershipChange::TransferLeader {
            to: (to != 0).then_some(to),
        })
        .await
    }
}

/// A member status for the wire.
fn member(m: &MemberStatus) -> pb::MemberStatus {
    pb::MemberStatus {
        id: m.id,
        address: m.address.clone(),
        role: m.role.clone(),
        term: m.term,
        last_log_index: m.last_log_index,
        applied_index: m.applied_index,
        revision: m.revision,
        digest: m.digest.clone(),
        leader_id: m.leader_id,
        voter: m.voter,
        snapshot_index: m.snapshot_index,
        purged_index: m.purged_index,
        error: m.error.clone(),
    }
}
