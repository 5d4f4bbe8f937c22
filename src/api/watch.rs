//! The `switchyard.v1.Watch` service: a snapshot (or a replay from the node's event history),
//! then every matching change in revision order, with progress messages; a subscriber that
//! falls too far behind is disconnected with a status saying where to resume.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
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
/// Messages buffered per stream between the fan-out task and gRPC.
const STREAM_BUFFER: usize = 64;
/// Most watch streams one node serves at once; more get `ResourceExhausted`.
pub const MAX_WATCHES: usize = 50_000;

/// The watch service of one node.
pub struct WatchApi {
    node: Arc<Node>,
    active: Arc<AtomicUsize>,
}

impl WatchApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        WatchApi {
            node,
            active: Arc::default(),
        }
    }
}

/// Counts one open stream; dropped when its fan-out task ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Result<Slot, Status> {
        let before = active.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(active.clone());
        if before >= MAX_WATCHES {
            return Err(Status::resource_exhausted(format!(
                "this node already serves {MAX_WATCHES} watch streams; share one stream per process, or use another node"
            )));
        }
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
        let slot = Slot::take(&self.active)?;
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
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let node = self.node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut receiver = subscription.receiver;
            // Events at or below `skip_through` are already covered by the snapshot.
            let mut skip_through = 0;
            let mut last_sent = req.start_revision.unwrap_or(0);
            match subscription.replay {
                Some(replay) => {
                    for p in replay.iter().filter(|p| filter.matches(p)) {
                        last_sent = p.event.revision;
                        if tx.send(message(Kind::Event(p.encoded.clone()))).await.is_err() {
                            return;
                        }
                    }
                }
                None => {
                    let snapshot = node.read_state(|m| {
                        let s = &m.state;
                        let services_of = |name: &str| -> Vec<String> {
                            s.feature(name)
                                .map(|f| f.spec.requirements.iter().map(|r| r.service.clone()).collect())
                                .unwrap_or_default()
                        };
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
                            server_time_ms: crate::clock::now_ms(),
                            server_time_us: crate::clock::now_us(),
                        }
                    });
                    skip_through = snapshot.revision;
                    last_sent = snapshot.revision;
                    if tx
                        .send(message(Kind::Snapshot(encoded(&snapshot))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let mut gap = FIRST_PROGRESS;
            let progress = tokio::time::sleep(gap);
            tokio::pin!(progress);
            loop {
                tokio::select! {
                    received = receiver.recv() => {
                        let p: Arc<Published> = match received {
                            Ok(p) => p,
                            Err(RecvError::Lagged(missed)) => {
                                let _ = tx.send(Err(Status::resource_exhausted(format!(
                                    "this subscriber fell {missed} events behind and was disconnected; resume with start_revision {last_sent}"
                                )))).await;
                                return;
                            }
                            Err(RecvError::Closed) => return,
                        };
                        if p.event.revision <= skip_through || !filter.matches(&p) {
                            continue;
                        }
                        last_sent = p.event.revision;
                        if tx.send(message(Kind::Event(p.encoded.clone()))).await.is_err() {
                            return;
                        }
                    }
                    _ = &mut progress => {
                        gap = (gap * 2).min(PROGRESS_EVERY);
                        progress.as_mut().reset(tokio::time::Instant::now() + gap);
                        let now = crate::clock::now_us();
                        let progress = pb::WatchProgress { revision: node.revision(), server_time_ms: now / 1000, server_time_us: now };
                        if tx.send(message(Kind::Progress(encoded(&progress)))).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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
        let active = Arc::new(AtomicUsize::new(MAX_WATCHES - 1));
        let slot = Slot::take(&active).unwrap();
        let err = Slot::take(&active).err().unwrap();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        drop(slot);
        assert_eq!(active.load(Ordering::Acquire), MAX_WATCHES - 1);
        assert!(Slot::take(&active).is_ok());
    }
}
