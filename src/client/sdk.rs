//! The SDK a service instance embeds: it registers the instance and keeps its lease alive,
//! keeps a local copy of the toggles it watches, evaluates them locally, and puts each change
//! into effect at the change's `effective_at`, so the whole fleet flips together.
//!
//! Two tasks run per SDK:
//! - the **follow** task follows a watch stream, resuming from the last revision it received on
//!   the next endpoint when the stream breaks (no gap, no duplicate). Its **applier** owns the
//!   changes waiting for their `effective_at` and puts each into effect at that instant on the
//!   cluster's clock (corrected by [`ClockOffset`]), or at once when it arrived late, recording
//!   how late; it publishes the flags in effect as an immutable [`FlagSet`] behind an
//!   [`ArcSwap`], so evaluation never takes a lock;
//! - the **lease** task (when the SDK registers an instance) grants a lease, registers, keeps
//!   the lease alive, reports the applied changes on its keepalive stream, and registers again
//!   after a lost session.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use crate::client::flags::{Context, Evaluation, Flag, FlagSet, InstanceFacts};
use crate::client::flip_clock;
use crate::client::offset::ClockOffset;
use crate::client::Client;
use crate::clock::now_us;
use crate::error::{Error, Result};
use crate::pb::v1 as pb;

/// How far the applier's timer may be from a change's due time before it is moved.
const TIMER_SLACK: Duration = Duration::from_micros(200);
/// Applied changes buffered for each change subscriber.
const CHANGE_QUEUE: usize = 128;
/// Pause before reopening a broken stream.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long after a flip its report waits, so one keepalive carries a burst of flips.
const REPORT_DELAY: Duration = Duration::from_millis(20);
/// Most applied changes sent in one keepalive message.
const REPORTS_PER_MESSAGE: usize = 1024;

/// The instance an SDK registers.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Unique instance id.
    pub id: String,
    /// Its service.
    pub service: String,
    /// Its version (semver).
    pub version: String,
    /// Labels (`canary=true`, `zone=eu-1`, ...).
    pub labels: BTreeMap<String, String>,
    /// Lease TTL: the instance leaves the registry this long after its last keepalive.
    pub ttl: Duration,
}

/// What an SDK watches and registers.
#[derive(Debug, Clone)]
pub struct SdkConfig {
    /// These features (with `services` empty and this empty: every feature).
    pub features: Vec<String>,
    /// Features whose requirements involve these services.
    pub services: Vec<String>,
    /// The instance to register (none: watch only).
    pub instance: Option<InstanceConfig>,
    /// How long [`Sdk::start`] waits for the first copy of the toggles.
    pub start_timeout: Duration,
}

impl Default for SdkConfig {
    fn default() -> Self {
        SdkConfig {
            features: Vec::new(),
            services: Vec::new(),
            instance: None,
            start_timeout: Duration::from_secs(10),
        }
    }
}

/// A change put into effect (or a flag removed) by this SDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChange {
    /// The feature.
    pub feature: String,
    /// The revision of the change.
    pub revision: u64,
    /// When it was to take effect (unix ms, server clock).
    pub effective_at_ms: i64,
    /// When it arrived here (unix µs, local clock).
    pub received_at_us: i64,
    /// When it took effect here (unix µs, local clock).
    pub applied_at_us: i64,
    /// For a change that arrived after its `effective_at`: how late it took effect (ms on the
    /// server's clock). 0 for a change that arrived in time and took effect on its timer.
    pub late_ms: i64,
    /// The feature was deleted (its flag is gone).
    pub removed: bool,
}

/// What the follow task hands its applier.
enum Incoming {
    /// A full copy at a revision: replaces the local state.
    Snapshot(u64, Vec<Flag>),
    /// A toggle change, compiled (the follow task hands changes over as [`Unread`]).
    #[cfg(test)]
    Change(Flag),
    /// A feature deleted at a revision.
    Removed(String, u64),
}

struct Shared {
    flags: Arc<ArcSwap<FlagSet>>,
    offset: Arc<ClockOffset>,
    /// The last revision received through the watch.
    received: AtomicU64,
    changes: broadcast::Sender<FlagChange>,
    /// The latest applied change per feature.
    applied: Mutex<HashMap<String, FlagChange>>,
    /// Applied changes not yet reported, the latest per feature.
    unreported: Mutex<HashMap<String, FlagChange>>,
    report_now: Notify,
    lease: AtomicU64,
}

/// A running SDK. Evaluation methods are cheap and never touch the network.
pub struct Sdk {
    shared: Arc<Shared>,
    client: Arc<Client>,
    instance: Option<InstanceConfig>,
    /// The instance's identity as targeting rules see it (`instance.*`).
    facts: Option<InstanceFacts>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sdk {
    /// Connects to the cluster at `endpoints`, registers the instance (if configured) and waits
    /// for the first copy of the toggles.
    pub async fn start(endpoints: &[String], config: SdkConfig) -> Result<Sdk> {
        Sdk::start_with_client(Arc::new(Client::new(endpoints)?), config).await
    }

    /// Like [`Sdk::start`], over an existing client (several SDKs may share one connection).
    pub async fn start_with_client(client: Arc<Client>, config: SdkConfig) -> Result<Sdk> {
        if let Some(i) = &config.instance {
            let spec = crate::state::registry::InstanceSpec {
                id: i.id.clone(),
                service: i.service.clone(),
                version: i.version.clone(),
                labels: i.labels.clone(),
            };
            spec.validate()?;
        }
        let shared = Arc::new(Shared {
            flags: Arc::new(ArcSwap::from_pointee(FlagSet::default())),
            offset: ClockOffset::process(),
            received: AtomicU64::new(0),
            changes: broadcast::channel(CHANGE_QUEUE).0,
            applied: Mutex::new(HashMap::new()),
            unreported: Mutex::new(HashMap::new()),
            report_now: Notify::new(),
            lease: AtomicU64::new(0),
        });
        let filter = pb::WatchFilter {
            features: config.features.clone(),
            services: config.services.clone(),
            registry: false,
        };
        let (ready_tx, mut ready_rx) = watch::channel(None::<std::result::Result<(), Error>>);
        let mut tasks = vec![tokio::spawn(follow_loop(
            client.clone(),
            shared.clone(),
            filter,
            Arc::new(ready_tx),
        ))];
        if let Some(instance) = &config.instance {
            tasks.push(tokio::spawn(lease_loop(
                client.clone(),
                shared.clone(),
                instance.clone(),
            )));
        }
        let facts = config.instance.as_ref().map(|i| InstanceFacts {
            service: i.service.clone(),
            version: i.version.clone(),
            labels: i.labels.clone(),
        });
        let sdk = Sdk {
            shared,
            client,
            facts,
            instance: config.instance,
            tasks,
        };
        let started = tokio::time::timeout(config.start_timeout, async {
            loop {
                if let Some(r) = ready_rx.borrow_and_update().clone() {
                    return r;
                }
                if ready_rx.changed().await.is_err() {
                    return Err(Error::internal("the follow task ended"));
                }
            }
        })
        .await;
        match started {
            Ok(Ok(())) => Ok(sdk),
            Ok(Err(e)) => {
                sdk.close().await;
                Err(e)
            }
            Err(_) => {
                sdk.close().await;
                Err(Error::Timeout(format!(
                    "no copy of the toggles within {:?}: is the cluster reachable?",
                    config.start_timeout
                )))
            }
        }
    }

    /// The flags in effect right now.
    pub fn flags(&self) -> arc_swap::Guard<Arc<FlagSet>> {
        self.shared.flags.load()
    }

    /// A flag in effect.
    pub fn flag(&self, feature: &str) -> Option<Arc<Flag>> {
        self.shared.flags.load().get(feature).cloned()
    }

    /// Whether `feature` is on for `ctx`: its variant's value is `true`. False when the flag is
    /// unknown, disabled, not boolean, or cannot be evaluated. No network, lock or allocation.
    pub fn is_enabled(&self, feature: &str, ctx: &Context) -> bool {
        self.bool_value(feature, ctx, false)
    }

    /// The boolean value of `feature` for `ctx`, or `default`.
    pub fn bool_value(&self, feature: &str, ctx: &Context, default: bool) -> bool {
        match self.shared.flags.load().get(feature) {
            Some(f) => f.bool_value_in(ctx, self.facts.as_ref(), default),
            None => default,
        }
    }

    /// The string value of `feature` for `ctx`, or `default`.
    pub fn string_value(&self, feature: &str, ctx: &Context, default: &str) -> String {
        self.typed(feature, ctx, |v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| default.to_string())
    }

    /// The integer value of `feature` for `ctx`, or `default`.
    pub fn int_value(&self, feature: &str, ctx: &Context, default: i64) -> i64 {
        self.typed(feature, ctx, Value::as_i64).unwrap_or(default)
    }

    /// The number value of `feature` for `ctx`, or `default`.
    pub fn float_value(&self, feature: &str, ctx: &Context, default: f64) -> f64 {
        self.typed(feature, ctx, Value::as_f64).unwrap_or(default)
    }

    /// The object value of `feature` for `ctx`, or `default`.
    pub fn object_value(&self, feature: &str, ctx: &Context, default: Value) -> Value {
        self.typed(feature, ctx, |v| v.is_object().then(|| v.clone()))
            .unwrap_or(default)
    }

    fn typed<T>(&self, feature: &str, ctx: &Context, f: impl FnOnce(&Value) -> Option<T>) -> Option<T> {
        self.shared
            .flags
            .load()
            .get(feature)?
            .value_in(ctx, self.facts.as_ref())
            .and_then(f)
    }

    /// The variant of `feature` for `ctx` (none when unknown, disabled or not evaluable).
    pub fn variant(&self, feature: &str, ctx: &Context) -> Option<Arc<str>> {
        self.shared
            .flags
            .load()
            .get(feature)?
            .variant_in(ctx, self.facts.as_ref())
    }

    /// The full evaluation of `feature` for `ctx`: value, variant, reason.
    pub fn evaluate(&self, feature: &str, ctx: &Context) -> Evaluation {
        match self.shared.flags.load().get(feature) {
            Some(f) => f.evaluate_in(ctx, self.facts.as_ref()),
            None => Evaluation::not_found(),
        }
    }

    /// Every change put into effect from now on. A receiver that falls more than 128 changes
    /// behind gets `RecvError::Lagged` (with how many it missed) and goes on from the oldest
    /// change still held; [`Sdk::last_applied`] always has the latest per feature.
    pub fn subscribe(&self) -> broadcast::Receiver<FlagChange> {
        self.shared.changes.subscribe()
    }

    /// The latest change of `feature` put into effect here.
    pub fn last_applied(&self, feature: &str) -> Option<FlagChange> {
        self.shared.applied.lock().get(feature).cloned()
    }

    /// The last revision received through the watch.
    pub fn received_revision(&self) -> u64 {
        self.shared.received.load(Ordering::Acquire)
    }

    /// The estimated offset of the cluster's clock to the local one (ms).
    pub fn clock_offset_ms(&self) -> i64 {
        self.shared.offset.offset_ms()
    }

    /// The estimated offset of the cluster's clock to the local one (µs).
    pub fn clock_offset_us(&self) -> i64 {
        self.shared.offset.offset_us()
    }

    /// The lease the instance is registered under (0: not registered yet, or watch only).
    pub fn lease_id(&self) -> u64 {
        self.shared.lease.load(Ordering::Acquire)
    }

    /// The registered instance, if any.
    pub fn instance(&self) -> Option<&InstanceConfig> {
        self.instance.as_ref()
    }

    /// Stops the SDK; a registered instance leaves the registry at once (its lease is revoked).
    pub async fn close(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let lease = self.shared.lease.swap(0, Ordering::AcqRel);
        if lease != 0 {
            if let Err(e) = self.client.revoke_lease(lease).await {
                tracing::warn!(lease, error = %e, "could not revoke the instance's lease; it expires after its TTL");
            }
        }
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A server time in µs: the µs field, or the middle of the millisecond from a node that sends
/// only milliseconds.
fn server_us(us: i64, ms: i64) -> i64 {
    if us != 0 {
        us
    } else {
        ms * 1000 + 500
    }
}

/// Follows the watch stream, resuming where it left off, and puts what it receives into effect
/// (one task: a delivery is handled where it is read, with no queue or second wake between).
async fn follow_loop(client: Arc<Client>, shared: Arc<Shared>, filter: pb::WatchFilter, ready: Arc<Ready>) {
    use pb::watch_response::Kind;
    let mut applier = Applier::new(shared.clone());
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    let mut resume: Option<u64> = None;
    loop {
        let req = pb::WatchRequest {
            filter: Some(filter.clone()),
            start_revision: resume,
        };
        let mut stream = match applier.run_while(&mut timer, client.watch(req)).await {
            Ok(s) => s,
            Err(e @ (Error::InvalidArgument(_) | Error::TooLarge(_))) => {
                tracing::error!(error = %e, "the watch filter was refused");
                let _ = ready.send(Some(Err(e)));
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot open a watch; retrying");
                applier
                    .run_while(&mut timer, tokio::time::sleep(RETRY_PAUSE))
                    .await;
                continue;
            }
        };
        loop {
            let msg = match applier.run_while(&mut timer, stream.message()).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    client.rotate();
                    break;
                }
                Err(status) => {
                    tracing::debug!(status = %status.message(), "watch stream broke; resuming");
                    if status.code() != tonic::Code::ResourceExhausted {
                        // The node may be down or frozen: resume on the next one.
                        client.rotate();
                    }
                    break;
                }
            };
            let received_us = now_us();
            let incoming = match msg.kind {
                Some(Kind::Snapshot(s)) => {
                    shared
                        .offset
                        .one_way(server_us(s.server_time_us, s.server_time_ms), received_us);
                    let mut flags = Vec::with_capacity(s.toggles.len());
                    for t in &s.toggles {
                        match Flag::compile(&t.feature, t.revision, t.effective_at_ms, &t.definition_json) {
                            Ok(mut f) => {
                                f.received_at_us = received_us;
                                flags.push(f)
                            }
                            Err(e) => tracing::warn!(error = %e, "skipping a toggle this SDK cannot read"),
                        }
                    }
                    resume = Some(s.revision);
                    Some(Incoming::Snapshot(s.revision, flags))
                }
                Some(Kind::Event(e)) => {
                    use pb::watch_event::Change;
                    resume = Some(e.revision);
                    match e.change {
                        Some(Change::Toggle(t)) => {
                            applier.take(Unread {
                                feature: t.feature,
                                revision: t.revision,
                                effective_at_ms: t.effective_at_ms,
                                definition: t.definition_json,
                                received_at_us: received_us,
                            });
                            None
                        }
                        Some(Change::FeatureDeleted(name)) => Some(Incoming::Removed(name, e.revision)),
                        _ => None,
                    }
                }
                Some(Kind::Progress(p)) => {
                    shared
                        .offset
                        .one_way(server_us(p.server_time_us, p.server_time_ms), received_us);
                    None
                }
                None => None,
            };
            if let Some(incoming) = incoming {
                let snapshot = matches!(incoming, Incoming::Snapshot(..));
                applier.receive(incoming);
                applier.apply_due();
                if snapshot && ready.borrow().is_none() {
                    // What is due is in effect; scheduled changes wait for their instant.
                    let _ = ready.send(Some(Ok(())));
                }
            }
            if let Some(r) = resume {
                shared.received.fetch_max(r, Ordering::AcqRel);
            }
        }
        applier
            .run_while(&mut timer, tokio::time::sleep(RETRY_PAUSE))
            .await;
    }
}

/// Compiles a received change (a toggle this SDK cannot read is skipped, with a warning).
fn read(u: Unread) -> Option<Flag> {
    match Flag::compile(&u.feature, u.revision, u.effective_at_ms, &u.definition) {
        Ok(mut f) => {
            f.received_at_us = u.received_at_us;
            Some(f)
        }
        Err(err) => {
            tracing::warn!(error = %err, "skipping a toggle this SDK cannot read");
            None
        }
    }
}

/// Tells [`Sdk::start`] that the first copy is in effect (or why there will be none).
type Ready = watch::Sender<Option<std::result::Result<(), Error>>>;

struct Applier {
    shared: Arc<Shared>,
    /// Changes waiting for their `effective_at`, in revision order.
    pending: VecDeque<Flag>,
    /// Revisions that arrived after their `effective_at` (they are late; the others are on time
    /// even when the timer fires a little after the instant).
    arrived_late: std::collections::HashSet<u64>,
    /// Per feature, the waiting change already in the flag set, tied to a flip-clock instant.
    staged: HashMap<String, Staged>,
    /// Changes received well ahead of their `effective_at`, not read yet (see [`STAGE_LEAD_US`]).
    unread: VecDeque<Unread>,
}

/// A change as received, compiled and staged [`STAGE_LEAD_US`] before it takes effect.
struct Unread {
    feature: String,
    revision: u64,
    effective_at_ms: i64,
    definition: String,
    received_at_us: i64,
}

/// How long before its `effective_at` a change received well ahead is compiled and staged.
/// Receiving then costs only the decode, so thousands of instances on one host (or one busy
/// process) take a burst of changes in quickly, and the preparing happens after the burst.
const STAGE_LEAD_US: i64 = 100_000;

/// A change in the flag set waiting for its [`flip_clock::Instant`].
struct Staged {
    revision: u64,
    /// Its instant (unix µs, server clock).
    at_server_us: i64,
    instant: Arc<flip_clock::Instant>,
}

/// How long past an instant the applier waits for the flip clock before firing it itself.
const CLOCK_GRACE_US: i64 = 5_000;

impl Applier {
    fn new(shared: Arc<Shared>) -> Applier {
        Applier {
            shared,
            pending: VecDeque::new(),
            arrived_late: Default::default(),
            staged: HashMap::new(),
            // Room for a few changes from the start: taking the first one in (on the hot path
            // of a burst of deliveries) then allocates nothing.
            unread: VecDeque::with_capacity(4),
        }
    }

    /// Takes a toggle change as received: read at once when it is due soon, else kept unread
    /// until [`STAGE_LEAD_US`] before its `effective_at`.
    fn take(&mut self, u: Unread) {
        if u.effective_at_ms * 1000 - self.server_now_us() > 2 * STAGE_LEAD_US {
            self.unread.push_back(u);
        } else {
            self.read_unread();
            if let Some(flag) = read(u) {
                self.hold(flag);
            }
            self.apply_due();
        }
    }

    /// Compiles and holds every unread change, in the order received.
    fn read_unread(&mut self) {
        while let Some(u) = self.unread.pop_front() {
            if let Some(flag) = read(u) {
                self.hold(flag);
            }
        }
    }

    /// Runs `fut` to completion, meanwhile putting waiting changes into effect as they fall
    /// due. `timer` is the applier's own, kept across calls so it is only moved, not rebuilt.
    async fn run_while<F: std::future::Future>(
        &mut self,
        timer: &mut std::pin::Pin<Box<tokio::time::Sleep>>,
        fut: F,
    ) -> F::Output {
        tokio::pin!(fut);
        // Most calls find their message already read: take it without setting up the waits
        // (a burst of deliveries goes through thousands of these).
        if let std::task::Poll::Ready(out) = futures::poll!(fut.as_mut()) {
            if self.next_due_in().is_some_and(|d| d.is_zero()) {
                self.apply_due();
            }
            return out;
        }
        loop {
            let wait = self.next_due_in();
            if let Some(wait) = wait {
                let at = tokio::time::Instant::now() + wait;
                let moved = if at > timer.deadline() {
                    at - timer.deadline()
                } else {
                    timer.deadline() - at
                };
                if moved > TIMER_SLACK || timer.is_elapsed() {
                    timer.as_mut().reset(at);
                }
            }
            // Woken when the next staged instant fires, for the bookkeeping (the flip itself
            // has happened in the flag set by then).
            let next_instant = self
                .staged
                .values()
                .min_by_key(|s| s.instant.at_us)
                .map(|s| s.instant.clone());
            let fired = async {
                match &next_instant {
                    Some(i) => {
                        let notified = i.fired.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        if !i.has_fired() {
                            notified.await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                out = &mut fut => return out,
                _ = fired => {}
                _ = timer.as_mut(), if wait.is_some() => {}
            }
            self.apply_due();
        }
    }

    /// The cluster's clock as estimated here (unix µs).
    fn server_now_us(&self) -> i64 {
        now_us() + self.shared.offset.offset_us()
    }

    /// The newest revision held for `feature`, in effect or waiting.
    fn held_revision(&self, feature: &str) -> u64 {
        let pending = self
            .pending
            .iter()
            .filter(|f| f.key == feature)
            .map(|f| f.revision)
            .max();
        let current = self.shared.flags.load().get(feature).map(|f| f.revision);
        pending.max(current).unwrap_or(0)
    }

    /// Queues a change, noting whether it arrived after its `effective_at`.
    fn hold(&mut self, flag: Flag) {
        if flag.revision <= self.held_revision(&flag.key) {
            return;
        }
        if flag.effective_at_ms * 1000 < self.server_now_us() {
            self.arrived_late.insert(flag.revision);
        }
        self.pending.push_back(flag);
    }

    fn receive(&mut self, incoming: Incoming) {
        self.read_unread();
        match incoming {
            #[cfg(test)]
            Incoming::Change(flag) => self.hold(flag),
            Incoming::Removed(feature, revision) => self.remove(&feature, revision),
            Incoming::Snapshot(revision, flags) => {
                let in_snapshot: std::collections::HashSet<&str> =
                    flags.iter().map(|f| f.key.as_str()).collect();
                let gone: Vec<String> = self
                    .shared
                    .flags
                    .load()
                    .iter()
                    .map(|f| f.key.clone())
                    .chain(self.pending.iter().map(|f| f.key.clone()))
                    .filter(|k| !in_snapshot.contains(k.as_str()))
                    .collect();
                for feature in gone {
                    self.remove(&feature, revision);
                }
                let mut flags = flags;
                flags.sort_by_key(|f| f.revision);
                for flag in flags {
                    self.hold(flag);
                }
            }
        }
    }

    fn is_staged(&self, flag: &Flag) -> bool {
        self.staged
            .get(&flag.key)
            .is_some_and(|s| s.revision == flag.revision)
    }

    /// When the applier must look at a waiting change (unix µs, server clock): its instant, or
    /// for a staged one, the end of the grace the clock has to fire it.
    fn deadline(&self, flag: &Flag) -> i64 {
        flag.effective_at_ms * 1000 + if self.is_staged(flag) { CLOCK_GRACE_US } else { 0 }
    }

    /// How long until the applier must look at a waiting change (none: nothing waits).
    fn next_due_in(&self) -> Option<Duration> {
        let now = self.server_now_us();
        self.pending
            .iter()
            .map(|f| self.deadline(f) - now)
            .chain(
                self.unread
                    .iter()
                    .map(|u| u.effective_at_ms * 1000 - STAGE_LEAD_US - now),
            )
            .min()
            .map(|us| Duration::from_micros(us.max(0) as u64))
    }

    /// Records the staged changes whose instant fired (firing those the clock is late for), and
    /// folds each into the flag set as the one in effect.
    fn settle_fired(&mut self, server_now_us: i64) {
        let fired: Vec<(String, u64, i64)> = self
            .staged
            .iter()
            .filter_map(|(key, s)| {
                if !s.instant.has_fired() && server_now_us >= s.at_server_us + CLOCK_GRACE_US {
                    s.instant.fire();
                }
                s.instant.fired_at().map(|t| (key.clone(), s.revision, t))
            })
            .collect();
        for (key, revision, applied_at_us) in fired {
            self.staged.remove(&key);
            let Some(i) = self
                .pending
                .iter()
                .position(|f| f.key == key && f.revision == revision)
            else {
                continue;
            };
            let Some(flag) = self.pending.remove(i) else {
                continue;
            };
            self.drop_superseded(&key, revision);
            let change = FlagChange {
                feature: key.clone(),
                revision,
                effective_at_ms: flag.effective_at_ms,
                received_at_us: flag.received_at_us,
                applied_at_us,
                late_ms: 0,
                removed: false,
            };
            // Already in effect through the instant; now the plain current entry.
            let flag = Arc::new(flag);
            self.shared.flags.rcu(|current| {
                if current.scheduled(&key).is_some_and(|(r, _)| r == revision) {
                    Arc::new(current.with(flag.clone()))
                } else {
                    Arc::clone(current)
                }
            });
            self.record(change);
        }
    }

    /// Puts every due change into effect, in revision order, and stages the waiting ones.
    fn apply_due(&mut self) {
        let now = self.server_now_us();
        if self
            .unread
            .iter()
            .any(|u| u.effective_at_ms * 1000 - STAGE_LEAD_US <= now)
        {
            self.read_unread();
        }
        self.settle_fired(now);
        let mut i = 0;
        while i < self.pending.len() {
            if self.deadline(&self.pending[i]) <= now {
                if let Some(flag) = self.pending.remove(i) {
                    self.put_into_effect(flag, now);
                }
            } else {
                i += 1;
            }
        }
        self.stage_waiting(now);
    }

    /// Puts the oldest waiting change of each feature into the flag set, tied to the flip
    /// clock's instant for its `effective_at` on the local clock.
    fn stage_waiting(&mut self, server_now_us: i64) {
        let mut oldest: HashMap<&str, &Flag> = HashMap::new();
        for f in &self.pending {
            oldest.entry(f.key.as_str()).or_insert(f);
        }
        let to_stage: Vec<Flag> = oldest
            .into_values()
            .filter(|f| !self.staged.contains_key(&f.key) && f.effective_at_ms * 1000 > server_now_us)
            .cloned()
            .collect();
        let offset = self.shared.offset.offset_us();
        for flag in to_stage {
            let at_server_us = flag.effective_at_ms * 1000;
            let instant = flip_clock::instant(at_server_us - offset);
            self.staged.insert(
                flag.key.clone(),
                Staged {
                    revision: flag.revision,
                    at_server_us,
                    instant: instant.clone(),
                },
            );
            let flag = Arc::new(flag);
            self.shared
                .flags
                .rcu(|current| current.with_scheduled(flag.clone(), instant.clone()));
        }
    }

    /// Drops the waiting changes of `key` older than `revision`: a newer change supersedes them.
    fn drop_superseded(&mut self, key: &str, revision: u64) {
        let arrived_late = &mut self.arrived_late;
        self.pending.retain(|f| {
            let keep = f.key != key || f.revision > revision;
            if !keep {
                arrived_late.remove(&f.revision);
            }
            keep
        });
    }

    fn put_into_effect(&mut self, flag: Flag, server_now_us: i64) {
        // A staged change of this feature that fired is recorded first; one that did not is
        // superseded (`with` below drops it from the set).
        self.settle_fired(server_now_us);
        let revision = flag.revision;
        let key = flag.key.clone();
        if self.staged.get(&key).is_some_and(|s| s.revision < revision) {
            self.staged.remove(&key);
        }
        if self
            .shared
            .flags
            .load()
            .get(&key)
            .is_some_and(|f| f.revision >= revision)
        {
            return;
        }
        self.drop_superseded(&key, revision);
        let late_ms = if self.arrived_late.remove(&revision) {
            ((server_now_us - flag.effective_at_ms * 1000) / 1000).max(0)
        } else {
            0
        };
        let change = FlagChange {
            feature: key,
            revision,
            effective_at_ms: flag.effective_at_ms,
            received_at_us: flag.received_at_us,
            applied_at_us: now_us(),
            late_ms,
            removed: false,
        };
        let flag = Arc::new(flag);
        self.shared.flags.rcu(|current| current.with(flag.clone()));
        self.record(change);
    }

    fn remove(&mut self, feature: &str, revision: u64) {
        self.settle_fired(self.server_now_us());
        if self.staged.get(feature).is_some_and(|s| s.revision < revision) {
            self.staged.remove(feature);
        }
        self.drop_superseded(feature, revision);
        let held = {
            let set = self.shared.flags.load();
            set.get(feature)
                .map(|f| f.revision)
                .max(set.scheduled(feature).map(|(r, _)| r))
        };
        if held.is_none_or(|r| r >= revision) {
            return;
        }
        // Gone, with any change that was waiting for an instant.
        self.shared.flags.rcu(|current| current.without(feature));
        let now = now_us();
        self.record(FlagChange {
            feature: feature.to_string(),
            revision,
            effective_at_ms: now / 1000,
            received_at_us: now,
            applied_at_us: now,
            late_ms: 0,
            removed: true,
        });
    }

    fn record(&self, change: FlagChange) {
        if change.late_ms > 0 {
            tracing::info!(feature = %change.feature, revision = change.revision, late_ms = change.late_ms, "change arrived after its effective_at; applied at once");
        }
        self.shared
            .applied
            .lock()
            .insert(change.feature.clone(), change.clone());
        if !change.removed {
            self.shared
                .unreported
                .lock()
                .insert(change.feature.clone(), change.clone());
            self.shared.report_now.notify_one();
        }
        let _ = self.shared.changes.send(change);
    }
}

fn report(change: &FlagChange, offset_ms: i64) -> pb::AppliedChange {
    pb::AppliedChange {
        feature: change.feature.clone(),
        revision: change.revision,
        late_ms: change.late_ms,
        applied_at_ms: change.applied_at_us / 1000 + offset_ms,
    }
}

/// Registers the instance and keeps its lease alive, reporting applied changes; registers again
/// after a lost session.
async fn lease_loop(client: Arc<Client>, shared: Arc<Shared>, instance: InstanceConfig) {
    loop {
        let lease = match register(&client, &shared, &instance).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(instance = %instance.id, error = %e, "cannot register; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        shared.lease.store(lease, Ordering::Release);
        tracing::info!(instance = %instance.id, lease, "registered");
        // Keep this lease alive over successive streams until it is lost.
        loop {
            match keep_alive(&client, &shared, &instance, lease).await {
                KeepAliveEnd::LeaseLost => break,
                KeepAliveEnd::StreamBroke => {
                    client.rotate();
                    tokio::time::sleep(RETRY_PAUSE).await
                }
            }
        }
        shared.lease.store(0, Ordering::Release);
        tracing::warn!(instance = %instance.id, lease, "lease lost; registering again");
    }
}

/// Grants a lease and registers the instance under it. The lease is in `shared` from the moment
/// it is granted, so [`Sdk::close`] revokes it (and the instance with it) even when it comes in
/// the middle of a registration.
async fn register(client: &Client, shared: &Shared, instance: &InstanceConfig) -> Result<u64> {
    let lease = client.grant_lease(instance.ttl).await?.lease_id;
    shared.lease.store(lease, Ordering::Release);
    let pb_instance = pb::Instance {
        id: instance.id.clone(),
        service: instance.service.clone(),
        version: instance.version.clone(),
        labels: instance.labels.clone().into_iter().collect(),
        ..Default::default()
    };
    match client.register(pb_instance.clone(), lease).await {
        Ok(_) => Ok(lease),
        Err(Error::AlreadyExists(_)) => {
            // A previous session of ours still holds the id: take it over.
            client.deregister(&instance.id).await?;
            client.register(pb_instance, lease).await?;
            Ok(lease)
        }
        Err(e) => {
            shared.lease.store(0, Ordering::Release);
            let _ = client.revoke_lease(lease).await;
            Err(e)
        }
    }
}

enum KeepAliveEnd {
    LeaseLost,
    StreamBroke,
}

/// One keepalive stream: the first message reports every applied change, later ones what is
/// new. Renews every third of the TTL, and soon after a flip.
async fn keep_alive(client: &Client, shared: &Shared, instance: &InstanceConfig, lease: u64) -> KeepAliveEnd {
    let offset = shared.offset.offset_ms();
    let all: Vec<pb::AppliedChange> = {
        let applied = shared.applied.lock();
        shared.unreported.lock().clear();
        applied
            .values()
            .filter(|c| !c.removed)
            .map(|c| report(c, offset))
            .collect()
    };
    let mut batches: Vec<Vec<pb::AppliedChange>> =
        all.chunks(REPORTS_PER_MESSAGE).map(|c| c.to_vec()).collect();
    let first = pb::KeepAliveRequest {
        lease_id: lease,
        applied_revision: shared.received.load(Ordering::Acquire),
        instance_id: instance.id.clone(),
        applied: if batches.is_empty() {
            Vec::new()
        } else {
            batches.remove(0)
        },
    };
    let mut sent_at: VecDeque<i64> = VecDeque::new();
    sent_at.push_back(now_us());
    let (tx, mut answers) = match client.open_keep_alive(first).await {
        Ok(pair) => pair,
        Err(Error::NotFound(_)) => return KeepAliveEnd::LeaseLost,
        Err(e) => {
            tracing::debug!(error = %e, "cannot open a keepalive stream");
            return KeepAliveEnd::StreamBroke;
        }
    };
    let every = (instance.ttl / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut backlog: VecDeque<Vec<pb::AppliedChange>> = batches.into();
    loop {
        let send_now = tokio::select! {
            _ = tick.tick() => true,
            _ = shared.report_now.notified() => {
                tokio::time::sleep(REPORT_DELAY).await;
                true
            }
            answer = answers.message() => {
                match answer {
                    Ok(Some(a)) => {
                        if let Some(sent) = sent_at.pop_front() {
                            shared.offset.round_trip(sent, server_us(a.server_time_us, a.server_time_ms), now_us());
                        }
                        false
                    }
                    Ok(None) => return KeepAliveEnd::StreamBroke,
                    Err(status) if status.code() == tonic::Code::NotFound => return KeepAliveEnd::LeaseLost,
                    Err(status) => {
                        tracing::debug!(status = %status.message(), "keepalive stream broke");
                        return KeepAliveEnd::StreamBroke;
                    }
                }
            }
        };
        if !send_now {
            continue;
        }
        let applied = match backlog.pop_front() {
            Some(batch) => batch,
            None => {
                let offset = shared.offset.offset_ms();
                let mut unreported = shared.unreported.lock();
                let batch: Vec<pb::AppliedChange> = unreported
                    .values()
                    .take(REPORTS_PER_MESSAGE)
                    .map(|c| report(c, offset))
                    .collect();
                for c in &batch {
                    unreported.remove(&c.feature);
                }
                batch
            }
        };
        let msg = pb::KeepAliveRequest {
            lease_id: lease,
            applied_revision: shared.received.load(Ordering::Acquire),
            instance_id: instance.id.clone(),
            applied,
        };
        if sent_at.len() >= 64 {
            sent_at.pop_front();
        }
        sent_at.push_back(now_us());
        if tokio::time::timeout(Duration::from_secs(2), tx.send(msg))
            .await
            .is_err()
        {
            return KeepAliveEnd::StreamBroke;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            flags: Arc::new(ArcSwap::from_pointee(FlagSet::default())),
            offset: Arc::default(),
            received: AtomicU64::new(0),
            changes: broadcast::channel(16).0,
            applied: Mutex::new(HashMap::new()),
            unreported: Mutex::new(HashMap::new()),
            report_now: Notify::new(),
            lease: AtomicU64::new(0),
        })
    }

    fn flag(key: &str, revision: u64, effective_at_ms: i64, on: bool) -> Flag {
        let json = format!(
            r#"{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"{}"}}"#,
            if on { "on" } else { "off" }
        );
        Flag::compile(key, revision, effective_at_ms, &json).unwrap()
    }

    fn applier() -> Applier {
        Applier::new(shared())
    }

    fn on(a: &Applier, key: &str) -> Option<bool> {
        a.shared
            .flags
            .load()
            .get(key)
            .map(|f| f.bool_value(&Context::new(), false))
    }

    fn unread(key: &str, revision: u64, effective_at_ms: i64) -> Unread {
        Unread {
            feature: key.into(),
            revision,
            effective_at_ms,
            definition: r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#
                .into(),
            received_at_us: now_us(),
        }
    }

    #[test]
    fn a_change_received_well_ahead_is_read_shortly_before_it_takes_effect() {
        let mut a = applier();
        let now_ms = now_us() / 1000;
        a.take(unread("f", 1, now_ms + 60_000));
        assert_eq!(a.unread.len(), 1, "kept unread");
        assert!(a.shared.flags.load().scheduled("f").is_none());
        let due = a.next_due_in().unwrap();
        assert!(
            due > Duration::from_secs(59) && due < Duration::from_secs(60),
            "{due:?}"
        );
        // A change due soon is read at once, after the unread ones, in order.
        a.take(unread("g", 2, now_ms + 150));
        assert!(a.unread.is_empty());
        assert_eq!(a.shared.flags.load().scheduled("f").map(|(r, _)| r), Some(1));
        assert_eq!(a.shared.flags.load().scheduled("g").map(|(r, _)| r), Some(2));
    }

    #[test]
    fn a_change_waits_for_its_effective_at_and_a_late_one_applies_at_once() {
        let mut a = applier();
        let now_ms = now_us() / 1000;
        a.receive(Incoming::Change(flag("f", 1, now_ms + 60_000, true)));
        a.apply_due();
        assert_eq!(on(&a, "f"), None, "not before effective_at");
        assert!(a.next_due_in().unwrap() > Duration::from_secs(59));

        a.receive(Incoming::Change(flag("g", 2, now_ms - 1_500, true)));
        a.apply_due();
        assert_eq!(on(&a, "g"), Some(true));
        let late = a.shared.applied.lock().get("g").unwrap().late_ms;
        assert!((1_500..10_000).contains(&late), "late by {late} ms");
    }

    #[test]
    fn a_newer_change_supersedes_a_waiting_one_and_old_ones_are_ignored() {
        let mut a = applier();
        let now_ms = now_us() / 1000;
        a.receive(Incoming::Change(flag("f", 5, now_ms + 60_000, true)));
        // The kill switch: immediate, newer.
        a.receive(Incoming::Change(flag("f", 6, now_ms, false)));
        a.apply_due();
        assert_eq!(on(&a, "f"), Some(false));
        assert!(a.pending.is_empty(), "the older, waiting change was dropped");
        // A duplicate or older change is ignored.
        a.receive(Incoming::Change(flag("f", 4, now_ms, true)));
        a.apply_due();
        assert_eq!(on(&a, "f"), Some(false));
        assert_eq!(a.shared.flags.load().get("f").unwrap().revision, 6);
    }

    #[test]
    fn a_snapshot_replaces_the_local_state() {
        let mut a = applier();
        let now_ms = now_us() / 1000;
        a.receive(Incoming::Change(flag("old", 1, now_ms, true)));
        a.receive(Incoming::Change(flag("kept", 2, now_ms, true)));
        a.apply_due();
        a.receive(Incoming::Snapshot(
            10,
            vec![flag("kept", 2, now_ms, true), flag("new", 9, now_ms, true)],
        ));
        a.apply_due();
        let flags = a.shared.flags.load();
        let mut keys: Vec<&str> = flags.iter().map(|f| f.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, vec!["kept", "new"]);
    }

    #[tokio::test]
    async fn a_waiting_change_is_in_the_set_ahead_and_flips_at_its_instant() {
        let mut a = applier();
        let effective_ms = now_us() / 1000 + 30;
        a.receive(Incoming::Change(flag("f", 1, effective_ms, true)));
        a.apply_due();
        assert_eq!(on(&a, "f"), None, "not before effective_at");
        assert!(a.shared.flags.load().scheduled("f").is_some(), "staged ahead");
        tokio::time::timeout(Duration::from_secs(5), async {
            while on(&a, "f").is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        a.apply_due();
        let c = a.shared.applied.lock().get("f").cloned().unwrap();
        assert!(c.applied_at_us >= effective_ms * 1000, "flipped early");
        assert_eq!(c.late_ms, 0);
        assert!(
            a.shared.flags.load().scheduled("f").is_none(),
            "folded after the flip"
        );
        assert!(a.pending.is_empty() && a.staged.is_empty());
    }

    #[test]
    fn a_deleted_feature_drops_its_waiting_change() {
        let mut a = applier();
        a.receive(Incoming::Change(flag("f", 1, now_us() / 1000 + 60_000, true)));
        a.apply_due();
        a.receive(Incoming::Removed("f".into(), 2));
        a.apply_due();
        assert!(a.shared.flags.load().scheduled("f").is_none());
        assert!(a.pending.is_empty() && a.staged.is_empty());
        assert_eq!(on(&a, "f"), None);
    }
}
