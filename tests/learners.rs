//! Learners as watch servers: two non-voting members beside three voters replicate and apply
//! every change, serve watches that see every revision in order, and never count for a commit
//! (with both and a voter stopped, writes go on); cut off from the leader, a learner ends its
//! watches and refuses new ones. SDKs given only the voters find the learners, divide over
//! them by instance, come back to the same one, and move with no gap when one dies.

mod support;

use std::time::{Duration, Instant};

use support::{boolean_flag, eventually, feature, TestCluster};
use switchyard::client::Client;
use switchyard::pb::v1 as pb;
use switchyard::sdk::{FollowState, InstanceConfig, Sdk, SdkConfig};

const WRITES: usize = 30;

/// Every toggle revision a watch on `addr` delivers for `features`, until it has `count`.
async fn revisions_on(addr: String, features: Vec<String>, count: usize) -> Vec<u64> {
    use pb::watch_response::Kind;
    let client = Client::new(&[addr]).expect("client");
    let req = pb::WatchRequest {
        filter: Some(pb::WatchFilter {
            features,
            ..Default::default()
        }),
        start_revision: None,
    };
    let mut stream = client.watch(req).await.expect("a watch on the learner");
    let mut seen = Vec::new();
    while seen.len() < count {
        let msg = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the learner's watch delivers")
            .expect("the learner's watch stays open")
            .expect("the learner's watch does not end");
        if let Some(Kind::Event(e)) = msg.kind {
            seen.push(e.revision);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learners_apply_every_change_serve_watches_and_never_count_for_a_commit() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let voters: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let client = Client::new(&voters).expect("client").with_actor("test");
    let names: Vec<String> = (0..3).map(|i| format!("learner-{i}")).collect();
    for name in &names {
        client.put_feature(feature(name), None, "test").await.unwrap();
    }
    let (l4, l5) = (cluster.add_learner().await, cluster.add_learner().await);
    let status = cluster.wait_converged(Duration::from_secs(30)).await;
    for id in [l4, l5] {
        let m = status
            .members
            .iter()
            .find(|m| m.id == id)
            .expect("the learner is a member");
        assert_eq!(m.role, "learner", "{m:?}");
    }

    // Watches on both learners, then a stream of changes through the voters: each watch sees
    // every one of them, in order, with no gap and no duplicate.
    let watches: Vec<_> = [l4, l5]
        .iter()
        .map(|id| tokio::spawn(revisions_on(cluster.addr(*id), names.clone(), WRITES)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut written = Vec::new();
    for i in 0..WRITES {
        let r = client
            .set_toggle(&names[i % names.len()], &boolean_flag(i % 2 == 0), None, "test")
            .await
            .unwrap();
        written.push(r.revision);
    }
    for w in watches {
        assert_eq!(
            w.await.unwrap(),
            written,
            "a learner's watch saw every change in order"
        );
    }
    // They applied all of it: the same applied index and digest as the voters.
    cluster.wait_converged(Duration::from_secs(30)).await;

    // Both learners and a voter stopped: two of the three voters still commit at once. (Were
    // the learners voters, two of five could not.)
    let voter = cluster.follower().await;
    assert!(voter <= 3);
    cluster.kill(l4);
    cluster.kill(l5);
    cluster.kill(voter);
    for i in 0..10 {
        let started = Instant::now();
        client
            .set_toggle(&names[i % names.len()], &boolean_flag(true), None, "test")
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a write waited {:?} with the learners down",
            started.elapsed()
        );
    }
    // Back, they catch up.
    cluster.start_again(voter);
    cluster.start_again(l4);
    cluster.start_again(l5);
    cluster.wait_converged(Duration::from_secs(30)).await;

    // Every voter gone: a learner cut off from the leader ends its watches with UNAVAILABLE
    // and refuses new ones, rather than serving a copy it can no longer vouch for.
    let learner = Client::new(&[cluster.addr(l4)]).expect("client");
    let watch = || pb::WatchRequest {
        filter: Some(pb::WatchFilter::default()),
        start_revision: None,
    };
    let mut stream = learner.watch(watch()).await.expect("a watch on the learner");
    for id in 1..=3 {
        cluster.kill(id);
    }
    let ended = support::stream_end(&mut stream, Duration::from_secs(10), "the learner's watch").await;
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    let refused = Client::new(&[cluster.addr(l4)])
        .expect("client")
        .watch(watch())
        .await
        .map(|_| ())
        .expect_err("a cut-off learner refuses new watches");
    assert!(
        matches!(refused, switchyard::Error::Unavailable(_)),
        "{refused:?}"
    );
}

/// An SDK for instance `id` given only the voters' addresses.
async fn sdk_of(voters: &[String], id: &str) -> Sdk {
    Sdk::start(
        voters,
        SdkConfig {
            features: vec!["f".into()],
            instance: Some(InstanceConfig {
                id: id.into(),
                service: "svc".into(),
                version: "1.0.0".into(),
                labels: Default::default(),
                ttl: Duration::from_secs(10),
            }),
            ..Default::default()
        },
    )
    .await
    .expect("the SDK starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdks_find_the_learners_divide_over_them_and_move_with_no_gap() {
    const SDKS: usize = 40;
    let mut cluster = TestCluster::start(3, &[]).await;
    let voters = cluster.endpoints();
    let client = cluster.client();
    client.put_feature(feature("f"), None, "").await.unwrap();
    client
        .set_toggle("f", &boolean_flag(false), None, "")
        .await
        .unwrap();
    let (a, b) = (cluster.add_learner().await, cluster.add_learner().await);
    let (addr_a, addr_b) = (cluster.addr(a), cluster.addr(b));
    cluster.wait_converged(Duration::from_secs(20)).await;

    let mut sdks = Vec::new();
    for i in 0..SDKS {
        sdks.push(sdk_of(&voters, &format!("instance-{i:02}")).await);
    }
    // Every SDK watches from a learner it found by itself, and they divide between the two.
    let placed = |sdks: &[Sdk]| -> Vec<Option<String>> { sdks.iter().map(|s| s.watching()).collect() };
    eventually(
        Duration::from_secs(20),
        "every SDK watches from a learner",
        || {
            placed(&sdks)
                .iter()
                .all(|w| w.as_deref() == Some(addr_a.as_str()) || w.as_deref() == Some(addr_b.as_str()))
        },
    )
    .await;
    let on_a = placed(&sdks)
        .iter()
        .filter(|w| w.as_deref() == Some(addr_a.as_str()))
        .count();
    // Binomial(40, 1/2): 10..=30 holds but for about one run in 5,000.
    assert!((10..=30).contains(&on_a), "{on_a} of {SDKS} on learner {a}");

    // A choice is stable: the same instance, started again, watches from the same learner.
    let before = placed(&sdks);
    for i in [0usize, 7, 19] {
        let old = sdks.remove(i);
        old.close().await;
        let again = sdk_of(&voters, &format!("instance-{i:02}")).await;
        eventually(Duration::from_secs(10), "the SDK is placed again", || {
            again.watching().is_some()
        })
        .await;
        assert_eq!(
            again.watching(),
            before[i],
            "instance-{i:02} goes back to the same learner"
        );
        sdks.insert(i, again);
    }

    // Learner a dies during a run of changes: its SDKs move to b, and every SDK sees every
    // change, in order.
    let mut receivers: Vec<_> = sdks.iter().map(|s| s.subscribe()).collect();
    let mut written = Vec::new();
    for i in 0..10 {
        if i == 3 {
            cluster.kill(a);
        }
        let r = client
            .set_toggle("f", &boolean_flag(i % 2 == 0), None, "")
            .await
            .unwrap();
        written.push(r.revision);
    }
    eventually(
        Duration::from_secs(20),
        "every SDK watches from learner b",
        || {
            placed(&sdks)
                .iter()
                .all(|w| w.as_deref() == Some(addr_b.as_str()))
        },
    )
    .await;
    for (i, rx) in receivers.iter_mut().enumerate() {
        let mut seen = Vec::new();
        while seen.last() != written.last() {
            let change = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("instance-{i:02} got {seen:?} of {written:?}"))
                .expect("the change stream");
            if change.feature == "f" {
                seen.push(change.revision);
            }
        }
        assert_eq!(seen, written, "instance-{i:02} saw every change once, in order");
    }
    for s in sdks {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_at_its_bound_sheds_new_watches_to_the_other_members() {
    const BOUND: usize = 6;
    const SDKS: usize = 20;
    let mut cluster = TestCluster::start(3, &["--max-watches", "6"]).await;
    let voters = cluster.endpoints();
    let client = cluster.client();
    client.put_feature(feature("f"), None, "").await.unwrap();
    let (a, b) = (cluster.add_learner().await, cluster.add_learner().await);
    let learners = [cluster.addr(a), cluster.addr(b)];
    cluster.wait_converged(Duration::from_secs(20)).await;
    let mut sdks = Vec::new();
    for i in 0..SDKS {
        sdks.push(sdk_of(&voters, &format!("instance-{i:02}")).await);
    }
    let on = |addr: &str| {
        sdks.iter()
            .filter(|s| s.watching().as_deref() == Some(addr))
            .count()
    };
    eventually(
        Duration::from_secs(20),
        "the learners are full and every SDK follows",
        || {
            learners.iter().all(|l| on(l) == BOUND)
                && sdks.iter().all(|s| s.follow_state() == FollowState::Following)
        },
    )
    .await;
    // The rest were shed to the given endpoints (the voters).
    let elsewhere = sdks.iter().filter(|s| s.watching().is_none()).count();
    assert_eq!(elsewhere, SDKS - 2 * BOUND);

    // A client that asks a full learner is told to go elsewhere, and where.
    let mut full = pb::watch_client::WatchClient::connect(format!("http://{}", learners[0]))
        .await
        .unwrap();
    let req = pb::WatchRequest {
        filter: Some(pb::WatchFilter::default()),
        start_revision: None,
    };
    let refused = match tokio::time::timeout(Duration::from_secs(10), full.watch(req)).await {
        Ok(Err(status)) => status,
        Ok(Ok(_)) => panic!("a full learner took another watch"),
        Err(_) => panic!("no answer"),
    };
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let text = refused.message();
    assert!(
        text.contains("--max-watches") && text.contains(&learners[1]),
        "{text}"
    );
    for s in sdks {
        s.close().await;
    }
}
