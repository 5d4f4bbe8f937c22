//! `switchyard-bench fanout`: many SDK subscribers (watch only) spread over the nodes of a
//! running cluster, run by `--processes` worker processes (`fanout-worker`, each with its
//! own flip clock and clock-offset estimate, like separate hosts of a fleet), and a stream of
//! toggle changes activated `now`. Reports the lag from each change's commit (the leader's
//! apply, stamped in the write's answer) to each subscriber receiving it, and beside it the lag
//! from the write being sent (which adds the write's own commit latency), the flip spread at
//! `effective_at` (max − min applied time across subscribers), server memory per idle
//! subscriber and CPU (from `/proc` of the node processes given with `--server-pids`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::output::emit;
use crate::Cli;
use switchyard::client::Client;
use switchyard::pb::v1 as pb;
use switchyard::sdk::{Sdk, SdkConfig};

/// Settings of `bench fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers (SDK instances watching the benchmark's feature).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Connections the subscribers share (spread over the nodes), over all worker processes.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Worker processes running the subscribers.
    #[arg(long, default_value_t = 4)]
    pub processes: usize,
    /// Plain watch streams instead of SDKs: the server's fan-out alone (flip figures then
    /// mean nothing).
    #[arg(long)]
    pub raw: bool,
    /// Plain watch streams read straight off the socket by a minimal HTTP/2 reader (see
    /// `wire.rs`), so the receivers' CPU weighs next to nothing on the nodes' lag: the fan-out
    /// as the nodes send it. Plain connections only.
    #[arg(long, conflicts_with = "raw")]
    pub wire: bool,
    /// Toggle changes to make.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// How long after a change's effective_at its deliveries are sampled (then the next change
    /// is made).
    #[arg(long, default_value = "300ms")]
    pub settle: humantime::Duration,
    /// Switch delay of each change.
    #[arg(long, default_value = "500ms")]
    pub switch_delay: humantime::Duration,
    /// Runtime threads of each worker process (1: a single-threaded runtime; by default, one
    /// per core).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Registry writes a second while the changes are made (an instance registered, then
    /// gone, in turn, of a service no subscriber watches), from a client of their own: a
    /// fleet's rolling restarts, which every node publishes, and a sample of write latency
    /// during the fan-out. 0: none.
    #[arg(long, default_value_t = 0)]
    pub churn: u32,
    /// Where the writes (changes and churn) go, as a release manager's would go to the voters
    /// while the fleet watches learners; by default `--endpoints`.
    #[arg(long, value_delimiter = ',')]
    pub write_endpoints: Vec<String>,
    /// Node process ids, for memory and CPU figures.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
}

/// Settings of `fanout-worker` (started by `fanout`).
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Subscribers in this process.
    #[arg(long)]
    pub subscribers: usize,
    /// Connections they share.
    #[arg(long)]
    pub connections: usize,
    /// Index of this worker (spreads its connections over the nodes).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    /// Plain watch streams instead of SDKs.
    #[arg(long)]
    pub raw: bool,
    /// Plain watch streams read off the socket (see `wire.rs`).
    #[arg(long)]
    pub wire: bool,
    /// Runtime threads (1: a single-threaded runtime).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// A plain watch subscriber's latest toggle event: (revision, received at, unix µs).
type Latest = Arc<parking_lot::Mutex<(u64, i64)>>;

/// Follows a plain watch stream, recording when each toggle event arrives. Like an SDK, it
/// resumes after the last revision it saw when its stream is refused or ends (a node at its
/// stream or rate limit, or going away), pausing 100 ms, doubling to 2 s, between attempts;
/// `counts` holds the streams open now and the attempts past the first.
async fn raw_subscriber(client: Arc<Client>, latest: Latest, counts: Arc<RawCounts>) {
    use std::sync::atomic::Ordering::Relaxed;
    use switchyard::pb::v1::watch_response::Kind;
    let mut resume: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let req = pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                features: vec![FEATURE.into()],
                ..Default::default()
            }),
            start_revision: resume,
        };
        if let Ok(mut stream) = client.watch(req).await {
            let mut open = false;
            while let Ok(Some(msg)) = stream.message().await {
                failures = 0;
                if !open {
                    open = true;
                    counts.open.fetch_add(1, Relaxed);
                }
                match msg.kind {
                    Some(Kind::Event(e)) => {
                        resume = Some(e.revision);
                        *latest.lock() = (e.revision, crate::now_us());
                    }
                    Some(Kind::Snapshot(s)) => resume = Some(s.revision),
                    _ => {}
                }
            }
            if open {
                counts.open.fetch_sub(1, Relaxed);
            }
        }
        failures += 1;
        counts.reconnects.fetch_add(1, Relaxed);
        let pause = Duration::from_millis(100 << failures.min(5)).min(Duration::from_secs(2));
        tokio::time::sleep(pause).await;
    }
}

/// The plain subscribers of a worker: streams open now, and reconnect attempts so far.
#[derive(Default)]
struct RawCounts {
    open: std::sync::atomic::AtomicUsize,
    reconnects: std::sync::atomic::AtomicU64,
}

const FEATURE: &str = "bench-fanout";

/// A worker: starts its subscribers, says `ready`, then answers each `sample` line on stdin
/// with one JSON line: every subscriber's latest change of the benchmark's feature as
/// `[revision, received_at_us, applied_at_us, late_ms]`. Ends on `quit` or end of input.
pub async fn worker(cli: &Cli, args: &WorkerArgs) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let n = cli.endpoints.len();
    let options = cli.connect_options();
    let clients: Vec<Arc<Client>> = (0..args.connections.max(1))
        .map(|k| {
            let mut e = cli.endpoints.clone();
            e.rotate_left((k + args.index) % n);
            Client::connect(&e, &options).map(Arc::new)
        })
        .collect::<Result<_, _>>()?;
    let mut sdks: Vec<Sdk> = Vec::new();
    let mut raw: Vec<Latest> = Vec::new();
    let counts = Arc::new(RawCounts::default());
    if args.raw {
        for i in 0..args.subscribers {
            let latest = Latest::default();
            tokio::spawn(raw_subscriber(
                clients[i % clients.len()].clone(),
                latest.clone(),
                counts.clone(),
            ));
            raw.push(latest);
        }
        // Ready once every stream has its first answer (or after two minutes, with fewer).
        let deadline = Instant::now() + Duration::from_secs(120);
        while counts.open.load(std::sync::atomic::Ordering::Relaxed) < args.subscribers
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut wire = Vec::new();
    if args.wire {
        anyhow::ensure!(
            cli.ca.is_none() && cli.token.is_none(),
            "--wire speaks plain HTTP/2 only (no TLS, no token)"
        );
        let connections = args.connections.max(1);
        for c in 0..connections {
            let here = args.subscribers / connections + usize::from(c < args.subscribers % connections);
            if here > 0 {
                let endpoint = &cli.endpoints[(c + args.index) % n];
                wire.push(crate::wire::follow(endpoint, here, FEATURE)?);
            }
        }
        let open = |w: &[Arc<crate::wire::WireStreams>]| {
            w.iter()
                .map(|s| s.open.load(std::sync::atomic::Ordering::Relaxed))
                .sum::<usize>()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while open(&wire) < args.subscribers && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let plain = args.raw || args.wire;
    for chunk_start in (0..if plain { 0 } else { args.subscribers }).step_by(500) {
        let batch = (chunk_start..(chunk_start + 500).min(args.subscribers)).map(|i| {
            Sdk::start_with_client(
                clients[i % clients.len()].clone(),
                SdkConfig {
                    features: vec![FEATURE.into()],
                    start_timeout: Duration::from_secs(60),
                    ..Default::default()
                },
            )
        });
        for sdk in futures::future::join_all(batch).await {
            sdks.push(sdk?);
        }
    }
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() != "sample" {
            break;
        }
        let mut rows: Vec<[i64; 4]> = sdks
            .iter()
            .filter_map(|s| s.last_applied(FEATURE))
            .map(|c| [c.revision as i64, c.received_at_us, c.applied_at_us, c.late_ms])
            .collect();
        rows.extend(raw.iter().map(|l| {
            let (revision, at) = *l.lock();
            [revision as i64, at, at, 0]
        }));
        for w in &wire {
            rows.extend(
                w.latest()
                    .into_iter()
                    .map(|(revision, at)| [revision as i64, at, at, 0]),
            );
        }
        let mut text = serde_json::to_string(&rows)?;
        text.push('\n');
        out.write_all(text.as_bytes()).await?;
        out.flush().await?;
    }
    if args.raw {
        eprintln!(
            "worker {}: {} of {} plain streams open, {} reconnects",
            args.index,
            counts.open.load(std::sync::atomic::Ordering::Relaxed),
            args.subscribers,
            counts.reconnects.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    if args.wire {
        use std::sync::atomic::Ordering::Relaxed;
        eprintln!(
            "worker {}: {} of {} wire streams open, {} opened again after the node ended them",
            args.index,
            wire.iter().map(|w| w.open.load(Relaxed)).sum::<usize>(),
            args.subscribers,
            wire.iter().map(|w| w.reopened.load(Relaxed)).sum::<usize>(),
        );
    }
    Ok(())
}

/// A running worker process.
struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Worker {
    async fn next_line(&mut self) -> anyhow::Result<String> {
        match tokio::time::timeout(Duration::from_secs(120), self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => anyhow::bail!("a worker process ended early"),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => anyhow::bail!("a worker process did not answer within 120 s"),
        }
    }
}

/// The number after `key` in a process's `/proc/PID/file` (0 when unreadable).
fn proc_number(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of a process (bytes).
fn rss(pid: u32) -> u64 {
    proc_number(pid, "status", "VmRSS:") * 1024
}

/// Write system calls a process has made (`syscw`).
fn write_calls(pid: u32) -> u64 {
    proc_number(pid, "io", "syscw:")
}

/// CPU time of a process (seconds, user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn flag(on: bool) -> String {
    format!(
        r#"{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"{}"}}"#,
        if on { "on" } else { "off" }
    )
}

/// The service of the instances `--churn` registers (no subscriber watches it).
const CHURN_SERVICE: &str = "bench-churn";

/// Registers an instance of [`CHURN_SERVICE`] and removes it, in turn, `rate` writes a second
/// (fewer when a write takes longer) until `stop`; each write's latency.
async fn churn(
    client: Client,
    rate: u32,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    let lease = client.grant_lease(Duration::from_secs(600)).await?.lease_id;
    let mut every = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut took = Vec::new();
    let mut up: Option<String> = None;
    // Bounded: an hour of writes at the rate asked.
    for i in 0..u64::from(rate) * 3600 {
        every.tick().await;
        if stop.load(std::sync::atomic::Ordering::Acquire) {
            break;
        }
        let t0 = Instant::now();
        match up.take() {
            Some(id) => {
                client.deregister(&id).await?;
            }
            None => {
                let id = format!("churn-{i}");
                let instance = pb::Instance {
                    id: id.clone(),
                    service: CHURN_SERVICE.into(),
                    version: "1.0.0".into(),
                    ..Default::default()
                };
                client.register(instance, lease).await?;
                up = Some(id);
            }
        }
        took.push(t0.elapsed());
    }
    let _ = client.revoke_lease(lease).await;
    Ok(took)
}

/// One subscriber's record of a change.
#[derive(Clone, Copy)]
struct Seen {
    revision: u64,
    received_at_us: i64,
    applied_at_us: i64,
    late_ms: i64,
}

/// Runs the benchmark.
pub async fn run(cli: &Cli, args: &FanoutArgs) -> anyhow::Result<()> {
    let writer_client = || match args.write_endpoints.as_slice() {
        [] => cli.client(),
        voters => Client::connect(voters, &cli.connect_options()),
    };
    let writer = writer_client()?;
    if writer.get_feature(FEATURE, true).await.is_err() {
        writer
            .put_feature(
                pb::Feature {
                    name: FEATURE.into(),
                    description: "bench fanout".into(),
                    ..Default::default()
                },
                None,
                "bench",
            )
            .await?;
    }
    writer.set_toggle(FEATURE, &flag(false), None, "bench").await?;

    let pids = args.server_pids.clone();
    let rss_before: u64 = pids.iter().map(|p| rss(*p)).sum();

    let started = Instant::now();
    let processes = args.processes.max(1);
    let exe = std::env::current_exe()?;
    let mut workers = Vec::with_capacity(processes);
    for w in 0..processes {
        let subscribers = args.subscribers / processes + usize::from(w < args.subscribers % processes);
        let mut child = tokio::process::Command::new(&exe)
            .args(["--endpoints", &cli.endpoints.join(","), "fanout-worker"])
            .args(["--subscribers", &subscribers.to_string()])
            .args([
                "--connections",
                &(args.connections / processes).max(1).to_string(),
            ])
            .args(["--index", &w.to_string()])
            .args(if args.raw { &["--raw"][..] } else { &[][..] })
            .args(if args.wire { &["--wire"][..] } else { &[][..] })
            .args(
                args.worker_threads
                    .map(|t| vec!["--threads".to_string(), t.to_string()])
                    .unwrap_or_default(),
            )
            // Without transparent huge pages for the workers' allocator: each reader thread's
            // first allocations of a size took a fresh 2 MiB page, cleared by the kernel as it
            // was touched, and that fell on the first change (~140 ms of CPU over the readers at
            // 30,000 wire streams, the change's p99 ~2x the others'): the workers' start, not
            // the nodes' fan-out.
            .env("MIMALLOC_ALLOW_THP", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("no pipes to the worker process");
        };
        use tokio::io::AsyncBufReadExt;
        workers.push(Worker {
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        });
    }
    for w in &mut workers {
        let line = w.next_line().await?;
        anyhow::ensure!(line == "ready", "a worker said {line:?}");
    }
    let worker_pids: Vec<u32> = workers.iter().filter_map(|w| w.child.id()).collect();
    eprintln!(
        "{} subscribers in {processes} worker processes connected in {:.1}s; idling 3s",
        args.subscribers,
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle: u64 = pids.iter().map(|p| rss(*p)).sum();

    let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let writes_before: u64 = pids.iter().map(|p| write_calls(*p)).sum();
    let load_before: f64 = worker_pids.iter().map(|p| cpu_seconds(*p)).sum();
    let stop_churn = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churning = match args.churn {
        0 => None,
        rate => Some(tokio::spawn(churn(writer_client()?, rate, stop_churn.clone()))),
    };
    let phase = Instant::now();
    // (revision, sent at, committed at, effective_at ms, write latency)
    let mut sent: Vec<(u64, i64, i64, i64, Duration)> = Vec::new();
    let activation = pb::Activation {
        mode: pb::activation::Mode::Now as i32,
        switch_delay_ms: Some(Duration::from(args.switch_delay).as_millis() as u64),
        ..Default::default()
    };
    let mut seen: Vec<Seen> = Vec::with_capacity(args.changes * args.subscribers);
    for i in 0..args.changes {
        let sent_at = crate::now_us();
        let t0 = Instant::now();
        let r = writer
            .set_toggle_with(FEATURE, &flag(i % 2 == 0), None, Some(activation), "bench")
            .await?;
        let took = t0.elapsed();
        let effective = r.toggle.map(|t| t.effective_at_ms).unwrap_or(0);
        sent.push((r.revision, sent_at, r.committed_at_us, effective, took));
        // Sample every subscriber once the change has taken effect.
        let wait_us = effective * 1000 - crate::now_us();
        tokio::time::sleep(Duration::from_micros(wait_us.max(0) as u64) + Duration::from(args.settle)).await;
        for w in &mut workers {
            use tokio::io::AsyncWriteExt;
            w.stdin.write_all(b"sample\n").await?;
            w.stdin.flush().await?;
        }
        for w in &mut workers {
            let rows: Vec<[i64; 4]> = serde_json::from_str(&w.next_line().await?)?;
            seen.extend(
                rows.into_iter()
                    .map(|[revision, received_at_us, applied_at_us, late_ms]| Seen {
                        revision: revision as u64,
                        received_at_us,
                        applied_at_us,
                        late_ms,
                    }),
            );
        }
    }
    let elapsed = phase.elapsed().as_secs_f64();
    stop_churn.store(true, std::sync::atomic::Ordering::Release);
    let mut churn_us: Vec<i64> = match churning {
        Some(task) => task.await??.iter().map(|d| d.as_micros() as i64).collect(),
        None => Vec::new(),
    };
    churn_us.sort_unstable();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, b)| (cpu_seconds(*p) - b) / elapsed * 100.0)
        .collect();
    let writes_per_change = pids
        .iter()
        .map(|p| write_calls(*p))
        .sum::<u64>()
        .saturating_sub(writes_before) as f64
        / args.changes.max(1) as f64;
    let load_cpu = (worker_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - load_before) / elapsed * 100.0;
    for mut w in workers {
        use tokio::io::AsyncWriteExt;
        let _ = w.stdin.write_all(b"quit\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await;
    }

    let mut lags: Vec<i64> = Vec::new();
    let mut commit_lags: Vec<i64> = Vec::new();
    // Each change's own p99 and first delivery (commit -> received), in the order made.
    let mut change_p99s: Vec<i64> = Vec::new();
    let mut change_firsts: Vec<i64> = Vec::new();
    let mut spreads: Vec<i64> = Vec::new();
    let mut timer_errors: Vec<i64> = Vec::new();
    let mut missing = 0usize;
    let mut late = 0usize;
    for (revision, sent_at, committed_at, effective_ms, _) in &sent {
        let of: Vec<&Seen> = seen.iter().filter(|s| s.revision == *revision).collect();
        missing += args.subscribers.saturating_sub(of.len());
        late += of.iter().filter(|s| s.late_ms > 0).count();
        lags.extend(of.iter().map(|s| s.received_at_us - sent_at));
        if *committed_at > 0 {
            let mut this: Vec<i64> = of.iter().map(|s| s.received_at_us - committed_at).collect();
            this.sort_unstable();
            change_p99s.push(percentile(&this, 0.99));
            change_firsts.push(this.first().copied().unwrap_or(0));
            commit_lags.extend(this);
        }
        let on_time: Vec<i64> = of
            .iter()
            .filter(|s| s.late_ms == 0)
            .map(|s| s.applied_at_us)
            .collect();
        timer_errors.extend(on_time.iter().map(|a| a - effective_ms * 1000));
        if let (Some(max), Some(min)) = (on_time.iter().max(), on_time.iter().min()) {
            spreads.push(max - min);
        }
    }
    lags.sort_unstable();
    commit_lags.sort_unstable();
    timer_errors.sort_unstable();
    spreads.sort_unstable();
    let mut write_us: Vec<i64> = sent.iter().map(|s| s.4.as_micros() as i64).collect();
    let writes_in_order: Vec<f64> = write_us.iter().map(|us| *us as f64 / 1000.0).collect();
    write_us.sort_unstable();
    let per_sub = rss_idle.saturating_sub(rss_before) / args.subscribers.max(1) as u64;
    let ms = |us: i64| us as f64 / 1000.0;
    let result = json!({
        "subscribers": args.subscribers,
        "processes": processes,
        "changes": sent.len(),
        "deliveries": lags.len(),
        "missing": missing,
        "late": late,
        "commit_lag_p50_ms": ms(percentile(&commit_lags, 0.5)),
        "commit_lag_p99_ms": ms(percentile(&commit_lags, 0.99)),
        "commit_lag_max_ms": ms(commit_lags.last().copied().unwrap_or(0)),
        "commit_lag_p99_per_change_ms": change_p99s.iter().map(|us| ms(*us)).collect::<Vec<_>>(),
        "commit_lag_first_per_change_ms": change_firsts.iter().map(|us| ms(*us)).collect::<Vec<_>>(),
        "commit_lag_deciles_ms": (1..10).map(|d| ms(percentile(&commit_lags, d as f64 / 10.0))).collect::<Vec<_>>(),
        "lag_p50_ms": ms(percentile(&lags, 0.5)),
        "lag_p99_ms": ms(percentile(&lags, 0.99)),
        "lag_max_ms": ms(lags.last().copied().unwrap_or(0)),
        "write_p50_ms": ms(percentile(&write_us, 0.5)),
        "write_max_ms": ms(write_us.last().copied().unwrap_or(0)),
        "write_ms_per_change": writes_in_order,
        "churn_writes": churn_us.len(),
        "churn_write_p50_ms": ms(percentile(&churn_us, 0.5)),
        "churn_write_p99_ms": ms(percentile(&churn_us, 0.99)),
        "churn_write_max_ms": ms(churn_us.last().copied().unwrap_or(0)),
        "flip_spread_median_ms": ms(percentile(&spreads, 0.5)),
        "flip_spread_max_ms": ms(spreads.last().copied().unwrap_or(0)),
        "applied_after_effective_p50_ms": ms(percentile(&timer_errors, 0.5)),
        "applied_after_effective_p99_ms": ms(percentile(&timer_errors, 0.99)),
        "applied_after_effective_min_ms": ms(timer_errors.first().copied().unwrap_or(0)),
        "server_rss_before_mib": rss_before as f64 / 1048576.0,
        "server_rss_idle_mib": rss_idle as f64 / 1048576.0,
        "server_bytes_per_idle_subscriber": per_sub,
        "server_cpu_percent": cpu,
        "server_write_calls_per_change": writes_per_change,
        "load_processes_cpu_percent": load_cpu,
    });
    emit(cli.output, result.clone(), || {
        format!(
            "{} subscribers in {} processes, {} changes: {} deliveries, {} missing, {} late\n\
             lag (commit -> subscriber received): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (deciles {})\n\
             each change's own p99: {} ms (its first delivery: {} ms)\n\
             lag (write sent -> subscriber received): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (write itself p50 {:.2} ms, max {:.2} ms)\n\
             {}\
             flip spread at effective_at: median {:.2} ms, max {:.2} ms; applied after effective_at: min {:.2} ms, p50 {:.2} ms, p99 {:.2} ms\n\
             server memory: {:.1} MiB -> {:.1} MiB idle with subscribers = {} bytes per subscriber\n\
             CPU during changes: nodes {:?} % of one core, load processes {:.0}%; node write system calls per change {:.0}",
            args.subscribers,
            processes,
            sent.len(),
            lags.len(),
            missing,
            late,
            ms(percentile(&commit_lags, 0.5)),
            ms(percentile(&commit_lags, 0.99)),
            ms(commit_lags.last().copied().unwrap_or(0)),
            (1..10)
                .map(|d| format!("{:.1}", ms(percentile(&commit_lags, d as f64 / 10.0))))
                .collect::<Vec<_>>()
                .join(" "),
            change_p99s
                .iter()
                .map(|us| format!("{:.0}", ms(*us)))
                .collect::<Vec<_>>()
                .join(" "),
            change_firsts
                .iter()
                .map(|us| format!("{:.1}", ms(*us)))
                .collect::<Vec<_>>()
                .join(" "),
            ms(percentile(&lags, 0.5)),
            ms(percentile(&lags, 0.99)),
            ms(lags.last().copied().unwrap_or(0)),
            ms(percentile(&write_us, 0.5)),
            ms(write_us.last().copied().unwrap_or(0)),
            if churn_us.is_empty() {
                String::new()
            } else {
                format!(
                    "registry writes during the changes: {} at {}/s asked, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
                    churn_us.len(),
                    args.churn,
                    ms(percentile(&churn_us, 0.5)),
                    ms(percentile(&churn_us, 0.99)),
                    ms(churn_us.last().copied().unwrap_or(0)),
                )
            },
            ms(percentile(&spreads, 0.5)),
            ms(spreads.last().copied().unwrap_or(0)),
            ms(timer_errors.first().copied().unwrap_or(0)),
            ms(percentile(&timer_errors, 0.5)),
            ms(percentile(&timer_errors, 0.99)),
            rss_before as f64 / 1048576.0,
            rss_idle as f64 / 1048576.0,
            per_sub,
            cpu.iter().map(|c| format!("{c:.0}")).collect::<Vec<_>>(),
            load_cpu,
            writes_per_change,
        )
    });
    Ok(())
}
