//! The `switchyard.v1.Cluster` service: every member's status (gathered by the node asked) and
//! membership changes (made by the leader; the node asked passes them on).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::node::membership::MembershipChange;
use crate::node::{MemberStatus, Node};
use crate::pb::v1 as pb;
use crate::pb::v1::cluster_server::Cluster;

/// The cluster service of one node.
pub struct ClusterApi {
    node: Arc<Node>,
}

impl ClusterApi {
    /// The service for `node`.
    pub(crate) fn new(node: Arc<Node>) -> Self {
        ClusterApi { node }
    }

    async fn status(&self) -> pb::StatusResponse {
        let members = self.node.cluster_status().await;
        pb::StatusResponse {
            members: members.iter().map(member).collect(),
            leader_id: self.node.known_leader().map_or(0, |(id, _)| id),
        }
    }

    async fn change(&self, change: MembershipChange) -> Result<Response<pb::MembershipResponse>, Status> {
        self.node.change_membership(change).await?;
        Ok(Response::new(pb::MembershipResponse {
            status: Some(self.status().await),
        }))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(ClusterApi::status(self).await))
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
