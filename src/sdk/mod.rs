//! The SDK a service instance embeds: it registers the instance and keeps its lease alive,
//! keeps a local copy of the toggles it watches, evaluates them locally, and puts each change
//! into effect at the change's `effective_at`, so the whole fleet flips together.
//!
//! Two tasks run per SDK:
//! - the **follow** task (`follow`) follows a watch stream, resuming from the last revision
//!   it received on the next endpoint when the stream breaks (no gap, no duplicate). Its
//!   **applier** (`applier`) owns the changes waiting for their `effective_at` and puts each
//!   into effect at that instant on the cluster's clock (corrected by the clock offset,
//!   `offset`; fired by the process's `flip_clock`), or at once when it arrived late,
//!   recording how late; it publishes the flags in effect as an immutable [`FlagSet`] behind an
//!   [`ArcSwap`], so evaluation never takes a lock;
//! - the **lease** task (`lease`, when the SDK registers an instance) grants a lease,
//!   registers, keeps the lease alive, reports the applied changes on its keepalive stream, and
//!   registers again after a lost session.
//!
//! [`openfeature`] is an OpenFeature provider backed by the SDK.

mod applier;
pub(crate) mod flip_clock;
mod follow;
pub use follow::FollowState;
mod lease;
pub(crate) mod offset;
pub mod openfeature;
pub(crate) mod route;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::eval::{Context, Evaluation, Flag, FlagSet, InstanceFacts};
use crate::pb::v1 as pb;
use offset::ClockOffset;

/// Applied changes buffered for each change subscriber.
const CHANGE_QUEUE: usize = 128;
/// Pause before reopening a broken stream.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(200);

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
    /// TLS and the token to connect with (for a cluster with TLS or authentication on).
    pub connect: crate::client::ConnectOptions,
    /// Start with the instance out of the registry, until [`Sdk::set_registered`] puts it in
    /// (for an instance that must pass a health check first).
    pub hold_registration: bool,
    /// Learn the cluster's learners and watch from this instance's choice among them (a fleet
    /// divides evenly over them; see [`Sdk::watching`]), the given endpoints after them; off:
    /// watch through the given endpoints alone (e.g. when members advertise addresses this
    /// process cannot reach). Writes and registration always use the given endpoints.
    pub discover: bool,
}

impl Default for SdkConfig {
    fn default() -> Self {
        SdkConfig {
            features: Vec::new(),
            services: Vec::new(),
            instance: None,
            start_timeout: Duration::from_secs(10),
            connect: Default::default(),
            hold_registration: false,
            discover: true,
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

struct Shared {
    /// What the follow task is doing.
    follow: watch::Sender<FollowState>,
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
    /// Counts the replacements of `flags` (a change received, staged, put into effect or
    /// removed), for those serving the flags onward.
    flags_updated: watch::Sender<u64>,
    /// Whether the instance should be in the registry now.
    registered: watch::Sender<bool>,
    /// Held while a lease is being revoked, so a caller taking the instance out waits for a
    /// revocation already under way.
    deregistering: tokio::sync::Mutex<()>,
    /// The member the watch is on (`None`: through the given endpoints, or none yet).
    watching: Mutex<Option<String>>,
}

impl Shared {
    /// Tells those serving the flags onward that the flag set was replaced.
    fn flags_updated(&self) {
        self.flags_updated.send_modify(|n| *n = n.wrapping_add(1));
    }
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
        Sdk::start_with_client(Arc::new(Client::connect(endpoints, &config.connect)?), config).await
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
            follow: watch::channel(FollowState::Starting).0,
            flags: Arc::new(ArcSwap::from_pointee(FlagSet::default())),
            offset: ClockOffset::process(),
            received: AtomicU64::new(0),
            changes: broadcast::channel(CHANGE_QUEUE).0,
            applied: Mutex::new(HashMap::new()),
            unreported: Mutex::new(HashMap::new()),
            report_now: Notify::new(),
            lease: AtomicU64::new(0),
            flags_updated: watch::channel(0).0,
            registered: watch::channel(!config.hold_registration).0,
            deregistering: tokio::sync::Mutex::new(()),
            watching: Mutex::new(None),
        });
        // The key that ranks the members for this SDK: its instance, or a name of its own.
        let key = config
            .instance
            .as_ref()
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), |i| i.id.clone());
        let route = Arc::new(route::WatchRoute::new(client.clone(), key, config.discover));
        let filter = pb::WatchFilter {
            features: config.features.clone(),
            services: config.services.clone(),
            registry: false,
        };
        let (ready_tx, mut ready_rx) = watch::channel(None::<std::result::Result<(), Error>>);
        let mut tasks = vec![tokio::spawn(follow::follow_loop(
            route,
            shared.clone(),
            filter,
            Arc::new(ready_tx),
        ))];
        if let Some(instance) = &config.instance {
            tasks.push(tokio::spawn(lease::lease_loop(
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

    /// What the SDK's watch is doing: following, retrying (and why), or stopped for good (and
    /// why). An SDK never stops following silently: a stop is here, and in the log.
    pub fn follow_state(&self) -> FollowState {
        self.shared.follow.borrow().clone()
    }

    /// The member this SDK's watch is on now, at its advertised address (`None` while it
    /// reconnects, or when it follows through the given endpoints).
    pub fn watching(&self) -> Option<String> {
        self.shared.watching.lock().clone()
    }

    /// Every change of [`Sdk::follow_state`] from now on.
    pub fn follow_states(&self) -> watch::Receiver<FollowState> {
        self.shared.follow.subscribe()
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

    /// The instance as targeting rules see it (`instance.*`), if the SDK registers one.
    pub fn instance_facts(&self) -> Option<&InstanceFacts> {
        self.facts.as_ref()
    }

    /// Puts the instance into the registry (`true`: a lease is granted and kept alive, as at
    /// start) or takes it out at once (`false`: the lease is revoked, and the readiness gate
    /// no longer counts the instance), as its health comes and goes. Flags go on being
    /// followed either way.
    pub fn set_registered(&self, registered: bool) {
        self.shared.registered.send_if_modified(|r| {
            let changed = *r != registered;
            *r = registered;
            changed
        });
    }

    /// Takes the instance out of the registry now (its lease revoked before this returns, or
    /// expiring after its TTL when no node answers) and keeps it out until
    /// [`Sdk::set_registered`] puts it back. Flags go on being followed.
    pub async fn leave_registry(&self) {
        self.set_registered(false);
        let _revoking = self.shared.deregistering.lock().await;
        let lease = self.shared.lease.swap(0, Ordering::AcqRel);
        if lease != 0 {
            if let Err(e) = self.client.revoke_lease(lease).await {
                tracing::warn!(lease, error = %e, "could not revoke the instance's lease; it expires after its TTL");
            }
        }
    }

    /// Wakes on every replacement of the flag set (see [`Sdk::flags`]).
    pub(crate) fn flag_set_updates(&self) -> watch::Receiver<u64> {
        self.shared.flags_updated.subscribe()
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
