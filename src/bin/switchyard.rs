//! The `switchyard` binary: parse the command line, set up logging, run, and turn a failure
//! into one line on stderr and a non-zero exit status.

use clap::Parser;

/// mimalloc: the node's hot paths (Raft entries, gRPC buffers) allocate many short-lived
/// buffers, where glibc's allocator showed up at the top of profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = switchyard::cli::Cli::parse();
    let default_level = if matches!(
        cli.command,
        switchyard::cli::Command::Serve(_) | switchyard::cli::Command::LocalCluster(_)
    ) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match switchyard::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
