//! Reads: the linearizable read barrier (ReadIndex, through the leader when this node follows)
//! and waiting until this node has applied a revision.

use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::ReadPolicy;

use crate::error::{Error, Result};
use crate::node::peer::Rpc;
use crate::node::{Leader, Node};

/// How long a linearizable read may wait for the leader and for this node to catch up.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl Node {
    /// Waits until this node's applied state reflects every write acknowledged before the call.
    /// `serializable` skips the read index, but not the node's own check that it can vouch for
    /// its data: a removed, cut-off or failed member refuses, and one behind the leader's commit
    /// catches up first, so a serializable read is at most a few seconds stale, never
    /// indefinitely.
    pub async fn read_barrier(&self, serializable: bool) -> Result<()> {
        if serializable {
            return self.admit_reader().await;
        }
        let deadline = Instant::now() + READ_TIMEOUT;
        let index = match self.leader(deadline).await? {
            Leader::Here => self.read_index().await?,
            Leader::At(addr) => {
                let index: Result<u64> = self.peers().call(&addr, Rpc::ReadIndex, &(), deadline).await?;
                index?
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft()
            .wait(Some(left))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| Error::unavailable(format!("this node did not catch up in time: {e}")))?;
        Ok(())
    }

    /// The leader's confirmed read index (this node must lead).
    pub async fn read_index(&self) -> Result<u64> {
        let linearizer = self
            .raft()
            .get_read_linearizer(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| Error::unavailable(format!("cannot confirm leadership: {e}")))?;
        Ok(linearizer.read_log_id().index())
    }

    /// Waits (up to `timeout`) until this node has applied `revision`.
    pub async fn wait_for_revision(&self, revision: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut metrics = self.raft().metrics();
        loop {
            if self.revision() >= revision {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!(
                    "this node is at revision {}, behind the requested {revision}",
                    self.revision()
                )));
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), metrics.changed()).await;
        }
    }
}
