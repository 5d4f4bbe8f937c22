//! A workload for fault tests: tagged writers whose acknowledgements are recorded, watchers
//! that resume on another node after any end and note every broken watch guarantee, and the
//! check that every acknowledged write is on every node at its revision.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchyard::client::Client;
use switchyard::pb::v1 as pb;

use super::TestCluster;

/// One acknowledged write: who wrote which feature, with what description, at what revision.
#[derive(Debug, Clone)]
pub struct Ack {
    pub name: String,
    pub tag: String,
    pub revision: u64,
    /// When it was acknowledged.
    pub at: Instant,
}

pub fn tagged(name: &str, tag: &str) -> pb::Feature {
    pb::Feature {
        name: name.to_string(),
        description: tag.to_string(),
        ..Default::default()
    }
}

/// Writers: each its own client session (so request ids collide across writers), each write
/// tagged `w{writer}-{seq}` in its description. Writer 0 puts every other write on three hot
/// features. Runs until `stop`, pausing `pause` between writes.
pub fn start_writers(
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
                        acked.lock().push(Ack {
                            name,
                            tag,
                            revision,
                            at: Instant::now(),
                        });
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
pub struct Seen {
    /// The revision of the first snapshot: from there on the watcher must miss nothing.
    pub from: Option<u64>,
    /// The last revision it has complete (an event's or a snapshot's).
    pub through: Option<u64>,
    pub tags: BTreeMap<u64, String>,
    pub anomalies: Vec<String>,
    pub resumes: u32,
}

/// A watcher of everything that resumes on another endpoint after any failure, checking that
/// revisions come in order with no repeat and, with `contiguous` (a workload where every
/// revision is one event: no lease grants), no gap. [`check_acks`] checks that it saw every
/// acknowledged write after its first snapshot.
pub fn start_watcher(
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
    contiguous: bool,
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
                        s.from.get_or_insert(snap.revision);
                        s.through = last;
                    }
                    Some(pb::watch_response::Kind::Event(ev)) => {
                        if let Some(l) = last {
                            let next = if contiguous {
                                ev.revision == l + 1
                            } else {
                                ev.revision > l
                            };
                            if !next {
                                s.anomalies
                                    .push(format!("event at revision {} after {l}", ev.revision));
                            }
                        }
                        if let Some(pb::watch_event::Change::Feature(f)) = ev.change {
                            s.tags.insert(ev.revision, f.description);
                        }
                        last = Some(ev.revision);
                        s.through = last;
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
/// was acknowledged with, no revision was acknowledged twice, and the watchers agree with it
/// and missed none of it.
pub async fn check_acks(cluster: &TestCluster, acks: &[Ack], watchers: &[Arc<Mutex<Seen>>]) {
    let nodes: Vec<(String, Client)> = cluster
        .nodes
        .iter()
        .map(|n| (format!("node {}", n.id), cluster.client_of(n.id)))
        .collect();
    check_acks_on(&nodes, acks, watchers).await;
}

/// [`check_acks`] against nodes given by name and a client of each alone.
pub async fn check_acks_on(nodes: &[(String, Client)], acks: &[Ack], watchers: &[Arc<Mutex<Seen>>]) {
    let mut by_revision: BTreeMap<u64, &Ack> = BTreeMap::new();
    for a in acks {
        if let Some(other) = by_revision.insert(a.revision, a) {
            panic!(
                "revision {} acknowledged to {} and to {}",
                a.revision, other.tag, a.tag
            );
        }
    }
    for (name, client) in nodes {
        let listed = client
            .list_features(true)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let features: BTreeMap<String, pb::Feature> =
            listed.features.into_iter().map(|f| (f.name.clone(), f)).collect();
        for a in acks.iter().filter(|a| a.name == a.tag) {
            let f = features.get(&a.name).unwrap_or_else(|| {
                panic!(
                    "{name} lost acknowledged write {} (revision {})",
                    a.tag, a.revision
                )
            });
            assert_eq!(
                f.revision, a.revision,
                "{name} holds {} at revision {}, acknowledged at {}",
                a.tag, f.revision, a.revision
            );
        }
    }
    for (i, w) in watchers.iter().enumerate() {
        let seen = w.lock();
        assert!(seen.anomalies.is_empty(), "watcher {i}: {:?}", seen.anomalies);
        for a in acks {
            match seen.tags.get(&a.revision) {
                Some(tag) => assert_eq!(
                    tag, &a.tag,
                    "watcher {i} saw revision {} as {tag}, acknowledged to {}",
                    a.revision, a.tag
                ),
                // A write to a feature of its own is in every later snapshot, so a watcher
                // that started before it must have seen it, whatever way it resumed.
                None if a.name == a.tag && seen.from.is_some_and(|f| a.revision > f) => panic!(
                    "watcher {i} never saw acknowledged write {} at revision {} (it follows from {:?})",
                    a.tag, a.revision, seen.from
                ),
                None => {}
            }
        }
    }
}

/// The longest time no writer had a write acknowledged, between the first and last
/// acknowledgement.
pub fn longest_write_gap(acks: &[Ack]) -> Duration {
    let mut at: Vec<Instant> = acks.iter().map(|a| a.at).collect();
    at.sort();
    at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}
