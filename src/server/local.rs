//! A whole cluster in one process: `local-cluster`, the demo and in-process tests start their
//! nodes here. Each node has its own Raft, storage and listeners exactly as with `serve`; only
//! the process is shared.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::node::{Bootstrap, NodeConfig};
use crate::server::{start, RunningNode};

/// Nodes started together in this process.
pub struct LocalCluster {
    nodes: Vec<RunningNode>,
}

impl LocalCluster {
    /// Settings for `n` nodes forming one cluster on `host`, node N on `base_port + N - 1`,
    /// with data in `data_dir/nodeN`. Adjust them before [`LocalCluster::start`].
    pub fn configs(n: u64, host: &str, base_port: u16, data_dir: &Path) -> Result<Vec<NodeConfig>> {
        if !(1..=9).contains(&n) {
            return Err(Error::invalid("a local cluster has 1 to 9 nodes"));
        }
        let members: Vec<(u64, String)> = (1..=n)
            .map(|id| (id, format!("{host}:{}", base_port as u64 + id - 1)))
            .collect();
        members
            .iter()
            .map(|(id, addr)| {
                let listen = addr
                    .parse()
                    .map_err(|e| Error::invalid(format!("address {addr}: {e}")))?;
                let mut config = NodeConfig::single(*id, listen, data_dir.join(format!("node{id}")));
                config.bootstrap = Bootstrap::InitialCluster(members.clone());
                Ok(config)
            })
            .collect()
    }

    /// Starts every node (together: a restarted node may wait for its peers while it
    /// recovers) and waits until the cluster has a leader.
    pub async fn start(configs: Vec<NodeConfig>) -> Result<LocalCluster> {
        let starts = configs.into_iter().map(|c| {
            let id = c.id;
            async move {
                start(c)
                    .await
                    .map_err(|e| Error::Internal(format!("starting node {id}: {e}")))
            }
        });
        let nodes = futures::future::join_all(starts)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let cluster = LocalCluster { nodes };
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    async fn wait_for_leader(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.nodes.iter().all(|n| n.node.known_leader().is_none()) {
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!("no leader within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The nodes' client addresses, node 1 first.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.to_string()).collect()
    }

    /// The running nodes, node 1 first.
    pub fn nodes(&self) -> &[RunningNode] {
        &self.nodes
    }

    /// Stops every node (each within 5 s).
    pub async fn shutdown(self) {
        for node in self.nodes {
            let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
        }
    }
}
