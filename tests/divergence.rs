//! The same committed log gives the same state on every replica, through crashes: writes under
//! kill -9 rounds of leaders and followers, a leader that crashes between sending entries and
//! flushing them, and clients whose request ids collide. Every acknowledged write must be on
//! every node at the revision it was acknowledged with, and replicas at the same applied index
//! must hold the same state.
//!
//! `kill_rounds_keep_every_replica_identical` runs a short schedule by default; set
//! `SWITCHYARD_KILL_ROUNDS` (e.g. 10) for the long one, and loop it from the shell:
//! `for i in $(seq 20); do cargo test --release --features failpoints --test divergence kill_rounds || break; done`.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::workload::{check_acks, start_watcher, start_writers};
use support::TestCluster;

/// 3 nodes snapshotting often; writers and watchers run while leaders and followers are killed
/// in turn and restarted on their data a moment later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_rounds_keep_every_replica_identical() {
    let rounds: usize = std::env::var("SWITCHYARD_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "500", "--keep-logs", "100"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let endpoints = cluster.endpoints();
    let (acked, writers) = start_writers(4, endpoints.clone(), Duration::from_millis(60), stop.clone());
    let watchers: Vec<_> = (0..3)
        .map(|i| {
            let mut e = endpoints.clone();
            e.rotate_left(i);
            start_watcher(e, stop.clone(), true)
        })
        .collect();
    // A fixed, varied schedule: which node goes down and for how long.
    let mut rng = 0x5eed_u64 ^ rounds as u64;
    let mut next = move |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    };
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(1500 + next(1500))).await;
        let leader = cluster.wait_leader(Duration::from_secs(20)).await;
        let victim = if round % 2 == 0 {
            leader
        } else {
            (1..=3).find(|id| *id != leader).unwrap_or(1)
        };
        cluster.kill(victim);
        tokio::time::sleep(Duration::from_millis(2000 + next(6000))).await;
        cluster.restart(victim);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let status = cluster.wait_converged(Duration::from_secs(60)).await;
    let acks = acked.lock().clone();
    assert!(acks.len() > 100, "too few writes acknowledged: {}", acks.len());
    // Let the watchers see the last writes, then stop them.
    let last = status.members[0].revision;
    support::eventually(
        Duration::from_secs(20),
        "watchers reach the last revision",
        || {
            watchers
                .iter()
                .all(|(s, _)| s.lock().tags.keys().next_back() >= Some(&last))
        },
    )
    .await;
    for (_, h) in &watchers {
        h.abort();
    }
    let seen: Vec<_> = watchers.iter().map(|(s, _)| s.clone()).collect();
    check_acks(&cluster, &acks, &seen).await;
}

/// The leader stalls before flushing what it has already sent to its followers, so the
/// followers commit entries the leader never makes durable; then it crashes and restarts at
/// once. It must not resume leadership in its old term: its log lacks those entries, and it
/// would propose other entries under the same log ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_crashes_before_flushing_rejoins_without_reusing_log_ids() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writers) = start_writers(4, cluster.endpoints(), Duration::from_millis(5), stop.clone());
    // Twice: a round diverges only if the followers received entries during the stall.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let leader = cluster.wait_leader(Duration::from_secs(10)).await;
        cluster.failpoint(leader, "log.flush", "return(300)");
        support::eventually(
            Duration::from_secs(10),
            "the leader crashes at its failpoint",
            || !cluster.is_running(leader),
        )
        .await;
        cluster.restart(leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    cluster.wait_converged(Duration::from_secs(30)).await;
    let acks = acked.lock().clone();
    assert!(acks.len() > 20, "too few writes acknowledged: {}", acks.len());
    check_acks(&cluster, &acks, &[]).await;
}

/// Clients whose request ids are equal (each counts from 1), writing through the followers
/// while the leader is killed: each gets the answer to its own write, and the revision in that
/// answer holds its write on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn equal_request_ids_get_their_own_answers_through_a_leader_kill() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let followers: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| n.addr.clone())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writers) = start_writers(6, followers, Duration::from_millis(10), stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.kill(leader);
    let killed_at = Instant::now();
    cluster.wait_leader(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.restart(leader);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    cluster.wait_converged(Duration::from_secs(30)).await;
    let acks = acked.lock().clone();
    let tags: BTreeSet<&str> = acks.iter().map(|a| a.tag.as_str()).collect();
    assert_eq!(tags.len(), acks.len(), "a write was acknowledged twice");
    assert!(
        acks.len() > 50,
        "too few writes acknowledged: {} ({:?} after the kill)",
        acks.len(),
        killed_at.elapsed()
    );
    check_acks(&cluster, &acks, &[]).await;
}
