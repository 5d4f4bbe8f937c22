//! The feature manager on a real 3-node cluster: leases and the registry, the readiness gate
//! during a rolling upgrade, lease expiry, leader changes, rollback and history.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{when_ready, TestCluster};
use switchyard::client::Client;
use switchyard::pb::v1 as pb;
use tokio::task::JoinHandle;

/// An instance holding its lease alive in the background, like a service with the SDK.
struct Held {
    id: String,
    lease: u64,
    keepalive: JoinHandle<()>,
}

impl Held {
    /// Stops keepalives, as if the process crashed.
    fn crash(self) {
        self.keepalive.abort();
    }
}

async fn start_instance(client: &Arc<Client>, id: &str, service: &str, version: &str, ttl: Duration) -> Held {
    let lease = client.grant_lease(ttl).await.expect("grant").lease_id;
    let instance = pb::Instance {
        id: id.into(),
        service: service.into(),
        version: version.into(),
        ..Default::default()
    };
    client.register(instance, lease).await.expect("register");
    let c = client.clone();
    let keepalive = tokio::spawn(async move {
        loop {
            tokio::time::sleep(ttl / 4).await;
            // Failures (a leader change in progress) are retried on the next round.
            let _ = c.keep_alive_once(lease).await;
        }
    });
    Held {
        id: id.into(),
        lease,
        keepalive,
    }
}

async fn checkout(client: &Client) {
    let feature = pb::Feature {
        name: "checkout".into(),
        requirements: vec![
            pb::Requirement {
                service: "cart".into(),
                version_req: ">=2".into(),
            },
            pb::Requirement {
                service: "payment".into(),
                version_req: ">=1.8".into(),
            },
        ],
        ..Default::default()
    };
    client.put_feature(feature, None, "").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_upgrade_fires_at_the_revision_the_last_old_instance_leaves() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = Arc::new(cluster.client().with_actor("release-bot"));
    checkout(&client).await;
    let ttl = Duration::from_secs(5);
    let mut old = Vec::new();
    for i in 0..3 {
        old.push(start_instance(&client, &format!("cart-{i}"), "cart", "1.9.0", ttl).await);
    }
    for i in 0..2 {
        old.push(start_instance(&client, &format!("pay-{i}"), "payment", "1.7.2", ttl).await);
    }
    let resp = client
        .set_toggle_state_with("checkout", true, None, when_ready(), "ship it")
        .await
        .unwrap();
    assert!(resp.pending.is_some(), "{resp:?}");
    let readiness = client.readiness("checkout", false).await.unwrap();
    assert!(!readiness.ready);
    assert_eq!(readiness.blockers.len(), 5);

    // Replace each old instance by a new one; the gate holds until the very last.
    let mut new = Vec::new();
    let mut last_revision = 0;
    let total = old.len();
    for (n, o) in old.into_iter().enumerate() {
        let (service, version) = if o.id.starts_with("cart") {
            ("cart", "2.0.1")
        } else {
            ("payment", "1.8.0")
        };
        new.push(start_instance(&client, &format!("{}-new", o.id), service, version, ttl).await);
        let toggle = client.get_toggle("checkout", false).await;
        assert!(
            toggle.is_err(),
            "fired before the last old instance left: {toggle:?}"
        );
        last_revision = client.deregister(&o.id).await.unwrap().revision;
        o.keepalive.abort();
        let pending = client.list_pending(false).await.unwrap().pending;
        assert_eq!(pending.is_empty(), n + 1 == total, "after replacing {}", o.id);
    }
    let t = client
        .get_toggle("checkout", false)
        .await
        .unwrap()
        .toggle
        .unwrap();
    assert_eq!(
        t.revision, last_revision,
        "fired at the revision that made it ready"
    );
    assert!(t.definition_json.contains("ENABLED"));

    // Identically on every node.
    let status = cluster.wait_converged(Duration::from_secs(20)).await;
    for id in 1..=3 {
        let t = cluster
            .client_of(id)
            .get_toggle("checkout", true)
            .await
            .unwrap()
            .toggle
            .unwrap();
        assert_eq!(t.revision, last_revision, "node {id}");
    }
    assert!(status
        .members
        .iter()
        .all(|m| m.digest == status.members[0].digest));

    let history = client.history("checkout").await.unwrap().entries;
    let fired = history
        .iter()
        .find(|e| e.change == "activate (when-ready)")
        .expect("history");
    assert_eq!(fired.actor, "release-bot");
    assert_eq!(fired.revision, last_revision);
    for h in new {
        h.crash();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_old_instance_unblocks_the_gate_after_its_ttl() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = Arc::new(cluster.client());
    checkout(&client).await;
    let ttl = Duration::from_secs(2);
    let _cart = start_instance(&client, "cart-new", "cart", "2.1.0", ttl).await;
    let _pay = start_instance(&client, "pay-new", "payment", "1.9.0", ttl).await;
    let stale = start_instance(&client, "cart-old", "cart", "1.0.0", ttl).await;
    let pending = client
        .set_toggle_state_with("checkout", true, None, when_ready(), "")
        .await
        .unwrap();
    assert!(pending.pending.is_some());
    // Well within the TTL nothing changes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(client.get_toggle("checkout", false).await.is_err());
    let lease = stale.lease;
    stale.crash();
    let started = std::time::Instant::now();
    loop {
        if let Ok(t) = client.get_toggle("checkout", false).await {
            assert!(t.toggle.unwrap().definition_json.contains("ENABLED"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the expired lease never unblocked the gate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= ttl - Duration::from_millis(600),
        "expired before its TTL"
    );
    let instances = client
        .list_instances("cart", Default::default())
        .await
        .unwrap()
        .instances;
    assert!(instances.iter().all(|i| i.id != "cart-old"));
    // Its lease is gone: a keepalive for it is NotFound.
    assert!(matches!(
        client.keep_alive_once(lease).await,
        Err(switchyard::Error::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_change_expires_no_healthy_lease_and_keeps_the_pending_activation() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let client = Arc::new(cluster.client());
    checkout(&client).await;
    let ttl = Duration::from_secs(3);
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(start_instance(&client, &format!("cart-{i}"), "cart", "2.0.0", ttl).await);
    }
    held.push(start_instance(&client, "pay-new", "payment", "1.8.0", ttl).await);
    let blocker = start_instance(&client, "pay-old", "payment", "1.7.0", ttl).await;
    client
        .set_toggle_state_with("checkout", true, None, when_ready(), "")
        .await
        .unwrap();

    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.kill(leader);
    cluster.wait_leader(Duration::from_secs(20)).await;
    // Longer than the TTL: a new leader that did not restart the countdowns would expire them.
    tokio::time::sleep(ttl * 2).await;
    let live = client
        .list_instances("", Default::default())
        .await
        .unwrap()
        .instances;
    assert_eq!(live.len(), 6, "healthy instances were expired: {live:?}");
    let pending = client.list_pending(false).await.unwrap().pending;
    assert_eq!(pending.len(), 1, "the pending activation was lost or fired");
    assert!(client.get_toggle("checkout", false).await.is_err());

    // Now the blocker leaves: the activation fires.
    client.deregister(&blocker.id).await.unwrap();
    blocker.crash();
    let t = client
        .get_toggle("checkout", false)
        .await
        .unwrap()
        .toggle
        .unwrap();
    assert!(t.definition_json.contains("ENABLED"));
    cluster.restart(leader);
    cluster.wait_converged(Duration::from_secs(30)).await;
    for h in held {
        h.crash();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_restores_the_exact_definition_and_history_names_every_actor() {
    let cluster = TestCluster::start(3, &[]).await;
    let alice = cluster.client().with_actor("alice");
    let bob = cluster.client().with_actor("bob");
    alice
        .put_feature(
            pb::Feature {
                name: "banner".into(),
                ..Default::default()
            },
            None,
            "new banner",
        )
        .await
        .unwrap();
    let v1 = r#"{"state":"ENABLED","variants":{"blue":"blue","red":"red"},"defaultVariant":"blue"}"#;
    let v2 = r#"{"state":"ENABLED","variants":{"blue":"blue","red":"red"},"defaultVariant":"red","targeting":{"if":[{"==":[{"var":"plan"},"pro"]},"blue",null]}}"#;
    let first = alice.set_toggle("banner", v1, None, "blue first").await.unwrap();
    let first_json = first.toggle.unwrap().definition_json;
    bob.set_toggle("banner", v2, None, "try red").await.unwrap();
    bob.set_toggle_state("banner", false, None, "kill it")
        .await
        .unwrap();

    // Back to exactly what alice set.
    let rb = alice
        .rollback("banner", Some(first.revision), None, "restore")
        .await
        .unwrap();
    let t = rb.toggle.unwrap();
    assert_eq!(t.definition_json, first_json);
    // Rollback is immediate by default.
    assert!(
        t.effective_at_ms
            <= std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
    );

    // Bad rollbacks change nothing.
    let rev = alice.history("banner").await.unwrap().revision;
    assert!(matches!(
        alice.rollback("banner", Some(rev + 100), None, "").await,
        Err(switchyard::Error::InvalidArgument(_))
    ));
    assert!(matches!(
        alice.rollback("banner", Some(0), None, "").await,
        Err(switchyard::Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        alice.rollback("nope", None, None, "").await,
        Err(switchyard::Error::NotFound(_))
    ));
    assert_eq!(alice.history("banner").await.unwrap().revision, rev);

    let h = alice.history("banner").await.unwrap().entries;
    let steps: Vec<(String, String, String)> = h
        .iter()
        .map(|e| (e.actor.clone(), e.change.clone(), e.reason.clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("alice".into(), "feature.put".into(), "new banner".into()),
            ("alice".into(), "toggle.set (now)".into(), "blue first".into()),
            ("bob".into(), "toggle.set (now)".into(), "try red".into()),
            ("bob".into(), "toggle.off (immediate)".into(), "kill it".into()),
            ("alice".into(), "rollback (immediate)".into(), "restore".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_back_a_first_activation_turns_the_feature_off() {
    let cluster = TestCluster::start(1, &[]).await;
    let c = cluster.client();
    c.put_feature(support::feature("fresh"), None, "").await.unwrap();
    c.set_toggle_state("fresh", true, None, "first light")
        .await
        .unwrap();
    // The operator sees errors and undoes it: the state before was "no toggle", which is off.
    let back = c.rollback("fresh", None, None, "errors").await.unwrap();
    let t = back.toggle.unwrap();
    assert!(t.definition_json.contains("DISABLED"), "{}", t.definition_json);
    let h = c.history("fresh").await.unwrap().entries;
    assert_eq!(h.last().map(|e| e.change.as_str()), Some("rollback (immediate)"));
}
