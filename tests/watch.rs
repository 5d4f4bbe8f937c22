//! Watch streams on a real cluster: every revision exactly once and in order across leader and
//! subscriber-node failures (resuming on another node), snapshot fallback, slow subscribers.

mod support;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use support::{boolean_flag, feature, TestCluster};
use switchyard::pb::v1 as pb;
use switchyard::pb::v1::watch_client::WatchClient;
use tonic::Code;

/// Opens a watch, waiting (up to 10 s) while the node says it is unavailable: just after
/// start-up a node that has not heard from the leader yet refuses watches.
async fn open(addr: &str, start: Option<u64>) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open_once(addr, start).await {
            Err(s) if s.code() == Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

/// Opens a watch: one attempt.
async fn open_once(
    addr: &str,
    start: Option<u64>,
) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        // HTTP/2's default 64 KiB window (hyper's client default is 2 MiB), so a reader that
        // stops reading pushes back on the server after a few hundred events, not thousands.
        .initial_stream_window_size(Some(65_535))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let req = pb::WatchRequest {
        filter: None,
        start_revision: start,
    };
    Ok(WatchClient::new(channel).watch(req).await?.into_inner())
}

/// What a resuming subscriber saw: the revision of every event, and snapshot revisions.
#[derive(Default, Debug)]
struct Seen {
    events: Vec<u64>,
    snapshots: Vec<u64>,
    resumes: usize,
}

/// Follows the cluster like the SDK will: on any stream failure, resume from the last revision
/// on the next node.
fn subscriber(addrs: Vec<String>, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<u64> = None;
        let mut i = 0;
        loop {
            let addr = &addrs[i % addrs.len()];
            if let Ok(mut stream) = open(addr, last).await {
                while let Ok(Some(msg)) = stream.message().await {
                    let mut s = seen.lock();
                    match msg.kind {
                        Some(pb::watch_response::Kind::Snapshot(snap)) => {
                            s.snapshots.push(snap.revision);
                            last = Some(snap.revision);
                        }
                        Some(pb::watch_response::Kind::Event(e)) => {
                            s.events.push(e.revision);
                            last = Some(e.revision);
                        }
                        _ => {}
                    }
                }
            }
            seen.lock().resumes += 1;
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_revision_once_in_order_through_leader_and_subscriber_node_failures() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    client.put_feature(feature("f"), None, "").await.unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    // The subscriber starts on a follower, which will also be killed.
    let sub_node = (1..=3).find(|id| *id != leader).unwrap();
    let mut order: Vec<u64> = vec![sub_node];
    order.extend((1..=3).filter(|id| *id != sub_node));
    let addrs: Vec<String> = order.iter().map(|id| cluster.addr(*id)).collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let task = subscriber(addrs, seen.clone());

    let mut last_rev = 0;
    for i in 0..150 {
        // One node down at a time, so a majority always remains.
        if i == 40 {
            cluster.kill(leader);
        }
        if i == 70 {
            cluster.restart(leader);
        }
        if i == 90 {
            cluster.kill(sub_node);
        }
        if i == 120 {
            cluster.restart(sub_node);
        }
        let r = client
            .set_toggle("f", &boolean_flag(i % 2 == 0), None, "")
            .await
            .expect("write");
        last_rev = r.revision;
    }
    support::eventually(
        Duration::from_secs(30),
        "the subscriber sees the last change",
        || seen.lock().events.last().copied().unwrap_or(0) >= last_rev,
    )
    .await;
    task.abort();
    let s = seen.lock();
    assert!(
        s.resumes >= 1,
        "the subscriber's node died, so it must have resumed"
    );
    // A snapshot covers everything up to its revision; after it, every revision exactly once.
    let start = s.snapshots.first().copied().unwrap_or(0);
    let expected: Vec<u64> = (start + 1..=last_rev).collect();
    assert_eq!(
        s.events, expected,
        "gaps, duplicates or reordering (snapshots {:?})",
        s.snapshots
    );
    assert_eq!(
        s.snapshots.len(),
        1,
        "resuming should replay, not snapshot again: {:?}",
        s.snapshots
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resuming_from_before_the_history_falls_back_to_a_snapshot() {
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "20", "--keep-logs", "5"]).await;
    let client = cluster.client();
    client.put_feature(feature("f"), None, "").await.unwrap();
    let mut last = 0;
    for i in 0..60 {
        last = client
            .set_toggle("f", &boolean_flag(i % 2 == 0), None, "")
            .await
            .unwrap()
            .revision;
    }
    // A restarted node's history starts at its snapshot.
    cluster.restart(1);
    cluster.wait_converged(Duration::from_secs(30)).await;
    let mut stream = open(&cluster.addr(1), Some(1)).await.expect("watch");
    let first = stream.message().await.unwrap().unwrap();
    match first.kind {
        Some(pb::watch_response::Kind::Snapshot(s)) => {
            assert_eq!(s.revision, last);
            assert_eq!(s.toggles.len(), 1);
            assert_eq!(s.features.len(), 1);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    // A node that has the history replays instead.
    let mut stream = open(&cluster.addr(2), Some(last - 3)).await.expect("watch");
    let mut revs = Vec::new();
    for _ in 0..3 {
        if let Some(pb::watch_response::Kind::Event(e)) = stream.message().await.unwrap().unwrap().kind {
            revs.push(e.revision);
        }
    }
    assert_eq!(revs, vec![last - 2, last - 1, last]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_stops_reading_is_disconnected_and_others_are_not_slowed() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = Arc::new(cluster.client());
    client.put_feature(feature("f"), None, "").await.unwrap();
    let addr = cluster.addr(1);
    let mut slow = open(&addr, None).await.unwrap();
    let _ = slow.message().await; // the snapshot; then it stops reading
    let fast_seen = Arc::new(Mutex::new(0u64));
    let fast = {
        let seen = fast_seen.clone();
        let mut stream = open(&addr, None).await.unwrap();
        tokio::spawn(async move {
            while let Ok(Some(m)) = stream.message().await {
                if let Some(pb::watch_response::Kind::Event(e)) = m.kind {
                    *seen.lock() = e.revision;
                }
            }
        })
    };
    // Enough events to overrun what sits behind the slow subscriber: the shared ring (4,096
    // events) plus the transport's buffers (hyper's per-stream send buffer and the HTTP/2
    // window hold about 3,000 small events more).
    let mut writers = Vec::new();
    for w in 0..16 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..800 {
                last = client
                    .set_toggle("f", &boolean_flag((i + w) % 2 == 0), None, "")
                    .await
                    .unwrap()
                    .revision;
            }
            last
        }));
    }
    let mut last = 0;
    for w in writers {
        last = last.max(w.await.unwrap());
    }
    // The reader that keeps up has everything, promptly.
    support::eventually(Duration::from_secs(5), "the fast subscriber keeps up", || {
        *fast_seen.lock() >= last
    })
    .await;
    fast.abort();
    // The slow one finds a disconnect with a status saying where to resume.
    let status = loop {
        match slow.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("resume with start_revision"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_revision_in_the_future_times_out_with_out_of_range() {
    let cluster = TestCluster::start(3, &[]).await;
    let started = std::time::Instant::now();
    let err = open(&cluster.addr(1), Some(1_000_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(started.elapsed() >= Duration::from_secs(4));
    let bad = pb::WatchRequest {
        filter: Some(pb::WatchFilter {
            features: vec!["bad name".into()],
            ..Default::default()
        }),
        start_revision: None,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(1)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = WatchClient::new(channel).watch(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A client's bytes sent as they are, and the replies' messages read as bytes.
#[derive(Clone, Copy, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// The first message of a call to `path` on `addr` whose request message is `request`.
async fn first_reply(addr: &str, path: &'static str, request: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(path);
    let mut replies = grpc
        .server_streaming(tonic::Request::new(request), path, RawBytes)
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), replies.message()).await;
    first
        .expect("a reply within 10 s")?
        .ok_or_else(|| tonic::Status::internal("no reply"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_garbled_watch_request_is_refused_and_the_node_serves_on() {
    let cluster = TestCluster::start(3, &[]).await;
    let addr = cluster.addr(1);
    let c = cluster.client();
    c.put_feature(feature("checkout"), None, "").await.unwrap();
    let fingerprint = || async {
        let s = c.status().await.unwrap();
        (s.members[0].revision, s.members[0].digest.clone())
    };
    // Every member has applied the write first: a follower's fingerprint taken while it is
    // still catching up would change on its own.
    cluster.wait_converged(Duration::from_secs(30)).await;
    let before = fingerprint().await;
    const WATCH: &str = "/switchyard.v1.Watch/Watch";
    let garbage = vec![0xff, 0x13, 0x37, 0, 1, 2, 3, 0xff, 0xff, 0xff, 0xff, 0x7f];
    let err = first_reply(&addr, WATCH, garbage).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("does not decode"), "{err:?}");
    let err = first_reply(&addr, "/switchyard.v1.Watch/Wach", Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    // An empty message is a request with every field at its default: a watch of everything,
    // whose first reply is the snapshot, as the typed client reads it.
    let reply = first_reply(&addr, WATCH, Vec::new()).await.unwrap();
    let reply = <pb::WatchResponse as prost::Message>::decode(reply.as_slice()).unwrap();
    let Some(pb::watch_response::Kind::Snapshot(snapshot)) = reply.kind else {
        panic!("the first reply is not a snapshot: {reply:?}");
    };
    assert!(snapshot.features.iter().any(|f| f.name == "checkout"));
    // Nothing changed, and typed watches go on as before.
    assert_eq!(fingerprint().await, before);
    let mut stream = open(&addr, None).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.kind, Some(pb::watch_response::Kind::Snapshot(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_watch_cli_tails_every_change_across_its_node_dying() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    client.put_feature(feature("f"), None, "").await.unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let first = (1..=3).find(|id| *id != leader).unwrap();
    // The CLI's snapshot must already hold the feature: were the follower still behind, the
    // feature's creation would arrive as one of the 6 changes the CLI counts.
    support::eventually_some(
        Duration::from_secs(10),
        "the follower applies the feature",
        || async { cluster.client_of(first).get_feature("f", true).await.ok() },
    )
    .await;
    let mut endpoints = vec![cluster.addr(first)];
    endpoints.extend((1..=3).filter(|id| *id != first).map(|id| cluster.addr(id)));
    let mut child = Command::new(support::binary())
        .args([
            "--endpoints",
            &endpoints.join(","),
            "--output",
            "json",
            "watch",
            "--count",
            "6",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("-- snapshot") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the CLI got its snapshot");

    let mut written = Vec::new();
    for i in 0..6 {
        if i == 3 {
            cluster.kill(first);
        }
        written.push(
            client
                .set_toggle("f", &boolean_flag(i % 2 == 0), None, "")
                .await
                .unwrap()
                .revision,
        );
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let toggles: Vec<u64> = lines
        .iter()
        .filter(|l| l["kind"] == "toggle")
        .map(|l| l["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(
        toggles, written,
        "every change once, in order, across the failover"
    );
}

/// Cuts `node` off by freezing the other two members, and checks that its open watch ends
/// with UNAVAILABLE (naming where to resume) and that it refuses new watches until the others
/// are back.
async fn cut_off_node_ends_its_watches(cluster: &TestCluster, node: u64) {
    // A node that was slow to find the leader at start-up refuses watches until it has.
    let mut stream = support::eventually_some(Duration::from_secs(10), "the node serves a watch", || async {
        open(&cluster.addr(node), None).await.ok()
    })
    .await;
    match stream.message().await.unwrap().and_then(|m| m.kind) {
        Some(pb::watch_response::Kind::Snapshot(_)) => {}
        other => panic!("expected a snapshot first, got {other:?}"),
    }
    let others: Vec<u64> = (1..=3).filter(|id| *id != node).collect();
    for id in &others {
        cluster.pause(*id);
    }
    let ended = support::stream_end(
        &mut stream,
        Duration::from_secs(20),
        "the watch of a cut-off node ended",
    )
    .await;
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("start_revision"), "{}", ended.message());
    let refused = open_once(&cluster.addr(node), None)
        .await
        .expect_err("a new watch is refused");
    assert_eq!(refused.code(), Code::Unavailable);

    for id in &others {
        cluster.resume(*id);
    }
    support::eventually_some(
        Duration::from_secs(20),
        "the node serves watches again",
        || async { open(&cluster.addr(node), None).await.ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_cut_off_from_the_leader_ends_its_watches() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cut_off_node_ends_its_watches(&cluster, follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_without_a_quorum_ends_its_watches() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    cut_off_node_ends_its_watches(&cluster, leader).await;
}

/// A node shutting down ends its watch streams at once with `UNAVAILABLE`, saying where to
/// resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_ends_its_watches_with_where_to_resume() {
    let single = support::single_node(|_| {}).await;
    let addr = single.addr();
    let client = &single.client;
    client.put_feature(feature("checkout"), None, "").await.unwrap();
    let mut stream = open(&addr, None).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    let Some(pb::watch_response::Kind::Snapshot(s)) = first.kind else {
        panic!("expected a snapshot first, got {first:?}");
    };
    let written = client
        .set_toggle("checkout", &boolean_flag(true), None, "")
        .await
        .unwrap()
        .revision;
    assert!(written > s.revision);
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("the change arrives")
            .unwrap()
            .unwrap();
        if matches!(m.kind, Some(pb::watch_response::Kind::Event(e)) if e.revision == written) {
            break;
        }
    }

    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(single.shutdown());
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Err(_) => panic!("the stream did not end within 5 s of the shutdown"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the stream ended without saying why"),
            Ok(Err(status)) => break status,
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    assert!(
        status.message().contains(&format!("start_revision {written}")),
        "{status:?}"
    );
    shutdown.await.unwrap();
}

/// Reads `stream` until `done` says so, collecting what `take` picks from each message; fails
/// if that takes more than 20 s (progress messages keep coming, so a deadline per message would
/// never fire).
async fn read_until<T>(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
    mut take: impl FnMut(pb::watch_response::Kind) -> Option<T>,
    done: impl Fn(&[T]) -> bool,
) -> Vec<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while !done(&got) {
        let m = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("not done within 20 s; got {} so far", got.len()))
            .expect("the stream goes on")
            .expect("the stream goes on");
        got.extend(m.kind.and_then(&mut take));
    }
    got
}

/// The revision of an event message.
fn event_revision(kind: pb::watch_response::Kind) -> Option<u64> {
    match kind {
        pb::watch_response::Kind::Event(e) => Some(e.revision),
        _ => None,
    }
}

/// A fleet's registry churn: instances of a service coming and going between toggle changes.
/// A stream watching toggles reads the hub's channel without registry events (and is not
/// woken by them: `src/watch/hub.rs`, `src/watch/bell.rs`), yet gets every toggle in order and
/// reports progress past the registry's revisions; a stream watching the registry gets every
/// instance event in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn toggle_and_registry_watchers_through_registry_churn() {
    let single = support::single_node(|_| {}).await;
    let addr = single.addr();
    let client = &single.client;
    client.put_feature(feature("checkout"), None, "").await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let watch = |filter: pb::WatchFilter| {
        let mut c = WatchClient::new(channel.clone());
        async move {
            let req = pb::WatchRequest {
                filter: Some(filter),
                start_revision: None,
            };
            c.watch(req).await.unwrap().into_inner()
        }
    };
    let mut toggles = watch(pb::WatchFilter {
        features: vec!["checkout".into()],
        ..Default::default()
    })
    .await;
    let mut registry = watch(pb::WatchFilter {
        services: vec!["cart".into()],
        registry: true,
        ..Default::default()
    })
    .await;

    let lease = client
        .grant_lease(Duration::from_secs(60))
        .await
        .unwrap()
        .lease_id;
    let (mut toggle_revisions, mut registry_revisions) = (Vec::new(), Vec::new());
    for round in 0..4 {
        let ids: Vec<String> = (0..15).map(|i| format!("cart-{round}-{i}")).collect();
        for id in &ids {
            let instance = pb::Instance {
                id: id.clone(),
                service: "cart".into(),
                version: "1.0.0".into(),
                ..Default::default()
            };
            registry_revisions.push(client.register(instance, lease).await.unwrap().revision);
        }
        let flag = boolean_flag(round % 2 == 0);
        toggle_revisions.push(
            client
                .set_toggle("checkout", &flag, None, "")
                .await
                .unwrap()
                .revision,
        );
        for id in &ids {
            registry_revisions.push(client.deregister(id).await.unwrap().revision);
        }
    }
    let last = *registry_revisions.last().unwrap();

    use pb::watch_response::Kind;
    let events = read_until(&mut toggles, event_revision, |got| {
        got.len() == toggle_revisions.len()
    })
    .await;
    assert_eq!(
        events, toggle_revisions,
        "every toggle once, in order, nothing else"
    );
    // Its progress reaches past the registry's revisions, which its channel never carried (a
    // subscriber resuming from it skips nothing it wants).
    read_until(
        &mut toggles,
        |kind| match kind {
            Kind::Progress(p) => Some(p.revision),
            Kind::Event(e) => panic!("an event after the last write: {e:?}"),
            Kind::Snapshot(_) => None,
        },
        |got| got.last().is_some_and(|r| *r >= last),
    )
    .await;
    let instances = read_until(&mut registry, event_revision, |got| {
        got.len() == registry_revisions.len()
    })
    .await;
    assert_eq!(
        instances, registry_revisions,
        "every registry event once, in order"
    );
}
