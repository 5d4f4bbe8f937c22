//! Fault tolerance: kill -9 the leader under a stream of writes. A new leader takes over,
//! writes continue, every acknowledged write is on every node afterwards, and the killed node
//! restarts, catches up, and agrees (equal state digests).

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use support::{feature, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let acked = Arc::new(Mutex::new(Vec::<(String, bool)>::new())); // (name, acked after kill)
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for w in 0..4 {
        let client = cluster.client();
        let (acked, killed, stop) = (acked.clone(), killed.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{w}-{i}");
                if client.put_feature(feature(&name), None, "").await.is_ok() {
                    acked.lock().push((name, killed.load(Ordering::Relaxed)));
                }
                i += 1;
            }
        }));
    }

    support::eventually(
        Duration::from_secs(20),
        "writes acknowledged before the kill",
        || acked.lock().len() >= 20,
    )
    .await;
    let old_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let old_term = cluster.term_of(old_leader).await;
    cluster.kill(old_leader);
    killed.store(true, Ordering::Relaxed);
    let new_leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let new_term = cluster.term_of(new_leader).await;
    assert!(
        new_term > old_term,
        "no election after the leader died (term {old_term} -> {new_term})"
    );
    support::eventually(
        Duration::from_secs(20),
        "writes acknowledged after the kill",
        || acked.lock().iter().filter(|(_, after)| *after).count() > 5,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    let acked = acked.lock().clone();
    let after_kill = acked.iter().filter(|(_, after)| *after).count();
    assert!(acked.len() > 20, "too few writes acknowledged: {}", acked.len());
    assert!(
        after_kill > 5,
        "writes did not continue after the leader died ({after_kill})"
    );

    cluster.restart(old_leader);
    let status = cluster.wait_converged(Duration::from_secs(30)).await;
    assert_eq!(status.members.len(), 3);

    for id in 1..=3 {
        let listed = cluster
            .client_of(id)
            .list_features(true)
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        let names: BTreeSet<String> = listed.features.into_iter().map(|f| f.name).collect();
        for (name, _) in &acked {
            assert!(names.contains(name), "node {id} lost acknowledged write {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_is_replaced_and_steps_down_when_it_wakes() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    for i in 0..20 {
        client
            .put_feature(feature(&format!("before{i}")), None, "")
            .await
            .unwrap();
    }
    let old = cluster.wait_leader(Duration::from_secs(10)).await;
    let old_term = cluster.term_of(old).await;
    cluster.pause(old);
    // The other two elect a new leader and keep taking writes.
    let new = cluster.wait_leader_except(Duration::from_secs(20), &[old]).await;
    let new_term = cluster.term_of(new).await;
    assert!(new_term > old_term, "no election while the leader was frozen");
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("during{i}");
        client
            .put_feature(feature(&name), None, "")
            .await
            .expect("write while the old leader is frozen");
        acked.push(name);
    }
    cluster.resume(old);
    let s = cluster.wait_converged(Duration::from_secs(30)).await;
    let leaders: Vec<_> = s.members.iter().filter(|m| m.role == "leader").collect();
    assert_eq!(leaders.len(), 1, "{s:#?}");
    let woken = s.members.iter().find(|m| m.id == old).unwrap();
    assert_eq!(
        woken.role, "follower",
        "the woken node must have stepped down: {s:#?}"
    );
    // The woken node serves every write made while it slept, and takes new writes (forwarded).
    let via_old = cluster.client_of(old);
    for name in &acked {
        via_old
            .get_feature(name, false)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    via_old.put_feature(feature("after"), None, "").await.unwrap();
    assert_eq!(
        cluster.wait_converged(Duration::from_secs(30)).await.members[0].revision,
        41
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_restarted_under_writes_catches_up() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for i in 0..30 {
        client
            .put_feature(feature(&format!("a{i}")), None, "")
            .await
            .unwrap();
    }
    cluster.kill(follower);
    // A majority is still up: writes go on.
    for i in 0..30 {
        client
            .put_feature(feature(&format!("b{i}")), None, "")
            .await
            .unwrap();
    }
    cluster.restart(follower);
    let s = cluster.wait_converged(Duration::from_secs(30)).await;
    assert!(s.members.iter().all(|m| m.revision == 60), "{s:#?}");
}
