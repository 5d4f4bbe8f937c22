//! The SDK against a real cluster: the fleet flips together at `effective_at`, instances that
//! got a change late apply it at once and report how late (rollout-status shows it), every
//! change is applied once and in order across node failures, and a lost session registers
//! again.

#[allow(dead_code)]
#[path = "../examples/demo.rs"]
mod demo;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::{boolean_flag, feature, TestCluster};
use switchyard::eval::Context;
use switchyard::pb::v1 as pb;
use switchyard::sdk::{InstanceConfig, Sdk, SdkConfig};

/// Endpoints starting at node `first`, then the others.
fn endpoints_from(cluster: &TestCluster, first: u64) -> Vec<String> {
    let mut e = vec![cluster.addr(first)];
    e.extend((1..=3).filter(|id| *id != first).map(|id| cluster.addr(id)));
    e
}

fn instance(id: &str) -> InstanceConfig {
    InstanceConfig {
        id: id.to_string(),
        service: "cart".into(),
        version: "2.0.0".into(),
        labels: BTreeMap::new(),
        ttl: Duration::from_secs(10),
    }
}

fn now_activation() -> Option<pb::Activation> {
    Some(pb::Activation {
        mode: pb::activation::Mode::Now as i32,
        switch_delay_ms: Some(800),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_flips_together_and_late_instances_report_their_lateness() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    client.put_feature(feature("checkout"), None, "").await.unwrap();
    client
        .set_toggle("checkout", &boolean_flag(false), None, "dark")
        .await
        .unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (frozen, other) = (followers[0], followers[1]);

    // Two instances on each node.
    let mut sdks = Vec::new();
    for (n, node) in [leader, other, frozen, leader, other, frozen].iter().enumerate() {
        let config = SdkConfig {
            features: vec!["checkout".into()],
            instance: Some(instance(&format!("cart-{n}-on-{node}"))),
            ..Default::default()
        };
        sdks.push((
            *node,
            Sdk::start(&endpoints_from(&cluster, *node), config)
                .await
                .unwrap(),
        ));
    }
    let ctx = Context::new();
    support::eventually(Duration::from_secs(10), "every instance registered", || {
        sdks.iter().all(|(_, s)| s.lease_id() != 0)
    })
    .await;
    assert!(sdks.iter().all(|(_, s)| !s.is_enabled("checkout", &ctx)));

    // Freeze one follower: its instances learn of the change only after failing over.
    cluster.pause(frozen);
    let writer = switchyard::client::Client::new(&[cluster.addr(leader), cluster.addr(other)]).unwrap();
    let change = writer
        .set_toggle_with("checkout", &boolean_flag(true), None, now_activation(), "go")
        .await
        .unwrap();
    let toggle = change.toggle.unwrap();
    let effective_us = toggle.effective_at_ms * 1000;

    support::eventually(Duration::from_secs(20), "every instance to flip", || {
        sdks.iter().all(|(_, s)| s.is_enabled("checkout", &ctx))
    })
    .await;
    let mut on_time = Vec::new();
    for (node, sdk) in &sdks {
        let applied = sdk.last_applied("checkout").unwrap();
        assert_eq!(applied.revision, toggle.revision);
        if *node == frozen {
            assert!(
                applied.late_ms >= 500,
                "an instance of the frozen node applied {} ms late",
                applied.late_ms
            );
            assert!(applied.applied_at_us - effective_us >= 500_000);
        } else {
            // Never early (the clock offset is estimated to a millisecond on one machine).
            assert!(
                applied.applied_at_us >= effective_us - 2_000,
                "applied {} µs before effective_at",
                effective_us - applied.applied_at_us
            );
            assert_eq!(
                applied.late_ms, 0,
                "an instance that got the change in time is not late"
            );
            on_time.push(applied.applied_at_us);
        }
    }
    let spread_us = on_time.iter().max().unwrap() - on_time.iter().min().unwrap();
    eprintln!(
        "flip spread across {} on-time instances: {spread_us} µs",
        on_time.len()
    );
    assert!(spread_us <= 10_000, "flip spread {spread_us} µs");

    // rollout-status: everyone applied it; the frozen node's two were late.
    let status = support::eventually_some(
        Duration::from_secs(15),
        "rollout status: 6 applied, 2 late",
        || async {
            let s = writer.rollout_status("checkout").await.unwrap();
            (s.applied == 6 && s.late == 2).then_some(s)
        },
    )
    .await;
    assert_eq!(status.revision, toggle.revision);
    assert!(status.max_late_ms >= 500, "{status:?}");
    assert_eq!(status.behind + status.unknown + status.scheduled, 0);
    cluster.resume(frozen);

    // The CLI shows the same.
    let out = std::process::Command::new(support::binary())
        .args([
            "--endpoints",
            &cluster.addr(leader),
            "--output",
            "json",
            "rollout-status",
            "checkout",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["applied"], 6);
    assert_eq!(json["instances"].as_array().unwrap().len(), 6);

    for (_, sdk) in sdks {
        sdk.close().await;
    }
    let left = client.list_instances("cart", Default::default()).await.unwrap();
    assert!(
        left.instances.is_empty(),
        "closing an SDK deregisters its instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_is_applied_once_in_order_across_node_failures() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    client.put_feature(feature("f"), None, "").await.unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let own = (1..=3).find(|id| *id != leader).unwrap();
    let sdk = Sdk::start(
        &endpoints_from(&cluster, own),
        SdkConfig {
            features: vec!["f".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut changes = sdk.subscribe();
    let immediate = Some(pb::Activation {
        mode: pb::activation::Mode::Immediate as i32,
        ..Default::default()
    });
    let mut written = Vec::new();
    for i in 0..30 {
        match i {
            // The SDK's own node dies, and comes back.
            8 => cluster.kill(own),
            16 => {
                cluster.restart(own);
                cluster.wait_converged(Duration::from_secs(20)).await;
            }
            // Then the leader dies.
            22 => {
                let l = cluster.wait_leader(Duration::from_secs(10)).await;
                cluster.kill(l);
            }
            _ => {}
        }
        let r = client
            .set_toggle_with("f", &boolean_flag(i % 2 == 0), None, immediate, "")
            .await
            .unwrap();
        written.push(r.revision);
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < written.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, changes.recv()).await {
            Ok(Ok(c)) => seen.push(c.revision),
            other => panic!("missing changes: saw {seen:?} of {written:?} ({other:?})"),
        }
    }
    assert_eq!(seen, written, "every change once, in order");
    assert_eq!(sdk.flag("f").unwrap().revision, *written.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_session_registers_again() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    let sdk = Sdk::start(
        &cluster.endpoints(),
        SdkConfig {
            instance: Some(instance("cart-a")),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    support::eventually(Duration::from_secs(10), "registration", || sdk.lease_id() != 0).await;
    let first = sdk.lease_id();
    // An operator revokes the lease: the instance is gone, and the SDK notices on its next
    // keepalive and registers again under a new lease.
    client.revoke_lease(first).await.unwrap();
    support::eventually_some(
        Duration::from_secs(15),
        "the instance registers again",
        || async {
            let list = client.list_instances("cart", Default::default()).await.unwrap();
            list.instances
                .iter()
                .find(|i| i.id == "cart-a" && i.lease_id != first)
                .map(|_| ())
        },
    )
    .await;
    assert_ne!(sdk.lease_id(), first);
    sdk.close().await;
    assert!(client
        .list_instances("cart", Default::default())
        .await
        .unwrap()
        .instances
        .is_empty());
}

/// A canary rule on `instance.labels.canary` is on for the canary instance only; a rule on a
/// customer attribute is on for that segment only, on every instance; and a change to the rule
/// reaches both SDKs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_and_segment_rules_follow_the_instance_and_the_customer() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    client
        .put_feature(feature("checkout-v2"), None, "test")
        .await
        .unwrap();
    let canary_rule = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
        "targeting":{"if":[{"==":[{"var":"instance.labels.canary"},"true"]},"on",null]}}"#;
    let r = client
        .set_toggle("checkout-v2", canary_rule, None, "test")
        .await
        .unwrap();
    let endpoints = cluster.endpoints();
    let start = |id: &str, canary: bool| {
        let mut i = instance(id);
        if canary {
            i.labels.insert("canary".into(), "true".into());
        }
        Sdk::start(
            &endpoints,
            SdkConfig {
                features: vec!["checkout-v2".into()],
                instance: Some(i),
                ..Default::default()
            },
        )
    };
    let (canary, stable) = (
        start("cart-canary", true).await.unwrap(),
        start("cart-stable", false).await.unwrap(),
    );
    for sdk in [&canary, &stable] {
        support::eventually(Duration::from_secs(10), "the canary rule", || {
            sdk.flag("checkout-v2").is_some_and(|f| f.revision == r.revision)
        })
        .await;
    }
    let anyone = Context::new().with_targeting_key("customer-1");
    assert!(canary.is_enabled("checkout-v2", &anyone));
    assert!(!stable.is_enabled("checkout-v2", &anyone));
    assert_eq!(
        canary.evaluate("checkout-v2", &anyone).reason.as_str(),
        "TARGETING_MATCH"
    );
    assert_eq!(stable.evaluate("checkout-v2", &anyone).reason.as_str(), "DEFAULT");

    let segment_rule = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
        "targeting":{"if":[{"in":[{"var":"plan"},["enterprise","gold"]]},"on",null]}}"#;
    let r = client
        .set_toggle("checkout-v2", segment_rule, None, "test")
        .await
        .unwrap();
    for sdk in [&canary, &stable] {
        support::eventually(Duration::from_secs(10), "the segment rule", || {
            sdk.flag("checkout-v2").is_some_and(|f| f.revision == r.revision)
        })
        .await;
        assert!(sdk.is_enabled("checkout-v2", &Context::new().with("plan", "gold")));
        assert!(!sdk.is_enabled("checkout-v2", &Context::new().with("plan", "free")));
    }
    canary.close().await;
    stable.close().await;
}

/// The demo (`examples/demo.rs`, played here in-process) tells the whole story.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_plays_the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    // A port range no other test uses.
    let args = demo::DemoArgs {
        base_port: 27711,
        instances: 3,
    };
    let story = demo::play(&args, dir.path())
        .await
        .expect("the demo plays")
        .lines
        .join("\n");
    assert!(story.contains("blockers left: 0"), "{story}");
    assert!(
        story.contains("9/9 instances now see one-click-checkout on"),
        "{story}"
    );
    assert!(story.contains("rollout-status: 9 applied"), "{story}");
    assert!(
        story.contains("0/9 instances see one-click-checkout on"),
        "{story}"
    );
}

/// A stand-in node that refuses every watch with `code`: at its watch limit
/// (`RESOURCE_EXHAUSTED`), behind the revision asked for (`OUT_OF_RANGE`), or refusing the
/// request itself (`INVALID_ARGUMENT`).
async fn refusing_node(code: tonic::Code) -> String {
    struct Refuse(tonic::Code);
    #[tonic::async_trait]
    impl pb::watch_server::Watch for Refuse {
        type WatchStream = futures::stream::Empty<Result<pb::WatchResponse, tonic::Status>>;
        async fn watch(
            &self,
            _: tonic::Request<pb::WatchRequest>,
        ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
            Err(tonic::Status::new(self.0, "refused by the test's stand-in node"))
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::watch_server::WatchServer::new(Refuse(code)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// A node that answers `RESOURCE_EXHAUSTED` or `OUT_OF_RANGE` is passed over: the SDK goes on
/// to the next endpoint and follows the cluster there (it once gave up for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sdk_passes_over_a_node_at_its_limit_or_behind() {
    let cluster = TestCluster::start(1, &[]).await;
    let client = cluster.client();
    client.put_feature(feature("f"), None, "").await.unwrap();
    client
        .set_toggle("f", &boolean_flag(false), None, "")
        .await
        .unwrap();
    for code in [tonic::Code::ResourceExhausted, tonic::Code::OutOfRange] {
        let endpoints = vec![refusing_node(code).await, cluster.addr(1)];
        let config = SdkConfig {
            features: vec!["f".into()],
            ..Default::default()
        };
        let sdk = Sdk::start(&endpoints, config)
            .await
            .unwrap_or_else(|e| panic!("{code:?}: {e}"));
        let on = client
            .set_toggle("f", &boolean_flag(true), None, "")
            .await
            .unwrap();
        support::eventually(Duration::from_secs(10), "the change", || {
            sdk.last_applied("f").is_some_and(|c| c.revision >= on.revision)
        })
        .await;
        assert_eq!(sdk.follow_state(), switchyard::sdk::FollowState::Following);
        client
            .set_toggle("f", &boolean_flag(false), None, "")
            .await
            .unwrap();
        sdk.close().await;
    }
}

/// A refusal retrying cannot fix stops the SDK's watch, and the SDK says so: `start` fails
/// with the error, and an SDK already running shows it in `follow_state` (never silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sdk_refused_for_good_says_so() {
    let refusing = refusing_node(tonic::Code::InvalidArgument).await;
    let config = || SdkConfig {
        features: vec!["f".into()],
        start_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let err = Sdk::start(std::slice::from_ref(&refusing), config())
        .await
        .err()
        .expect("a refused watch fails the start");
    assert!(matches!(err, switchyard::Error::InvalidArgument(_)), "{err:?}");

    // Running on a real node first; when that node goes, the next endpoint refuses for good.
    let mut cluster = TestCluster::start(1, &[]).await;
    cluster
        .client()
        .put_feature(feature("f"), None, "")
        .await
        .unwrap();
    let sdk = Sdk::start(&[cluster.addr(1), refusing], config()).await.unwrap();
    let mut states = sdk.follow_states();
    cluster.kill(1);
    let stopped = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let switchyard::sdk::FollowState::Stopped { error } = states.borrow_and_update().clone() {
                return error;
            }
            states.changed().await.expect("the SDK is alive");
        }
    })
    .await
    .expect("the SDK says it stopped");
    assert!(
        matches!(stopped, switchyard::Error::InvalidArgument(_)),
        "{stopped:?}"
    );
}
