//! Prometheus metrics of one node, served over HTTP at `/metrics` when the node is started with
//! `--metrics-listen`. Counters are kept where things happen (writes, keepalives, watch
//! disconnects); state gauges (revision, Raft indexes, role, registry sizes) are read from the
//! node when Prometheus scrapes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use openraft::async_runtime::WatchReceiver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
use crate::node::Node;

/// The outcome label of a write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `ok`, or the error kind (`invalid_argument`, `unavailable`, ...).
    pub outcome: String,
}

/// Why a watch stream was ended by the node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndReason {
    /// `slow_subscriber` or `lost_contact`.
    pub reason: &'static str,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Writes received by this node, by outcome.
    pub writes: Family<Outcome, Counter>,
    /// Time to answer a write received by this node (commit on a majority and apply).
    pub write_seconds: Histogram,
    /// Open watch streams.
    pub watch_streams: Gauge,
    /// Watch streams the node ended, by reason.
    pub watch_ended: Family<EndReason, Counter>,
    /// Keepalive messages received.
    pub keepalives: Counter,
    /// Events published to this node's watchers.
    pub events_published: Counter,
    revision: Gauge<i64, AtomicI64>,
    term: Gauge<i64, AtomicI64>,
    last_log_index: Gauge<i64, AtomicI64>,
    applied_index: Gauge<i64, AtomicI64>,
    is_leader: Gauge<i64, AtomicI64>,
    lost_contact: Gauge<i64, AtomicI64>,
    leases: Gauge<i64, AtomicI64>,
    instances: Gauge<i64, AtomicI64>,
    features: Gauge<i64, AtomicI64>,
    pending_activations: Gauge<i64, AtomicI64>,
    published_seen: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let m = Metrics {
            writes: Family::default(),
            // 0.5 ms .. ~4 s
            write_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            watch_streams: Gauge::default(),
            watch_ended: Family::default(),
            keepalives: Counter::default(),
            events_published: Counter::default(),
            revision: Gauge::default(),
            term: Gauge::default(),
            last_log_index: Gauge::default(),
            applied_index: Gauge::default(),
            is_leader: Gauge::default(),
            lost_contact: Gauge::default(),
            leases: Gauge::default(),
            instances: Gauge::default(),
            features: Gauge::default(),
            pending_activations: Gauge::default(),
            published_seen: AtomicU64::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "writes",
            "Writes received by this node, by outcome",
            m.writes.clone(),
        );
        registry.register(
            "write_duration_seconds",
            "Time to answer a write received by this node",
            m.write_seconds.clone(),
        );
        registry.register("watch_streams", "Open watch streams", m.watch_streams.clone());
        registry.register(
            "watch_streams_ended",
            "Watch streams this node ended, by reason",
            m.watch_ended.clone(),
        );
        registry.register(
            "keepalives",
            "Lease keepalive messages received",
            m.keepalives.clone(),
        );
        registry.register(
            "events_published",
            "Events published to this node's watchers",
            m.events_published.clone(),
        );
        let state_gauges = [
            ("revision", "Cluster revision of the applied state", &m.revision),
            ("raft_term", "Current Raft term", &m.term),
            (
                "raft_last_log_index",
                "Index of the last log entry",
                &m.last_log_index,
            ),
            (
                "raft_applied_index",
                "Index of the last applied entry",
                &m.applied_index,
            ),
            ("raft_is_leader", "1 when this node leads", &m.is_leader),
            (
                "lost_contact",
                "1 when this node has been out of contact with the leader for over 3 s",
                &m.lost_contact,
            ),
            ("leases", "Live leases", &m.leases),
            ("instances", "Registered instances", &m.instances),
            ("features", "Features in the catalog", &m.features),
            (
                "pending_activations",
                "Activations waiting for readiness",
                &m.pending_activations,
            ),
        ];
        for (name, help, gauge) in state_gauges {
            registry.register(name, help, gauge.clone());
        }
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts a write and its duration.
    pub fn observe_write(&self, took: Duration, result: &Result<impl Sized>) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.kind().to_string(),
        };
        self.writes.get_or_create(&Outcome { outcome }).inc();
        self.write_seconds.observe(took.as_secs_f64());
    }

    /// Counts a watch stream the node ended.
    pub fn watch_ended(&self, reason: &'static str) {
        self.watch_ended.get_or_create(&EndReason { reason }).inc();
    }

    /// The text exposition of every metric, with the state gauges read from `node` now.
    pub fn render(&self, node: &Node) -> String {
        let m = node.raft().metrics().borrow_watched().clone();
        self.term.set(m.current_term as i64);
        self.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
        self.applied_index
            .set(m.last_applied.map(|l| l.index()).unwrap_or(0) as i64);
        self.is_leader.set(i64::from(node.is_leader()));
        self.lost_contact.set(i64::from(node.contact().is_lost()));
        let (revision, leases, instances, features, pending) = node.read_state(|s| {
            let s = &s.state;
            (
                s.revision(),
                s.registry().leases().count(),
                s.registry().instances().count(),
                s.features().count(),
                s.pending().count(),
            )
        });
        self.revision.set(revision as i64);
        self.leases.set(leases as i64);
        self.instances.set(instances as i64);
        self.features.set(features as i64);
        self.pending_activations.set(pending as i64);
        let published = node.hub().published();
        let seen = self
            .published_seen
            .swap(published, std::sync::atomic::Ordering::AcqRel);
        self.events_published.inc_by(published.saturating_sub(seen));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Serves `/metrics` of `node` on `listener` until the node shuts down.
pub async fn serve(node: Arc<Node>, listener: tokio::net::TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if node.is_shut_down() {
            return;
        }
        let node = node.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let node = node.clone();
                async move {
                    #[cfg(feature = "failpoints")]
                    if let Some(name) = req.uri().path().strip_prefix("/failpoints/") {
                        use http_body_util::BodyExt;
                        let name = name.to_string();
                        let method = req.method().clone();
                        let body = match req.into_body().collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(_) => Bytes::new(),
                        };
                        let (code, text) =
                            crate::failpoint::handle(&method, &name, &String::from_utf8_lossy(&body));
                        return hyper::Response::builder()
                            .status(code)
                            .body(Full::new(Bytes::from(text)));
                    }
                    let resp = if req.uri().path() == "/metrics" {
                        hyper::Response::builder()
                            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                            .body(Full::new(Bytes::from(node.metrics().render(&node))))
                    } else {
                        hyper::Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
                    };
                    resp
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A scrape takes milliseconds; a client that holds the connection is cut off.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen for metrics on {addr}: {e}")))
}
