//! Snapshots and log purging: a node restarted after thousands of writes recovers the same
//! state; a node wiped and re-added catches up through a snapshot.

mod support;

use std::time::Duration;

use support::{boolean_flag, feature, TestCluster};

async fn write_many(cluster: &TestCluster, n: usize) {
    let mut tasks = Vec::new();
    for w in 0..16 {
        let client = cluster.client();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                let name = format!("f{}", i % 100);
                if i < 100 {
                    client.put_feature(feature(&name), None, "").await.unwrap();
                } else {
                    // Toggle writes on the 100 features (created by the first 100 writes).
                    let mut tries = 0;
                    loop {
                        match client
                            .set_toggle(&name, &boolean_flag(i % 2 == 0), None, "")
                            .await
                        {
                            Ok(_) => break,
                            Err(switchyard::Error::NotFound(_)) if tries < 50 => {
                                tries += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(e) => panic!("write {i}: {e}"),
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_thousands_of_writes_recovers_the_same_state() {
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "300", "--keep-logs", "50"]).await;
    write_many(&cluster, 2000).await;
    let before = cluster.wait_converged(Duration::from_secs(30)).await;
    assert!(
        before.members.iter().all(|m| m.snapshot_index > 0),
        "no snapshot built: {before:#?}"
    );
    assert!(
        before.members.iter().all(|m| m.purged_index > 0),
        "log not purged: {before:#?}"
    );

    // Restart every node (kill -9), one at a time, then all at once.
    for id in 1..=3 {
        cluster.restart(id);
        cluster.wait_converged(Duration::from_secs(30)).await;
    }
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    let after = cluster.wait_converged(Duration::from_secs(30)).await;
    let digest = |s: &switchyard::pb::v1::StatusResponse| s.members[0].digest.clone();
    let rev = |s: &switchyard::pb::v1::StatusResponse| s.members[0].revision;
    assert_eq!(rev(&after), rev(&before));
    assert_eq!(digest(&after), digest(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_re_added_catches_up_through_a_snapshot() {
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "200", "--keep-logs", "20"]).await;
    write_many(&cluster, 1200).await;
    let before = cluster.wait_converged(Duration::from_secs(30)).await;

    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let admin = cluster.client_of(leader);
    cluster.kill(victim);
    admin.remove_member(victim).await.expect("remove member");
    cluster.wipe_and_join(victim);
    admin
        .add_learner(victim, &cluster.addr(victim))
        .await
        .expect("add learner");
    admin.promote(victim).await.expect("promote");

    let after = cluster.wait_converged(Duration::from_secs(60)).await;
    let node = after.members.iter().find(|m| m.id == victim).unwrap();
    assert!(node.voter, "{node:?}");
    assert!(
        node.snapshot_index > 0,
        "the re-added node got no snapshot: {node:?}"
    );
    assert_eq!(node.revision, before.members[0].revision);
    assert_eq!(node.digest, before.members[0].digest);
}
