//! The `switchyard` binary: parse the command line, set up logging, run, and turn a failure
//! into one line on stderr and a non-zero exit status.

use clap::Parser;

/// mimalloc: the node's hot paths (Raft entries, gRPC buffers) allocate many short-lived
/// buffers, where glibc's allocator showed up at the top of profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = switchyard::failpoint::setup();
    let cli = switchyard::cli::Cli::parse();
    let runtime = match cli.runtime_threads() {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: switchyard::cli::Cli) -> std::process::ExitCode {
    let default_level = if matches!(
        cli.command,
        switchyard::cli::Command::Serve(_)
            | switchyard::cli::Command::LocalCluster(_)
            | switchyard::cli::Command::Agent(_)
    ) {
        // The node's (or agent's) own events for operators; its dependencies (openraft, sled, tonic) only
        // when something is wrong, unless RUST_LOG asks for more.
        "warn,switchyard=info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or a container's log gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match switchyard::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
