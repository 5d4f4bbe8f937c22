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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use support::TestCluster;
use switchyard::client::Client;
use switchyard::pb::v1 as pb;

/// One acknowledged write: who wrote which feature, with what description, at what revision.
#[derive(Debug, Clone)]
struct Ack {
    name: String,
    tag: String,
    revision: u64,
}

fn tagged(name: &str, tag: &str) -> pb::Feature {
    pb::Feature {
        name: name.to_string(),
        description: tag.to_string(),
        ..Default::default()
    }
}

/// Writers: each its own client session (so request ids collide across writers), each write
/// tagged `w{writer}-{seq}` in its description. Writer 0 puts every other write on three hot
/// features. Runs until `stop`, pausing `pause` between writes.
fn start_writers(
    writers: usize,
    endpoints: Vec<String>,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Ack>>>, Vec<tokio::task::JoinHandle<()>>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let handles = (0..writers)
        .map(|w| {
            let client = Client::new(&endpoints).expect("client");
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let tag = format!("w{w}-{seq}");
                    let name = if w == 0 && seq.is_multiple_of(2) {
                        format!("hot{}", seq % 3)
                    } else {
                        tag.clone()
                    };
                    if let Ok(r) = client.put_feature(tagged(&name, &tag), None, "").await {
                        let revision = r.feature.map_or(0, |f| f.revision);
                        acked.lock().push(Ack { name, tag, revision });
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect();
    (acked, handles)
}

/// What a watcher saw: the tag of the write at each revision, and any broken guarantee.
#[derive(Default)]
struct Seen {
    tags: BTreeMap<u64, String>,
    anomalies: Vec<String>,
    resumes: u32,
}

/// A watcher of every feature that resumes on another endpoint after any failure, checking
/// that revisions come in order with no gap and no repeat (every revision of these workloads
/// is one feature write, so each revision has exactly one event).
fn start_watcher(
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    let handle = tokio::spawn(async move {
        let client = Client::new(&endpoints).expect("client");
        let mut last: Option<u64> = None;
        while !stop.load(Ordering::Relaxed) {
            let req = pb::WatchRequest {
                filter: Some(Default::default()),
                start_revision: last,
            };
            let mut stream = match client.watch(req).await {
                Ok(s) => s,
                Err(_) => {
                    client.rotate();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if stop.load(Ordering::Relaxed) { return; }
                        continue;
                    }
                };
                let Ok(Some(msg)) = msg else { break };
                let mut s = seen.lock();
                match msg.kind {
                    Some(pb::watch_response::Kind::Snapshot(snap)) => {
                        if let Some(l) = last {
                            if snap.revision < l {
                                s.anomalies.push(format!(
                                    "snapshot at {} after revision {l}: back in time",
                                    snap.revision
                                ));
                            }
                        }
                        for f in snap.features {
                            if f.revision > last.unwrap_or(0) {
                                s.tags.entry(f.revision).or_insert(f.description);
                            }
                        }
                        last = Some(snap.revision);
                    }
                    Some(pb::watch_response::Kind::Event(ev)) => {
                        if let Some(l) = last {
                            if ev.revision != l + 1 {
                                s.anomalies
                                    .push(format!("event at revision {} after {l}", ev.revision));
                            }
                        }
                        if let Some(pb::watch_event::Change::Feature(f)) = ev.change {
                            s.tags.insert(ev.revision, f.description);
                        }
                        last = Some(ev.revision);
                    }
                    _ => {}
                }
            }
            seen.lock().resumes += 1;
            client.rotate();
        }
    });
    (out, handle)
}

/// After the cluster converged: every acknowledged write is on every node at the revision it
/// was acknowledged with, no revision was acknowledged twice, and the watchers agree with it.
async fn check_acks(cluster: &TestCluster, acks: &[Ack], watchers: &[Arc<Mutex<Seen>>]) {
    let mut by_revision: BTreeMap<u64, &Ack> = BTreeMap::new();
    for a in acks {
        if let Some(other) = by_revision.insert(a.revision, a) {
            panic!(
                "revision {} acknowledged to {} and to {}",
                a.revision, other.tag, a.tag
            );
        }
    }
    for n in &cluster.nodes {
        let listed = cluster
            .client_of(n.id)
            .list_features(true)
            .await
            .unwrap_or_else(|e| panic!("node {}: {e}", n.id));
        let features: BTreeMap<String, pb::Feature> =
            listed.features.into_iter().map(|f| (f.name.clone(), f)).collect();
        for a in acks.iter().filter(|a| a.name == a.tag) {
            let f = features.get(&a.name).unwrap_or_else(|| {
                panic!(
                    "node {} lost acknowledged write {} (revision {})",
                    n.id, a.tag, a.revision
                )
            });
            assert_eq!(
                f.revision, a.revision,
                "node {} holds {} at revision {}, acknowledged at {}",
                n.id, a.tag, f.revision, a.revision
            );
        }
    }
    for (i, w) in watchers.iter().enumerate() {
        let seen = w.lock();
        assert!(seen.anomalies.is_empty(), "watcher {i}: {:?}", seen.anomalies);
        for a in acks {
            if let Some(tag) = seen.tags.get(&a.revision) {
                assert_eq!(
                    tag, &a.tag,
                    "watcher {i} saw revision {} as {tag}, acknowledged to {}",
                    a.revision, a.tag
                );
            }
        }
    }
}

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
            start_watcher(e, stop.clone())
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
