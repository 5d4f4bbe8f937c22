//! The traffic a schedule runs while the nemesis breaks things, and the record of it.
//!
//! - Writers put and compare-and-set a few hot features and read them linearizably, one attempt
//!   per operation on a node picked at random (no client retries: a retry would hide what the
//!   node answered). Every operation is recorded with when it was sent and when (if ever) it
//!   was answered; a write whose answer never came is "unknown".
//! - Serializable readers read from any node.
//! - A toggler flips toggles (`immediate` and `now`).
//! - Watchers: raw `Watch` streams, some pinned to one node (like a client beside it), some
//!   moving to the next node on every break or every few seconds; each resumes from the last
//!   revision it holds in full, and records every message of every stream.
//! - The fleet: SDK instances of service `shop` registered under leases. A feature gated on
//!   `shop >= 2.0.0` is activated `when-ready` at the start while version 1.0.0 instances still
//!   run; a rolling upgrade replaces them during the run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchyard::error::Error;
use switchyard::pb::v1 as pb;
use switchyard::sdk::{FlagChange, InstanceConfig, Sdk, SdkConfig};
use tonic::transport::Channel;

use crate::check::linearizable::{Call, Op, Outcome};
use crate::check::watch::{Acked, Event, Filter, Message, Segment, WatchRecord};

/// The features writers work on (linearizability is checked per feature).
pub const HOT_KEYS: usize = 4;
/// Toggles the toggler flips.
pub const TOGGLES: usize = 2;
/// The feature gated on the rolling upgrade.
pub const GATED: &str = "gated";
pub const SERVICE: &str = "shop";
pub const NEW_VERSION: &str = "2.0.0";
pub const OLD_VERSION: &str = "1.0.0";
/// How long a watch may stay silent (nodes send progress every few seconds) before the
/// watcher gives up on it and moves on.
const WATCH_IDLE: Duration = Duration::from_secs(8);
const OP_TIMEOUT: Duration = Duration::from_secs(3);

pub fn hot_key(i: usize) -> String {
    format!("lin-{i}")
}

pub fn toggle_key(i: usize) -> String {
    format!("tog-{i}")
}

/// A serializable read as answered.
#[derive(Debug, Clone)]
pub struct SerialRead {
    pub node: u64,
    pub key: String,
    pub value: Option<String>,
    pub revision: u64,
}

/// Everything recorded during a run.
pub struct Recorder {
    t0: Instant,
    /// The wall clock (unix µs) at `t0`, to place times nodes stamp into the run.
    wall_t0_us: i64,
    pub ops: Mutex<Vec<Op>>,
    pub acked: Mutex<Vec<Acked>>,
    pub serial_reads: Mutex<Vec<SerialRead>>,
    /// Changes SDK instances put into effect, with the instance.
    pub sdk_changes: Mutex<Vec<(String, FlagChange)>>,
    /// Probe writes answered: (sent, answered), µs into the run.
    pub probes: Mutex<Vec<(u64, u64)>>,
    /// What nodes served, for the staleness check: (node, µs into the run, the revision the
    /// node served at). Watch progress and serializable reads.
    pub served: Mutex<Vec<(u64, u64, u64)>>,
    /// Probe writes acknowledged: (revision, µs into the run when the answer came).
    pub probes_acked: Mutex<Vec<(u64, u64)>>,
    /// Probe writes still waiting for their answer.
    pub probes_in_flight: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        let wall_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Arc::new(Recorder {
            t0: Instant::now(),
            wall_t0_us: wall_now,
            ops: Mutex::new(Vec::new()),
            acked: Mutex::new(Vec::new()),
            serial_reads: Mutex::new(Vec::new()),
            sdk_changes: Mutex::new(Vec::new()),
            probes: Mutex::new(Vec::new()),
            probes_in_flight: Default::default(),
            served: Mutex::new(Vec::new()),
            probes_acked: Mutex::new(Vec::new()),
        })
    }

    /// Microseconds since the run began.
    pub fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// When a node stamped something (unix µs, its clock: every process of a run shares the
    /// host's), in µs into the run; never after now.
    pub fn stamped_us(&self, wall_us: i64) -> u64 {
        let now = self.now_us();
        u64::try_from(wall_us - self.wall_t0_us).map_or(now, |t| t.min(now))
    }

    /// The instant `us` after the run began.
    pub fn at(&self, us: u64) -> Instant {
        self.t0 + Duration::from_micros(us)
    }
}

/// The nodes' channels (lazily connected; they reconnect by themselves).
#[derive(Clone)]
pub struct Nodes {
    pub ids: Vec<u64>,
    pub channels: Vec<Channel>,
    pub endpoints: Vec<String>,
}

impl Nodes {
    fn pick(&self, rng: &mut ChaCha8Rng) -> (u64, Channel) {
        let i = rng.gen_range(0..self.ids.len());
        (self.ids[i], self.channels[i].clone())
    }
}

fn write_options(client: &str, request: u64) -> Option<pb::WriteOptions> {
    Some(pb::WriteOptions {
        client_id: client.to_string(),
        request_id: request,
        actor: client.to_string(),
        reason: String::new(),
    })
}

/// One writer: puts, compare-and-sets and linearizable reads on the hot features.
pub async fn writer(c: u32, nodes: Nodes, rec: Arc<Recorder>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x5752_0000 + c as u64));
    let client_id = format!("writer-{c}-{seed}");
    let mut seq = 0u64;
    // The last revision this writer saw per key, for its compare-and-sets.
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = hot_key(rng.gen_range(0..HOT_KEYS));
        let (_, channel) = nodes.pick(&mut rng);
        let mut catalog = pb::catalog_client::CatalogClient::new(channel);
        let value = format!("w{c}-{seq}");
        let roll = rng.gen_range(0..100);
        let call = if roll < 40 {
            Call::Put { value: value.clone() }
        } else if roll < 65 {
            let expected = if rng.gen_bool(0.8) {
                seen.get(&key).copied().unwrap_or(0)
            } else {
                rng.gen_range(0..rec.now_us() / 10_000 + 2)
            };
            Call::Cas {
                expected,
                value: value.clone(),
            }
        } else {
            Call::Read
        };
        let invoked_us = rec.now_us();
        let result = match &call {
            Call::Put { .. } | Call::Cas { .. } => {
                let expected_revision = match &call {
                    Call::Cas { expected, .. } => Some(*expected),
                    _ => None,
                };
                let req = pb::PutFeatureRequest {
                    feature: Some(pb::Feature {
                        name: key.clone(),
                        description: value.clone(),
                        ..Default::default()
                    }),
                    expected_revision,
                    write: write_options(&client_id, seq),
                };
                match tokio::time::timeout(OP_TIMEOUT, catalog.put_feature(req)).await {
                    Ok(Ok(r)) => {
                        let revision = r.into_inner().feature.map_or(0, |f| f.revision);
                        seen.insert(key.clone(), revision);
                        Some(Outcome::Written { revision })
                    }
                    Ok(Err(status)) => match Error::from_status(&status) {
                        Error::RevisionMismatch { .. } => Some(Outcome::Mismatch),
                        Error::InvalidArgument(m) => {
                            tracing::error!("writer {c}: the node refused a valid write: {m}");
                            None
                        }
                        _ => Some(Outcome::Unknown),
                    },
                    Err(_) => Some(Outcome::Unknown),
                }
            }
            Call::Read => {
                let req = pb::GetFeatureRequest {
                    name: key.clone(),
                    read: None,
                };
                match tokio::time::timeout(OP_TIMEOUT, catalog.get_feature(req)).await {
                    Ok(Ok(r)) => {
                        let f = r.into_inner().feature;
                        let revision = f.as_ref().map_or(0, |f| f.revision);
                        if revision > 0 {
                            seen.insert(key.clone(), revision);
                        }
                        Some(Outcome::Read {
                            value: f.map(|f| f.description),
                            revision,
                        })
                    }
                    Ok(Err(s)) if s.code() == tonic::Code::NotFound => Some(Outcome::Read {
                        value: None,
                        revision: 0,
                    }),
                    // A failed read changed nothing: leave it out.
                    _ => None,
                }
            }
        };
        let Some(result) = result else { continue };
        let completed_us = (result != Outcome::Unknown).then(|| rec.now_us());
        if let (Outcome::Written { revision }, Call::Put { value } | Call::Cas { value, .. }) =
            (&result, &call)
        {
            rec.acked.lock().push(Acked {
                revision: *revision,
                key: format!("feature/{key}"),
                value: value.clone(),
            });
        }
        rec.ops.lock().push(Op {
            client: c,
            key,
            call,
            invoked_us,
            completed_us,
            result,
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..60))).await;
    }
}

/// A write every 100 ms to a random node, each on its own (not waiting for the one before):
/// how soon after a fault the cluster takes writes again, without the writers' timeouts in the
/// way.
pub async fn prober(nodes: Nodes, rec: Arc<Recorder>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5052_4f42);
    let client_id = format!("prober-{seed}");
    let mut seq = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        seq += 1;
        let (_, channel) = nodes.pick(&mut rng);
        let req = pb::PutFeatureRequest {
            feature: Some(pb::Feature {
                name: "probe".into(),
                description: format!("p{seq}"),
                ..Default::default()
            }),
            expected_revision: None,
            write: write_options(&client_id, seq),
        };
        let rec = rec.clone();
        rec.probes_in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let sent = rec.now_us();
            let mut catalog = pb::catalog_client::CatalogClient::new(channel);
            if let Ok(Ok(r)) = tokio::time::timeout(OP_TIMEOUT, catalog.put_feature(req)).await {
                let f = r.into_inner().feature.unwrap_or_default();
                rec.probes.lock().push((sent, rec.now_us()));
                rec.probes_acked.lock().push((f.revision, rec.now_us()));
                rec.acked.lock().push(Acked {
                    revision: f.revision,
                    key: "feature/probe".into(),
                    value: f.description,
                });
            }
            rec.probes_in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Serializable reads from any node.
pub async fn serial_reader(nodes: Nodes, rec: Arc<Recorder>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5345_5249);
    while !stop.load(Ordering::Relaxed) {
        let key = hot_key(rng.gen_range(0..HOT_KEYS));
        let (node, channel) = nodes.pick(&mut rng);
        let mut catalog = pb::catalog_client::CatalogClient::new(channel);
        let req = pb::GetFeatureRequest {
            name: key.clone(),
            read: Some(pb::ReadOptions { serializable: true }),
        };
        if let Ok(Ok(r)) = tokio::time::timeout(OP_TIMEOUT, catalog.get_feature(req)).await {
            let r = r.into_inner();
            rec.served.lock().push((node, rec.now_us(), r.revision));
            let f = r.feature;
            rec.serial_reads.lock().push(SerialRead {
                node,
                key,
                revision: f.as_ref().map_or(0, |f| f.revision),
                value: f.map(|f| f.description),
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..80))).await;
    }
}

/// A boolean toggle definition in flagd's format.
pub fn boolean_flag(enabled: bool) -> String {
    serde_json::json!({
        "state": if enabled { "ENABLED" } else { "DISABLED" },
        "variants": {"on": true, "off": false},
        "defaultVariant": "on",
    })
    .to_string()
}

/// Flips the toggles, `immediate` or `now`.
pub async fn toggler(nodes: Nodes, rec: Arc<Recorder>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x544f_4747);
    let client_id = format!("toggler-{seed}");
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let feature = toggle_key(rng.gen_range(0..TOGGLES));
        let (_, channel) = nodes.pick(&mut rng);
        let mut toggles = pb::toggles_client::TogglesClient::new(channel);
        let mode = if rng.gen_bool(0.5) {
            pb::activation::Mode::Immediate
        } else {
            pb::activation::Mode::Now
        };
        let req = pb::SetToggleRequest {
            feature: feature.clone(),
            definition_json: boolean_flag(rng.gen_bool(0.5)),
            expected_revision: None,
            write: write_options(&client_id, seq),
            activation: Some(pb::Activation {
                mode: mode as i32,
                switch_delay_ms: Some(300),
                ..Default::default()
            }),
        };
        if let Ok(Ok(r)) = tokio::time::timeout(OP_TIMEOUT, toggles.set_toggle(req)).await {
            let r = r.into_inner();
            if let Some(t) = r.toggle {
                rec.acked.lock().push(Acked {
                    revision: r.revision,
                    key: format!("toggle/{feature}"),
                    value: t.definition_json,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..400))).await;
    }
}

/// How a watcher chooses nodes.
#[derive(Debug, Clone, Copy)]
pub enum Placement {
    /// Always this node (index into the node list), like a client next to it.
    Pinned(usize),
    /// The next node on every break, and every few seconds anyway.
    Moving,
}

/// One watcher's settings.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub name: String,
    /// Only these features (empty: every feature).
    pub features: Vec<String>,
    /// Registry events too.
    pub registry: bool,
    pub placement: Placement,
}

impl WatchSpec {
    fn filter(&self) -> Filter {
        if self.features.is_empty() {
            if self.registry {
                Filter(None)
            } else {
                Filter(Some(vec!["feature/".into(), "toggle/".into()]))
            }
        } else {
            Filter(Some(
                self.features
                    .iter()
                    .flat_map(|f| [format!("feature/{f}"), format!("toggle/{f}")])
                    .collect(),
            ))
        }
    }
}

fn event_of(e: pb::WatchEvent) -> Option<Event> {
    use pb::watch_event::Change;
    let (key, value) = match e.change? {
        Change::Feature(f) => (format!("feature/{}", f.name), Some(f.description)),
        Change::FeatureDeleted(name) => (format!("feature/{name}"), None),
        Change::Toggle(t) => (format!("toggle/{}", t.feature), Some(t.definition_json)),
        Change::Instance(i) => (
            format!("instance/{}", i.id),
            Some(format!("{}@{}", i.service, i.version)),
        ),
        Change::InstanceGone(g) => (format!("instance/{}", g.id), None),
    };
    Some(Event {
        revision: e.revision,
        key,
        value,
    })
}

fn snapshot_of(s: pb::WatchSnapshot) -> Message {
    let mut state = BTreeMap::new();
    for f in s.features {
        state.insert(format!("feature/{}", f.name), f.description);
    }
    for t in s.toggles {
        state.insert(format!("toggle/{}", t.feature), t.definition_json);
    }
    for i in s.instances {
        state.insert(
            format!("instance/{}", i.id),
            format!("{}@{}", i.service, i.version),
        );
    }
    Message::Snapshot {
        revision: s.revision,
        state,
    }
}

/// A watcher's progress, shared so the run can see how far each one got.
#[derive(Default)]
pub struct WatchProgress {
    /// The revision through which it holds everything.
    pub known: std::sync::atomic::AtomicU64,
}

/// Follows the cluster until `stop`, recording every stream. Returns the record.
pub async fn watcher(
    spec: WatchSpec,
    nodes: Nodes,
    rec: Arc<Recorder>,
    progress: Arc<WatchProgress>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> WatchRecord {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5741_5443);
    let mut segments = Vec::new();
    let mut known: Option<u64> = None;
    let mut next = match spec.placement {
        Placement::Pinned(i) => i,
        Placement::Moving => rng.gen_range(0..nodes.ids.len()),
    };
    while !stop.load(Ordering::Relaxed) {
        let i = next;
        if let Placement::Moving = spec.placement {
            next = (next + 1) % nodes.ids.len();
        }
        let mut segment = Segment {
            node: format!("n{}", nodes.ids[i]),
            resumed_from: known,
            messages: Vec::new(),
            ended: None,
        };
        let req = pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                features: spec.features.clone(),
                services: Vec::new(),
                registry: spec.registry,
            }),
            start_revision: known,
        };
        let mut client = pb::watch_client::WatchClient::new(nodes.channels[i].clone());
        let opened = tokio::time::timeout(OP_TIMEOUT, client.watch(req)).await;
        let mut stream = match opened {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(s)) => {
                segment.ended = Some(format!("{:?}: {}", s.code(), s.message()));
                segments.push(segment);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                segment.ended = Some("no answer to the watch request".into());
                segments.push(segment);
                continue;
            }
        };
        // A moving watcher changes node every few seconds even when nothing breaks, so
        // resuming is exercised all the time.
        let leave_at = match spec.placement {
            Placement::Moving => {
                Some(tokio::time::Instant::now() + Duration::from_millis(rng.gen_range(2000..6000)))
            }
            Placement::Pinned(_) => None,
        };
        // The revision whose events are arriving; `known` moves past it when it is complete.
        let mut open_revision: Option<u64> = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let wait = match leave_at {
                Some(t) => (t.saturating_duration_since(tokio::time::Instant::now())).min(WATCH_IDLE),
                None => WATCH_IDLE,
            };
            match tokio::time::timeout(wait, stream.message()).await {
                Ok(Ok(Some(m))) => {
                    use pb::watch_response::Kind;
                    match m.kind {
                        Some(Kind::Snapshot(s)) => {
                            known = Some(s.revision);
                            open_revision = None;
                            segment.messages.push(snapshot_of(s));
                        }
                        Some(Kind::Event(e)) => {
                            if let Some(ev) = event_of(e) {
                                if open_revision.is_some_and(|r| r != ev.revision) {
                                    known = open_revision;
                                }
                                open_revision = Some(ev.revision);
                                segment.messages.push(Message::Event(ev));
                            }
                        }
                        Some(Kind::Progress(p)) => {
                            // Judged at when the node vouched for it (its stamp), not when it
                            // arrived: a node frozen just after writing it delivers it late,
                            // as a slow network would.
                            let at = rec.stamped_us(p.server_time_us);
                            rec.served.lock().push((nodes.ids[i], at, p.revision));
                            open_revision = None;
                            known = Some(known.unwrap_or(0).max(p.revision));
                            segment.messages.push(Message::Progress { revision: p.revision });
                        }
                        None => {}
                    }
                    if let Some(k) = known {
                        progress.known.fetch_max(k, Ordering::Relaxed);
                    }
                }
                Ok(Ok(None)) => {
                    segment.ended = Some("ended by the node".into());
                    break;
                }
                Ok(Err(s)) => {
                    segment.ended = Some(format!("{:?}: {}", s.code(), s.message()));
                    break;
                }
                Err(_) => {
                    if leave_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                        break;
                    }
                    segment.ended = Some(format!("silent for {WATCH_IDLE:?}"));
                    break;
                }
            }
        }
        // A stream ends between messages: the revision being received counts as whole (the
        // checker finds it if it was not).
        if let Some(r) = open_revision {
            known = Some(r);
            progress.known.fetch_max(r, Ordering::Relaxed);
        }
        segments.push(segment);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..250))).await;
    }
    WatchRecord {
        filter: spec.filter(),
        watcher: spec.name,
        segments,
    }
}

/// SDK instances of service `shop`, upgraded one at a time.
pub struct Fleet {
    endpoints: Vec<String>,
    pub instances: Vec<(String, String, Sdk)>,
    rec: Arc<Recorder>,
    next_id: u32,
    seed: u64,
}

impl Fleet {
    pub fn new(endpoints: Vec<String>, rec: Arc<Recorder>, seed: u64) -> Fleet {
        Fleet {
            endpoints,
            instances: Vec::new(),
            rec,
            next_id: 0,
            seed,
        }
    }

    /// Starts an instance of `version` (retrying while the cluster cannot serve it).
    pub async fn add(&mut self, version: &str, deadline: Instant) -> anyhow::Result<()> {
        self.next_id += 1;
        let id = format!("shop-{}-{}", self.seed, self.next_id);
        let config = SdkConfig {
            instance: Some(InstanceConfig {
                id: id.clone(),
                service: SERVICE.into(),
                version: version.into(),
                labels: BTreeMap::new(),
                ttl: Duration::from_secs(4),
            }),
            start_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        loop {
            match Sdk::start(&self.endpoints, config.clone()).await {
                Ok(sdk) => {
                    let mut changes = sdk.subscribe();
                    // What the instance put into effect from its first copy was announced
                    // before anyone could subscribe: recorded here from the flags it holds,
                    // and later announcements of the same revisions are dropped.
                    let mut held: BTreeMap<String, u64> = BTreeMap::new();
                    for feature in [GATED.to_string(), toggle_key(0), toggle_key(1)] {
                        if let Some(f) = sdk.flag(&feature) {
                            held.insert(feature.clone(), f.revision);
                            self.rec.sdk_changes.lock().push((
                                id.clone(),
                                FlagChange {
                                    feature,
                                    revision: f.revision,
                                    effective_at_ms: 0,
                                    received_at_us: f.received_at_us,
                                    applied_at_us: f.received_at_us,
                                    late_ms: 0,
                                    removed: false,
                                },
                            ));
                        }
                    }
                    let rec = self.rec.clone();
                    let who = id.clone();
                    tokio::spawn(async move {
                        loop {
                            match changes.recv().await {
                                Ok(c) if held.get(&c.feature).is_some_and(|r| *r >= c.revision) => {}
                                Ok(c) => rec.sdk_changes.lock().push((who.clone(), c)),
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                Err(_) => break,
                            }
                        }
                    });
                    self.instances.push((id, version.to_string(), sdk));
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("instance {id} could not start yet: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => anyhow::bail!("instance {id} could not start: {e}"),
            }
        }
    }

    /// Replaces one old instance by a new one (a rolling upgrade step). False when none is
    /// left to upgrade.
    pub async fn upgrade_one(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        let Some(pos) = self.instances.iter().position(|(_, v, _)| v == OLD_VERSION) else {
            return Ok(false);
        };
        self.add(NEW_VERSION, deadline).await?;
        let (_, _, sdk) = self.instances.remove(pos);
        sdk.close().await;
        Ok(true)
    }

    pub async fn close(self) {
        for (_, _, sdk) in self.instances {
            sdk.close().await;
        }
    }
}
