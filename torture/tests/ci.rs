//! The CI subset of the fault suite: a few fixed schedules against the debug build of the node,
//! each node in its own network namespace. Every checker must find nothing. Needs root (CI
//! runs as root); elsewhere it says so and does nothing.
//!
//! Seeds kept here: 5 (a follower's disk fills while it installs a snapshot: found that a purge
//! cut short made the node refuse to start, "inverted log order"), 7 (a `when-ready`
//! activation judged by a registry watcher: found that registrations never reached registry
//! watchers), 11 (a leader's disk fills, the node stops,
//! a member is removed and re-added while the supervisor restarts it), 16 (one-way cuts, kill
//! all, remove and re-add the leader).
//! The long run is `torture --seeds 200` (see the README).

use std::path::PathBuf;
use std::time::Duration;

use switchyard_torture::nemesis::Fault;
use switchyard_torture::run::{run, RunConfig};

const SEEDS: [u64; 4] = [5, 7, 11, 16];

fn node_binary() -> PathBuf {
    if let Ok(b) = std::env::var("SWITCHYARD_BIN") {
        return PathBuf::from(b);
    }
    // target/debug/deps/ci-HASH -> target/debug/switchyard
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("switchyard"))
        .expect("target directory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_schedules_find_nothing() {
    if !switchyard_torture::net::available() {
        eprintln!("SKIPPED: the fault suite needs root and iproute2/iptables (CI runs it as root)");
        return;
    }
    let binary = node_binary();
    assert!(
        binary.exists(),
        "no node binary at {} (cargo build -p switchyard first, or set SWITCHYARD_BIN)",
        binary.display()
    );
    let mut failures = Vec::new();
    for seed in SEEDS {
        let config = RunConfig {
            binary: binary.clone(),
            seed,
            length: Duration::from_secs(20),
            dir: std::env::temp_dir().join("switchyard-torture-ci"),
            run: ((u64::from(std::process::id()) + seed) % 200) as u8 + 1,
            serve_args: RunConfig::default_serve_args(),
            faults: Fault::ALL.to_vec(),
            keep: false,
        };
        let report = run(&config).await.expect("the schedule ran");
        eprintln!(
            "seed {seed}: faults {:?}, {} operations, {} watch messages, converged after {:?}",
            report.faults, report.ops_checked, report.watch_messages, report.sdks_converged
        );
        assert!(
            report.ops_checked > 100,
            "seed {seed}: too little traffic to judge"
        );
        for a in &report.anomalies {
            failures.push(format!("seed {seed} [{}] {}", a.checker, a.detail));
        }
        if !report.anomalies.is_empty() {
            failures.push(format!(
                "  logs: {}; replay: torture --seed {seed} --length 20",
                report.dir.display()
            ));
        }
    }
    assert!(failures.is_empty(), "anomalies:\n{}", failures.join("\n"));
}
