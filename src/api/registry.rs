//! The `switchyard.v1.Registry` service: leases (grant, keepalive stream, revoke) and the
//! instances registered under them.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::api::convert;
use crate::error::Error;
use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::v1::registry_server::Registry;
use crate::state::command::{Command, Outcome};

/// Keepalive responses buffered per stream before the holder must read them.
const KEEPALIVE_BUFFER: usize = 16;

/// The registry service of one node.
pub struct RegistryApi {
    node: Arc<Node>,
}

impl RegistryApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        RegistryApi { node }
    }
}

#[tonic::async_trait]
impl Registry for RegistryApi {
    async fn grant_lease(
        &self,
        request: Request<pb::GrantLeaseRequest>,
    ) -> Result<Response<pb::GrantLeaseResponse>, Status> {
        let req = request.into_inner();
        let cmd = Command::GrantLease { ttl_ms: req.ttl_ms };
        let applied = self.node.write(convert::request(req.write, cmd)?).await?;
        match applied.outcome {
            Outcome::Lease(l) => {
                // Start the countdown now, not at the leader's next expiry tick.
                let _ = self.node.keepalive(vec![l.id]).await;
                Ok(Response::new(pb::GrantLeaseResponse {
                    lease_id: l.id,
                    ttl_ms: l.ttl_ms,
                    revision: applied.revision,
                }))
            }
            other => Err(Error::internal(format!("unexpected outcome {other:?}")).into()),
        }
    }

    async fn revoke_lease(
        &self,
        request: Request<pb::RevokeLeaseRequest>,
    ) -> Result<Response<pb::RevokeLeaseResponse>, Status> {
        let req = request.into_inner();
        let cmd = Command::RevokeLease {
            lease: req.lease_id,
            expired: false,
        };
        let applied = self.node.write(convert::request(req.write, cmd)?).await?;
        let removed_instances = match applied.outcome {
            Outcome::Revoked(ids) => ids,
            _ => Vec::new(),
        };
        Ok(Response::new(pb::RevokeLeaseResponse {
            revision: applied.revision,
            removed_instances,
        }))
    }

    type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::KeepAliveResponse, Status>> + Send>>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let mut input = request.into_inner();
        let node = self.node.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVE_BUFFER);
        tokio::spawn(async move {
            while let Some(msg) = input.next().await {
                let Ok(msg) = msg else { break };
                let reply = match node.keepalive(vec![msg.lease_id]).await {
                    Ok(ttls) => match ttls.first() {
                        Some((id, Some(ttl))) => Ok(pb::KeepAliveResponse {
                            lease_id: *id,
                            ttl_ms: *ttl,
                            server_time_ms: crate::clock::now_ms(),
                        }),
                        _ => Err(Status::not_found(format!(
                            "lease {} does not exist (expired or revoked); grant a new one and register again",
                            msg.lease_id
                        ))),
                    },
                    Err(e) => Err(Status::from(e)),
                };
                let last = reply.is_err();
                // A holder that stops reading fills the buffer; then this task waits, bounded.
                if tx.send(reply).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = request.into_inner();
        let spec = convert::instance_spec(
            req.instance
                .ok_or_else(|| Error::invalid("the request carries no instance"))?,
        );
        spec.validate()?;
        let cmd = Command::Register {
            instance: spec,
            lease: req.lease_id,
        };
        let applied = self.node.write(convert::request(req.write, cmd)?).await?;
        match applied.outcome {
            Outcome::Instance(i) => Ok(Response::new(pb::RegisterResponse {
                instance: Some(convert::instance(&i)),
                revision: applied.revision,
            })),
            other => Err(Error::internal(format!("unexpected outcome {other:?}")).into()),
        }
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let req = request.into_inner();
        let cmd = Command::Deregister {
            instance: req.instance_id,
        };
        let applied = self.node.write(convert::request(req.write, cmd)?).await?;
        Ok(Response::new(pb::DeregisterResponse {
            revision: applied.revision,
        }))
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let req = request.into_inner();
        self.node.read_barrier(convert::serializable(&req.read)).await?;
        let (instances, revision) = self.node.read_state(|m| {
            let registry = m.state.registry();
            let matches = |i: &&crate::state::registry::Instance| {
                req.labels.iter().all(|(k, v)| i.spec.labels.get(k) == Some(v))
            };
            let list: Vec<pb::Instance> = if req.service.is_empty() {
                registry
                    .instances()
                    .filter(matches)
                    .map(convert::instance)
                    .collect()
            } else {
                registry
                    .instances_of(&req.service)
                    .filter(matches)
                    .map(convert::instance)
                    .collect()
            };
            (list, m.state.revision())
        });
        Ok(Response::new(pb::ListInstancesResponse { instances, revision }))
    }
}
