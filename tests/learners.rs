//! Learners as watch servers: two non-voting members beside three voters replicate and apply
//! every change, serve watches that see every revision in order, and never count for a commit
//! (with both and a voter stopped, writes go on); cut off from the leader, a learner ends its
//! watches and refuses new ones.

mod support;

use std::time::{Duration, Instant};

use support::{boolean_flag, feature, TestCluster};
use switchyard::client::Client;
use switchyard::pb::v1 as pb;

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
