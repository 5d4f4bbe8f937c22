//! `switchyard serve`: run one node until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::auth::limits::LimitConfig;
use crate::node::config::parse_initial_cluster;
use crate::node::{Bootstrap, NodeConfig};
use crate::server;
use crate::tls::NodeTls;

/// Settings of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// This node's id.
    #[arg(long, env = "SWITCHYARD_ID", default_value_t = 1)]
    pub id: u64,
    /// Address to listen on.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: std::net::SocketAddr,
    /// Address others reach this node at (default: --listen).
    #[arg(long, env = "SWITCHYARD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Where to keep the Raft log and snapshots.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./switchyard-data")]
    pub data_dir: PathBuf,
    /// Members of a new cluster: ID=HOST:PORT,... (default: this node alone).
    #[arg(long, env = "SWITCHYARD_INITIAL_CLUSTER", conflicts_with = "join")]
    pub initial_cluster: Option<String>,
    /// Start empty and wait to be added with `member add-learner`.
    #[arg(long, env = "SWITCHYARD_JOIN")]
    pub join: bool,
    /// Build a snapshot and purge the log every this many entries.
    #[arg(long, env = "SWITCHYARD_SNAPSHOT_EVERY", default_value_t = 100_000)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot.
    #[arg(long, env = "SWITCHYARD_KEEP_LOGS", default_value_t = 5_000)]
    pub keep_logs: u64,
    /// Leader heartbeat interval, ms.
    #[arg(long, env = "SWITCHYARD_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Minimum election timeout, ms (the maximum is 1.5 times this). A lost leader is replaced
    /// after max + a random timeout between min and max (a follower keeps its vote for the
    /// old leader for the max, as a leader lease): 625-750 ms at the default. Raise both on a
    /// slow or congested network.
    #[arg(long, env = "SWITCHYARD_ELECTION_TIMEOUT_MS", default_value_t = 250)]
    pub election_timeout_ms: u64,
    /// Serve HTTP at ADDR (e.g. 127.0.0.1:9700): Prometheus metrics (/metrics), health
    /// (/livez, /readyz), OFREP (/ofrep/v1/) and the operator console (/ui/).
    #[arg(
        long,
        visible_alias = "http-listen",
        env = "SWITCHYARD_METRICS_LISTEN",
        value_name = "ADDR"
    )]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Streams (watches, flagd and OFREP event streams) this node serves at once; past it,
    /// new ones are shed with UNAVAILABLE naming the other members (SDKs move on to their
    /// next choice).
    #[arg(long, env = "SWITCHYARD_MAX_WATCHES", default_value_t = crate::watch::hub::MAX_STREAMS)]
    pub max_watches: usize,
    /// Do not serve the operator console (/ui/ and its API, /api/v1/) on the HTTP listener.
    #[arg(long, env = "SWITCHYARD_NO_CONSOLE")]
    pub no_console: bool,
    /// Threads serving client and peer connections, each connection kept on one (default: one
    /// per core), and the runtime threads of the rest of the node (Raft, storage, the HTTP
    /// listener). 1 suits nodes sharing a few cores.
    #[arg(long, env = "SWITCHYARD_THREADS")]
    pub threads: Option<usize>,
    /// Also serve flagd's protocols (flagd.sync.v1, flagd.evaluation.v1) on ADDR, e.g.
    /// 0.0.0.0:8013 and 0.0.0.0:8015, flagd's own ports, for providers left at their defaults
    /// (repeatable, or comma-separated; the main address serves them too).
    #[arg(
        long = "flagd-listen",
        env = "SWITCHYARD_FLAGD_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub flagd_listen: Vec<std::net::SocketAddr>,
    /// This node's TLS certificate (PEM): every listener then serves TLS, and the node presents
    /// it to its peers. Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "SWITCHYARD_TLS_CERT", requires_all = ["tls_key", "peer_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SWITCHYARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA of member certificates (PEM): only a caller with one may use the internal
    /// service, and the node checks its peers against it.
    #[arg(long, env = "SWITCHYARD_PEER_CA", requires = "tls_cert")]
    pub peer_ca: Option<PathBuf>,
    /// The CA of client certificates (PEM), whose identities `auth certificate map` gives roles.
    #[arg(long, env = "SWITCHYARD_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Calls per second one caller (a token's name, or a client address while authentication
    /// is off) may make on this node; 0: no limit.
    #[arg(long, env = "SWITCHYARD_LIMIT_RATE", default_value_t = LimitConfig::default().requests_per_second)]
    pub limit_rate: u32,
    /// Watch streams one caller may hold open on this node; 0: no limit.
    #[arg(long, env = "SWITCHYARD_LIMIT_WATCHES", default_value_t = LimitConfig::default().open_watches)]
    pub limit_watches: usize,
}

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let advertise = args.advertise.clone().unwrap_or_else(|| args.listen.to_string());
    let bootstrap = if args.join {
        Bootstrap::Join
    } else {
        match &args.initial_cluster {
            Some(text) => Bootstrap::InitialCluster(parse_initial_cluster(text)?),
            None => Bootstrap::InitialCluster(vec![(args.id, advertise.clone())]),
        }
    };
    let config = NodeConfig {
        id: args.id,
        listen: args.listen,
        advertise,
        data_dir: args.data_dir.clone(),
        bootstrap,
        snapshot_every: args.snapshot_every,
        keep_logs: args.keep_logs,
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        election_timeout: (
            Duration::from_millis(args.election_timeout_ms),
            Duration::from_millis(args.election_timeout_ms * 3 / 2),
        ),
        metrics_listen: args.metrics_listen,
        console: !args.no_console,
        max_watches: args.max_watches,
        serving_threads: args.threads.unwrap_or_else(crate::server::default_threads),
        flagd_listen: args.flagd_listen.clone(),
        tls: match (&args.tls_cert, &args.tls_key, &args.peer_ca) {
            (Some(cert), Some(key), Some(peer_ca)) => Some(NodeTls {
                cert: cert.clone(),
                key: key.clone(),
                peer_ca: peer_ca.clone(),
                client_ca: args.client_ca.clone(),
            }),
            _ => None,
        },
        limits: LimitConfig {
            requests_per_second: args.limit_rate,
            open_watches: args.limit_watches,
        },
    };
    tracing::info!(
        id = config.id,
        listen = %config.listen,
        advertise = %config.advertise,
        data_dir = %config.data_dir.display(),
        bootstrap = %match &config.bootstrap {
            Bootstrap::Join => "join".to_string(),
            Bootstrap::InitialCluster(m) => m.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(","),
        },
        snapshot_every = config.snapshot_every,
        keep_logs = config.keep_logs,
        heartbeat_ms = args.heartbeat_ms,
        election_timeout_ms = args.election_timeout_ms,
        metrics_listen = ?config.metrics_listen,
        flagd_listen = ?config.flagd_listen,
        tls = config.tls.is_some(),
        client_ca = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        limit_rate = config.limits.requests_per_second,
        limit_watches = config.limits.open_watches,
        threads = ?args.threads,
        "effective configuration"
    );
    let node = server::start(config).await.context("starting the node")?;
    eprintln!("switchyard node {} serving on {}", args.id, node.addr);
    if let Some(m) = node.metrics_addr {
        eprintln!("metrics at http://{m}/metrics");
    }
    for a in &node.flagd_addrs {
        eprintln!("flagd protocols also on {a}");
    }
    node.serve_until(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
