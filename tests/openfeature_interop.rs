//! OpenFeature's Rust flagd provider (`open-feature-flagd`), unchanged, against a 3-node
//! cluster: in-process mode (flags from `flagd.sync.v1.SyncFlags`, evaluated by OpenFeature's
//! engine) and rpc mode (`flagd.evaluation.v1`, evaluated by the node), and OpenFeature's Rust
//! OFREP provider (`open-feature-ofrep`, over the nodes' HTTP listeners) give the same values as
//! the Switchyard SDK for a table of contexts, after a toggle change, and after the node they
//! are connected to is killed. The providers reach the cluster through a TCP forwarder standing
//! in for a load balancer: each new connection goes to the first node that accepts it. Our own
//! OpenFeature provider (`SwitchyardProvider`, backed by a second SDK) is asked the same.

mod support;

use std::time::{Duration, Instant};

use open_feature::provider::FeatureProvider;
use open_feature::EvaluationContext;
use open_feature_flagd::ResolverType;
use open_feature_ofrep::{OfrepOptions, OfrepProvider};
use support::{feature, TestCluster};
use switchyard::eval::Context;
use switchyard::sdk::openfeature::SwitchyardProvider;
use switchyard::sdk::{Sdk, SdkConfig};

/// A TCP forwarder to the first node (in order) that accepts a connection.
async fn balancer(nodes: Vec<String>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                for node in &nodes {
                    let connect = tokio::net::TcpStream::connect(node.as_str());
                    if let Ok(Ok(mut outbound)) = tokio::time::timeout(Duration::from_secs(1), connect).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

const CHECKOUT: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
  "targeting":{"if":[{"in":[{"var":"plan"},["gold","enterprise"]]},"on",null]}}"#;
const CHECKOUT_CHANGED: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
  "targeting":{"if":[{"==":[{"var":"plan"},"free"]},"on",null]}}"#;
const COLOR: &str = r##"{"state":"ENABLED","variants":{"blue":"#0057ff","green":"#00a86b"},"defaultVariant":"blue",
  "targeting":{"fractional":[["blue",50],["green",50]]}}"##;
const COLOR_CHANGED: &str = r##"{"state":"ENABLED","variants":{"blue":"#0057ff","green":"#00a86b"},"defaultVariant":"blue",
  "targeting":{"fractional":[["blue",10],["green",90]]}}"##;
const LIMIT: &str = r#"{"state":"ENABLED","variants":{"big":100,"small":10},"defaultVariant":"small",
  "targeting":{"if":[{"sem_ver":[{"var":"app"},">=","2.0.0"]},"big",null]}}"#;

/// The contexts every evaluator is asked about.
fn contexts() -> Vec<(String, &'static str, &'static str)> {
    let plans = ["gold", "free", "enterprise", "trial"];
    let apps = ["1.9.3", "2.0.0", "2.4.1", "v3.0.0"];
    (0..24)
        .map(|i| (format!("customer-{i}"), plans[i % 4], apps[(i / 4) % 4]))
        .collect()
}

/// (checkout, color, limit) for one context, as the SDK says.
fn sdk_answers(sdk: &Sdk, key: &str, plan: &str, app: &str) -> (bool, String, i64) {
    let ctx = Context::new()
        .with_targeting_key(key)
        .with("plan", plan)
        .with("app", app);
    (
        sdk.bool_value("checkout-v2", &ctx, false),
        sdk.string_value("button-color", &ctx, "none"),
        sdk.int_value("max-items", &ctx, -1),
    )
}

/// The same, as an OpenFeature provider says.
async fn provider_answers(
    p: &dyn FeatureProvider,
    key: &str,
    plan: &str,
    app: &str,
) -> Option<(bool, String, i64)> {
    let ctx = EvaluationContext::default()
        .with_targeting_key(key)
        .with_custom_field("plan", plan)
        .with_custom_field("app", app);
    Some((
        p.resolve_bool_value("checkout-v2", &ctx).await.ok()?.value,
        p.resolve_string_value("button-color", &ctx).await.ok()?.value,
        p.resolve_int_value("max-items", &ctx).await.ok()?.value,
    ))
}

/// Waits until the SDK has put `feature`'s change at `revision` into effect and both providers
/// agree with it on every context; panics with the first disagreement after `timeout`.
async fn agree(
    sdk: &Sdk,
    providers: &[(&str, &dyn FeatureProvider)],
    feature: &str,
    revision: u64,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut disagreement = None;
        let held = sdk.flag(feature).map_or(0, |f| f.revision);
        if held < revision {
            disagreement = Some(format!("the SDK holds {feature} at {held} < {revision}"));
        }
        'all: for (key, plan, app) in contexts() {
            if disagreement.is_some() {
                break;
            }
            let want = sdk_answers(sdk, &key, plan, app);
            for (mode, p) in providers {
                let got = provider_answers(*p, &key, plan, app).await;
                if got.as_ref() != Some(&want) {
                    disagreement = Some(format!(
                        "{mode} says {got:?} for {key} {plan} {app}; the SDK says {want:?}"
                    ));
                    break 'all;
                }
            }
        }
        match disagreement {
            None => return,
            Some(d) if Instant::now() > deadline => panic!("{d}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openfeature_flagd_providers_agree_with_the_sdk_through_changes_and_a_node_loss() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    for (name, def) in [
        ("checkout-v2", CHECKOUT),
        ("button-color", COLOR),
        ("max-items", LIMIT),
    ] {
        client.put_feature(feature(name), None, "test").await.unwrap();
        client
            .set_toggle_with(name, def, None, None, "test")
            .await
            .unwrap();
    }
    let port = balancer((1..=3).map(|id| cluster.addr(id)).collect()).await;
    let http_port = balancer(cluster.nodes.iter().map(|n| n.metrics_addr.clone()).collect()).await;
    let sdk = Sdk::start(&cluster.endpoints(), SdkConfig::default())
        .await
        .unwrap();
    let in_process = support::flagd_provider(&format!("127.0.0.1:{port}"), ResolverType::InProcess).await;
    let rpc = support::flagd_provider(&format!("127.0.0.1:{port}"), ResolverType::Rpc).await;
    let ours = SwitchyardProvider::new(
        Sdk::start(&cluster.endpoints(), SdkConfig::default())
            .await
            .unwrap(),
    );
    let ofrep = OfrepProvider::new(OfrepOptions {
        base_url: format!("http://127.0.0.1:{http_port}"),
        ..Default::default()
    })
    .await
    .expect("the OFREP provider starts");
    let providers: [(&str, &dyn FeatureProvider); 4] = [
        ("in-process", &in_process),
        ("rpc", &rpc),
        ("switchyard-provider", &ours),
        ("ofrep", &ofrep),
    ];
    let revision = client.get_toggle("max-items", false).await.unwrap().revision;

    // Wait out the toggles' switch delay, then every context agrees, and the answers are not
    // all alike (so the table exercises the rules).
    agree(&sdk, &providers, "max-items", revision, Duration::from_secs(15)).await;
    let answers: Vec<_> = contexts()
        .iter()
        .map(|(k, p, a)| sdk_answers(&sdk, k, p, a))
        .collect();
    assert!(answers.iter().any(|a| a.0) && answers.iter().any(|a| !a.0));
    assert!(answers.iter().any(|a| a.1 == "#0057ff") && answers.iter().any(|a| a.1 == "#00a86b"));
    assert!(answers.iter().any(|a| a.2 == 100) && answers.iter().any(|a| a.2 == 10));

    // A change reaches all four.
    let r = client
        .set_toggle_with("checkout-v2", CHECKOUT_CHANGED, None, None, "test")
        .await
        .unwrap();
    agree(
        &sdk,
        &providers,
        "checkout-v2",
        r.revision,
        Duration::from_secs(15),
    )
    .await;
    let gold = sdk_answers(&sdk, "customer-0", "gold", "2.0.0");
    assert!(!gold.0, "the changed rule is in effect");

    // The node the providers' connections go to dies; they reconnect through the balancer to
    // the next one, and a later change reaches them there.
    cluster.kill(1);
    let r = client
        .set_toggle_with("button-color", COLOR_CHANGED, None, None, "test")
        .await
        .unwrap();
    agree(
        &sdk,
        &providers,
        "button-color",
        r.revision,
        Duration::from_secs(30),
    )
    .await;
    let greens = contexts()
        .iter()
        .filter(|(k, p, a)| sdk_answers(&sdk, k, p, a).1 == "#00a86b")
        .count();
    assert!(greens > 12, "the 90% split is in effect ({greens} of 24 green)");
    sdk.close().await;
}
