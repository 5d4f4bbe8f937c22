//! `switchyard-bench`: load tools run against a Switchyard cluster (the scripts in `benches/`
//! start the clusters and call these). Kept out of the `switchyard` library and binary: a
//! node never ships load generators or etcd's protocol.
//!
//! - `put`: toggle writes from N concurrent clients (or the same writes as etcd puts);
//! - `registry`: N instances under leases with keepalives, then the readiness gate;
//! - `fanout`: N SDK subscribers in worker processes and a stream of changes: lag, flip spread,
//!   server memory per subscriber;
//! - `load`: fills a cluster with features and instances (for `benches/backup.sh`);
//! - `ofrep`: OFREP evaluations beside flagd's gRPC ones, and SSE refetch times.

mod fanout;
mod load;
mod ofrep;
mod output;
mod put;
mod registry;
mod wire;

use clap::{Parser, Subcommand};
use output::Format;

/// mimalloc, as the node uses: thousands of SDKs per worker allocate many small buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// etcd's KV API (the subset `put --target etcd` uses).
#[allow(clippy::all, missing_docs)]
mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// Load tools for a Switchyard cluster.
#[derive(Debug, Parser)]
#[command(name = "switchyard-bench", about)]
pub struct Cli {
    /// Nodes to talk to, comma-separated host:port.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ENDPOINTS",
        default_value = "127.0.0.1:7700",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Format,
    /// Connect over TLS, trusting this CA (PEM). Worker processes inherit it from the
    /// environment.
    #[arg(long, global = true, env = "SWITCHYARD_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// The token to authenticate with (worker processes inherit it from the environment).
    #[arg(long, global = true, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The benchmark.
    #[command(subcommand)]
    pub command: Command,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Concurrent toggle writes: throughput and p50/p99 latency per concurrency level.
    Put(put::PutArgs),
    /// Registry churn: N instances holding leases with keepalives, then the readiness gate.
    Registry(registry::RegistryArgs),
    /// Watch fan-out: N SDK subscribers, a stream of changes; lag, flip spread, memory, CPU.
    Fanout(fanout::FanoutArgs),
    /// Fills a cluster: N features and M registered instances (for benchmarks that read them).
    Load(load::LoadArgs),
    /// OFREP on one node: single and bulk evaluations beside flagd's gRPC evaluation, and the
    /// time from a change's effective_at to SSE clients having refetched it.
    Ofrep(ofrep::OfrepArgs),
    /// One worker process of `fanout` (started by it).
    #[command(hide = true)]
    FanoutWorker(fanout::WorkerArgs),
}

impl Cli {
    /// How clients connect (TLS, token).
    pub fn connect_options(&self) -> switchyard::client::ConnectOptions {
        switchyard::client::ConnectOptions {
            tls: switchyard::tls::ClientTls {
                ca: self.ca.clone(),
                ..Default::default()
            },
            token: self.token.clone(),
        }
    }

    /// A client of the chosen endpoints.
    pub fn client(&self) -> switchyard::Result<switchyard::client::Client> {
        switchyard::client::Client::connect(&self.endpoints, &self.connect_options())
    }
}

/// The local wall clock, unix µs.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::FanoutWorker(args) => args.threads,
        _ => None,
    };
    let runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match runtime {
        Ok(rt) => rt.block_on(async {
            match &cli.command {
                Command::Put(args) => put::run(&cli, args).await,
                Command::Registry(args) => registry::run(&cli, args).await,
                Command::Fanout(args) => fanout::run(&cli, args).await,
                Command::Load(args) => load::run(&cli, args).await,
                Command::Ofrep(args) => ofrep::run_bench(&cli, args).await,
                Command::FanoutWorker(args) => fanout::worker(&cli, args).await,
            }
        }),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
