//! The `switchyard.v1.Watch` service: a snapshot (or a replay from the node's event history),
//! then every matching change in revision order, with progress messages; a subscriber that
//! falls too far behind is disconnected with a status saying where to resume.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::api::convert;
use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::v1::watch_server::Watch;
use crate::state::event::{Change, Event};
use crate::watch::{Filter, Published};

/// How often an idle stream gets a progress message.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long a watch asked for a revision ahead of this node waits for it.
pub const AHEAD_WAIT: Duration = Duration::from_secs(5);
/// Messages buffered per stream between the fan-out task and gRPC.
const STREAM_BUFFER: usize = 64;

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

fn filter_of(f: Option<pb::WatchFilter>) -> crate::Result<Filter> {
    let f = f.unwrap_or_default();
    let filter = Filter {
        features: f.features.into_iter().collect(),
        services: f.services.into_iter().collect(),
        registry: f.registry,
    };
    filter.validate()?;
    Ok(filter)
}

/// An event for the wire.
pub fn event(e: &Event) -> pb::WatchEvent {
    use pb::watch_event::Change as C;
    let change = match &e.change {
        Change::Feature(f) => C::Feature(convert::feature(f)),
        Change::FeatureDeleted(name) => C::FeatureDeleted(name.clone()),
        Change::Toggle(t) => C::Toggle(convert::toggle(t)),
        Change::Instance(i) => C::Instance(convert::instance(i)),
        Change::InstanceGone { id, service } => C::InstanceGone(pb::InstanceGone {
            id: id.clone(),
            service: service.clone(),
        }),
    };
    pb::WatchEvent {
        revision: e.revision,
        change: Some(change),
    }
}

fn message(kind: pb::watch_response::Kind) -> Result<pb::WatchResponse, Status> {
    Ok(pb::WatchResponse { kind: Some(kind) })
}

#[tonic::async_trait]
impl Watch for WatchApi {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let filter = filter_of(req.filter)?;
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
            let mut receiver = subscription.receiver;
            // Events at or below `skip_through` are already covered by the snapshot.
            let mut skip_through = 0;
            let mut last_sent = req.start_revision.unwrap_or(0);
            match subscription.replay {
                Some(replay) => {
                    for p in replay.iter().filter(|p| filter.matches(p)) {
                        last_sent = p.event.revision;
                        if tx
                            .send(message(pb::watch_response::Kind::Event(event(&p.event))))
                            .await
                            .is_err()
                        {
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
                        }
                    });
                    skip_through = snapshot.revision;
                    last_sent = snapshot.revision;
                    if tx
                        .send(message(pb::watch_response::Kind::Snapshot(snapshot)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let mut progress = tokio::time::interval(PROGRESS_EVERY);
            progress.tick().await;
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
                        if tx.send(message(pb::watch_response::Kind::Event(event(&p.event)))).await.is_err() {
                            return;
                        }
                    }
                    _ = progress.tick() => {
                        let progress = pb::WatchProgress { revision: node.revision(), server_time_ms: crate::clock::now_ms() };
                        if tx.send(message(pb::watch_response::Kind::Progress(progress))).await.is_err() {
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
