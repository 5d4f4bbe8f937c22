//! Running the cluster: leadership handed over on demand and on SIGTERM, and a rolling restart
//! of every node (stop, start on the same data) under writers, watchers and SDK instances with
//! nothing acknowledged lost, no watch gap, and every SDK seeing every change.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use support::workload::{check_acks, longest_write_gap, start_watcher, start_writers};
use support::{boolean_flag, feature, TestCluster};
use switchyard::pb::v1 as pb;
use switchyard::sdk::{InstanceConfig, Sdk, SdkConfig};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_is_handed_to_the_voter_asked_for() {
    let cluster = TestCluster::start(3, &[]).await;
    // Settled first: a write committed and every member caught up, so no start-up election
    // (a split vote on a loaded machine) is still under way when the term is read.
    cluster
        .client()
        .put_feature(feature("before"), None, "")
        .await
        .expect("a first write");
    let (leader, term) =
        support::eventually_some(Duration::from_secs(10), "one leader, one term", || async {
            let s = cluster.wait_converged(Duration::from_secs(10)).await;
            let term = s.members.first()?.term;
            let settled = s
                .members
                .iter()
                .all(|m| m.term == term && m.leader_id == s.leader_id);
            (settled && s.leader_id != 0).then_some((s.leader_id, term))
        })
        .await;
    let to = (1..=3).find(|id| *id != leader).unwrap();
    let third = (1..=3).find(|id| *id != leader && *id != to).unwrap();
    // Asked through the third node, which passes it to the leader.
    cluster
        .client_of(third)
        .transfer_leader(Some(to))
        .await
        .expect("transfer");
    assert_eq!(cluster.wait_leader(Duration::from_secs(10)).await, to);
    assert_eq!(
        cluster.term_of(to).await,
        term + 1,
        "one vote, no failed election in between"
    );
    // Nothing to choose: the most caught-up voter takes over.
    cluster
        .client()
        .transfer_leader(None)
        .await
        .expect("transfer to any");
    let next = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(next, to);

    let err = cluster
        .client()
        .transfer_leader(Some(9))
        .await
        .expect_err("not a member");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    cluster
        .client()
        .put_feature(feature("after"), None, "")
        .await
        .expect("writes go on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopped_with_sigterm_hands_over_first() {
    let mut cluster = TestCluster::start(3, &[]).await;
    cluster
        .client()
        .put_feature(feature("f"), None, "")
        .await
        .unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let term = cluster.term_of(leader).await;
    let exit = cluster.stop(leader).await;
    assert!(exit.success(), "a clean exit on SIGTERM: {exit:?}");
    let log = cluster.last_log_text(leader);
    assert!(log.contains("leadership handed over"), "{log}");
    let next = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_eq!(
        cluster.term_of(next).await,
        term + 1,
        "the next leader was chosen by one vote"
    );
    cluster
        .client()
        .put_feature(feature("g"), None, "")
        .await
        .expect("writes go on");
}

/// Waits until node `id` is ready, as a container healthcheck asks: `switchyard health`.
async fn ready(cluster: &TestCluster, id: u64) {
    let addr = cluster.nodes[(id - 1) as usize].metrics_addr.clone();
    support::eventually_some(Duration::from_secs(30), "the node is ready", || {
        let addr = addr.clone();
        async move {
            let out = tokio::process::Command::new(support::binary())
                .args(["health", "--addr", &addr])
                .output()
                .await
                .expect("run switchyard health");
            out.status.success().then_some(())
        }
    })
    .await;
}

/// Every node stopped with SIGTERM and started again on its data, one at a time, as an upgrade
/// does, while writers, watchers, a toggler and three registered SDK instances run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_loses_nothing_and_every_sdk_sees_every_change() {
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "300", "--keep-logs", "50"]).await;
    let client = cluster.client();
    client.put_feature(feature("rolling"), None, "").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let endpoints = cluster.endpoints();
    let (acked, writers) = start_writers(3, endpoints.clone(), Duration::from_millis(40), stop.clone());
    let watchers: Vec<_> = (0..3)
        .map(|i| {
            let mut e = endpoints.clone();
            e.rotate_left(i);
            start_watcher(e, stop.clone(), false)
        })
        .collect();
    let mut sdks = Vec::new();
    for i in 0..3 {
        let mut e = endpoints.clone();
        e.rotate_left(i);
        let config = SdkConfig {
            features: vec!["rolling".into()],
            instance: Some(InstanceConfig {
                id: format!("cart-{i}"),
                service: "cart".into(),
                version: "2.0.0".into(),
                labels: BTreeMap::new(),
                ttl: Duration::from_secs(10),
            }),
            ..Default::default()
        };
        let sdk = Sdk::start(&e, config).await.expect("sdk");
        let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
        let mut changes = sdk.subscribe();
        let out = seen.clone();
        tokio::spawn(async move {
            while let Ok(c) = changes.recv().await {
                out.lock().push(c.revision);
            }
        });
        sdks.push((sdk, seen));
    }
    // The toggler: an immediate flip every 100 ms, its acknowledged revisions recorded.
    let flips = Arc::new(Mutex::new(Vec::<u64>::new()));
    let toggler = {
        let (client, flips, stop) = (cluster.client(), flips.clone(), stop.clone());
        tokio::spawn(async move {
            let immediate = Some(pb::Activation {
                mode: pb::activation::Mode::Immediate as i32,
                ..Default::default()
            });
            let mut on = false;
            while !stop.load(Ordering::Relaxed) {
                on = !on;
                if let Ok(r) = client
                    .set_toggle_with("rolling", &boolean_flag(on), None, immediate, "flip")
                    .await
                {
                    flips.lock().push(r.revision);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut handed_over = 0;
    for id in 1..=3 {
        let was_leader = cluster.wait_leader(Duration::from_secs(20)).await == id;
        let exit = cluster.stop(id).await;
        assert!(exit.success(), "node {id} exits cleanly on SIGTERM: {exit:?}");
        if was_leader {
            let log = cluster.last_log_text(id);
            assert!(log.contains("leadership handed over"), "node {id}: {log}");
            handed_over += 1;
        }
        cluster.start_again(id);
        ready(&cluster, id).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(handed_over >= 1, "every node was restarted, so a leader was");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    toggler.await.expect("toggler");

    let status = cluster.wait_converged(Duration::from_secs(30)).await;
    let acks = acked.lock().clone();
    assert!(acks.len() > 50, "too few writes acknowledged: {}", acks.len());
    let last = status.members[0].revision;
    support::eventually(
        Duration::from_secs(20),
        "watchers reach the last revision",
        || watchers.iter().all(|(s, _)| s.lock().through >= Some(last)),
    )
    .await;
    for (_, h) in &watchers {
        h.abort();
    }
    let seen: Vec<_> = watchers.iter().map(|(s, _)| s.clone()).collect();
    check_acks(&cluster, &acks, &seen).await;

    // Every SDK saw every acknowledged flip, each once and in order, and holds the last.
    let flips = flips.lock().clone();
    assert!(flips.len() > 20, "too few flips acknowledged: {}", flips.len());
    let final_revision = client
        .get_toggle("rolling", false)
        .await
        .expect("toggle")
        .toggle
        .expect("a toggle")
        .revision;
    for (i, (sdk, seen)) in sdks.iter().enumerate() {
        support::eventually(Duration::from_secs(20), "the SDK applies the last flip", || {
            sdk.flag("rolling").is_some_and(|f| f.revision == final_revision)
        })
        .await;
        let seen = seen.lock().clone();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "SDK {i}: out of order {seen:?}"
        );
        for f in &flips {
            assert!(seen.contains(f), "SDK {i} never applied flip {f}: {seen:?}");
        }
    }
    let live = client
        .list_instances("cart", Default::default())
        .await
        .expect("instances");
    assert_eq!(live.instances.len(), 3, "every instance stayed registered");
    println!(
        "rolling restart: {} writes acknowledged, {} flips; longest time with no write acknowledged: {} ms",
        acks.len(),
        flips.len(),
        longest_write_gap(&acks).as_millis()
    );
}

/// A node whose data is in a storage format it does not know (written by a newer version, say)
/// refuses to start and says why, instead of misreading it; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_refuses_to_start_on_a_storage_format_it_does_not_know() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client().with_actor("test");
    client
        .put_feature(feature("before"), None, "test")
        .await
        .expect("write");
    cluster.wait_converged(Duration::from_secs(10)).await;
    let status = cluster.stop(3).await;
    assert!(status.success(), "a clean stop: {status:?}");

    // Mark node 3's stored vote as written in format 9.
    {
        let path = cluster.nodes[2].data_dir.join("raft").join("log");
        assert!(path.is_dir(), "node 3 keeps its log in {}", path.display());
        let db = sled::open(&path).expect("open node 3's log");
        let tree = db.open_tree("meta/vote").expect("vote tree");
        let mut record = tree.get(b"v").expect("read").expect("a stored vote").to_vec();
        assert_eq!(&record[..2], b"SY", "the vote is a sealed record");
        record[2] = 9;
        tree.insert(b"v", record).expect("write");
        db.flush().expect("flush");
    }
    cluster.start_again(3);
    support::eventually(Duration::from_secs(20), "node 3 exits", || !cluster.is_running(3)).await;
    let log = cluster.last_log_text(3);
    assert!(
        log.contains("storage format 9") && log.contains("does not know"),
        "the reason is in the log: {log}"
    );
    // The other two still serve writes.
    client
        .put_feature(feature("after"), None, "test")
        .await
        .expect("write with two nodes");
}
