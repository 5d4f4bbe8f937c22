//! flagd's protocols on a node, spoken with plain gRPC clients: selectors (field and
//! `Flagd-Selector` header) and their errors, `SyncFlags` pushing a scheduled change ahead
//! behind `$flagd.timestamp` and the plain definition once it takes effect, the evaluation
//! service's statuses, and `EventStream`'s `provider_ready` and `configuration_change`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{feature, TestCluster};
use switchyard::pb::flagd::evaluation as ev;
use switchyard::pb::flagd::sync as sy;
use switchyard::pb::structs;
use switchyard::pb::v1 as pb;

async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap()
}

fn flags_of(document: &str) -> serde_json::Map<String, Value> {
    let doc: Value = serde_json::from_str(document).unwrap();
    doc["flags"].as_object().cloned().unwrap()
}

async fn next(s: &mut tonic::Streaming<sy::SyncFlagsResponse>) -> serde_json::Map<String, Value> {
    let msg = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a configuration in time")
        .expect("the stream is fine")
        .expect("the stream goes on");
    flags_of(&msg.flag_configuration)
}

const ON: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
const GOLD_ONLY: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
  "targeting":{"if":[{"==":[{"var":"plan"},"gold"]},"on",null]}}"#;

/// A 3-node cluster with two toggles on: `cart-promo` (requires `cart`) and `search-v2`.
async fn two_toggles() -> (TestCluster, switchyard::client::Client) {
    let cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    let mut cart = feature("cart-promo");
    cart.requirements.push(pb::Requirement {
        service: "cart".into(),
        version_req: ">=1.0.0".into(),
    });
    client.put_feature(cart, None, "test").await.unwrap();
    client
        .put_feature(feature("search-v2"), None, "test")
        .await
        .unwrap();
    let immediate = Some(pb::Activation {
        mode: pb::activation::Mode::Immediate as i32,
        ..Default::default()
    });
    client
        .set_toggle_with("cart-promo", ON, None, immediate, "test")
        .await
        .unwrap();
    client
        .set_toggle_with("search-v2", ON, None, immediate, "test")
        .await
        .unwrap();
    cluster.wait_converged(Duration::from_secs(20)).await;
    (cluster, client)
}

fn immediate() -> Option<pb::Activation> {
    Some(pb::Activation {
        mode: pb::activation::Mode::Immediate as i32,
        ..Default::default()
    })
}

/// `FetchAllFlags` by selector: every toggle, a service's, named ones; the `Flagd-Selector`
/// header wins over the field; an unknown selector is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_selectors_choose_the_flags() {
    let (cluster, _client) = two_toggles().await;
    let mut sync = sy::flag_sync_service_client::FlagSyncServiceClient::new(channel(&cluster.addr(2)).await);
    let all = sync
        .fetch_all_flags(sy::FetchAllFlagsRequest::default())
        .await
        .unwrap();
    assert_eq!(flags_of(&all.get_ref().flag_configuration).len(), 2);
    let cart_only = sync
        .fetch_all_flags(sy::FetchAllFlagsRequest {
            selector: "service=cart".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        flags_of(&cart_only.get_ref().flag_configuration)
            .keys()
            .collect::<Vec<_>>(),
        ["cart-promo"]
    );
    let mut by_header = tonic::Request::new(sy::FetchAllFlagsRequest {
        selector: "service=cart".into(),
        ..Default::default()
    });
    by_header
        .metadata_mut()
        .insert("flagd-selector", "search-v2".parse().unwrap());
    let search_only = sync.fetch_all_flags(by_header).await.unwrap();
    assert_eq!(
        flags_of(&search_only.get_ref().flag_configuration)
            .keys()
            .collect::<Vec<_>>(),
        ["search-v2"]
    );
    let bad = sync
        .fetch_all_flags(sy::FetchAllFlagsRequest {
            selector: "source=x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // A flag set no toggle names: empty, with the set's metadata.
    let none = sync
        .fetch_all_flags(sy::FetchAllFlagsRequest {
            selector: "flagSetId=x".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(flags_of(&none.get_ref().flag_configuration).is_empty());
}

/// `SyncFlags`: the current configuration, a scheduled change ahead of time (behind
/// `$flagd.timestamp`), then the plain definition once it takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_pushes_a_scheduled_change_ahead_then_plainly() {
    let (cluster, client) = two_toggles().await;
    let mut sync = sy::flag_sync_service_client::FlagSyncServiceClient::new(channel(&cluster.addr(2)).await);
    let mut stream = sync
        .sync_flags(sy::SyncFlagsRequest {
            selector: "search-v2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut stream).await["search-v2"]["defaultVariant"], "on");
    let at_ms = support::now_ms() + 2_500;
    let at = Some(pb::Activation {
        mode: pb::activation::Mode::At as i32,
        at_ms,
        ..Default::default()
    });
    client
        .set_toggle_with("search-v2", GOLD_ONLY, None, at, "test")
        .await
        .unwrap();
    let ahead = next(&mut stream).await;
    let rule = ahead["search-v2"]["targeting"].to_string();
    assert!(rule.contains("$flagd.timestamp"), "{rule}");
    assert!(support::now_ms() < at_ms, "pushed ahead of effective_at");
    let after = next(&mut stream).await;
    assert!(support::now_ms() >= at_ms);
    assert_eq!(after["search-v2"]["targeting"]["if"][0]["=="][1], "gold");
}

/// `flagd.evaluation.v1`: resolves with flagd's reasons and codes, `ResolveAll`, and an event
/// stream that starts ready and announces each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evaluation_resolves_with_reasons_and_announces_changes() {
    let (cluster, client) = two_toggles().await;
    let written = client
        .set_toggle_with("search-v2", GOLD_ONLY, None, immediate(), "test")
        .await
        .unwrap();
    support::eventually_some(Duration::from_secs(10), "node 3 applies the change", || async {
        let t = cluster.client_of(3).get_toggle("search-v2", true).await.ok()?;
        (t.toggle?.revision >= written.revision).then_some(())
    })
    .await;
    let mut eval = ev::service_client::ServiceClient::new(channel(&cluster.addr(3)).await);
    let mut events = eval
        .event_stream(ev::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.r#type, "provider_ready");
    let gold = structs::from_json(
        serde_json::json!({"plan": "gold", "targetingKey": "c-1"})
            .as_object()
            .unwrap(),
    );
    let r = eval
        .resolve_boolean(ev::ResolveBooleanRequest {
            flag_key: "search-v2".into(),
            context: Some(gold.clone()),
        })
        .await
        .unwrap();
    assert_eq!(
        (r.get_ref().value, r.get_ref().reason.as_str()),
        (true, "TARGETING_MATCH")
    );
    let r = eval
        .resolve_boolean(ev::ResolveBooleanRequest {
            flag_key: "search-v2".into(),
            context: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (r.get_ref().value, r.get_ref().reason.as_str()),
        (false, "DEFAULT")
    );
    let missing = eval
        .resolve_boolean(ev::ResolveBooleanRequest {
            flag_key: "nope".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mismatch = eval
        .resolve_string(ev::ResolveStringRequest {
            flag_key: "cart-promo".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(mismatch.code(), tonic::Code::InvalidArgument);
    let all = eval
        .resolve_all(ev::ResolveAllRequest { context: Some(gold) })
        .await
        .unwrap();
    assert_eq!(all.get_ref().flags.len(), 2);

    client
        .set_toggle_with("cart-promo", GOLD_ONLY, None, immediate(), "test")
        .await
        .unwrap();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.r#type == "configuration_change" {
            let data = structs::to_json(&e.data.unwrap());
            assert!(data["flags"].get("cart-promo").is_some(), "{data:?}");
            break;
        }
    }
}

/// `--flagd-listen` (here `NodeConfig::flagd_listen`) serves flagd's protocols on an address of
/// their own, for providers left at flagd's default ports; it goes down with the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagds_protocols_are_served_on_extra_addresses() {
    let single = support::single_node(|c| c.flagd_listen = vec!["127.0.0.1:0".parse().unwrap()]).await;
    let (node, client) = (&single.node, &single.client);
    client.put_feature(feature("checkout"), None, "").await.unwrap();
    let immediate = Some(pb::Activation {
        mode: pb::activation::Mode::Immediate as i32,
        ..Default::default()
    });
    client
        .set_toggle_with("checkout", ON, None, immediate, "")
        .await
        .unwrap();
    let flagd_addr = node.flagd_addrs[0].to_string();
    let mut sync = sy::flag_sync_service_client::FlagSyncServiceClient::new(channel(&flagd_addr).await);
    let all = sync
        .fetch_all_flags(sy::FetchAllFlagsRequest::default())
        .await
        .unwrap();
    assert!(flags_of(&all.get_ref().flag_configuration).contains_key("checkout"));
    // Streams open when the node shuts down end with UNAVAILABLE, so providers reconnect.
    let mut synced = sync
        .sync_flags(sy::SyncFlagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    synced.message().await.unwrap().unwrap();
    let mut eval = ev::service_client::ServiceClient::new(channel(&flagd_addr).await);
    let mut events = eval
        .event_stream(ev::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(events.message().await.unwrap().unwrap().r#type, "provider_ready");
    // Only flagd's protocols there: Switchyard's own watch is served on the node's address.
    let refused = pb::watch_client::WatchClient::new(channel(&flagd_addr).await)
        .watch(pb::WatchRequest::default())
        .await
        .expect_err("no watch service on the flagd address");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    single.shutdown().await;
    for end in [
        tokio::time::timeout(Duration::from_secs(5), synced.message())
            .await
            .map(|m| m.map(|_| ())),
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.message().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await,
    ] {
        let status = end.expect("the stream ends").expect_err("with a status");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shutting down"), "{status:?}");
    }
    let gone = tokio::time::timeout(
        Duration::from_secs(5),
        sy::flag_sync_service_client::FlagSyncServiceClient::new(channel_lazy(&flagd_addr))
            .fetch_all_flags(sy::FetchAllFlagsRequest::default()),
    )
    .await
    .unwrap();
    assert!(gone.is_err(), "the flagd address closes with the node");
}

fn channel_lazy(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

/// flagd's evaluation v2: a disabled flag and a flag with no default variant answer with no
/// value and no variant (the provider's code default); the sync service says where flags come
/// from (`GetMetadata`, `sync_context`) and selects a flag set, with its metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evaluation_v2_leaves_code_defaults_to_the_caller_and_sync_names_its_source() {
    use switchyard::pb::flagd::evaluation_v2 as v2;
    let (cluster, client) = two_toggles().await;
    const KILLED: &str = r#"{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
    const WEB_NO_DEFAULT: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":null,
      "targeting":{"if":[{"==":[{"var":"plan"},"gold"]},"on",null]},"metadata":{"flagSetId":"web"}}"#;
    client
        .set_toggle_with("cart-promo", KILLED, None, immediate(), "test")
        .await
        .unwrap();
    client
        .set_toggle_with("search-v2", WEB_NO_DEFAULT, None, immediate(), "test")
        .await
        .unwrap();
    cluster.wait_converged(Duration::from_secs(10)).await;
    let mut eval = v2::service_client::ServiceClient::new(channel(&cluster.addr(2)).await);
    let resolve = |key: &str, ctx: Value| v2::ResolveBooleanRequest {
        flag_key: key.into(),
        context: Some(structs::from_json(ctx.as_object().unwrap())),
    };
    let killed = eval
        .resolve_boolean(resolve("cart-promo", serde_json::json!({})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (killed.value, killed.variant.as_deref(), killed.reason.as_str()),
        (None, None, "DISABLED")
    );
    let free = eval
        .resolve_boolean(resolve("search-v2", serde_json::json!({"plan": "free"})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (free.value, free.variant.as_deref(), free.reason.as_str()),
        (None, None, "DEFAULT")
    );
    let gold = eval
        .resolve_boolean(resolve("search-v2", serde_json::json!({"plan": "gold"})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (gold.value, gold.variant.as_deref(), gold.reason.as_str()),
        (Some(true), Some("on"), "TARGETING_MATCH")
    );
    let missing = eval
        .resolve_boolean(resolve("nope", serde_json::json!({})))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mismatch = eval
        .resolve_string(v2::ResolveStringRequest {
            flag_key: "search-v2".into(),
            context: Some(structs::from_json(
                serde_json::json!({"plan": "gold"}).as_object().unwrap(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(mismatch.code(), tonic::Code::InvalidArgument);
    let mut events = eval
        .event_stream(v2::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.r#type, "provider_ready");

    // Sync: metadata and a flag set.
    let mut sync = sy::flag_sync_service_client::FlagSyncServiceClient::new(channel(&cluster.addr(1)).await);
    let meta = sync
        .get_metadata(sy::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner()
        .metadata
        .map(|m| structs::to_json(&m))
        .expect("metadata");
    assert!(meta["revision"].as_f64().unwrap() > 0.0, "{meta:?}");
    let mut req = tonic::Request::new(sy::SyncFlagsRequest::default());
    req.metadata_mut()
        .insert("flagd-selector", "flagSetId=web".parse().unwrap());
    let mut stream = sync.sync_flags(req).await.unwrap().into_inner();
    let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let doc: Value = serde_json::from_str(&msg.flag_configuration).unwrap();
    assert_eq!(
        doc["flags"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["search-v2"]
    );
    assert_eq!(doc["metadata"]["flagSetId"], "web");
    let context = structs::to_json(&msg.sync_context.expect("a sync context"));
    assert_eq!(context["flagSetId"], "web");
    assert_eq!(context["selector"], "flagSetId=web");
}
