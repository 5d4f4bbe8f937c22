//! The internal gRPC service peers call: Raft's vote, append-entries and chunked snapshot
//! install, plus write forwarding and the read index for followers. Garbage from a peer gets
//! an `InvalidArgument` status, never a panic.

use std::sync::Arc;

use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::node::membership::MembershipChange;
use crate::node::Node;
use crate::pb::raft::raft_server::Raft as RaftRpc;
use crate::pb::raft::{Payload, SnapshotChunk};
use crate::raft::{decode, encode, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::state::command::Request as Command;

/// Largest snapshot a node accepts.
const MAX_SNAPSHOT: usize = 1024 * 1024 * 1024;

/// The internal service of one node.
pub struct RaftService {
    node: Arc<Node>,
}

impl RaftService {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        RaftService { node }
    }
}

fn bad_payload(e: std::io::Error) -> Status {
    Status::invalid_argument(format!("undecodable internal message: {e}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    let data = encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Payload { data }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: VoteRequest<TypeConfig> = decode(&request.into_inner().data).map_err(bad_payload)?;
        let resp = self
            .node
            .raft()
            .vote(req)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        reply(&resp)
    }

    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: AppendEntriesRequest<TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_payload)?;
        let resp = self
            .node
            .raft()
            .append_entries(req)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // Accepted from the leader of the current term: this node is in contact with it.
        if !matches!(resp, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
            self.node.contact().heard_from_leader();
        }
        reply(&resp)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Payload>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let vote: Vote = decode(&first.vote).map_err(bad_payload)?;
        let meta: SnapshotMeta = decode(&first.meta).map_err(bad_payload)?;
        let mut data = first.data;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if data.len() + chunk.data.len() > MAX_SNAPSHOT {
                return Err(Status::resource_exhausted("snapshot exceeds the size limit"));
            }
            data.extend_from_slice(&chunk.data);
        }
        let resp = self
            .node
            .raft()
            .install_full_snapshot(vote, Snapshot { meta, snapshot: data })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.node.contact().heard_from_leader();
        reply(&resp)
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: Command = decode(&request.into_inner().data).map_err(bad_payload)?;
        let result = self.node.propose_here(req).await;
        // The commit stamp is not part of `Applied`'s encoding: it travels beside it.
        let committed_at_us = result.as_ref().map(|a| a.committed_at_us).unwrap_or(0);
        reply(&(result, committed_at_us))
    }

    async fn keep_alive(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let ids: Vec<u64> = decode(&request.into_inner().data).map_err(bad_payload)?;
        if !self.node.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        reply(&self.node.leases().renew(&self.node, &ids))
    }

    async fn reports(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let feature: String = decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&self.node.reports().for_feature(&feature, self.node.id()))
    }

    async fn read_index(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        reply(&self.node.read_index().await)
    }

    async fn change_membership(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let change: MembershipChange = decode(&request.into_inner().data).map_err(bad_payload)?;
        let result = if self.node.is_leader() {
            self.node.change_membership_here(change).await
        } else {
            Err(Error::unavailable("not the leader"))
        };
        reply(&result)
    }

    async fn member_status(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        reply(&self.node.local_status())
    }

    async fn transfer_leader(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: TransferLeaderRequest<TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_payload)?;
        let resp = self
            .node
            .raft()
            .handle_transfer_leader(req)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        reply(&resp)
    }
}
