//! `switchyard bench fanout`: many SDK subscribers (watch only) spread over the nodes of a
//! running cluster, and a stream of toggle changes activated `now`. Reports the lag from a
//! write being sent to each subscriber receiving it (an upper bound on commit-to-receive: it
//! includes the write's own commit latency, reported beside it), the flip spread at
//! `effective_at` (max − min applied time across subscribers), server memory per idle
//! subscriber and CPU (from `/proc` of the node processes given with `--server-pids`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::output::emit;
use crate::cli::Cli;
use crate::client::{Client, Sdk, SdkConfig};
use crate::pb::v1 as pb;

/// Settings of `bench fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers (SDK instances watching the benchmark's feature).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Connections the subscribers share (spread over the nodes).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
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
    /// Node process ids, for memory and CPU figures.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
}

/// Resident memory of a process (bytes), from /proc.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
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
    const FEATURE: &str = "bench-fanout";
    let writer = cli.client()?;
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

    // Connections spread over the nodes: connection k starts at endpoint k mod n.
    let n = cli.endpoints.len();
    let clients: Vec<Arc<Client>> = (0..args.connections.max(1))
        .map(|k| {
            let mut e = cli.endpoints.clone();
            e.rotate_left(k % n);
            Client::new(&e).map(Arc::new)
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut sdks: Vec<Sdk> = Vec::with_capacity(args.subscribers);
    for chunk_start in (0..args.subscribers).step_by(500) {
        let batch = (chunk_start..(chunk_start + 500).min(args.subscribers)).map(|i| {
            let client = clients[i % clients.len()].clone();
            Sdk::start_with_client(
                client,
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
    eprintln!(
        "{} subscribers connected in {:.1}s; idling 3s",
        sdks.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle: u64 = pids.iter().map(|p| rss(*p)).sum();

    let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let self_before = cpu_seconds(std::process::id());
    let phase = Instant::now();
    let mut sent: Vec<(u64, i64, i64, Duration)> = Vec::new();
    let activation = pb::Activation {
        mode: pb::activation::Mode::Now as i32,
        switch_delay_ms: Some(Duration::from(args.switch_delay).as_millis() as u64),
        ..Default::default()
    };
    let mut seen: Vec<Seen> = Vec::with_capacity(args.changes * sdks.len());
    for i in 0..args.changes {
        let sent_at = crate::clock::now_us();
        let t0 = Instant::now();
        let r = writer
            .set_toggle_with(FEATURE, &flag(i % 2 == 0), None, Some(activation), "bench")
            .await?;
        let took = t0.elapsed();
        let effective = r.toggle.map(|t| t.effective_at_ms).unwrap_or(0);
        sent.push((r.revision, sent_at, effective, took));
        // Sample every subscriber once the change has taken effect.
        let wait_us = effective * 1000 - crate::clock::now_us();
        tokio::time::sleep(Duration::from_micros(wait_us.max(0) as u64) + Duration::from(args.settle)).await;
        seen.extend(sdks.iter().filter_map(|s| s.last_applied(FEATURE)).map(|c| Seen {
            revision: c.revision,
            received_at_us: c.received_at_us,
            applied_at_us: c.applied_at_us,
            late_ms: c.late_ms,
        }));
    }
    let elapsed = phase.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, b)| (cpu_seconds(*p) - b) / elapsed * 100.0)
        .collect();
    let self_cpu = (cpu_seconds(std::process::id()) - self_before) / elapsed * 100.0;

    let mut lags: Vec<i64> = Vec::new();
    let mut spreads: Vec<i64> = Vec::new();
    let mut timer_errors: Vec<i64> = Vec::new();
    let mut missing = 0usize;
    let mut late = 0usize;
    for (revision, sent_at, effective_ms, _) in &sent {
        let of: Vec<&Seen> = seen.iter().filter(|s| s.revision == *revision).collect();
        missing += sdks.len().saturating_sub(of.len());
        late += of.iter().filter(|s| s.late_ms > 0).count();
        lags.extend(of.iter().map(|s| s.received_at_us - sent_at));
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
    timer_errors.sort_unstable();
    spreads.sort_unstable();
    let mut write_us: Vec<i64> = sent.iter().map(|s| s.3.as_micros() as i64).collect();
    write_us.sort_unstable();
    let per_sub = if sdks.is_empty() {
        0
    } else {
        rss_idle.saturating_sub(rss_before) / sdks.len() as u64
    };
    let ms = |us: i64| us as f64 / 1000.0;
    let result = json!({
        "subscribers": sdks.len(),
        "changes": sent.len(),
        "deliveries": lags.len(),
        "missing": missing,
        "late": late,
        "lag_p50_ms": ms(percentile(&lags, 0.5)),
        "lag_p99_ms": ms(percentile(&lags, 0.99)),
        "lag_max_ms": ms(lags.last().copied().unwrap_or(0)),
        "write_p50_ms": ms(percentile(&write_us, 0.5)),
        "flip_spread_median_ms": ms(percentile(&spreads, 0.5)),
        "flip_spread_max_ms": ms(spreads.last().copied().unwrap_or(0)),
        "applied_after_effective_p50_ms": ms(percentile(&timer_errors, 0.5)),
        "applied_after_effective_p99_ms": ms(percentile(&timer_errors, 0.99)),
        "applied_after_effective_min_ms": ms(timer_errors.first().copied().unwrap_or(0)),
        "server_rss_before_mib": rss_before as f64 / 1048576.0,
        "server_rss_idle_mib": rss_idle as f64 / 1048576.0,
        "server_bytes_per_idle_subscriber": per_sub,
        "server_cpu_percent": cpu,
        "load_process_cpu_percent": self_cpu,
    });
    emit(cli.output, result.clone(), || {
        format!(
            "{} subscribers, {} changes: {} deliveries, {} missing, {} late\n\
             lag (write sent -> subscriber received): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (write itself p50 {:.2} ms)\n\
             flip spread at effective_at: median {:.2} ms, max {:.2} ms; applied after effective_at: min {:.2} ms, p50 {:.2} ms, p99 {:.2} ms\n\
             server memory: {:.1} MiB -> {:.1} MiB idle with subscribers = {} bytes per subscriber\n\
             CPU during changes: nodes {:?} % of one core, load process {:.0}%",
            sdks.len(),
            sent.len(),
            lags.len(),
            missing,
            late,
            ms(percentile(&lags, 0.5)),
            ms(percentile(&lags, 0.99)),
            ms(lags.last().copied().unwrap_or(0)),
            ms(percentile(&write_us, 0.5)),
            ms(percentile(&spreads, 0.5)),
            ms(spreads.last().copied().unwrap_or(0)),
            ms(timer_errors.first().copied().unwrap_or(0)),
            ms(percentile(&timer_errors, 0.5)),
            ms(percentile(&timer_errors, 0.99)),
            rss_before as f64 / 1048576.0,
            rss_idle as f64 / 1048576.0,
            per_sub,
            cpu.iter().map(|c| format!("{c:.0}")).collect::<Vec<_>>(),
            self_cpu,
        )
    });
    drop(sdks);
    Ok(())
}
