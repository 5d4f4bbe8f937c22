//! The whole story on one machine: `cargo run --release --example demo`. A 3-node cluster in
//! this process (temporary data), a simulated fleet of SDK instances, and the release: new
//! versions installed dark by rolling upgrade, a feature activated `when-ready` that fires when
//! the last old instance is gone, the fleet flipping together, and a rollback; closing with the
//! measured lag and flip spread.
//!
//! `--base-port P` moves the cluster off ports 7711-7713; `--instances N` sets the instances
//! per service (default 8).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use clap::Parser;
use switchyard::client::Client;
use switchyard::eval::Context;
use switchyard::pb::v1 as pb;
use switchyard::sdk::{InstanceConfig, Sdk, SdkConfig};
use switchyard::server::LocalCluster;

/// The whole story on a local cluster: rolling upgrade, when-ready activation, the fleet
/// flipping together, rollback, measured lag and flip spread.
#[derive(Debug, Parser)]
pub(crate) struct DemoArgs {
    /// Port of node 1 (nodes 2 and 3 take the next two).
    #[arg(long, default_value_t = 7711)]
    pub(crate) base_port: u16,
    /// Instances per service.
    #[arg(long, default_value_t = 8)]
    pub(crate) instances: usize,
}

const FEATURE: &str = "one-click-checkout";

/// A service of the simulated fleet: its old and new version.
struct Service {
    name: &'static str,
    old: &'static str,
    new: &'static str,
}

const SERVICES: [Service; 3] = [
    Service {
        name: "cart",
        old: "1.9.4",
        new: "2.0.0",
    },
    Service {
        name: "payment",
        old: "1.4.2",
        new: "1.5.0",
    },
    Service {
        name: "search",
        old: "3.1.0",
        new: "3.1.0",
    },
];

fn flag(on: bool) -> String {
    format!(
        r#"{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"{}"}}"#,
        if on { "on" } else { "off" }
    )
}

async fn start_instance(
    endpoints: &[String],
    id: String,
    service: &str,
    version: &str,
) -> anyhow::Result<Sdk> {
    let config = SdkConfig {
        features: vec![FEATURE.into()],
        instance: Some(InstanceConfig {
            id,
            service: service.into(),
            version: version.into(),
            labels: BTreeMap::new(),
            ttl: Duration::from_secs(5),
        }),
        ..Default::default()
    };
    Ok(Sdk::start(endpoints, config).await?)
}

/// What one flip measured across the fleet.
struct Flip {
    what: &'static str,
    revision: u64,
    lag_p50_ms: f64,
    lag_max_ms: f64,
    spread_ms: f64,
    late: usize,
}

/// Waits until every instance has the change at `revision` in effect, then measures it.
async fn measure(
    what: &'static str,
    fleet: &[Sdk],
    revision: u64,
    committed_at_ms: i64,
) -> anyhow::Result<Flip> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if fleet
            .iter()
            .all(|s| s.last_applied(FEATURE).is_some_and(|c| c.revision >= revision))
        {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the fleet did not apply revision {revision} in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let changes: Vec<_> = fleet.iter().filter_map(|s| s.last_applied(FEATURE)).collect();
    let mut lags: Vec<f64> = changes
        .iter()
        .map(|c| (c.received_at_us - committed_at_ms * 1000) as f64 / 1000.0)
        .collect();
    lags.sort_by(f64::total_cmp);
    let applied: Vec<i64> = changes.iter().map(|c| c.applied_at_us).collect();
    let spread = applied.iter().max().unwrap_or(&0) - applied.iter().min().unwrap_or(&0);
    Ok(Flip {
        what,
        revision,
        lag_p50_ms: lags.get(lags.len() / 2).copied().unwrap_or(0.0),
        lag_max_ms: lags.last().copied().unwrap_or(0.0),
        spread_ms: spread as f64 / 1000.0,
        late: changes.iter().filter(|c| c.late_ms > 0).count(),
    })
}

/// What the demo told, line by line (printed as it goes; kept for the test that plays it).
#[derive(Default)]
pub(crate) struct Story {
    pub(crate) lines: Vec<String>,
}

impl Story {
    fn say(&mut self, text: impl AsRef<str>) {
        println!("{}", text.as_ref());
        self.lines.push(text.as_ref().to_string());
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = DemoArgs::parse();
    let dir: PathBuf = std::env::temp_dir().join(format!("switchyard-demo-{}", uuid::Uuid::new_v4()));
    let result = play(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|_| ())
}

pub(crate) async fn play(args: &DemoArgs, dir: &std::path::Path) -> anyhow::Result<Story> {
    let mut story = Story::default();
    // 1. The cluster.
    let cluster = LocalCluster::start(LocalCluster::configs(3, "127.0.0.1", args.base_port, dir)?)
        .await
        .context("starting the demo cluster (is another demo running on these ports? try --base-port)")?;
    let endpoints = cluster.endpoints();
    let client = Arc::new(Client::new(&endpoints)?.with_actor("release-manager"));
    let mut leader = 0;
    for _ in 0..100 {
        leader = client.status().await?.leader_id;
        if leader != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    story.say(format!(
        "== A 3-node Switchyard cluster on {} (leader: node {leader})",
        endpoints.join(", "),
    ));

    // 2. The feature, installed dark.
    let mut feature = pb::Feature {
        name: FEATURE.into(),
        description: "Checkout in one click; needs the new cart and payment APIs".into(),
        owner: "checkout-team".into(),
        ..Default::default()
    };
    for s in &SERVICES[..2] {
        feature.requirements.push(pb::Requirement {
            service: s.name.into(),
            version_req: format!(">={}", s.new),
        });
    }
    client.put_feature(feature, None, "new feature").await?;
    let immediate = pb::Activation {
        mode: pb::activation::Mode::Immediate as i32,
        ..Default::default()
    };
    client
        .set_toggle_with(FEATURE, &flag(false), None, Some(immediate), "installed dark")
        .await?;
    story.say(format!(
        "== Catalog: {FEATURE} requires cart >= 2.0.0 and payment >= 1.5.0; its toggle is off"
    ));

    // 3. The fleet, on the old versions.
    let mut fleet: Vec<(String, &Service, Sdk)> = Vec::new();
    for s in &SERVICES {
        for i in 0..args.instances {
            let id = format!("{}-{i}", s.name);
            let sdk = start_instance(&endpoints, id.clone(), s.name, s.old).await?;
            fleet.push((id, s, sdk));
        }
    }
    story.say(format!(
        "== Fleet: {} instances ({} each of cart {}, payment {}, search {}), each running the SDK",
        fleet.len(),
        args.instances,
        SERVICES[0].old,
        SERVICES[1].old,
        SERVICES[2].old
    ));

    // 4. Activate when ready: pending, with blockers.
    let when_ready = pb::Activation {
        mode: pb::activation::Mode::WhenReady as i32,
        ..Default::default()
    };
    let requested = client
        .set_toggle_with(
            FEATURE,
            &flag(true),
            None,
            Some(when_ready),
            "launch when the fleet is ready",
        )
        .await?
        .revision;
    let r = client.readiness(FEATURE, false).await?;
    story.say(format!(
        "== Activated when-ready: pending; {} instances block it (old cart and payment)",
        r.blockers.len()
    ));

    // 5. Rolling upgrade, one instance at a time.
    story.say("== Rolling upgrade of cart and payment (search stays as it is):");
    let mut changes = fleet[fleet.len() - 1].2.subscribe();
    let upgrades: Vec<usize> = (0..fleet.len())
        .filter(|i| fleet[*i].1.old != fleet[*i].1.new)
        .collect();
    for (step, i) in upgrades.iter().enumerate() {
        let (id, service, _) = &fleet[*i];
        let (id, service) = (id.clone(), *service);
        let new = start_instance(&endpoints, format!("{id}-v2"), service.name, service.new).await?;
        let old = std::mem::replace(&mut fleet[*i].2, new);
        fleet[*i].0 = format!("{id}-v2");
        old.close().await;
        let blockers = client.readiness(FEATURE, false).await?.blockers.len();
        story.say(format!(
            "   [{:>2}/{}] {id} {} -> {}-v2 {}   blockers left: {blockers}",
            step + 1,
            upgrades.len(),
            service.old,
            id,
            service.new
        ));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    // 6. The gate fires; the fleet flips at effective_at.
    let fired = loop {
        match tokio::time::timeout(Duration::from_secs(10), changes.recv()).await {
            Ok(Ok(c)) if !c.removed && c.revision > requested => break c,
            Ok(Ok(_)) => continue,
            _ => anyhow::bail!("the activation did not reach the fleet"),
        }
    };
    let toggle = client
        .get_toggle(FEATURE, false)
        .await?
        .toggle
        .context("no toggle")?;
    story.say(format!(
        "== The last old instance left: the gate fired at revision {} (effective at {}, commit + 500 ms)",
        toggle.revision,
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(toggle.effective_at_ms.max(0) as u64)
        )
    ));
    let sdks: Vec<Sdk> = fleet.into_iter().map(|(_, _, s)| s).collect();
    let on = measure(
        "activation (when-ready)",
        &sdks,
        fired.revision,
        toggle.effective_at_ms - 500,
    )
    .await?;
    let enabled = sdks
        .iter()
        .filter(|s| s.is_enabled(FEATURE, &Context::new()))
        .count();
    story.say(format!(
        "   {enabled}/{} instances now see {FEATURE} on; flip spread {:.2} ms",
        sdks.len(),
        on.spread_ms
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rollout = client.rollout_status(FEATURE).await?;
    story.say(format!(
        "   rollout-status: {} applied, {} late, {} behind, {} unknown",
        rollout.applied, rollout.late, rollout.behind, rollout.unknown
    ));

    // 7. Something looks wrong: roll back, immediately.
    let back = client.rollback(FEATURE, None, None, "error rate up").await?;
    let rb_toggle = back.toggle.context("no toggle")?;
    story.say(format!(
        "== Rollback (immediate) at revision {}: every instance applies it on arrival",
        rb_toggle.revision
    ));
    let off = measure(
        "rollback (immediate)",
        &sdks,
        rb_toggle.revision,
        rb_toggle.effective_at_ms,
    )
    .await?;
    let enabled = sdks
        .iter()
        .filter(|s| s.is_enabled(FEATURE, &Context::new()))
        .count();
    story.say(format!("   {enabled}/{} instances see {FEATURE} on", sdks.len()));

    // 8. Summary.
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "change",
        "revision",
        "lag p50",
        "lag max",
        "flip spread",
        "arrived after effective_at",
    ]);
    for f in [&on, &off] {
        t.add_row(vec![
            f.what.to_string(),
            f.revision.to_string(),
            format!("{:.2} ms", f.lag_p50_ms),
            format!("{:.2} ms", f.lag_max_ms),
            format!("{:.2} ms", f.spread_ms),
            f.late.to_string(),
        ]);
    }
    story.say(format!(
        "== Summary ({} instances; lag = commit to the instance holding the change)\n{t}",
        sdks.len()
    ));
    story.say(
        "   A change activated now or when-ready flips the fleet together at effective_at (commit + 500 ms),",
    );
    story.say("   so its spread is the timers' precision; an immediate one (rollback, kill switch) lands as it arrives.");
    story.say("   history:");
    for e in client.history(FEATURE).await?.entries {
        story.say(format!(
            "     rev {:>3}  {:<16} {:<22} {}",
            e.revision, e.actor, e.change, e.reason
        ));
    }

    for s in sdks {
        s.close().await;
    }
    cluster.shutdown().await;
    Ok(story)
}
