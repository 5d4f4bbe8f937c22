//! The `switchyard.v1.Cluster` service: every member's status (gathered by the node asked) and
//! membership changes (carried out by the leader; a follower passes them on).

use std::sync::Arc;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::api::convert;
use crate::node::{MemberStatus, Node, STATUS_TIMEOUT};
use crate::pb::v1 as pb;
use crate::pb::v1::cluster_client::ClusterClient;
use crate::pb::v1::cluster_server::Cluster;

/// The cluster service of one node.
pub struct ClusterApi {
    node: Arc<Node>,
}

impl ClusterApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ClusterApi { node }
    }

    fn client(&self, addr: &str) -> Result<ClusterClient<Channel>, Status> {
        self.node
            .pool()
            .get(addr)
            .map(ClusterClient::new)
            .map_err(|e| Status::unavailable(format!("{addr}: {e}")))
    }

    async fn status(&self) -> pb::StatusResponse {
        let own = self.node.local_status();
        let mut members = Vec::new();
        for (id, addr) in self.node.members() {
            if id == own.id {
                members.push(convert::member(&own));
                continue;
            }
            let asked = async {
                let mut c = self.client(&addr)?;
                tokio::time::timeout(STATUS_TIMEOUT, c.local_status(pb::LocalStatusRequest {}))
                    .await
                    .map_err(|_| Status::deadline_exceeded("no answer within 1s"))?
            };
            members.push(match asked.await {
                Ok(r) => r.into_inner(),
                Err(s) => convert::member(&MemberStatus {
                    id,
                    address: addr,
                    role: "unreachable".into(),
                    error: s.message().to_string(),
                    ..Default::default()
                }),
            });
        }
        pb::StatusResponse {
            members,
            leader_id: own.leader_id,
        }
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
        Ok(Response::new(convert::member(&self.node.local_status())))
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
        if let Some(leader) = self.node.leader_elsewhere().await? {
            return self.client(&leader)?.add_learner(req).await;
        }
        self.node.add_learner(req.id, req.address).await?;
        Ok(Response::new(pb::MembershipResponse {
            status: Some(ClusterApi::status(self).await),
        }))
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = request.into_inner();
        if let Some(leader) = self.node.leader_elsewhere().await? {
            return self.client(&leader)?.promote(req).await;
        }
        self.node.promote(req.id).await?;
        Ok(Response::new(pb::MembershipResponse {
            status: Some(ClusterApi::status(self).await),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = request.into_inner();
        if let Some(leader) = self.node.leader_elsewhere().await? {
            return self.client(&leader)?.remove_member(req).await;
        }
        self.node.remove(req.id).await?;
        Ok(Response::new(pb::MembershipResponse {
            status: Some(ClusterApi::status(self).await),
        }))
    }
}
