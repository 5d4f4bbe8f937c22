//! `switchyard-bench registry`: N instances (default 10,000) each holding a lease kept alive
//! over a few multiplexed keepalive streams, against a running cluster. Reports how long the
//! registrations took, whether the Raft log grows while only keepalives flow (it must not), and
//! the time from the last old instance leaving to the `when-ready` activation being committed.
//!
//! Progress lines `HOLD START` / `HOLD END` on stderr let a driver script (benches/registry.sh)
//! sample the nodes' CPU over the keepalive-only window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_stream::StreamExt;

use crate::output::emit;
use crate::Cli;
use switchyard::client::Client;
use switchyard::pb::v1 as pb;
use switchyard::pb::v1::registry_client::RegistryClient;

/// Settings of `bench registry`.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Instances to register.
    #[arg(long, default_value_t = 10_000)]
    pub instances: usize,
    /// Lease TTL.
    #[arg(long, default_value = "10s")]
    pub ttl: humantime::Duration,
    /// Keepalive streams the instances are spread over.
    #[arg(long, default_value_t = 32)]
    pub streams: usize,
    /// Concurrent registrations.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to hold every lease with keepalives only (the measured window).
    #[arg(long, default_value_t = 30)]
    pub hold: u64,
}

async fn last_log_index(client: &Client) -> anyhow::Result<u64> {
    let s = client.status().await?;
    Ok(s.members.iter().map(|m| m.last_log_index).max().unwrap_or(0))
}

/// Runs the benchmark.
pub async fn run(cli: &Cli, args: &RegistryArgs) -> anyhow::Result<()> {
    let ttl: Duration = args.ttl.into();
    let client = Arc::new(cli.client()?.with_actor("bench"));
    let feature = pb::Feature {
        name: "bench-gate".into(),
        requirements: vec![pb::Requirement {
            service: "svc".into(),
            version_req: ">=2".into(),
        }],
        ..Default::default()
    };
    client.put_feature(feature, None, "bench").await?;

    // Register: a lease and an instance each, `concurrency` at a time.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, n) = (client.clone(), next.clone(), args.instances as u64);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(mine);
                }
                let lease = client.grant_lease(ttl).await?.lease_id;
                let instance = pb::Instance {
                    id: format!("svc-{i:05}"),
                    service: "svc".into(),
                    version: "1.0.0".into(),
                    ..Default::default()
                };
                client.register(instance, lease).await?;
                mine.push((format!("svc-{i:05}"), lease));
            }
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await??);
    }
    let register_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "registered {} instances in {register_secs:.1}s ({:.0}/s)",
        held.len(),
        held.len() as f64 / register_secs
    );

    // Keepalives: each stream renews its share of the leases every TTL/3, spread evenly.
    let renewed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let endpoints = cli.endpoints.clone();
    let mut streams = Vec::new();
    for (s, chunk) in held.chunks(held.len().div_ceil(args.streams.max(1))).enumerate() {
        let leases: Vec<u64> = chunk.iter().map(|(_, l)| *l).collect();
        let endpoint = format!("http://{}", endpoints[s % endpoints.len()]);
        let (renewed, failed) = (renewed.clone(), failed.clone());
        streams.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)?
                .tcp_nodelay(true)
                .connect()
                .await?;
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::KeepAliveRequest>(256);
            let mut replies = RegistryClient::new(channel)
                .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let reader = tokio::spawn(async move {
                while let Some(r) = replies.next().await {
                    match r {
                        Ok(_) => renewed.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
            let gap = (ttl / 3) / leases.len().max(1) as u32;
            loop {
                for lease in &leases {
                    if tx
                        .send(pb::KeepAliveRequest {
                            lease_id: *lease,
                            applied_revision: 0,
                            ..Default::default()
                        })
                        .await
                        .is_err()
                    {
                        reader.abort();
                        return anyhow::Ok(());
                    }
                    tokio::time::sleep(gap).await;
                }
            }
        }));
    }

    let log_before = last_log_index(&client).await?;
    eprintln!("HOLD START");
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    eprintln!("HOLD END");
    let log_after = last_log_index(&client).await?;
    let live = client
        .list_instances("svc", Default::default())
        .await?
        .instances
        .len();
    let keepalives = renewed.load(Ordering::Relaxed);

    // The gate: activate when ready, upgrade: one new instance joins, then the old ones leave;
    // time the last one's deregistration (the activation commits in the same entry).
    let resp = client
        .set_toggle_state_with(
            "bench-gate",
            true,
            None,
            Some(pb::Activation {
                mode: pb::activation::Mode::WhenReady as i32,
                ..Default::default()
            }),
            "bench",
        )
        .await?;
    anyhow::ensure!(resp.pending.is_some(), "the activation should wait");
    let lease = client.grant_lease(ttl).await?.lease_id;
    let new = pb::Instance {
        id: "svc-new".into(),
        service: "svc".into(),
        version: "2.0.0".into(),
        ..Default::default()
    };
    client.register(new, lease).await?;
    let (last, rest) = held.split_last().ok_or_else(|| anyhow::anyhow!("no instances"))?;
    let rest = Arc::new(rest.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, rest) = (client.clone(), next.clone(), rest.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((id, _)) = rest.get(i) else {
                    return anyhow::Ok(());
                };
                client.deregister(id).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let t0 = Instant::now();
    let dereg = client.deregister(&last.0).await?;
    let gate_ms = t0.elapsed().as_secs_f64() * 1e3;
    let toggle = client
        .get_toggle("bench-gate", false)
        .await?
        .toggle
        .unwrap_or_default();
    anyhow::ensure!(
        toggle.revision == dereg.revision,
        "activation at revision {} but the last old instance left at {}",
        toggle.revision,
        dereg.revision
    );
    for s in streams {
        s.abort();
    }

    let result = json!({
        "instances": held.len(),
        "register_seconds": register_secs,
        "hold_seconds": args.hold,
        "keepalives_renewed": keepalives,
        "keepalives_per_second": keepalives as f64 / args.hold as f64,
        "keepalive_failures": failed.load(Ordering::Relaxed),
        "instances_live_after_hold": live,
        "raft_log_entries_during_hold": log_after.saturating_sub(log_before),
        "last_old_instance_to_activation_committed_ms": gate_ms,
        "activation_revision": dereg.revision,
    });
    emit(cli.output, result.clone(), || {
        format!(
            "instances: {}\nregistration: {register_secs:.1}s\nkeepalives during {}s hold: {} ({:.0}/s), failures {}\nlive after hold: {live}\nraft log entries appended during hold: {}\nlast old instance leaving -> activation committed: {gate_ms:.2} ms (revision {})",
            held.len(),
            args.hold,
            keepalives,
            keepalives as f64 / args.hold as f64,
            failed.load(Ordering::Relaxed),
            log_after.saturating_sub(log_before),
            dereg.revision
        )
    });
    Ok(())
}
