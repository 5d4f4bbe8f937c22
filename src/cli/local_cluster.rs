//! `switchyard local-cluster`: a 3-node (or N-node) cluster in one process on consecutive
//! loopback ports, for trying Switchyard on one machine.

use std::path::PathBuf;

use anyhow::Context;

use crate::server::LocalCluster;

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
    /// Serve each node's HTTP listener (metrics, health, OFREP, the console at /ui/), node N
    /// on PORT + N - 1 (default: not served).
    #[arg(long, visible_alias = "http-base-port", value_name = "PORT")]
    pub metrics_base_port: Option<u16>,
}

/// Starts the nodes and serves until interrupted.
pub async fn run(args: &LocalClusterArgs) -> anyhow::Result<()> {
    let mut configs = LocalCluster::configs(args.nodes, &args.host, args.base_port, &args.data_dir)?;
    if let Some(base) = args.metrics_base_port {
        for c in &mut configs {
            let at = format!("{}:{}", args.host, base as u64 + c.id - 1);
            c.metrics_listen = Some(at.parse().with_context(|| format!("metrics address {at}"))?);
        }
    }
    let cluster = LocalCluster::start(configs).await?;
    let console = args.metrics_base_port.map_or(String::new(), |base| {
        format!(
            "  console: http://{}:{base}/ui/ (node N on port {base} + N - 1)\n\n",
            args.host
        )
    });
    eprintln!(
        "switchyard: {} nodes up; data in {}\n\n  export SWITCHYARD_ENDPOINTS={}\n  switchyard status\n\n{console}Ctrl-C stops the cluster.",
        args.nodes,
        args.data_dir.display(),
        cluster.endpoints().join(",")
    );
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping");
    cluster.shutdown().await;
    Ok(())
}
