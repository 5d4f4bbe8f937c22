//! Prometheus metrics of one node (served by [`crate::api::http`] at `/metrics` when the node
//! is started with `--metrics-listen`). Counters are kept where things happen (writes,
//! keepalives, watch disconnects); state gauges (revision, Raft indexes, role, registry sizes)
//! are read from the node when Prometheus scrapes, as [`StateGauges`]. It knows nothing of the
//! node: the node owns its metrics.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::Result;

/// The outcome label of a write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteOutcome {
    /// `ok`, or the error kind (`invalid_argument`, `unavailable`, ...).
    pub outcome: String,
}

/// Why a watch stream was ended by the node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndReason {
    /// `slow_subscriber` or `lost_contact`.
    pub reason: &'static str,
}

/// Why the guard refused a call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalReason {
    /// `unauthenticated`, `permission_denied`, `rate_limited` or `watch_limited`.
    pub reason: &'static str,
}

/// The node's metrics.
pub struct Metrics {
    /// Calls the guard refused, by reason (never with who or what credential).
    pub refused: Family<RefusalReason, Counter>,
    registry: Registry,
    /// Writes received by this node, by outcome.
    pub writes: Family<WriteOutcome, Counter>,
    /// Time to answer a write received by this node (commit on a majority and apply).
    pub write_seconds: Histogram,
    watch_streams: Gauge,
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

impl Metrics {
    /// Counts a call the guard refused (`reason`: an error kind or a limit).
    pub fn auth_refused(&self, reason: &str) {
        let reason = match reason {
            "unauthenticated" => "unauthenticated",
            "rate_limited" => "rate_limited",
            "watch_limited" => "watch_limited",
            _ => "permission_denied",
        };
        self.refused.get_or_create(&RefusalReason { reason }).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let m = Metrics {
            refused: Family::default(),
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
            "calls_refused",
            "Calls refused before reaching a service: unauthenticated, permission_denied, rate_limited, watch_limited",
            m.refused.clone(),
        );
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
        self.writes.get_or_create(&WriteOutcome { outcome }).inc();
        self.write_seconds.observe(took.as_secs_f64());
    }

    /// Counts a watch stream the node ended.
    pub fn watch_ended(&self, reason: &'static str) {
        self.watch_ended.get_or_create(&EndReason { reason }).inc();
    }

    /// The text exposition of every metric, with the state gauges as given.
    pub fn render(&self, now: &StateGauges) -> String {
        self.term.set(now.term as i64);
        self.last_log_index.set(now.last_log_index as i64);
        self.applied_index.set(now.applied_index as i64);
        self.is_leader.set(i64::from(now.is_leader));
        self.lost_contact.set(i64::from(now.lost_contact));
        self.revision.set(now.revision as i64);
        self.leases.set(now.leases as i64);
        self.instances.set(now.instances as i64);
        self.features.set(now.features as i64);
        self.pending_activations.set(now.pending_activations as i64);
        self.watch_streams.set(now.watch_streams as i64);
        let seen = self
            .published_seen
            .swap(now.events_published, std::sync::atomic::Ordering::AcqRel);
        self.events_published
            .inc_by(now.events_published.saturating_sub(seen));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// The state the metrics show, read from the node when they are scraped.
#[derive(Debug, Clone, Default)]
pub struct StateGauges {
    /// Cluster revision of the applied state.
    pub revision: u64,
    /// Current Raft term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Index of the last applied entry.
    pub applied_index: u64,
    /// Whether this node leads.
    pub is_leader: bool,
    /// Whether this node is out of contact with the leader.
    pub lost_contact: bool,
    /// Live leases.
    pub leases: usize,
    /// Registered instances.
    pub instances: usize,
    /// Features in the catalog.
    pub features: usize,
    /// Activations waiting for readiness.
    pub pending_activations: usize,
    /// Events published since the node started.
    pub events_published: u64,
    /// Watch and flagd streams open.
    pub watch_streams: usize,
}
