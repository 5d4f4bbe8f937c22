//! The applier: the changes an SDK holds, waiting for their `effective_at` or in effect. It
//! stages a waiting change in the flag set ahead of time, tied to a [`Flip`] the process's flip
//! clock fires on time, so every SDK of the process flips at once; a change that arrived after
//! its `effective_at` goes into effect at once, with how late recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_us;
use crate::eval::{Flag, Flip};
use crate::sdk::{flip_clock, FlagChange, Shared};

/// How far the applier's timer may be from a change's due time before it is moved.
const TIMER_SLACK: Duration = Duration::from_micros(200);

/// What the follow task hands its applier.
pub(super) enum Incoming {
    /// A full copy at a revision: replaces the local state.
    Snapshot(u64, Vec<Flag>),
    /// A toggle change, compiled (the follow task hands changes over as [`Unread`]).
    #[cfg(test)]
    Change(Flag),
    /// A feature deleted at a revision.
    Removed(String, u64),
}

pub(super) struct Applier {
    shared: Arc<Shared>,
    /// Changes waiting for their `effective_at`, in revision order.
    waiting: VecDeque<Flag>,
    /// Revisions that arrived after their `effective_at` (they are late; the others are on time
    /// even when the timer fires a little after the instant).
    arrived_late: std::collections::HashSet<u64>,
    /// Per feature, the waiting change already in the flag set, tied to a flip-clock instant.
    staged: HashMap<String, Staged>,
    /// Changes received well ahead of their `effective_at`, not read yet (see [`STAGE_LEAD_US`]).
    unread: VecDeque<Unread>,
}

/// A change as received, compiled and staged [`STAGE_LEAD_US`] before it takes effect.
pub(super) struct Unread {
    pub(super) feature: String,
    pub(super) revision: u64,
    pub(super) effective_at_ms: i64,
    pub(super) definition: String,
    pub(super) received_at_us: i64,
}

/// How long before its `effective_at` a change received well ahead is compiled and staged.
/// Receiving then costs only the decode, so thousands of instances on one host (or one busy
/// process) take a burst of changes in quickly, and the preparing happens after the burst.
const STAGE_LEAD_US: i64 = 100_000;

/// A change in the flag set waiting for its [`Flip`].
struct Staged {
    revision: u64,
    /// Its instant (unix µs, server clock).
    at_server_us: i64,
    flip: Arc<Flip>,
}

/// How long past an instant the applier waits for the flip clock before firing it itself.
const CLOCK_GRACE_US: i64 = 5_000;

impl Applier {
    pub(super) fn new(shared: Arc<Shared>) -> Applier {
        Applier {
            shared,
            waiting: VecDeque::new(),
            arrived_late: Default::default(),
            staged: HashMap::new(),
            // Room for a few changes from the start: taking the first one in (on the hot path
            // of a burst of deliveries) then allocates nothing.
            unread: VecDeque::with_capacity(4),
        }
    }

    /// Takes a toggle change as received: read at once when it is due soon, else kept unread
    /// until [`STAGE_LEAD_US`] before its `effective_at`.
    pub(super) fn take(&mut self, u: Unread) {
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
    pub(super) async fn run_while<F: std::future::Future>(
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
                .min_by_key(|s| s.flip.at_us)
                .map(|s| s.flip.clone());
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
        let waiting = self
            .waiting
            .iter()
            .filter(|f| f.key == feature)
            .map(|f| f.revision)
            .max();
        let current = self.shared.flags.load().get(feature).map(|f| f.revision);
        waiting.max(current).unwrap_or(0)
    }

    /// Queues a change, noting whether it arrived after its `effective_at`.
    fn hold(&mut self, flag: Flag) {
        if flag.revision <= self.held_revision(&flag.key) {
            return;
        }
        if flag.effective_at_ms * 1000 < self.server_now_us() {
            self.arrived_late.insert(flag.revision);
        }
        self.waiting.push_back(flag);
    }

    pub(super) fn receive(&mut self, incoming: Incoming) {
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
                    .chain(self.waiting.iter().map(|f| f.key.clone()))
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
        self.waiting
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
                if !s.flip.has_fired() && server_now_us >= s.at_server_us + CLOCK_GRACE_US {
                    s.flip.fire();
                }
                s.flip.fired_at().map(|t| (key.clone(), s.revision, t))
            })
            .collect();
        for (key, revision, applied_at_us) in fired {
            self.staged.remove(&key);
            let Some(i) = self
                .waiting
                .iter()
                .position(|f| f.key == key && f.revision == revision)
            else {
                continue;
            };
            let Some(flag) = self.waiting.remove(i) else {
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
            self.shared.flags_updated();
            self.record(change);
        }
    }

    /// Puts every due change into effect, in revision order, and stages the waiting ones.
    pub(super) fn apply_due(&mut self) {
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
        while i < self.waiting.len() {
            if self.deadline(&self.waiting[i]) <= now {
                if let Some(flag) = self.waiting.remove(i) {
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
        for f in &self.waiting {
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
            let flip = flip_clock::flip_at(at_server_us - offset);
            self.staged.insert(
                flag.key.clone(),
                Staged {
                    revision: flag.revision,
                    at_server_us,
                    flip: flip.clone(),
                },
            );
            let flag = Arc::new(flag);
            self.shared
                .flags
                .rcu(|current| current.with_scheduled(flag.clone(), flip.clone()));
            self.shared.flags_updated();
        }
    }

    /// Drops the waiting changes of `key` older than `revision`: a newer change supersedes them.
    fn drop_superseded(&mut self, key: &str, revision: u64) {
        let arrived_late = &mut self.arrived_late;
        self.waiting.retain(|f| {
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
        self.shared.flags_updated();
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
        self.shared.flags_updated();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use arc_swap::ArcSwap;
    use parking_lot::Mutex;
    use tokio::sync::{broadcast, Notify};

    use super::*;
    use crate::eval::{Context, FlagSet};

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            follow: tokio::sync::watch::channel(crate::sdk::FollowState::Starting).0,
            flags: Arc::new(ArcSwap::from_pointee(FlagSet::default())),
            offset: Arc::default(),
            received: AtomicU64::new(0),
            changes: broadcast::channel(16).0,
            applied: Mutex::new(HashMap::new()),
            unreported: Mutex::new(HashMap::new()),
            report_now: Notify::new(),
            lease: AtomicU64::new(0),
            flags_updated: tokio::sync::watch::channel(0).0,
            registered: tokio::sync::watch::channel(true).0,
            deregistering: tokio::sync::Mutex::new(()),
            watching: Mutex::new(None),
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
        assert!(a.waiting.is_empty(), "the older, waiting change was dropped");
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
        assert!(a.waiting.is_empty() && a.staged.is_empty());
    }

    #[test]
    fn a_deleted_feature_drops_its_waiting_change() {
        let mut a = applier();
        a.receive(Incoming::Change(flag("f", 1, now_us() / 1000 + 60_000, true)));
        a.apply_due();
        a.receive(Incoming::Removed("f".into(), 2));
        a.apply_due();
        assert!(a.shared.flags.load().scheduled("f").is_none());
        assert!(a.waiting.is_empty() && a.staged.is_empty());
        assert_eq!(on(&a, "f"), None);
    }
}
