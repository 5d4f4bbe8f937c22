//! Validators for the guarantees Switchyard gives to watchers.
//!
//! A watcher opens a stream on some node, gets a snapshot of the keys it asked for, then a
//! sequence of change events, and now and then a progress notification saying "nothing you
//! asked for happened up to revision R". When the stream breaks (node crash, partition, leader
//! change) the watcher reconnects, possibly to a different node, and resumes after the last
//! revision it had complete. The test harness records every stream as a [`Segment`] and hands
//! all of them, together with the writes the clients know were acknowledged, to [`check`].
//!
//! # Reference history
//!
//! The checkers compare what each watcher got with a reference history: for every revision,
//! the events (key and new value) that the revision carried. Nobody hands us that history, so
//! it is assembled from everything observed: the events delivered to any watcher and the
//! acknowledged writes. When two sources describe the same key at the same revision with
//! different values, that is an `agree` anomaly (acknowledged writes are trusted first, then
//! watchers in the order given). Because the reference is a union, an event invented by one
//! faulty stream shows up as a missing event for every other watcher that should have seen it.
//!
//! # The guarantees
//!
//! Each watcher's segments are walked in order while tracking `known`, the revision through
//! which the watcher has complete information. A snapshot sets it to the snapshot's revision
//! (the watcher's state is now that snapshot, even if it is older); a revision that is over,
//! or a progress notification, raises it. The checker names used in [`Anomaly::checker`] are:
//!
//! * `agree` — a delivered event contradicts another source about the value a revision gave a
//!   key, or a revision carrying an acknowledged write to a key the watch covers arrived
//!   without that key's event.
//! * `ordered` — event revisions go down inside a stream, or the events of one revision are
//!   not consecutive (a progress notification or snapshot arrived between them).
//! * `back-in-time` — an event at or below `known`, or a snapshot below `known`: typically a
//!   failover to a node that is behind. A snapshot exactly at `known` is fine.
//! * `unique` — the same (revision, key) delivered twice to one watcher.
//! * `atomic` — once a revision is over (the next revision's event, a progress notification,
//!   a snapshot, or the end of the stream), the keys delivered for it must be exactly the
//!   reference keys of that revision that match the watch filter. A revision cut in two by a
//!   broken stream, or a key outside the filter, is caught here.
//! * `reliable` — no gaps: when an event at revision `e` opens a new revision, every reference
//!   revision strictly between `known` and `e` with a matching event is missing; a progress
//!   notification at `p` checks the same up to and including `p`. Nothing is reported for
//!   revisions after the last thing a watcher received, since it may simply have stopped.
//! * `snapshot` — a snapshot at `S` must hold every acknowledged write (matching the filter)
//!   that is the latest reference change of its key at or before `S`, with that value; and it
//!   must not hold keys outside the filter. Keys whose latest known change came only from a
//!   watch are not checked, because the reference may miss later unacknowledged writes.
//! * `resumable` — a stream that asked for a snapshot must start with one; a stream resumed
//!   after revision `R` needs `R` to equal `known`, and must start with an event after `R`, a
//!   progress notification at `R` or later, or a snapshot at `R` or later.
//!
//! A watcher gets at most [`MAX_PER_CHECKER`] detailed anomalies per checker, followed by one
//! line counting the rest, so a badly broken run stays readable.

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// One change as a watch delivers it, reduced to what the checker compares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Event {
    pub revision: u64,
    pub key: String,
    /// None = deleted / gone.
    pub value: Option<String>,
}

/// One message received on a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The whole matching state at `revision` (key -> value); later events are after it.
    Snapshot {
        revision: u64,
        state: BTreeMap<String, String>,
    },
    Event(Event),
    /// The node says it has applied everything up to `revision`: nothing matching was left out.
    Progress {
        revision: u64,
    },
}

/// One stream (one connection to one node) of a watcher, in the order messages arrived.
#[derive(Debug, Clone)]
pub struct Segment {
    pub node: String,
    /// Some(R) = resumed after revision R; None = asked for a snapshot.
    pub resumed_from: Option<u64>,
    pub messages: Vec<Message>,
    /// How it ended: None = still open at the end of the run / closed by the client; Some(status text) otherwise.
    pub ended: Option<String>,
}

/// Which keys a watch asked for: None = every key; Some(prefixes) = keys starting with one of them.
#[derive(Debug, Clone)]
pub struct Filter(pub Option<Vec<String>>);

impl Filter {
    /// Whether the watch covers `key`. An empty prefix list covers nothing; an empty prefix
    /// covers everything.
    pub fn matches(&self, key: &str) -> bool {
        match &self.0 {
            None => true,
            Some(prefixes) => prefixes.iter().any(|p| key.starts_with(p.as_str())),
        }
    }
}

/// Everything one watcher received, stream after stream.
#[derive(Debug, Clone)]
pub struct WatchRecord {
    pub watcher: String,
    pub filter: Filter,
    pub segments: Vec<Segment>,
}

/// What the clients know was committed: acknowledged writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub revision: u64,
    pub key: String,
    pub value: String,
}

/// One broken guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Which guarantee: one of the names in [`CHECKERS`].
    pub checker: &'static str,
    /// The watcher concerned; [`ACKED_WRITES`] when acknowledged writes contradict each other.
    pub watcher: String,
    pub detail: String,
}

/// Checker name: sources disagree about a revision.
pub const AGREE: &str = "agree";
/// Checker name: revisions out of order within a stream.
pub const ORDERED: &str = "ordered";
/// Checker name: something at or below what the watcher already had.
pub const BACK_IN_TIME: &str = "back-in-time";
/// Checker name: an event delivered twice.
pub const UNIQUE: &str = "unique";
/// Checker name: a revision delivered partially or with extra keys.
pub const ATOMIC: &str = "atomic";
/// Checker name: a revision skipped.
pub const RELIABLE: &str = "reliable";
/// Checker name: a snapshot that contradicts acknowledged writes or the filter.
pub const SNAPSHOT: &str = "snapshot";
/// Checker name: a stream that did not start where it should.
pub const RESUMABLE: &str = "resumable";
/// Every checker name, for reports that list them all.
pub const CHECKERS: [&str; 8] = [
    AGREE,
    ORDERED,
    BACK_IN_TIME,
    UNIQUE,
    ATOMIC,
    RELIABLE,
    SNAPSHOT,
    RESUMABLE,
];
/// The `watcher` of anomalies between acknowledged writes themselves.
pub const ACKED_WRITES: &str = "(acknowledged writes)";
/// Detailed anomalies kept per watcher and checker; the rest are only counted.
pub const MAX_PER_CHECKER: usize = 5;

/// Runs every checker over every watcher and returns the anomalies found, empty when all the
/// guarantees held. Anomalies come in a stable order: disagreements found while building the
/// reference, then each watcher's in the order of `watches`, then the suppression counts.
pub fn check(watches: &[WatchRecord], acked: &[Acked]) -> Vec<Anomaly> {
    let mut report = Report::default();
    let reference = Reference::build(watches, acked, &mut report);
    for record in watches {
        Walker::new(record, &reference, &mut report).walk();
    }
    report.finish()
}

/// Collects anomalies and enforces the per-watcher, per-checker cap.
#[derive(Default)]
struct Report {
    out: Vec<Anomaly>,
    counts: BTreeMap<(String, &'static str), usize>,
}

impl Report {
    fn add(&mut self, checker: &'static str, watcher: &str, detail: impl FnOnce() -> String) {
        let count = self.counts.entry((watcher.to_string(), checker)).or_insert(0);
        *count += 1;
        if *count <= MAX_PER_CHECKER {
            self.out.push(Anomaly {
                checker,
                watcher: watcher.to_string(),
                detail: detail(),
            });
        }
    }

    fn finish(mut self) -> Vec<Anomaly> {
        for ((watcher, checker), count) in self.counts {
            if count > MAX_PER_CHECKER {
                self.out.push(Anomaly {
                    checker,
                    watcher,
                    detail: format!(
                        "{} more {checker} anomalies for this watcher were not listed \
                         ({count} in total)",
                        count - MAX_PER_CHECKER
                    ),
                });
            }
        }
        self.out
    }
}

/// Where a reference event was first seen.
#[derive(Debug, Clone, Copy)]
enum Source {
    Acked,
    Watch { watcher: usize, segment: usize },
}

impl Source {
    fn describe(self, watches: &[WatchRecord]) -> String {
        match self {
            Source::Acked => "the acknowledged write".to_string(),
            Source::Watch { watcher, segment } => {
                let record = &watches[watcher];
                let node = record.segments.get(segment).map_or("?", |s| s.node.as_str());
                format!(
                    "watcher {:?} (segment {} on node {node})",
                    record.watcher,
                    segment + 1
                )
            }
        }
    }
}

/// A key's change at one revision in the reference history.
struct RefEvent<'a> {
    value: Option<&'a str>,
    acked: bool,
    source: Source,
}

/// The reference history assembled from all sources.
struct Reference<'a> {
    /// revision -> key -> change
    revisions: BTreeMap<u64, BTreeMap<&'a str, RefEvent<'a>>>,
    /// key -> revisions that changed it
    per_key: BTreeMap<&'a str, BTreeSet<u64>>,
}

impl<'a> Reference<'a> {
    fn build(watches: &'a [WatchRecord], acked: &'a [Acked], report: &mut Report) -> Self {
        let mut reference = Reference {
            revisions: BTreeMap::new(),
            per_key: BTreeMap::new(),
        };
        for write in acked {
            reference.add(
                write.revision,
                &write.key,
                Some(&write.value),
                Source::Acked,
                watches,
                report,
            );
        }
        for (watcher, record) in watches.iter().enumerate() {
            for (segment, seg) in record.segments.iter().enumerate() {
                for message in &seg.messages {
                    if let Message::Event(event) = message {
                        reference.add(
                            event.revision,
                            &event.key,
                            event.value.as_deref(),
                            Source::Watch { watcher, segment },
                            watches,
                            report,
                        );
                    }
                }
            }
        }
        reference
    }

    fn add(
        &mut self,
        revision: u64,
        key: &'a str,
        value: Option<&'a str>,
        source: Source,
        watches: &[WatchRecord],
        report: &mut Report,
    ) {
        let events = self.revisions.entry(revision).or_default();
        if let Some(existing) = events.get(key) {
            if existing.value != value {
                let blamed = match source {
                    Source::Acked => ACKED_WRITES,
                    Source::Watch { watcher, .. } => watches[watcher].watcher.as_str(),
                };
                let first = existing.source;
                let first_value = existing.value;
                report.add(AGREE, blamed, || {
                    format!(
                        "revision {revision} key {key:?}: {} says {}, but {} says {}",
                        source.describe(watches),
                        show(value),
                        first.describe(watches),
                        show(first_value)
                    )
                });
            }
            return;
        }
        events.insert(
            key,
            RefEvent {
                value,
                acked: matches!(source, Source::Acked),
                source,
            },
        );
        self.per_key.entry(key).or_default().insert(revision);
    }

    /// Revisions in `from..=to` that carry an event matching `filter`.
    fn matching_revisions(&self, from: u64, to: u64, filter: &Filter) -> Vec<u64> {
        if from > to {
            return Vec::new();
        }
        self.revisions
            .range(from..=to)
            .filter(|(_, events)| events.keys().any(|k| filter.matches(k)))
            .map(|(&r, _)| r)
            .collect()
    }
}

/// Shows a value, or its absence, for a detail message.
fn show(value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "deleted".to_string(),
    }
}

/// Shows a few items of a list and how many there are.
fn few<T: std::fmt::Display>(items: &[T]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = items.iter().take(SHOWN).map(|i| i.to_string()).collect();
    if items.len() > SHOWN {
        format!("{} ... ({} in total)", shown.join(", "), items.len())
    } else {
        shown.join(", ")
    }
}

/// The revision being received on the current stream, not yet known to be complete.
struct Pending<'a> {
    revision: u64,
    keys: BTreeSet<&'a str>,
}

/// The current stream, for detail messages.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    index: usize,
    seg: &'a Segment,
}

impl Ctx<'_> {
    fn describe(&self) -> String {
        let start = match self.seg.resumed_from {
            Some(r) => format!("resumed after revision {r}"),
            None => "from a snapshot".to_string(),
        };
        let end = match &self.seg.ended {
            Some(status) => format!(", ended with {status:?}"),
            None => String::new(),
        };
        format!(
            "segment {} on node {} ({start}{end})",
            self.index + 1,
            self.seg.node
        )
    }
}

/// Walks one watcher's segments and applies the per-watcher checks.
struct Walker<'a, 'r> {
    record: &'a WatchRecord,
    reference: &'r Reference<'a>,
    report: &'r mut Report,
    /// Revision through which the watcher has complete information.
    known: Option<u64>,
    /// (revision, key) pairs delivered so far, over all segments.
    delivered: HashSet<(u64, &'a str)>,
    /// Highest event revision seen in the current segment.
    last_event: Option<u64>,
    /// Whether a progress notification or snapshot came after that event.
    interrupted: bool,
    pending: Option<Pending<'a>>,
}

impl<'a, 'r> Walker<'a, 'r> {
    fn new(record: &'a WatchRecord, reference: &'r Reference<'a>, report: &'r mut Report) -> Self {
        Walker {
            record,
            reference,
            report,
            known: None,
            delivered: HashSet::new(),
            last_event: None,
            interrupted: false,
            pending: None,
        }
    }

    fn anomaly(&mut self, checker: &'static str, detail: impl FnOnce() -> String) {
        self.report.add(checker, &self.record.watcher, detail);
    }

    fn walk(&mut self) {
        let record = self.record;
        for (index, seg) in record.segments.iter().enumerate() {
            let ctx = Ctx { index, seg };
            self.begin(ctx);
            for message in &seg.messages {
                match message {
                    Message::Event(event) => self.event(ctx, event),
                    Message::Progress { revision } => self.progress(ctx, *revision),
                    Message::Snapshot { revision, state } => self.snapshot(ctx, *revision, state),
                }
            }
            self.close_pending(ctx, "the end of the segment");
        }
    }

    /// The `resumable` checks at the start of a segment.
    fn begin(&mut self, ctx: Ctx<'a>) {
        self.last_event = None;
        self.interrupted = false;
        let first = ctx.seg.messages.first();
        match ctx.seg.resumed_from {
            None => {
                if let Some(message) = first {
                    if !matches!(message, Message::Snapshot { .. }) {
                        let what = describe_message(message);
                        self.anomaly(RESUMABLE, || {
                            format!(
                                "{}: the client asked for a snapshot but first received {what}",
                                ctx.describe()
                            )
                        });
                    }
                }
            }
            Some(resume) => {
                if self.known != Some(resume) {
                    let known = match self.known {
                        Some(k) => format!("revision {k}"),
                        None => "nothing (it never received a snapshot)".to_string(),
                    };
                    self.anomaly(RESUMABLE, || {
                        format!(
                            "{}: the client resumed after revision {resume}, but it had complete \
                             information through {known}",
                            ctx.describe()
                        )
                    });
                }
                if self.known.is_none() {
                    self.known = Some(resume);
                }
                let too_early = match first {
                    Some(Message::Event(e)) => e.revision <= resume,
                    Some(Message::Progress { revision }) => *revision < resume,
                    Some(Message::Snapshot { revision, .. }) => *revision < resume,
                    None => false,
                };
                if let (true, Some(message)) = (too_early, first) {
                    let what = describe_message(message);
                    self.anomaly(RESUMABLE, || {
                        format!(
                            "{}: the first message was {what}, which is not after the resume point",
                            ctx.describe()
                        )
                    });
                }
            }
        }
    }

    fn event(&mut self, ctx: Ctx<'a>, event: &'a Event) {
        let revision = event.revision;
        let key = event.key.as_str();
        if !self.delivered.insert((revision, key)) {
            self.anomaly(UNIQUE, || {
                format!(
                    "{}: revision {revision} key {key:?} was delivered again",
                    ctx.describe()
                )
            });
        }
        if let Some(last) = self.last_event {
            if revision < last {
                self.anomaly(ORDERED, || {
                    format!(
                        "{}: event at revision {revision} (key {key:?}) arrived after an event \
                         at revision {last}",
                        ctx.describe()
                    )
                });
                return;
            }
            if revision == last && self.interrupted {
                self.anomaly(ORDERED, || {
                    format!(
                        "{}: the events of revision {revision} were not consecutive (key \
                         {key:?} came after a progress notification or snapshot)",
                        ctx.describe()
                    )
                });
                return;
            }
        }
        self.last_event = Some(revision);
        self.interrupted = false;
        if let Some(pending) = &mut self.pending {
            if pending.revision == revision {
                pending.keys.insert(key);
                return;
            }
        }
        let cause = format!("the event at revision {revision}");
        self.close_pending(ctx, &cause);
        if let Some(known) = self.known {
            if revision <= known {
                self.anomaly(BACK_IN_TIME, || {
                    format!(
                        "{}: event at revision {revision} (key {key:?}) although the watcher \
                         already had complete information through revision {known}",
                        ctx.describe()
                    )
                });
                return;
            }
            self.gap(ctx, known, revision - 1, &cause);
        }
        self.pending = Some(Pending {
            revision,
            keys: BTreeSet::from([key]),
        });
    }

    fn progress(&mut self, ctx: Ctx<'a>, revision: u64) {
        self.close_pending(ctx, "a progress notification");
        self.interrupted = true;
        if let Some(known) = self.known {
            let cause = format!("the progress notification at revision {revision}");
            self.gap(ctx, known, revision, &cause);
        }
        self.known = Some(self.known.map_or(revision, |k| k.max(revision)));
    }

    fn snapshot(&mut self, ctx: Ctx<'a>, revision: u64, state: &BTreeMap<String, String>) {
        self.close_pending(ctx, "a snapshot");
        self.interrupted = true;
        if let Some(known) = self.known {
            if revision < known {
                self.anomaly(BACK_IN_TIME, || {
                    format!(
                        "{}: snapshot at revision {revision} although the watcher already had \
                         complete information through revision {known}",
                        ctx.describe()
                    )
                });
            }
        }
        self.check_snapshot(ctx, revision, state);
        // The watcher's state is now the snapshot, even one from the past (reported above).
        self.known = Some(revision);
    }

    /// The `snapshot` checks: acknowledged writes present, filter respected.
    fn check_snapshot(&mut self, ctx: Ctx<'a>, at: u64, state: &BTreeMap<String, String>) {
        let filter = &self.record.filter;
        let reference = self.reference;
        for (&key, revisions) in &reference.per_key {
            if !filter.matches(key) {
                continue;
            }
            let Some(&latest) = revisions.range(..=at).next_back() else {
                continue;
            };
            let Some(change) = reference.revisions.get(&latest).and_then(|e| e.get(key)) else {
                continue;
            };
            if !change.acked {
                continue;
            }
            let held = state.get(key).map(String::as_str);
            if held != change.value {
                let want = change.value;
                self.anomaly(SNAPSHOT, || {
                    let held = match held {
                        Some(v) => format!("holds {v:?}"),
                        None => "does not hold the key".to_string(),
                    };
                    format!(
                        "{}: snapshot at revision {at} {held} for {key:?}, but the acknowledged \
                         write at revision {latest} set it to {} and no later change to it at \
                         or before {at} is known",
                        ctx.describe(),
                        show(want)
                    )
                });
            }
        }
        let outside: Vec<&str> = state
            .keys()
            .map(String::as_str)
            .filter(|k| !filter.matches(k))
            .collect();
        if !outside.is_empty() {
            self.anomaly(SNAPSHOT, || {
                format!(
                    "{}: snapshot at revision {at} holds keys outside the watch filter: {}",
                    ctx.describe(),
                    few(&outside.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>())
                )
            });
        }
    }

    /// The `reliable` check: matching reference revisions in `(after, through]` were skipped.
    fn gap(&mut self, ctx: Ctx<'a>, after: u64, through: u64, cause: &str) {
        let missing =
            self.reference
                .matching_revisions(after.saturating_add(1), through, &self.record.filter);
        if missing.is_empty() {
            return;
        }
        self.anomaly(RELIABLE, || {
            format!(
                "{}: {} revision(s) with matching events were never delivered between revision \
                 {after} (the last complete one) and {cause}: {}",
                ctx.describe(),
                missing.len(),
                few(&missing)
            )
        });
    }

    /// Ends the revision being received: the `atomic` check, plus `agree` for acknowledged
    /// writes left out. Afterwards the watcher knows everything through that revision.
    fn close_pending(&mut self, ctx: Ctx<'a>, cause: &str) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let revision = pending.revision;
        let filter = &self.record.filter;
        let reference = self.reference;
        let expected: BTreeMap<&str, &RefEvent<'a>> = reference
            .revisions
            .get(&revision)
            .map(|events| {
                events
                    .iter()
                    .filter(|(k, _)| filter.matches(k))
                    .map(|(&k, e)| (k, e))
                    .collect()
            })
            .unwrap_or_default();
        let missing: Vec<&str> = expected
            .keys()
            .copied()
            .filter(|k| !pending.keys.contains(k))
            .collect();
        let extra: Vec<&str> = pending
            .keys
            .iter()
            .copied()
            .filter(|k| !expected.contains_key(k))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            self.anomaly(ATOMIC, || {
                let quoted = |keys: &[&str]| few(&keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>());
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!("missing {}", quoted(&missing)));
                }
                if !extra.is_empty() {
                    parts.push(format!(
                        "unexpected keys outside the watch filter {}",
                        quoted(&extra)
                    ));
                }
                format!(
                    "{}: revision {revision} was not delivered whole (checked at {cause}): {}",
                    ctx.describe(),
                    parts.join("; ")
                )
            });
        }
        for key in missing {
            if let Some(change) = expected.get(key).filter(|c| c.acked) {
                let value = change.value;
                self.anomaly(AGREE, || {
                    format!(
                        "{}: revision {revision} was delivered without key {key:?}, although \
                         the acknowledged write at that revision set it to {}",
                        ctx.describe(),
                        show(value)
                    )
                });
            }
        }
        self.known = Some(self.known.map_or(revision, |k| k.max(revision)));
    }
}

fn describe_message(message: &Message) -> String {
    match message {
        Message::Snapshot { revision, .. } => format!("a snapshot at revision {revision}"),
        Message::Event(e) => format!("an event at revision {} (key {:?})", e.revision, e.key),
        Message::Progress { revision } => {
            format!("a progress notification at revision {revision}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Change = (&'static str, Option<&'static str>);

    /// The committed history the correct streams are cut from. Revisions 3, 4 and 8 carry
    /// several keys; 7 is a delete.
    fn world() -> Vec<(u64, Vec<Change>)> {
        vec![
            (1, vec![("flags/a", Some("on"))]),
            (2, vec![("users/x", Some("1"))]),
            (3, vec![("flags/a", Some("off")), ("flags/b", Some("on"))]),
            (4, vec![("users/x", Some("2")), ("flags/b", Some("off"))]),
            (5, vec![("flags/c", Some("on"))]),
            (6, vec![("users/y", Some("1"))]),
            (7, vec![("flags/a", None)]),
            (8, vec![("flags/b", Some("on")), ("users/x", Some("3"))]),
            (9, vec![("flags/d", Some("1"))]),
            (10, vec![("users/x", Some("4"))]),
        ]
    }

    fn acked() -> Vec<Acked> {
        [
            (1, "flags/a", "on"),
            (3, "flags/b", "on"),
            (5, "flags/c", "on"),
            (6, "users/y", "1"),
            (8, "users/x", "3"),
            (10, "users/x", "4"),
        ]
        .into_iter()
        .map(|(revision, key, value)| Acked {
            revision,
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect()
    }

    fn filter(prefixes: &[&str]) -> Filter {
        Filter(Some(prefixes.iter().map(|p| p.to_string()).collect()))
    }

    fn all() -> Filter {
        Filter(None)
    }

    fn event(revision: u64, key: &str, value: Option<&str>) -> Message {
        Message::Event(Event {
            revision,
            key: key.to_string(),
            value: value.map(str::to_string),
        })
    }

    /// The correct events for revisions in `(after, through]`.
    fn events(f: &Filter, after: u64, through: u64) -> Vec<Message> {
        world()
            .into_iter()
            .filter(|(r, _)| *r > after && *r <= through)
            .flat_map(|(r, changes)| {
                changes
                    .into_iter()
                    .filter(|(k, _)| f.matches(k))
                    .map(move |(k, v)| event(r, k, v))
            })
            .collect()
    }

    /// The correct snapshot at `at`.
    fn snapshot(f: &Filter, at: u64) -> Message {
        let mut state = BTreeMap::new();
        for (r, changes) in world() {
            if r > at {
                break;
            }
            for (k, v) in changes {
                if !f.matches(k) {
                    continue;
                }
                match v {
                    Some(v) => state.insert(k.to_string(), v.to_string()),
                    None => state.remove(k),
                };
            }
        }
        Message::Snapshot { revision: at, state }
    }

    fn progress(revision: u64) -> Message {
        Message::Progress { revision }
    }

    fn seg(node: &str, resumed: Option<u64>, messages: Vec<Message>, ended: Option<&str>) -> Segment {
        Segment {
            node: node.to_string(),
            resumed_from: resumed,
            messages,
            ended: ended.map(str::to_string),
        }
    }

    fn cat(parts: Vec<Vec<Message>>) -> Vec<Message> {
        parts.into_iter().flatten().collect()
    }

    /// Three watchers that saw everything right: failovers, resumes, progress notifications,
    /// filters, a delete and multi-key revisions.
    fn correct() -> Vec<WatchRecord> {
        let flags = filter(&["flags/"]);
        let users = filter(&["users/", "flags/c"]);
        vec![
            WatchRecord {
                watcher: "all".to_string(),
                filter: all(),
                segments: vec![
                    seg(
                        "n1",
                        None,
                        cat(vec![
                            vec![snapshot(&all(), 0)],
                            events(&all(), 0, 4),
                            vec![progress(4)],
                        ]),
                        Some("unavailable"),
                    ),
                    seg("n2", Some(4), events(&all(), 4, 7), Some("connection reset")),
                    seg(
                        "n3",
                        Some(7),
                        cat(vec![vec![progress(7)], events(&all(), 7, 10), vec![progress(10)]]),
                        None,
                    ),
                ],
            },
            WatchRecord {
                watcher: "flags".to_string(),
                filter: flags.clone(),
                segments: vec![
                    seg(
                        "n2",
                        None,
                        cat(vec![
                            vec![snapshot(&flags, 2)],
                            events(&flags, 2, 5),
                            vec![progress(6)],
                        ]),
                        Some("leader changed"),
                    ),
                    seg("n1", Some(6), events(&flags, 6, 10), None),
                ],
            },
            WatchRecord {
                watcher: "users".to_string(),
                filter: users.clone(),
                segments: vec![
                    seg(
                        "n3",
                        None,
                        cat(vec![vec![snapshot(&users, 5)], events(&users, 5, 8)]),
                        Some("unavailable"),
                    ),
                    seg(
                        "n1",
                        None,
                        cat(vec![vec![snapshot(&users, 9)], events(&users, 9, 10)]),
                        None,
                    ),
                ],
            },
        ]
    }

    fn fired(anomalies: &[Anomaly]) -> BTreeSet<&'static str> {
        anomalies.iter().map(|a| a.checker).collect()
    }

    fn messages(w: &mut [WatchRecord], watcher: usize, segment: usize) -> &mut Vec<Message> {
        &mut w[watcher].segments[segment].messages
    }

    fn position(messages: &[Message], revision: u64, key: &str) -> usize {
        messages
            .iter()
            .position(|m| matches!(m, Message::Event(e) if e.revision == revision && e.key == key))
            .expect("the event is in the segment")
    }

    #[test]
    fn filter_matching() {
        assert!(all().matches("anything"));
        assert!(filter(&["flags/"]).matches("flags/a"));
        assert!(!filter(&["flags/"]).matches("users/x"));
        assert!(!filter(&[]).matches("flags/a"));
        assert!(filter(&[""]).matches("flags/a"));
    }

    #[test]
    fn correct_history_has_no_anomaly() {
        let anomalies = check(&correct(), &acked());
        assert!(anomalies.is_empty(), "{anomalies:#?}");
    }

    #[test]
    fn empty_input_has_no_anomaly() {
        assert!(check(&[], &[]).is_empty());
        assert!(check(&[], &acked()).is_empty());
    }

    #[test]
    fn skipped_revision_is_a_gap() {
        let mut w = correct();
        let m = messages(&mut w, 0, 1);
        let at = position(m, 5, "flags/c");
        m.remove(at);
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([RELIABLE]), "{anomalies:#?}");
        assert_eq!(anomalies[0].watcher, "all");
        assert!(anomalies[0].detail.contains("node n2"), "{}", anomalies[0].detail);
        assert!(anomalies[0].detail.contains(": 5"), "{}", anomalies[0].detail);
    }

    #[test]
    fn progress_over_a_skipped_revision_is_a_gap() {
        let mut w = correct();
        let m = messages(&mut w, 1, 0);
        let at = position(m, 5, "flags/c");
        m.remove(at);
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([RELIABLE]), "{anomalies:#?}");
        assert!(
            anomalies[0].detail.contains("progress"),
            "{}",
            anomalies[0].detail
        );
    }

    #[test]
    fn duplicate_event_is_caught() {
        let mut w = correct();
        let m = messages(&mut w, 0, 1);
        let at = position(m, 5, "flags/c");
        let copy = m[at].clone();
        m.insert(at + 1, copy);
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([UNIQUE]), "{anomalies:#?}");
    }

    #[test]
    fn reordered_events_are_caught() {
        let mut w = correct();
        let m = messages(&mut w, 0, 1);
        let (a, b) = (position(m, 5, "flags/c"), position(m, 6, "users/y"));
        m.swap(a, b);
        let anomalies = check(&w, &acked());
        assert!(fired(&anomalies).contains(ORDERED), "{anomalies:#?}");
    }

    #[test]
    fn split_events_of_one_revision_are_out_of_order() {
        let mut w = correct();
        let m = messages(&mut w, 0, 2);
        let at = position(m, 8, "users/x");
        m.insert(at, progress(8));
        let anomalies = check(&w, &acked());
        assert!(fired(&anomalies).contains(ORDERED), "{anomalies:#?}");
    }

    #[test]
    fn snapshot_behind_after_failover_is_back_in_time() {
        let mut w = correct();
        w[0].segments[1] = seg(
            "n2",
            None,
            cat(vec![vec![snapshot(&all(), 2)], events(&all(), 2, 7)]),
            Some("connection reset"),
        );
        let anomalies = check(&w, &acked());
        let found = fired(&anomalies);
        assert!(found.contains(BACK_IN_TIME), "{anomalies:#?}");
        let first = anomalies
            .iter()
            .find(|a| a.checker == BACK_IN_TIME)
            .expect("reported");
        assert!(first.detail.contains("segment 2 on node n2"), "{}", first.detail);
        assert!(
            first.detail.contains("snapshot at revision 2"),
            "{}",
            first.detail
        );
        assert!(first.detail.contains("revision 4"), "{}", first.detail);
        // The same when the client resumed and the lagging node answered with a snapshot.
        w[0].segments[1].resumed_from = Some(4);
        let found = fired(&check(&w, &acked()));
        assert!(
            found.contains(BACK_IN_TIME) && found.contains(RESUMABLE),
            "{found:?}"
        );
    }

    #[test]
    fn resumed_stream_replaying_old_events_is_caught() {
        let mut w = correct();
        w[0].segments[1] = seg("n2", Some(4), events(&all(), 3, 7), None);
        let found = fired(&check(&w, &acked()));
        assert!(found.contains(BACK_IN_TIME) && found.contains(RESUMABLE) && found.contains(UNIQUE));
    }

    #[test]
    fn revision_split_across_a_resume_is_not_atomic() {
        let mut w = correct();
        // The stream breaks after the first event of revision 4; the client resumes after 4.
        let mut first = cat(vec![vec![snapshot(&all(), 0)], events(&all(), 0, 3)]);
        first.push(event(4, "users/x", Some("2")));
        w[0].segments[0] = seg("n1", None, first, Some("unavailable"));
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([ATOMIC]), "{anomalies:#?}");
        assert!(anomalies[0].detail.contains("revision 4"));
        assert!(anomalies[0].detail.contains("\"flags/b\""));
    }

    #[test]
    fn wrong_value_at_an_acknowledged_revision_disagrees() {
        let mut w = correct();
        let m = messages(&mut w, 1, 0);
        let at = position(m, 3, "flags/b");
        m[at] = event(3, "flags/b", Some("off"));
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([AGREE]), "{anomalies:#?}");
        assert_eq!(anomalies[0].watcher, "flags");
    }

    #[test]
    fn watchers_disagreeing_on_an_unacknowledged_revision_disagree() {
        let mut w = correct();
        let m = messages(&mut w, 1, 0);
        let at = position(m, 4, "flags/b");
        m[at] = event(4, "flags/b", Some("maybe"));
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([AGREE]), "{anomalies:#?}");
        assert!(anomalies[0].detail.contains("watcher \"all\""));
    }

    #[test]
    fn acknowledged_write_missing_from_its_revision() {
        let mut w = correct();
        let m = messages(&mut w, 0, 2);
        let at = position(m, 8, "users/x");
        m.remove(at);
        let anomalies = check(&w, &acked());
        assert_eq!(
            fired(&anomalies),
            BTreeSet::from([AGREE, ATOMIC]),
            "{anomalies:#?}"
        );
    }

    #[test]
    fn conflicting_acknowledged_writes_disagree() {
        let mut a = acked();
        a.push(Acked {
            revision: 5,
            key: "flags/c".to_string(),
            value: "other".to_string(),
        });
        let anomalies = check(&correct(), &a);
        assert_eq!(fired(&anomalies), BTreeSet::from([AGREE]), "{anomalies:#?}");
        assert_eq!(anomalies[0].watcher, ACKED_WRITES);
    }

    #[test]
    fn resume_from_the_wrong_revision_is_caught() {
        let mut w = correct();
        w[0].segments[1].resumed_from = Some(3);
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([RESUMABLE]), "{anomalies:#?}");
        assert!(anomalies[0].detail.contains("resumed after revision 3"));
    }

    #[test]
    fn stream_without_its_snapshot_is_caught() {
        let mut w = correct();
        messages(&mut w, 0, 0).remove(0);
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([RESUMABLE]), "{anomalies:#?}");
    }

    #[test]
    fn snapshot_missing_an_acknowledged_write() {
        let mut w = correct();
        let users = filter(&["users/", "flags/c"]);
        let Message::Snapshot { state, .. } = &mut messages(&mut w, 2, 0)[0] else {
            panic!("the segment starts with a snapshot");
        };
        assert!(state.remove("flags/c").is_some());
        assert!(users.matches("flags/c"));
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([SNAPSHOT]), "{anomalies:#?}");
        assert!(anomalies[0].detail.contains("revision 5"));
    }

    #[test]
    fn snapshot_with_a_key_outside_the_filter() {
        let mut w = correct();
        let Message::Snapshot { state, .. } = &mut messages(&mut w, 2, 0)[0] else {
            panic!("the segment starts with a snapshot");
        };
        state.insert("flags/a".to_string(), "off".to_string());
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([SNAPSHOT]), "{anomalies:#?}");
    }

    #[test]
    fn key_outside_the_filter_is_an_atomic_extra() {
        let mut w = correct();
        let m = messages(&mut w, 1, 1);
        let at = position(m, 8, "flags/b");
        m.insert(at + 1, event(8, "users/x", Some("3")));
        let anomalies = check(&w, &acked());
        assert_eq!(fired(&anomalies), BTreeSet::from([ATOMIC]), "{anomalies:#?}");
        assert!(anomalies[0].detail.contains("outside the watch filter"));
    }

    #[test]
    fn anomalies_are_capped_per_watcher_and_checker() {
        let mut messages = vec![snapshot(&all(), 0)];
        for _ in 0..20 {
            messages.push(event(1, "flags/a", Some("on")));
        }
        let record = WatchRecord {
            watcher: "noisy".to_string(),
            filter: all(),
            segments: vec![seg("n1", None, messages, None)],
        };
        let anomalies = check(&[record], &acked());
        let unique: Vec<&Anomaly> = anomalies.iter().filter(|a| a.checker == UNIQUE).collect();
        assert_eq!(unique.len(), MAX_PER_CHECKER + 1);
        assert!(unique[MAX_PER_CHECKER].detail.contains("14 more"), "{unique:#?}");
    }

    #[test]
    fn checker_names_are_listed() {
        let anomalies = check(&correct(), &acked());
        assert!(anomalies.iter().all(|a| CHECKERS.contains(&a.checker)));
        assert_eq!(CHECKERS.iter().collect::<BTreeSet<_>>().len(), CHECKERS.len());
    }
}
