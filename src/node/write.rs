//! Writes: proposed here when this node leads, forwarded to the leader otherwise, retried
//! across leader changes until [`WRITE_TIMEOUT`]. The answer comes only after a majority has
//! the entry on disk and it is applied.

use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};

use crate::error::{Error, Result};
use crate::node::peer::Rpc;
use crate::node::{Leader, Node};
use crate::state::command::{Applied, Request};

/// How long a write may take, forwarding and leader changes included.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

impl Node {
    /// Applies a write through the leader (see the module doc).
    pub async fn write(&self, req: Request) -> Result<Applied> {
        let started = Instant::now();
        let result = self.write_through_leader(req).await;
        self.metrics().observe_write(started.elapsed(), &result);
        result
    }

    async fn write_through_leader(&self, req: Request) -> Result<Applied> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            let attempt = match self.leader(deadline).await? {
                Leader::Here => self.propose_here(req.clone()).await,
                Leader::At(addr) => self.forward(&addr, &req, deadline).await,
            };
            match attempt {
                Err(Error::Unavailable(why)) => {
                    if Instant::now() >= deadline {
                        return Err(Error::Unavailable(why));
                    }
                    tracing::debug!(%why, "write not accepted; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Proposes a write on this node, which must be the leader. The leader's clock stamps it.
    pub async fn propose_here(&self, mut req: Request) -> Result<Applied> {
        req.proposed_at_ms = crate::clock::now_ms();
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft().client_write(req)).await {
            Err(_) => Err(Error::Timeout(format!(
                "the write was not committed within {WRITE_TIMEOUT:?}; it may still be applied"
            ))),
            Ok(Ok(resp)) => resp.data,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(Error::unavailable("this node is no longer the leader"))
            }
            Ok(Err(e)) => Err(Error::unavailable(e.to_string())),
        }
    }

    async fn forward(&self, addr: &str, req: &Request, deadline: Instant) -> Result<Applied> {
        // The commit stamp is not part of `Applied`'s encoding: it travels beside it.
        let (result, committed_at_us): (Result<Applied>, i64) =
            self.peers().call(addr, Rpc::Forward, req, deadline).await?;
        result.map(|applied| Applied {
            committed_at_us,
            ..applied
        })
    }
}
