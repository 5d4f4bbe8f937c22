//! A feature manager's gated rollout with the admin client: put a feature that needs
//! `cart >= 2.0.0`, activate it `when-ready`, watch the readiness gate while old instances
//! leave, and roll back if asked.
//!
//! With a local cluster running (`cargo run --release -- local-cluster`):
//!
//! ```sh
//! cargo run --example gated_rollout              # waits up to 60 s for the gate
//! switchyard register --service cart --version 2.0.0 &   # in another terminal: the gate opens
//! ```

use std::time::Duration;

use switchyard::client::Client;
use switchyard::pb::v1 as pb;

const FEATURE: &str = "one-click-checkout";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints: Vec<String> = std::env::var("SWITCHYARD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:7701,127.0.0.1:7702,127.0.0.1:7703".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let client = Client::new(&endpoints)?.with_actor("release-manager");

    // The feature, installed dark: it needs the new cart.
    client
        .put_feature(
            pb::Feature {
                name: FEATURE.into(),
                owner: "checkout-team".into(),
                requirements: vec![pb::Requirement {
                    service: "cart".into(),
                    version_req: ">=2.0.0".into(),
                }],
                ..Default::default()
            },
            None,
            "new feature",
        )
        .await?;

    // Turn it on when every live cart instance runs 2.0.0 or later.
    let when_ready = pb::Activation {
        mode: pb::activation::Mode::WhenReady as i32,
        ..Default::default()
    };
    let answer = client
        .set_toggle_state_with(FEATURE, true, None, Some(when_ready), "gated rollout")
        .await?;
    println!("activation requested at revision {}", answer.revision);

    // Watch the gate: who still blocks it.
    for _ in 0..60 {
        let r = client.readiness(FEATURE, false).await?;
        if r.ready {
            break;
        }
        let blockers: Vec<String> = r
            .blockers
            .iter()
            .map(|b| {
                format!(
                    "{} ({} {}, needs {})",
                    b.instance, b.service, b.version, b.requirement
                )
            })
            .collect();
        println!(
            "waiting for: {}",
            if blockers.is_empty() {
                "no live cart instance yet".into()
            } else {
                blockers.join(", ")
            }
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    match client.get_toggle(FEATURE, false).await?.toggle {
        Some(t) => println!(
            "{FEATURE} is {} since revision {}",
            if t.definition_json.contains("\"ENABLED\"") {
                "on"
            } else {
                "off"
            },
            t.revision
        ),
        None => {
            println!("still pending; cancelling");
            client.cancel_activation(FEATURE, "rollout window over").await?;
            return Ok(());
        }
    }
    if std::env::args().any(|a| a == "--rollback") {
        let back = client.rollback(FEATURE, None, None, "example rollback").await?;
        println!("rolled back at revision {}", back.revision);
    }
    Ok(())
}
