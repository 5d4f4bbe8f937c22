//! The `switchyard.v1.Watch` service: a snapshot (or a replay from the node's event history),
//! then every matching change in revision order, with progress messages; a subscriber that
//! falls too far behind is disconnected with a status saying where to resume.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use crate::api::convert;
use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::wire;
use crate::pb::wire::watch_server::Watch;
use crate::watch::{Filter, Published};

/// How often an idle stream gets a progress message.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// The first progress message comes this soon after the stream opens, and the gap doubles up
/// to [`PROGRESS_EVERY`]: a new subscriber gets several clock samples in its first seconds.
pub const FIRST_PROGRESS: Duration = Duration::from_millis(50);
/// How long a watch asked for a revision ahead of this node waits for it.
pub const AHEAD_WAIT: Duration = Duration::from_secs(5);
/// Most watch streams one node serves at once; more get `ResourceExhausted`.
pub const MAX_WATCHES: usize = 50_000;

/// The watch service of one node.
pub struct WatchApi {
    node: Arc<Node>,
}

impl WatchApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        WatchApi { node }
    }
}

/// Counts one open stream in the node's `watch_streams` gauge, which also enforces
/// [`MAX_WATCHES`]; released when the stream is dropped.
struct Slot(Gauge);

impl Slot {
    fn take(open: &Gauge) -> Result<Slot, Status> {
        let before = open.inc();
        let slot = Slot(open.clone());
        if before >= MAX_WATCHES as i64 {
            return Err(Status::resource_exhausted(format!(
                "this node already serves {MAX_WATCHES} watch streams; share one stream per process, or use another node"
            )));
        }
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn filter_of(f: Option<wire::WatchFilter>) -> crate::Result<Filter> {
    let f = f.unwrap_or_default();
    let filter = Filter {
        features: f.features.into_iter().collect(),
        services: f.services.into_iter().collect(),
        registry: f.registry,
    };
    filter.validate()?;
    Ok(filter)
}

type Kind = wire::watch_response::Kind;

fn message(kind: Kind) -> Result<wire::WatchResponse, Status> {
    Ok(wire::WatchResponse { kind: Some(kind) })
}

fn encoded(m: &impl prost::Message) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

#[tonic::async_trait]
impl Watch for WatchApi {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<wire::WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<wire::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let filter = filter_of(req.filter)?;
        if crate::node::contact::is_cut_off(&self.node) {
            return Err(lost_contact(req.start_revision.unwrap_or(0)));
        }
        let slot = Slot::take(&self.node.metrics().watch_streams)?;
        if let Some(start) = req.start_revision {
            // Resuming on a node behind the one seen before must not go back in time.
            if start > self.node.revision() {
                self.node
                    .wait_for_revision(start, AHEAD_WAIT)
                    .await
                    .map_err(|e| {
                        Status::out_of_range(format!("start_revision {start} is ahead of this node: {e}"))
                    })?;
            }
        }
        let subscription = self.node.hub().subscribe(req.start_revision);
        // Streams opened together would send progress together; spread them over 50 ms, so a
        // subscriber's clock samples are not all taken in a burst.
        static OPENED: AtomicUsize = AtomicUsize::new(0);
        let first =
            FIRST_PROGRESS + Duration::from_millis((OPENED.fetch_add(1, Ordering::Relaxed) * 37 % 50) as u64);
        let mut follow = Follow {
            node: self.node.clone(),
            receiver: subscription.receiver,
            replay: VecDeque::new(),
            snapshot: None,
            skip_through: 0,
            last_sent: req.start_revision.unwrap_or(0),
            gap: first,
            progress: Box::pin(tokio::time::sleep(first)),
            done: false,
            stop: self.node.stop_signal(),
            _slot: slot,
            filter,
        };
        match subscription.replay {
            Some(replay) => follow.replay = replay.into(),
            None => {
                let snapshot = snapshot(&self.node, &follow.filter);
                follow.skip_through = snapshot.revision;
                follow.last_sent = snapshot.revision;
                follow.snapshot = Some(snapshot);
            }
        }
        Ok(Response::new(Box::pin(futures::stream::unfold(
            follow,
            |mut f| async move {
                let next = f.next().await?;
                Some((next, f))
            },
        ))))
    }
}

/// The status ending a watch on a node cut off from the cluster's leader.
fn lost_contact(resume_from: u64) -> Status {
    Status::unavailable(format!(
        "this node has lost contact with the cluster's leader; resume on another node with start_revision {resume_from}"
    ))
}

/// The matching state of `node` now, for a new subscriber.
fn snapshot(node: &Node, filter: &Filter) -> pb::WatchSnapshot {
    node.read_state(|m| {
        let s = &m.state;
        let services_of = |name: &str| -> Vec<String> {
            s.feature(name)
                .map(|f| f.spec.requirements.iter().map(|r| r.service.clone()).collect())
                .unwrap_or_default()
        };
        let now = crate::clock::now_us();
        pb::WatchSnapshot {
            revision: s.revision(),
            features: s
                .features()
                .filter(|f| filter.feature_matches(&f.spec.name, &services_of(&f.spec.name)))
                .map(convert::feature)
                .collect(),
            toggles: s
                .toggles()
                .filter(|t| filter.feature_matches(&t.feature, &services_of(&t.feature)))
                .map(convert::toggle)
                .collect(),
            instances: s
                .registry()
                .instances()
                .filter(|i| filter.instance_matches(&i.spec.service))
                .map(convert::instance)
                .collect(),
            server_time_ms: now / 1000,
            server_time_us: now,
        }
    })
}

/// One subscriber's stream: the snapshot or the replay, then live events and progress. It is
/// polled by the connection as the subscriber's flow-control window allows, so a subscriber
/// costs no task of its own and holds no queue: live events wait in the hub's shared ring, and
/// one that falls a ring behind is told so and ended.
struct Follow {
    node: Arc<Node>,
    filter: Filter,
    receiver: broadcast::Receiver<Arc<Published>>,
    replay: VecDeque<Arc<Published>>,
    snapshot: Option<pb::WatchSnapshot>,
    /// Events at or below this revision are already covered by the snapshot.
    skip_through: u64,
    last_sent: u64,
    gap: Duration,
    progress: Pin<Box<tokio::time::Sleep>>,
    done: bool,
    /// Turns true when the node shuts down.
    stop: tokio::sync::watch::Receiver<bool>,
    _slot: Slot,
}

impl Follow {
    async fn next(&mut self) -> Option<Result<wire::WatchResponse, Status>> {
        if self.done {
            return None;
        }
        if let Some(s) = self.snapshot.take() {
            return Some(message(Kind::Snapshot(encoded(&s))));
        }
        while let Some(p) = self.replay.pop_front() {
            if self.filter.matches(&p) {
                self.last_sent = p.event.revision;
                return Some(message(Kind::Event(p.encoded.clone())));
            }
        }
        loop {
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(p) => {
                        if p.event.revision <= self.skip_through || !self.filter.matches(&p) {
                            continue;
                        }
                        self.last_sent = p.event.revision;
                        return Some(message(Kind::Event(p.encoded.clone())));
                    }
                    Err(RecvError::Lagged(missed)) => {
                        self.done = true;
                        self.node.metrics().watch_ended("slow_subscriber");
                        return Some(Err(Status::resource_exhausted(format!(
                            "this subscriber fell {missed} events behind and was disconnected; resume with start_revision {}",
                            self.last_sent
                        ))));
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.stop.wait_for(|stopping| *stopping) => {
                    self.done = true;
                    return Some(Err(Status::unavailable(format!(
                        "this node is shutting down; resume on another node with start_revision {}",
                        self.last_sent
                    ))));
                }
                _ = &mut self.progress => {
                    if crate::node::contact::is_cut_off(&self.node) {
                        self.done = true;
                        self.node.metrics().watch_ended("lost_contact");
                        return Some(Err(lost_contact(self.last_sent)));
                    }
                    self.gap = (self.gap * 2).min(PROGRESS_EVERY);
                    let gap = self.gap;
                    self.progress.as_mut().reset(tokio::time::Instant::now() + gap);
                    let now = crate::clock::now_us();
                    let progress = pb::WatchProgress {
                        revision: self.node.revision(),
                        server_time_ms: now / 1000,
                        server_time_us: now,
                    };
                    return Some(message(Kind::Progress(encoded(&progress))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn requests_are_wire_compatible() {
        let typed = pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                features: vec!["checkout".into(), "search".into()],
                services: vec!["cart".into()],
                registry: true,
            }),
            start_revision: Some(42),
        };
        let server = wire::WatchRequest::decode(typed.encode_to_vec().as_slice()).unwrap();
        let f = server.filter.clone().unwrap();
        assert_eq!(f.features, vec!["checkout", "search"]);
        assert_eq!(f.services, vec!["cart"]);
        assert!(f.registry);
        assert_eq!(server.start_revision, Some(42));
        assert_eq!(server.encode_to_vec(), typed.encode_to_vec());
    }

    #[test]
    fn pre_encoded_responses_decode_as_typed_messages() {
        let event = pb::WatchEvent {
            revision: 7,
            change: Some(pb::watch_event::Change::FeatureDeleted("checkout".into())),
        };
        let snapshot = pb::WatchSnapshot {
            revision: 6,
            features: vec![pb::Feature {
                name: "checkout".into(),
                ..Default::default()
            }],
            server_time_ms: 123,
            ..Default::default()
        };
        let progress = pb::WatchProgress {
            revision: 7,
            server_time_ms: 456,
            server_time_us: 456_789,
        };
        let cases = [
            (
                Kind::Event(encoded(&event)),
                pb::watch_response::Kind::Event(event),
            ),
            (
                Kind::Snapshot(encoded(&snapshot)),
                pb::watch_response::Kind::Snapshot(snapshot),
            ),
            (
                Kind::Progress(encoded(&progress)),
                pb::watch_response::Kind::Progress(progress),
            ),
        ];
        for (server, typed) in cases {
            let bytes = message(server).unwrap().encode_to_vec();
            let decoded = pb::WatchResponse::decode(bytes.as_slice()).unwrap();
            assert_eq!(decoded.kind, Some(typed));
        }
    }

    #[test]
    fn the_watch_limit_is_enforced_and_released() {
        let open = Gauge::default();
        open.set(MAX_WATCHES as i64 - 1);
        let slot = Slot::take(&open).unwrap();
        let err = Slot::take(&open).err().unwrap();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        drop(slot);
        assert_eq!(open.get(), MAX_WATCHES as i64 - 1);
        assert!(Slot::take(&open).is_ok());
    }
}
