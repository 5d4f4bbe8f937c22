//! `switchyard-bench load`: fills a running cluster with N features (each with a requirement
//! and a toggle definition) and M registered instances (under a few leases of the longest TTL,
//! kept for the run of a benchmark that reads them, such as benches/backup.sh). Reports how
//! long the writes took and the revision reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::output::emit;
use crate::Cli;
use switchyard::pb::v1 as pb;

/// Settings of `bench load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Features to write.
    #[arg(long, default_value_t = 10_000)]
    pub features: usize,
    /// Instances to register.
    #[arg(long, default_value_t = 10_000)]
    pub instances: usize,
    /// Leases the instances are spread over (granted with the longest TTL, never kept alive:
    /// the instances stay for ten minutes).
    #[arg(long, default_value_t = 16)]
    pub leases: usize,
    /// Concurrent writes.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Runs `concurrency` tasks that each take the next index below `n` and call `write` on it.
async fn in_parallel<F, Fut>(n: usize, concurrency: usize, write: F) -> anyhow::Result<()>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, write) = (next.clone(), write.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return anyhow::Ok(());
                }
                write(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Runs the load.
pub async fn run(cli: &Cli, args: &LoadArgs) -> anyhow::Result<()> {
    let client = Arc::new(cli.client()?.with_actor("bench"));
    let started = Instant::now();
    let services = 20;
    in_parallel(args.features, args.concurrency, {
        let client = client.clone();
        move |i| {
            let client = client.clone();
            async move {
                let feature = pb::Feature {
                    name: format!("feature-{i:05}"),
                    description: format!("load feature {i}"),
                    owner: format!("team-{}", i % 7),
                    requirements: vec![pb::Requirement {
                        service: format!("svc-{}", i % services),
                        version_req: ">=2.0.0".into(),
                    }],
                    revision: 0,
                    created_revision: 0,
                };
                client.put_feature(feature, None, "load").await?;
                Ok(())
            }
        }
    })
    .await?;
    let features_took = started.elapsed();

    let started = Instant::now();
    let mut leases = Vec::new();
    for _ in 0..args.leases.max(1) {
        leases.push(client.grant_lease(Duration::from_secs(600)).await?.lease_id);
    }
    let leases = Arc::new(leases);
    in_parallel(args.instances, args.concurrency, {
        let client = client.clone();
        move |i| {
            let (client, leases) = (client.clone(), leases.clone());
            async move {
                let instance = pb::Instance {
                    id: format!("instance-{i:05}"),
                    service: format!("svc-{}", i % services),
                    version: if i % 3 == 0 { "1.9.0" } else { "2.1.0" }.into(),
                    labels: [("zone".to_string(), format!("z{}", i % 3))].into(),
                    ..Default::default()
                };
                client
                    .register(instance, leases[i as usize % leases.len()])
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    let instances_took = started.elapsed();
    let status = client.status().await?;
    let revision = status.members.iter().map(|m| m.revision).max().unwrap_or(0);
    let json = json!({
            "features": args.features,
            "features_seconds": features_took.as_secs_f64(),
            "instances": args.instances,
            "instances_seconds": instances_took.as_secs_f64(),
            "revision": revision,
    });
    emit(cli.output, json, || {
        format!(
            "{} features in {:.1} s, {} instances in {:.1} s; revision {revision}",
            args.features,
            features_took.as_secs_f64(),
            args.instances,
            instances_took.as_secs_f64()
        )
    });
    Ok(())
}
