//! The `switchyard.v1.Registry` service: leases (grant, keepalive stream, revoke) and the
//! instances registered under them.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Caller, Role};
use crate::error::Error;
use crate::node::rollout::AppliedChange;
use crate::node::Node;
use crate::pb::convert;
use crate::pb::v1 as pb;
use crate::pb::v1::registry_server::Registry;
use crate::state::command::{Command, Outcome};

/// Keepalive responses buffered per stream before the holder must read them.
const KEEPALIVE_BUFFER: usize = 16;

/// Most applied changes one keepalive message may report.
pub const MAX_REPORTS_PER_MESSAGE: usize = 4_096;

/// Numbers keepalive streams, so reports from an instance's newer stream replace older ones.
static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// Records the convergence reports a keepalive message carries, after checking that the
/// instance is registered under the renewed lease.
fn record_reports(
    node: &Node,
    stream: u64,
    msg: &pb::KeepAliveRequest,
    reporter: &mut Option<String>,
) -> Result<(), Status> {
    if msg.instance_id.is_empty() {
        return Ok(());
    }
    if msg.applied.len() > MAX_REPORTS_PER_MESSAGE {
        return Err(Status::invalid_argument(format!(
            "a keepalive reports at most {MAX_REPORTS_PER_MESSAGE} applied changes"
        )));
    }
    let registered = node.read_state(|m| {
        m.state
            .registry()
            .instance(&msg.instance_id)
            .is_some_and(|i| i.lease == msg.lease_id)
    });
    if !registered {
        return Err(Status::failed_precondition(format!(
            "instance {:?} is not registered under lease {}; register it before reporting",
            msg.instance_id, msg.lease_id
        )));
    }
    if reporter.as_deref().is_some_and(|r| r != msg.instance_id) {
        return Err(Status::invalid_argument(
            "one keepalive stream reports for one instance; open a stream per instance",
        ));
    }
    *reporter = Some(msg.instance_id.clone());
    node.reports().record(
        stream,
        &msg.instance_id,
        msg.applied_revision,
        msg.applied.iter().map(|a| {
            (
                a.feature.as_str(),
                AppliedChange {
                    revision: a.revision,
                    late_ms: a.late_ms.max(0),
                    applied_at_ms: a.applied_at_ms,
                },
            )
        }),
    );
    Ok(())
}

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
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let cmd = Command::GrantLease {
            // Random, so no caller can guess another's lease (the top bit clear keeps ids
            // within what every client language reads as a signed 64-bit integer).
            id: (rand::random::<u64>() >> 1).max(1),
            ttl_ms: req.ttl_ms,
            owner: caller.identity.clone(),
        };
        let applied = self
            .node
            .write(convert::request(&caller, req.write, cmd)?)
            .await?;
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
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let cmd = Command::RevokeLease {
            lease: req.lease_id,
            expired: false,
            scope: caller.owner_scope(),
        };
        let applied = self
            .node
            .write(convert::request(&caller, req.write, cmd)?)
            .await?;
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
        let scope = Caller::of(&request).owner_scope();
        let mut input = request.into_inner();
        let node = self.node.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVE_BUFFER);
        let stream = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // The instance whose reports this stream carries (forgotten when it ends).
            let mut reporter: Option<String> = None;
            let mut stopping = node.stop_signal();
            loop {
                // A node shutting down ends the stream at once, so the holder moves its
                // keepalives to another node instead of holding up the shutdown.
                let msg = tokio::select! {
                    msg = input.next() => msg,
                    _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "this node is shutting down; keep the lease alive through another node",
                            )))
                            .await;
                        break;
                    }
                };
                let Some(Ok(msg)) = msg else { break };
                node.metrics().keepalives.inc();
                let owned = node.read_state(|m| {
                    m.state
                        .registry()
                        .owned_lease(msg.lease_id, scope.as_deref())
                        .map(|_| ())
                });
                if let Err(Error::PermissionDenied(why)) = owned {
                    let _ = tx.send(Err(Status::permission_denied(why))).await;
                    break;
                }
                let reply = match node.keepalive(vec![msg.lease_id]).await {
                    Ok(ttls) => match ttls.first() {
                        Some((id, Some(ttl))) => record_reports(&node, stream, &msg, &mut reporter).map(|()| {
                            pb::KeepAliveResponse {
                                lease_id: *id,
                                ttl_ms: *ttl,
                                server_time_ms: crate::clock::now_ms(),
                                server_time_us: crate::clock::now_us(),
                            }
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
            if let Some(instance) = reporter {
                node.reports().stream_ended(stream, &instance);
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
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let spec = convert::instance_spec(
            req.instance
                .ok_or_else(|| Error::invalid("the request carries no instance"))?,
        );
        spec.validate()?;
        if let Role::Service(own) = &caller.role {
            if *own != spec.service {
                return Err(Error::PermissionDenied(format!(
                    "permission register: a token of service {own:?} registers only instances of {own:?}, not of {:?}",
                    spec.service
                ))
                .into());
            }
        }
        let cmd = Command::Register {
            instance: spec,
            lease: req.lease_id,
            scope: caller.owner_scope(),
        };
        let applied = self
            .node
            .write(convert::request(&caller, req.write, cmd)?)
            .await?;
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
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let cmd = Command::Deregister {
            instance: req.instance_id,
            scope: caller.owner_scope(),
        };
        let applied = self
            .node
            .write(convert::request(&caller, req.write, cmd)?)
            .await?;
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
