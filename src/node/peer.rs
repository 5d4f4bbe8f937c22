//! Calls to other members' internal service (`switchyard.raft.v1`), other than Raft's own
//! (those are in [`crate::raft::network`]): one place that takes the pooled channel, encodes the
//! request, bounds the call by its deadline, keeps the answer's gRPC code, and decodes it.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pb::raft::Payload;
use crate::raft::network::ChannelPool;
use crate::raft::{decode, encode};

/// The internal calls a node makes of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    /// A write proposed by the leader for the caller.
    Forward,
    /// Lease keepalives renewed by the leader.
    KeepAlive,
    /// A member's rollout reports about a feature.
    Reports,
    /// A membership change made by the leader.
    ChangeMembership,
    /// A member's own status.
    MemberStatus,
    /// The leader's confirmed read index.
    ReadIndex,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::Forward => "forwarding the write",
            Rpc::KeepAlive => "renewing leases",
            Rpc::Reports => "collecting rollout reports",
            Rpc::ChangeMembership => "changing the membership",
            Rpc::MemberStatus => "asking its status",
            Rpc::ReadIndex => "confirming a read index",
        }
    }
}

/// Other members, reached over the node's pooled peer channels.
#[derive(Clone)]
pub(crate) struct Peers {
    pool: ChannelPool,
}

impl Peers {
    /// Peers over `pool` (shared with the Raft network).
    pub(crate) fn new(pool: ChannelPool) -> Peers {
        Peers { pool }
    }

    /// Calls `rpc` at `addr` with `req`, answered by `deadline`: the decoded answer, or the
    /// error with the code the peer answered (`UNAVAILABLE` when it could not be reached,
    /// `DEADLINE_EXCEEDED` when it did not answer in time).
    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        rpc: Rpc,
        req: &Req,
        deadline: Instant,
    ) -> Result<Resp> {
        let mut client = self
            .pool
            .raft_client(addr)
            .map_err(|e| Error::unavailable(format!("member at {addr}: {e}")))?;
        let payload = Payload {
            data: encode(req).map_err(Error::internal)?,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let call = async {
            match rpc {
                Rpc::Forward => client.forward(payload).await,
                Rpc::KeepAlive => client.keep_alive(payload).await,
                Rpc::Reports => client.reports(payload).await,
                Rpc::ChangeMembership => client.change_membership(payload).await,
                Rpc::MemberStatus => client.member_status(payload).await,
                Rpc::ReadIndex => client.read_index(payload).await,
            }
        };
        let answer = tokio::time::timeout(left.max(Duration::from_millis(1)), call)
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "the member at {addr} did not answer in time ({})",
                    rpc.name()
                ))
            })?
            .map_err(|status| match Error::from_status(&status) {
                // A peer's transport failing is a reason to retry elsewhere, whatever tonic
                // called it.
                e if e.is_retryable() => Error::unavailable(format!(
                    "{} at the member at {addr}: {}",
                    rpc.name(),
                    status.message()
                )),
                e => e,
            })?;
        decode(&answer.into_inner().data).map_err(Error::internal)
    }
}
