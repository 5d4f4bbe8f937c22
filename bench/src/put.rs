//! `switchyard-bench put`: write toggles from N concurrent clients against a running cluster
//! (or, with `--target etcd`, the same writes as etcd puts) and report throughput and latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tonic::transport::Endpoint;

use crate::etcd::kv_client::KvClient;
use crate::etcd::PutRequest;
use crate::output::{emit, table};
use crate::Cli;
use switchyard::client::Client;
use switchyard::pb::v1 as pb;

/// Which system `put` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A Switchyard cluster (toggle set).
    Switchyard,
    /// An etcd v3 cluster (KV put of the same bytes).
    Etcd,
}

/// Settings of `put`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// Concurrency levels to run, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Seconds per level.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Approximate size of each written value, bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Number of distinct features (keys) written.
    #[arg(long, default_value_t = 100)]
    pub keys: usize,
    /// The system under load.
    #[arg(long, value_enum, default_value = "switchyard")]
    pub target: Target,
}

/// The result of one concurrency level.
#[derive(Debug, Clone)]
pub struct LevelResult {
    /// Concurrent clients.
    pub clients: usize,
    /// Writes acknowledged.
    pub ops: usize,
    /// Writes that failed.
    pub errors: usize,
    /// Acknowledged writes per second.
    pub throughput: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

fn definition(value_size: usize) -> String {
    json!({
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "on",
        "metadata": {"pad": "x".repeat(value_size.saturating_sub(90))},
    })
    .to_string()
}

/// Runs the benchmark.
pub async fn run(cli: &Cli, args: &PutArgs) -> anyhow::Result<()> {
    let value = definition(args.value_size);
    if args.target == Target::Switchyard {
        let client = cli.client()?;
        for k in 0..args.keys {
            let f = pb::Feature {
                name: format!("bench-{k}"),
                ..Default::default()
            };
            client.put_feature(f, None, "bench setup").await?;
        }
    }
    let mut results = Vec::new();
    for &clients in &args.clients {
        let r = level(cli, args, clients, &value).await?;
        eprintln!(
            "{:?} clients={} ops={} errors={} throughput={:.0}/s p50={:.2}ms p99={:.2}ms",
            args.target,
            r.clients,
            r.ops,
            r.errors,
            r.throughput,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
        results.push(r);
    }
    emit(
        cli.output,
        json!(results
            .iter()
            .map(|r| json!({
                "target": format!("{:?}", args.target).to_lowercase(),
                "clients": r.clients, "ops": r.ops, "errors": r.errors,
                "throughput_per_s": r.throughput,
                "p50_ms": r.p50.as_secs_f64() * 1e3, "p99_ms": r.p99.as_secs_f64() * 1e3,
            }))
            .collect::<Vec<_>>()),
        || {
            let mut t = table(&["target", "clients", "writes/s", "p50 ms", "p99 ms", "errors"]);
            for r in &results {
                t.add_row(vec![
                    format!("{:?}", args.target).to_lowercase(),
                    r.clients.to_string(),
                    format!("{:.0}", r.throughput),
                    format!("{:.2}", r.p50.as_secs_f64() * 1e3),
                    format!("{:.2}", r.p99.as_secs_f64() * 1e3),
                    r.errors.to_string(),
                ]);
            }
            t.to_string()
        },
    );
    Ok(())
}

/// One concurrency level: `clients` workers, each with its own connection, spread over the
/// endpoints, writing back to back for `seconds`.
async fn level(cli: &Cli, args: &PutArgs, clients: usize, value: &str) -> anyhow::Result<LevelResult> {
    let duration = Duration::from_secs(args.seconds);
    let start = Instant::now();
    let value = Arc::new(value.to_string());
    let mut tasks = Vec::new();
    for w in 0..clients {
        let mut endpoints = cli.endpoints.clone();
        let shift = w % endpoints.len().max(1);
        endpoints.rotate_left(shift);
        let value = value.clone();
        let keys = args.keys;
        let target = args.target;
        let options = cli.connect_options();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut i = w;
            match target {
                Target::Switchyard => {
                    let client = Client::connect(&endpoints, &options)?.with_actor("bench");
                    while start.elapsed() < duration {
                        let t = Instant::now();
                        match client
                            .set_toggle(&format!("bench-{}", i % keys), &value, None, "")
                            .await
                        {
                            Ok(_) => lat.push(t.elapsed()),
                            Err(_) => errors += 1,
                        }
                        i += clients;
                    }
                }
                Target::Etcd => {
                    let channel = Endpoint::from_shared(format!("http://{}", endpoints[0]))?
                        .tcp_nodelay(true)
                        .connect()
                        .await
                        .with_context(|| format!("connecting to etcd at {}", endpoints[0]))?;
                    let mut kv = KvClient::new(channel);
                    while start.elapsed() < duration {
                        let t = Instant::now();
                        let req = PutRequest {
                            key: format!("toggle/bench-{}", i % keys).into_bytes(),
                            value: value.as_bytes().to_vec(),
                            ..Default::default()
                        };
                        match tokio::time::timeout(Duration::from_secs(10), kv.put(req)).await {
                            Ok(Ok(_)) => lat.push(t.elapsed()),
                            _ => errors += 1,
                        }
                        i += clients;
                    }
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(LevelResult {
        clients,
        ops: all.len(),
        errors,
        throughput: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    })
}
