//! `switchyard instances` and `switchyard register` (hold a lease and an instance until
//! interrupted: for scripts, demos and services without the SDK).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::cli::output::{emit, table};
use crate::cli::Cli;
use crate::pb::v1 as pb;
use crate::state::registry::InstanceSpec;

/// Settings of `register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The service.
    #[arg(long)]
    pub service: String,
    /// The version (semver).
    #[arg(long)]
    pub version: String,
    /// Instance id (default: SERVICE-<random>).
    #[arg(long)]
    pub id: Option<String>,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Lease TTL.
    #[arg(long, default_value = "10s")]
    pub ttl: humantime::Duration,
}

/// `instances [--service S] [--label k=v]`.
pub async fn instances(cli: &Cli, service: &str, labels: &[String]) -> anyhow::Result<()> {
    let labels: HashMap<String, String> = labels
        .iter()
        .map(|l| InstanceSpec::parse_label(l))
        .collect::<crate::Result<_>>()?;
    let r = cli.client()?.list_instances(service, labels).await?;
    emit(
        cli.output,
        json!({"revision": r.revision, "instances": r.instances.iter().map(|i| json!({
            "id": i.id, "service": i.service, "version": i.version, "labels": i.labels,
            "lease_id": i.lease_id, "revision": i.revision,
        })).collect::<Vec<_>>()}),
        || {
            let mut t = table(&["instance", "service", "version", "labels", "lease", "revision"]);
            for i in &r.instances {
                let mut labels: Vec<String> = i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                labels.sort();
                t.add_row(vec![
                    i.id.clone(),
                    i.service.clone(),
                    i.version.clone(),
                    labels.join(","),
                    i.lease_id.to_string(),
                    i.revision.to_string(),
                ]);
            }
            t.to_string()
        },
    );
    Ok(())
}

/// `register`: grant a lease, register, keep the lease alive until Ctrl-C, then deregister.
pub async fn register(cli: &Cli, args: &RegisterArgs) -> anyhow::Result<()> {
    let client = cli.client()?;
    let id = args.id.clone().unwrap_or_else(|| {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{}-{}", args.service, &suffix[..8])
    });
    let labels = args
        .labels
        .iter()
        .map(|l| InstanceSpec::parse_label(l))
        .collect::<crate::Result<_>>()?;
    let spec = InstanceSpec {
        id: id.clone(),
        service: args.service.clone(),
        version: args.version.clone(),
        labels,
    };
    spec.validate()?;
    let ttl: Duration = args.ttl.into();
    let lease = client.grant_lease(ttl).await?;
    let instance = pb::Instance {
        id: spec.id,
        service: spec.service,
        version: spec.version,
        labels: spec.labels.into_iter().collect(),
        ..Default::default()
    };
    let reg = match client.register(instance, lease.lease_id).await {
        Ok(r) => r,
        Err(e) => {
            // The lease was granted for this instance alone: give it back at once.
            if let Err(revoke) = client.revoke_lease(lease.lease_id).await {
                eprintln!(
                    "could not revoke lease {}: {revoke}; it expires after its TTL",
                    lease.lease_id
                );
            }
            return Err(e.into());
        }
    };
    emit(
        cli.output,
        json!({"instance": id, "lease_id": lease.lease_id, "revision": reg.revision}),
        || {
            format!(
                "registered {id} ({} {}) under lease {} at revision {}; Ctrl-C deregisters",
                args.service, args.version, lease.lease_id, reg.revision
            )
        },
    );
    let mut tick = tokio::time::interval(ttl / 3);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if let Err(e) = client.keep_alive_once(lease.lease_id).await {
                    anyhow::bail!("lost the lease: {e}");
                }
            }
        }
    }
    client.revoke_lease(lease.lease_id).await?;
    eprintln!("deregistered {id}");
    Ok(())
}
