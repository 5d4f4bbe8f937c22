//! A 3-node cluster: writes through any node are readable from every node, linearizable reads
//! never go back in time, and compare-and-set has exactly one winner.

mod support;

use std::time::Duration;

use support::{boolean_flag, feature, TestCluster};
use switchyard::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_through_a_follower_is_readable_everywhere() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    let put = cluster
        .client_of(follower)
        .put_feature(feature("checkout"), None, "test")
        .await
        .expect("write through a follower");
    assert!(put.revision >= 1);

    for id in 1..=3 {
        // Linearizable (default) read on every node sees it at once.
        let got = cluster
            .client_of(id)
            .get_feature("checkout", false)
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert_eq!(got.feature.unwrap().revision, put.revision);
        assert!(got.revision >= put.revision);
    }
    let s = cluster.wait_converged(Duration::from_secs(20)).await;
    assert!(s.members.iter().all(|m| m.revision == put.revision));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_reads_never_return_an_old_value() {
    let cluster = TestCluster::start(3, &[]).await;
    let setup = cluster.client();
    setup.put_feature(feature("flip"), None, "").await.unwrap();
    let writers: Vec<_> = (1..=3).map(|id| cluster.client_of(id)).collect();
    let readers: Vec<_> = (1..=3).map(|id| cluster.client_of(id)).collect();
    for i in 0..60usize {
        let enabled = i % 2 == 0;
        let w = writers[i % 3]
            .set_toggle("flip", &boolean_flag(enabled), None, "")
            .await
            .expect("write");
        // Read from a different node than the one written through.
        let r = readers[(i + 1) % 3]
            .get_toggle("flip", false)
            .await
            .expect("read");
        let t = r.toggle.unwrap();
        assert!(
            t.revision >= w.revision,
            "read revision {} is older than acknowledged write {}",
            t.revision,
            w.revision
        );
        let def: serde_json::Value = serde_json::from_str(&t.definition_json).unwrap();
        assert_eq!(def["state"], if enabled { "ENABLED" } else { "DISABLED" });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_set_has_exactly_one_winner() {
    let cluster = TestCluster::start(3, &[]).await;
    let a = cluster.client_of(1);
    let b = cluster.client_of(2);
    let created = a.put_feature(feature("race"), Some(0), "").await.unwrap();
    let mut rev = created.revision;
    // Creating again with "must not exist" fails.
    let again = b.put_feature(feature("race"), Some(0), "").await;
    assert!(matches!(
        again,
        Err(Error::RevisionMismatch { .. }) | Err(Error::FailedPrecondition(_))
    ));
    for round in 0..10 {
        let mut fa = feature("race");
        fa.description = format!("a{round}");
        let mut fb = feature("race");
        fb.description = format!("b{round}");
        let (ra, rb) = tokio::join!(a.put_feature(fa, Some(rev), ""), b.put_feature(fb, Some(rev), ""));
        let wins: Vec<_> = [&ra, &rb].into_iter().filter(|r| r.is_ok()).collect();
        assert_eq!(wins.len(), 1, "round {round}: {ra:?} / {rb:?}");
        let loser = if ra.is_ok() { &rb } else { &ra };
        assert!(
            matches!(loser, Err(Error::RevisionMismatch { expected, .. }) if *expected == rev),
            "{loser:?}"
        );
        let winner = wins[0].as_ref().unwrap();
        let stored = a.get_feature("race", false).await.unwrap().feature.unwrap();
        assert_eq!(stored.description, winner.feature.as_ref().unwrap().description);
        rev = winner.revision;
    }
}
