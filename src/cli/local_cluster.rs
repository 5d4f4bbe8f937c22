//! `switchyard local-cluster`: a 3-node (or N-node) cluster in one process on consecutive
//! loopback ports, for trying Switchyard on one machine. Each node has its own Raft, storage
//! and gRPC server exactly as with `serve`; only the process is shared.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::node::{server, Bootstrap, NodeConfig};

/// Settings of `local-cluster`.
#[derive(Debug, clap::Args)]
pub struct LocalClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Port of node 1; node N listens on base-port + N - 1.
    #[arg(long, default_value_t = 7701)]
    pub base_port: u16,
    /// Host to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Parent directory of the nodes' data (node N in DIR/nodeN).
    #[arg(long, default_value = "./switchyard-data")]
    pub data_dir: PathBuf,
    /// Serve each node's Prometheus metrics, node N on PORT + N - 1 (default: not served).
    #[arg(long, value_name = "PORT")]
    pub metrics_base_port: Option<u16>,
}

/// Starts the nodes and serves until interrupted.
pub async fn run(args: &LocalClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=9).contains(&args.nodes), "--nodes must be 1 to 9");
    let addrs: Vec<(u64, String)> = (1..=args.nodes)
        .map(|id| (id, format!("{}:{}", args.host, args.base_port + id as u16 - 1)))
        .collect();
    let mut starts = Vec::new();
    for (id, addr) in &addrs {
        let mut config = NodeConfig::single(
            *id,
            addr.parse().with_context(|| format!("address {addr}"))?,
            args.data_dir.join(format!("node{id}")),
        );
        config.bootstrap = Bootstrap::InitialCluster(addrs.clone());
        if let Some(base) = args.metrics_base_port {
            let at = format!("{}:{}", args.host, base + *id as u16 - 1);
            config.metrics_listen = Some(at.parse().with_context(|| format!("metrics address {at}"))?);
        }
        let id = *id;
        starts.push(async move {
            server::start(config)
                .await
                .with_context(|| format!("starting node {id}"))
        });
    }
    // Started together: a restarted node may wait for its peers while it recovers.
    let running = futures::future::join_all(starts)
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let endpoints: Vec<&str> = addrs.iter().map(|(_, a)| a.as_str()).collect();
    eprintln!(
        "switchyard: {} nodes up; data in {}\n\n  export SWITCHYARD_ENDPOINTS={}\n  switchyard status\n\nCtrl-C stops the cluster.",
        args.nodes,
        args.data_dir.display(),
        endpoints.join(",")
    );
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping");
    for node in running {
        tokio::time::timeout(Duration::from_secs(5), node.shutdown())
            .await
            .ok();
    }
    Ok(())
}
