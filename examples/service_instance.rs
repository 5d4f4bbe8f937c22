//! A service instance embedding the SDK: it registers as `cart` 2.1.0 (a canary), evaluates the
//! `checkout` toggle for a customer with no network call, prints every change it puts into
//! effect, and leaves the registry at once when it stops.
//!
//! With a local cluster running (`cargo run --release -- local-cluster`):
//!
//! ```sh
//! cargo run --example service_instance            # Ctrl-C to stop; or --seconds N
//! switchyard feature put checkout && switchyard toggle on checkout   # in another terminal
//! ```
//!
//! Endpoints come from `SWITCHYARD_ENDPOINTS` (default: the local cluster's three nodes).

use std::collections::BTreeMap;
use std::time::Duration;

use switchyard::eval::Context;
use switchyard::sdk::{InstanceConfig, Sdk, SdkConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints: Vec<String> = std::env::var("SWITCHYARD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:7701,127.0.0.1:7702,127.0.0.1:7703".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let seconds: Option<u64> = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok());

    // Register this instance (its version is what the readiness gate checks) and watch the
    // toggles it uses.
    let sdk = Sdk::start(
        &endpoints,
        SdkConfig {
            features: vec!["checkout".into()],
            instance: Some(InstanceConfig {
                id: format!("cart-example-{}", std::process::id()),
                service: "cart".into(),
                version: "2.1.0".into(),
                labels: BTreeMap::from([("canary".to_string(), "true".to_string())]),
                ttl: Duration::from_secs(10),
            }),
            ..Default::default()
        },
    )
    .await?;

    // Evaluate for a customer: local, lock-free, no network.
    let customer = Context::new()
        .with_targeting_key("customer-17")
        .with("plan", "gold");
    println!(
        "checkout is {} for customer-17",
        on_off(sdk.is_enabled("checkout", &customer))
    );

    // React to changes: each arrives here when it takes effect (at its effective_at, with the
    // rest of the fleet).
    let mut changes = sdk.subscribe();
    let stop = async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(c) => println!(
                    "{} changed at revision {} (late by {} ms): now {} for customer-17",
                    c.feature,
                    c.revision,
                    c.late_ms,
                    on_off(sdk.is_enabled(&c.feature, &customer))
                ),
                Err(e) => println!("missed changes ({e}); the SDK still holds the latest"),
            },
            _ = &mut stop => break,
        }
    }

    // Leave the registry at once (a crash would leave it after the lease's TTL).
    sdk.close().await;
    Ok(())
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}
