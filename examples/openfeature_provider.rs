//! The same instance written against OpenFeature's API: the `open-feature` crate's client, with
//! Switchyard's SDK as the provider. Evaluations stay local, flips happen with the fleet, and
//! the instance counts in the readiness gate.
//!
//! With a local cluster running (`cargo run --release -- local-cluster`):
//!
//! ```sh
//! cargo run --example openfeature_provider
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use open_feature::{EvaluationContext, OpenFeature};
use switchyard::sdk::openfeature::SwitchyardProvider;
use switchyard::sdk::{InstanceConfig, Sdk, SdkConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints: Vec<String> = std::env::var("SWITCHYARD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:7701,127.0.0.1:7702,127.0.0.1:7703".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let sdk = Sdk::start(
        &endpoints,
        SdkConfig {
            features: vec!["checkout".into()],
            instance: Some(InstanceConfig {
                id: format!("cart-of-{}", std::process::id()),
                service: "cart".into(),
                version: "2.1.0".into(),
                labels: BTreeMap::new(),
                ttl: Duration::from_secs(10),
            }),
            ..Default::default()
        },
    )
    .await?;

    let mut api = OpenFeature::singleton_mut().await;
    api.set_provider(SwitchyardProvider::new(sdk)).await;
    let client = api.create_client();
    drop(api);

    let customer = EvaluationContext::default()
        .with_targeting_key("customer-17")
        .with_custom_field("plan", "gold");
    let on = client
        .get_bool_value("checkout", Some(&customer), None)
        .await
        .unwrap_or(false);
    println!("checkout is {} for customer-17", if on { "on" } else { "off" });
    let details = client.get_bool_details("checkout", Some(&customer), None).await;
    println!("details: {details:?}");

    // Closing the provider's SDK deregisters the instance at once.
    let mut api = OpenFeature::singleton_mut().await;
    api.shutdown().await;
    Ok(())
}
