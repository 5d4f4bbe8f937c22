//! `switchyard-bench ofrep`: OFREP on one node. Single and bulk evaluations over HTTP/1.1
//! keep-alive connections from N concurrent clients, beside the same single evaluations over
//! `flagd.evaluation.v1` gRPC (throughput, p50, p99); then K Server-Sent Events clients that,
//! like OFREP's web providers, refetch the bulk evaluation on each `refetchEvaluation`
//! message: the time from a change's `effective_at` to each client holding the new answer.
//!
//! A minimal HTTP/1.1 client is written here (a request line, headers, a body of
//! `Content-Length` bytes): the node answers evaluations with a length, and the bench should
//! measure the node, not a client library's pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::output::{emit, table};
use crate::{now_us, Cli};
use switchyard::pb::flagd::evaluation as ev;
use switchyard::pb::v1 as pb;

/// Settings of `bench ofrep`.
#[derive(Debug, clap::Args)]
pub struct OfrepArgs {
    /// The node's HTTP listener (OFREP).
    #[arg(long)]
    pub http: String,
    /// The node's gRPC address (flagd evaluation), for comparison.
    #[arg(long)]
    pub grpc: String,
    /// Concurrent clients per evaluation run.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds per evaluation run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Flags in the bulk evaluation.
    #[arg(long, default_value_t = 20)]
    pub flags: usize,
    /// Server-Sent Events clients.
    #[arg(long, default_value_t = 1000)]
    pub sse_clients: usize,
    /// Scheduled changes the SSE clients must pick up.
    #[arg(long, default_value_t = 5)]
    pub changes: usize,
}

const GOLD: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
  "targeting":{"if":[{"in":[{"var":"plan"},["gold","enterprise"]]},"on",null]}}"#;
const GOLD_AND_SILVER: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
  "targeting":{"if":[{"in":[{"var":"plan"},["gold","enterprise","silver"]]},"on",null]}}"#;

/// One HTTP/1.1 keep-alive connection.
struct Http {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Http {
    async fn connect(addr: &str) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Http {
            reader: BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    /// POSTs `body` to `path`: the status and the body.
    async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status")?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("the connection closed");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Throughput and latency of one run.
struct Run {
    name: &'static str,
    ops: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Run {
    fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i]
    }
}

/// One evaluation: true when it succeeded.
type Call = Box<dyn FnMut() -> BoxFuture<'static, bool> + Send>;
/// Makes one client's [`Call`] (its own connection).
type MakeCall = Arc<dyn Fn() -> BoxFuture<'static, Call> + Send + Sync>;

/// Runs `concurrency` clients, each calling in a loop for `seconds`.
async fn run(name: &'static str, concurrency: usize, seconds: u64, make: MakeCall) -> Run {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut call = make().await;
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                if call().await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (lat, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    latencies.sort();
    Run {
        name,
        ops: latencies.len(),
        errors,
        seconds: started.elapsed().as_secs_f64(),
        latencies,
    }
}

/// Clients POSTing `body` to `path` at `addr`, each on its own keep-alive connection.
fn http_calls(addr: String, path: String, body: String) -> MakeCall {
    Arc::new(move || {
        let (addr, path, body) = (addr.clone(), path.clone(), body.clone());
        Box::pin(async move {
            let conn = Arc::new(tokio::sync::Mutex::new(Http::connect(&addr).await.ok()));
            let call: Call = Box::new(move || {
                let (conn, path, body, addr) = (conn.clone(), path.clone(), body.clone(), addr.clone());
                Box::pin(async move {
                    let mut c = conn.lock().await;
                    if c.is_none() {
                        *c = Http::connect(&addr).await.ok();
                    }
                    let Some(http) = c.as_mut() else { return false };
                    match http.post(&path, &body).await {
                        Ok((200, _)) => true,
                        _ => {
                            *c = None;
                            false
                        }
                    }
                })
            });
            call
        })
    })
}

/// Clients resolving `flag` over flagd's evaluation v1 on `channel` (shared, as a provider's).
fn grpc_calls(channel: tonic::transport::Channel, ctx: prost_types::Struct, flag: &'static str) -> MakeCall {
    Arc::new(move || {
        let (channel, ctx) = (channel.clone(), ctx.clone());
        Box::pin(async move {
            let call: Call = Box::new(move || {
                let mut c = ev::service_client::ServiceClient::new(channel.clone());
                let ctx = ctx.clone();
                Box::pin(async move {
                    c.resolve_boolean(ev::ResolveBooleanRequest {
                        flag_key: flag.into(),
                        context: Some(ctx),
                    })
                    .await
                    .is_ok()
                })
            });
            call
        })
    })
}

/// Runs the benchmark.
pub async fn run_bench(cli: &Cli, args: &OfrepArgs) -> anyhow::Result<()> {
    let client = cli.client()?.with_actor("bench");
    let immediate = Some(pb::Activation {
        mode: pb::activation::Mode::Immediate as i32,
        ..Default::default()
    });
    for i in 0..args.flags.max(1) {
        let name = format!("ofrep-{i:03}");
        let feature = pb::Feature {
            name: name.clone(),
            ..Default::default()
        };
        client.put_feature(feature, None, "bench").await?;
        client
            .set_toggle_with(&name, GOLD, None, immediate, "bench")
            .await?;
    }
    // Let the node applying them catch up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let context =
        json!({"context": {"targetingKey": "customer-42", "plan": "gold", "region": "eu"}}).to_string();

    let single = run(
        "OFREP single",
        args.concurrency,
        args.seconds,
        http_calls(
            args.http.clone(),
            "/ofrep/v1/evaluate/flags/ofrep-000".into(),
            context.clone(),
        ),
    )
    .await;
    let bulk = run(
        "OFREP bulk",
        args.concurrency,
        args.seconds,
        http_calls(
            args.http.clone(),
            "/ofrep/v1/evaluate/flags".into(),
            context.clone(),
        ),
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", args.grpc))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let grpc_context = switchyard::pb::structs::from_json(
        json!({"targetingKey": "customer-42", "plan": "gold", "region": "eu"})
            .as_object()
            .context("a context object")?,
    );
    let grpc = run(
        "flagd v1 gRPC single",
        args.concurrency,
        args.seconds,
        grpc_calls(channel, grpc_context, "ofrep-000"),
    )
    .await;

    let sse = sse_refetch(cli, args, &context).await?;
    let runs = [&single, &bulk, &grpc];
    let json = json!({
        "runs": runs.iter().map(|r| json!({
            "name": r.name, "ops": r.ops, "errors": r.errors,
            "per_second": r.ops as f64 / r.seconds,
            "p50_ms": r.quantile(0.5).as_secs_f64() * 1e3,
            "p99_ms": r.quantile(0.99).as_secs_f64() * 1e3,
        })).collect::<Vec<_>>(),
        "sse": sse,
    });
    emit(cli.output, json.clone(), || {
        let mut t = table(&["run", "evaluations/s", "p50 ms", "p99 ms", "errors"]);
        for r in runs {
            t.add_row(vec![
                r.name.to_string(),
                format!("{:.0}", r.ops as f64 / r.seconds),
                format!("{:.2}", r.quantile(0.5).as_secs_f64() * 1e3),
                format!("{:.2}", r.quantile(0.99).as_secs_f64() * 1e3),
                r.errors.to_string(),
            ]);
        }
        format!(
            "{t}\nSSE: {} clients, effective_at to refetched: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; early {}, missed {}",
            json["sse"]["clients"], json["sse"]["p50_ms"].as_f64().unwrap_or(0.0),
            json["sse"]["p99_ms"].as_f64().unwrap_or(0.0), json["sse"]["max_ms"].as_f64().unwrap_or(0.0),
            json["sse"]["early"], json["sse"]["missed"]
        )
    });
    Ok(())
}

/// K SSE clients that refetch the bulk evaluation on each message; `changes` scheduled
/// changes 1 s ahead: the time from each change's `effective_at` to each client holding the
/// refetched answer.
async fn sse_refetch(cli: &Cli, args: &OfrepArgs, context: &str) -> anyhow::Result<serde_json::Value> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, i64, String)>();
    let mut tasks = Vec::new();
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..args.sse_clients {
        let (addr, tx, context, opened) =
            (args.http.clone(), tx.clone(), context.to_string(), opened.clone());
        tasks.push(tokio::spawn(async move {
            let result: anyhow::Result<()> = async {
                let mut http = Http::connect(&addr).await?;
                let stream = TcpStream::connect(&addr).await?;
                let mut sse = BufReader::new(stream);
                sse.get_mut()
                    .write_all(format!("GET /ofrep/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
                    .await?;
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut line = String::new();
                loop {
                    line.clear();
                    if sse.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line.starts_with("data: ") && line.contains("refetchEvaluation") {
                        let (status, body) = http.post("/ofrep/v1/evaluate/flags", &context).await?;
                        if status == 200 {
                            let _ = tx.send((i, now_us(), body));
                        }
                    }
                }
            }
            .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "SSE client");
            }
        }));
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    while opened.load(std::sync::atomic::Ordering::Relaxed) < args.sse_clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = cli.client()?.with_actor("bench");
    let mut lags_ms = Vec::new();
    let (mut early, mut missed) = (0usize, 0usize);
    for c in 0..args.changes {
        let at_ms = (now_us() / 1000) + 1000;
        let def = if c % 2 == 0 { GOLD_AND_SILVER } else { GOLD };
        let scheduled = Some(pb::Activation {
            mode: pb::activation::Mode::At as i32,
            at_ms,
            ..Default::default()
        });
        client
            .set_toggle_with("ofrep-000", def, None, scheduled, "bench")
            .await?;
        let mut seen = std::collections::HashSet::new();
        let wait_until = Instant::now() + Duration::from_secs(10);
        while seen.len() < args.sse_clients {
            let left = wait_until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((i, at_us, _))) => {
                    if seen.insert(i) {
                        let lag = at_us as f64 / 1e3 - at_ms as f64;
                        if lag < 0.0 {
                            early += 1;
                        }
                        lags_ms.push(lag);
                    }
                }
                _ => break,
            }
        }
        missed += args.sse_clients - seen.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        while rx.try_recv().is_ok() {}
    }
    for t in tasks {
        t.abort();
    }
    lags_ms.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| -> f64 {
        if lags_ms.is_empty() {
            return 0.0;
        }
        lags_ms[((lags_ms.len() as f64 - 1.0) * p).round() as usize]
    };
    Ok(json!({
        "clients": args.sse_clients,
        "changes": args.changes,
        "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0),
        "early": early, "missed": missed,
    }))
}
