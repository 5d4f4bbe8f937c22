//! `torture`: runs fault schedules against real Switchyard nodes in network namespaces and
//! prints what was injected, what was checked and what was found. Needs root.
//!
//!   cargo build --release -p switchyard -p switchyard-torture
//!   sudo target/release/torture --seeds 200 --minutes 150
//!   sudo target/release/torture --seed 1234          # replay one schedule

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use comfy_table::Table;
use switchyard_torture::nemesis::Fault;
use switchyard_torture::run::{run, Report, RunConfig};

#[derive(Debug, Parser)]
#[command(name = "torture", about = "Fault schedules against a real Switchyard cluster")]
struct Args {
    /// How many schedules (seeds first-seed, first-seed+1, ...).
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Replay this one seed (overrides --seeds and --first-seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Start no new schedule after this many minutes.
    #[arg(long)]
    minutes: Option<f64>,
    /// Seconds of traffic and faults per schedule.
    #[arg(long, default_value_t = 30)]
    length: u64,
    /// The switchyard binary (default: the one beside this program).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Where logs of failing schedules are kept.
    #[arg(long, default_value = "/tmp/switchyard-torture")]
    dir: PathBuf,
    /// Extra `serve` flag (repeatable), e.g. --serve-arg=--election-timeout-ms=500.
    #[arg(long = "serve-arg")]
    serve_args: Vec<String>,
    /// Only these kinds of fault (repeatable: kill-leader, kill-follower, kill-all,
    /// pause-leader, pause-follower, isolate-leader, isolate-follower, deaf-leader, mute-leader,
    /// slow-network, follower-disk-full, leader-disk-full, replace). Default: all.
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Keep every schedule's logs and recorded history, not only those of failing ones.
    #[arg(long)]
    keep: bool,
    /// Schedules run at once (each has its own namespaces and nodes; most of a schedule is
    /// waiting, so a few at a time fit on two cores).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Stop at the first schedule that finds something.
    #[arg(long)]
    stop_on_anomaly: bool,
}

fn percentile(mut v: Vec<Duration>, p: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.2} s", v[i].as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,switchyard_torture=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !switchyard_torture::net::available() {
        bail!("the fault suite needs root and iproute2/iptables (network namespaces)");
    }
    let binary = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("switchyard"),
    };
    if !binary.exists() {
        bail!(
            "no switchyard binary at {} (build it, or pass --bin)",
            binary.display()
        );
    }
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed + args.seeds).collect(),
    };
    let faults = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults
            .iter()
            .map(|f| Fault::parse(f).ok_or_else(|| anyhow::anyhow!("no fault is called {f:?}")))
            .collect::<Result<Vec<_>>>()?
    };
    let mut serve_args = RunConfig::default_serve_args();
    serve_args.extend(args.serve_args.iter().cloned());
    let began = Instant::now();
    let mut reports: Vec<Report> = Vec::new();
    let mut pending = seeds.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let mut stop = false;
    loop {
        while !stop && running.len() < args.jobs.max(1) {
            if args
                .minutes
                .is_some_and(|m| began.elapsed() > Duration::from_secs_f64(m * 60.0))
            {
                stop = true;
                break;
            }
            let Some(seed) = pending.next() else { break };
            let config = RunConfig {
                binary: binary.clone(),
                seed,
                length: Duration::from_secs(args.length),
                dir: args.dir.clone(),
                // A starting point; the network claims the first run number no other run holds.
                run: ((u64::from(std::process::id()) + seed) % 200) as u8 + 1,
                serve_args: serve_args.clone(),
                faults: faults.clone(),
                keep: args.keep,
            };
            running.spawn(async move { run(&config).await });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let report = done??;
        let seed = report.seed;
        let names: Vec<&str> = report.faults.iter().map(|f| f.name()).collect();
        eprintln!(
            "seed {seed}: {} faults ({}), {} ops, {} watch messages, {} anomalies",
            report.faults.len(),
            names.join(", "),
            report.ops_checked,
            report.watch_messages,
            report.anomalies.len()
        );
        if !report.anomalies.is_empty() {
            for a in &report.anomalies {
                eprintln!("  [{}] {}", a.checker, a.detail);
            }
            eprintln!(
                "  replay: sudo {} --seed {seed} --length {} --bin {}{}",
                std::env::current_exe()?.display(),
                args.length,
                binary.display(),
                args.serve_args
                    .iter()
                    .map(|a| format!(" --serve-arg={a}"))
                    .collect::<String>()
                    + &args
                        .faults
                        .iter()
                        .map(|f| format!(" --fault {f}"))
                        .collect::<String>()
            );
            eprintln!("  logs: {}", report.dir.display());
            if args.stop_on_anomaly {
                stop = true;
            }
        }
        reports.push(report);
    }
    print_table(&reports, began.elapsed());
    let anomalies: usize = reports.iter().map(|r| r.anomalies.len()).sum();
    if anomalies > 0 {
        bail!("{anomalies} anomalies");
    }
    Ok(())
}

fn print_table(reports: &[Report], took: Duration) {
    let mut faults: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut by_checker: BTreeMap<&str, usize> = BTreeMap::new();
    for checker in [
        "linearizable",
        "lost-write",
        "agreement",
        "phantom-read",
        "stale",
        "ordered",
        "unique",
        "atomic",
        "reliable",
        "resumable",
        "back-in-time",
        "snapshot",
        "agree",
        "watch-converge",
        "gate",
        "gate-liveness",
        "sdk-early",
        "sdk-order",
        "sdk-converge",
        "converge",
        "membership",
        "harness",
    ] {
        by_checker.insert(checker, 0);
    }
    for r in reports {
        for f in &r.faults {
            *faults.entry(*f).or_default() += 1;
        }
        for a in &r.anomalies {
            *by_checker.entry(a.checker).or_default() += 1;
        }
    }
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header(["", "value"]);
    t.add_row(["schedules run".to_string(), reports.len().to_string()]);
    t.add_row([
        "time".to_string(),
        format!("{:.1} min", took.as_secs_f64() / 60.0),
    ]);
    t.add_row([
        "failing seeds".to_string(),
        reports
            .iter()
            .filter(|r| !r.anomalies.is_empty())
            .map(|r| r.seed.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    ]);
    for (f, n) in &faults {
        t.add_row([format!("fault: {}", f.name()), n.to_string()]);
    }
    let sum = |f: fn(&Report) -> usize| reports.iter().map(f).sum::<usize>().to_string();
    t.add_row([
        "operations checked (linearizability)".to_string(),
        sum(|r| r.ops_checked),
    ]);
    t.add_row([
        "keys inconclusive (search limit)".to_string(),
        sum(|r| r.inconclusive),
    ]);
    t.add_row(["watch messages checked".to_string(), sum(|r| r.watch_messages)]);
    t.add_row(["gate activations judged".to_string(), sum(|r| r.activations)]);
    t.add_row([
        "SDK (instance, toggle) pairs judged after heals".to_string(),
        sum(|r| r.sdk_checks),
    ]);
    for (c, n) in &by_checker {
        t.add_row([format!("anomalies: {c}"), n.to_string()]);
    }
    let collect = |f: fn(&Report) -> Option<Duration>| reports.iter().filter_map(f).collect::<Vec<_>>();
    for (name, v) in [
        ("cluster converged after heal", collect(|r| r.cluster_converged)),
        ("watchers converged after heal", collect(|r| r.watches_converged)),
        (
            "SDKs converged after each heal",
            reports
                .iter()
                .flat_map(|r| r.sdk_heals.iter().map(|(_, d)| *d))
                .collect(),
        ),
        (
            "SDKs: each toggle change until the last instance had it",
            reports
                .iter()
                .flat_map(|r| r.sdk_change_lags.iter().copied())
                .collect(),
        ),
        (
            "writes resumed after leader loss",
            reports
                .iter()
                .flat_map(|r| r.write_resume.iter().copied())
                .collect(),
        ),
    ] {
        t.add_row([
            format!("{name} (p50 / p90 / p99 / max, n={})", v.len()),
            format!(
                "{} / {} / {} / {}",
                percentile(v.clone(), 0.5),
                percentile(v.clone(), 0.9),
                percentile(v.clone(), 0.99),
                percentile(v, 1.0)
            ),
        ]);
    }
    let mut slow: Vec<(u64, Fault, Duration)> = reports
        .iter()
        .flat_map(|r| r.sdk_heals.iter().map(|(f, d)| (r.seed, *f, *d)))
        .collect();
    slow.sort_by_key(|(_, _, d)| std::cmp::Reverse(*d));
    t.add_row([
        "slowest SDK convergence (seed: time after healing)".to_string(),
        slow.iter()
            .take(5)
            .map(|(seed, f, d)| format!("{seed}: {:.2} s after {}", d.as_secs_f64(), f.name()))
            .collect::<Vec<_>>()
            .join("; "),
    ]);
    println!("{t}");
}
