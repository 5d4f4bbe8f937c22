//! Per-key linearizability checking of client histories.
//!
//! The traffic generator records every request it sends to the cluster as an [`Op`]: who sent
//! it, which key it touched, what it asked for, when it was sent, when (and whether) the answer
//! came back, and what the answer said. This module decides, key by key, whether those answers
//! could have come from a single register that applied every operation atomically at some
//! instant between the moment the request was sent and the moment its answer arrived. That
//! property is linearizability; keys are independent registers in Switchyard, so checking them
//! one at a time is both sound and much cheaper than checking the whole store at once.
//!
//! # The register model
//!
//! A key's state is its value (or absence) and its modification revision. Revisions come from
//! the cluster and only ever grow, so the model checks them too:
//!
//! * an acknowledged `Put` must carry a revision above the current one;
//! * an acknowledged `Cas` needs the current revision to equal the expected one (0 means the key
//!   must be absent) and must also carry a higher revision;
//! * a `Cas` refused with [`Outcome::Mismatch`] needs the current revision to differ;
//! * a `Read` must return exactly the current value and revision.
//!
//! A write whose outcome is unknown (timeout, lost connection) may have taken effect at any
//! instant after it was sent, or never. When the model lets it take effect, the value becomes
//! known but the revision does not; the model then only remembers a lower bound for it (the
//! revision is strictly above the one before the write, or above the expected revision of a
//! conditional write), which keeps later reads and writes honest without guessing. A read with
//! an unknown outcome tells nothing and is discarded before the search.
//!
//! # The search
//!
//! The checker looks for a total order of the operations that respects real time and the
//! model. It follows the classic approach of Wing and Gong, with the memoization introduced by
//! Lowe (the same approach the Porcupine checker popularised), implemented here from scratch:
//!
//! 1. Every operation contributes a *call* event at its invocation time and a *return* event at
//!    its completion time. Operations whose outcome is unknown return "at infinity". Events are
//!    sorted by time; at equal times calls come first, so operations that merely touch are
//!    treated as concurrent (the permissive reading of microsecond timestamps).
//! 2. The events form an index-based doubly linked list. The search walks it from the front.
//!    At a call event it tries to apply that operation to the current model state; if the
//!    model accepts and the resulting configuration (set of operations placed so far, model
//!    state) has not been explored before, the operation is placed: pushed on a stack, and its
//!    two events are unlinked so the walk restarts from the front. Otherwise the walk moves on.
//!    Operations with a definite outcome are tried first; only when none of them can go next
//!    does a second walk try the operations with unknown outcome.
//! 3. Reaching the return event of an operation that has not been placed means no candidate
//!    left can be placed before that operation's answer arrived: the search backtracks by
//!    popping the last placed operation, relinking its events and trying the next candidate.
//!    The return events of operations with unknown outcome are skipped, since they carry no
//!    deadline.
//! 4. The history is linearizable as soon as every operation with a definite outcome has been
//!    placed; operations with unknown outcome that were never placed simply never happened.
//!    It is a violation when backtracking empties the stack.
//!
//! The memo of explored configurations is what keeps the search polynomial in practice: two
//! different orders of the same concurrent operations that end in the same state are explored
//! only once. The memo here goes further than Lowe's, to cope with writes of unknown outcome
//! (which may take effect, and be overwritten, at any later point, and so multiply the work on
//! a violating history). A configuration is also skipped when an explored one has placed the
//! same definite operations, only a subset of the unknown-outcome ones, and has a state that is
//! at least as permissive (same value; same revision, or an unknown revision with a lower
//! bound that is no higher). Finishing never requires placing an unknown-outcome operation
//! and a more permissive state accepts everything a stricter one does, so the explored
//! configuration could already do everything the skipped one can. For the same reason an
//! operation is never placed directly after an unknown-outcome operation whose effect it does
//! not observe (placing it without that operation reaches a state at least as permissive):
//! unknown writes only get placed where something depends on them. Finally, unknown-outcome
//! operations with exactly the same effect are interchangeable, so only the earliest-sent one
//! not yet placed is ever tried; values written with unknown outcome that no read ever returned
//! are merged into one placeholder first, since which of them sits in the register makes no
//! difference to anything that follows. The caller bounds the work with a step budget;
//! running out gives [`Verdict::Inconclusive`] rather than a guess.
//!
//! Two details matter when feeding the checker. Revisions are assumed to be the key's
//! modification revision as the cluster reports it: 0 only while the key is absent, and
//! strictly greater after every write to it (a global, store-wide counter is fine). The model
//! has no delete. An operation whose result cannot answer its request (a read answered with
//! [`Outcome::Written`], a put answered with [`Outcome::Mismatch`], ...) makes the verdict a
//! [`Verdict::Violation`] that says the history is malformed.
//!
//! When the search fails, the verdict explains the deepest point it reached: the longest
//! linearizable prefix found, the model state after it, the operation whose answer arrived
//! before the search could place it, and the other operations that were pending at that point.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// One client operation on one key, as the traffic generator recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub client: u32,
    pub key: String,
    pub call: Call,
    /// Microseconds since the run began, when the request was sent.
    pub invoked_us: u64,
    /// When the answer arrived; `None` when the outcome is unknown (timeout, connection lost).
    pub completed_us: Option<u64>,
    pub result: Outcome,
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Unconditional write of `value`.
    Put { value: String },
    /// Write `value` only if the key's modification revision is `expected` (0 = the key must not exist).
    Cas { expected: u64, value: String },
    /// Linearizable read.
    Read,
}

/// What the cluster answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Write acknowledged; the key's new modification revision.
    Written { revision: u64 },
    /// CAS refused because the revision did not match (a definite answer: nothing changed).
    Mismatch,
    /// Read answer: the value and modification revision, or None/0 when absent.
    Read { value: Option<String>, revision: u64 },
    /// The request may or may not have taken effect (always with completed_us = None).
    Unknown,
}

/// The conclusion for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations respects both real time and the register model.
    Linearizable,
    /// No such order exists. The explanation is meant for a human: it lists the longest
    /// linearizable prefix the search found and the operation it could not place after it.
    Violation { explanation: String },
    /// The step budget ran out before the search could decide.
    Inconclusive,
}

/// Checks every key of `history` separately, giving each key at most `max_steps_per_key`
/// search steps. The result is sorted by key.
pub fn check(history: &[Op], max_steps_per_key: u64) -> Vec<(String, Verdict)> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    by_key
        .into_iter()
        .map(|(key, ops)| (key.to_string(), check_ops(key, &ops, max_steps_per_key)))
        .collect()
}

/// Checks the operations of a single key. All of `ops` are treated as operations on the same
/// register; their `key` field is only used in the explanation. A step is one attempt to place
/// an operation or one backtrack; after `max_steps` of them the answer is
/// [`Verdict::Inconclusive`]. A step costs well under a microsecond for histories of a few
/// hundred operations per key, so budgets in the millions are reasonable.
pub fn check_key(ops: &[Op], max_steps: u64) -> Verdict {
    let refs: Vec<&Op> = ops.iter().collect();
    let key = ops.first().map_or("", |op| op.key.as_str());
    check_ops(key, &refs, max_steps)
}

fn check_ops(key: &str, ops: &[&Op], max_steps: u64) -> Verdict {
    match Prepared::new(ops) {
        Ok(mut prepared) => {
            prepared.merge_unread_values();
            prepared.search(key, max_steps)
        }
        Err(explanation) => Verdict::Violation { explanation },
    }
}

/// The model's knowledge of the key's modification revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rev {
    Known(u64),
    /// A write with unknown outcome took effect: the revision is some number strictly above
    /// `above`.
    Unknown {
        above: u64,
    },
}

impl Rev {
    /// Whether the current revision may be exactly `r`.
    fn may_equal(self, r: u64) -> bool {
        match self {
            Rev::Known(current) => current == r,
            Rev::Unknown { above } => r > above,
        }
    }

    /// Whether the current revision may be strictly below `r`, i.e. a write may get `r` next.
    fn may_be_below(self, r: u64) -> bool {
        match self {
            Rev::Known(current) => r > current,
            Rev::Unknown { above } => r > above,
        }
    }

    /// A revision the current one is certainly not below.
    fn lower_bound(self) -> u64 {
        match self {
            Rev::Known(current) => current,
            Rev::Unknown { above } => above,
        }
    }

    /// Whether a key with revision `self` accepts every sequence of operations that a key with
    /// the same value and revision `other` accepts, ending in a state that again covers.
    /// An unknown revision above `a` covers any revision (known or not) certainly above `a`.
    fn covers(self, other: Rev) -> bool {
        match (self, other) {
            (Rev::Known(a), Rev::Known(b)) => a == b,
            (Rev::Known(_), Rev::Unknown { .. }) => false,
            (Rev::Unknown { above }, Rev::Known(b)) => b > above,
            (Rev::Unknown { above }, Rev::Unknown { above: b }) => b >= above,
        }
    }
}

/// Model state of one key. Values are interned to small numbers so states are cheap to copy
/// and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    value: Option<u32>,
    rev: Rev,
}

impl State {
    /// Whether this state can do everything `other` can (see [`Rev::covers`]).
    fn covers(self, other: State) -> bool {
        self.value == other.value && self.rev.covers(other.rev)
    }
}

const INITIAL: State = State {
    value: None,
    rev: Rev::Known(0),
};

/// An operation reduced to what the model needs, with its outcome folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    Put {
        value: u32,
        revision: u64,
    },
    Cas {
        expected: u64,
        value: u32,
        revision: u64,
    },
    CasMismatch {
        expected: u64,
    },
    Read {
        value: Option<u32>,
        revision: u64,
    },
    /// A put with unknown outcome, if it took effect.
    MaybePut {
        value: u32,
    },
    /// A compare-and-set with unknown outcome, if it took effect (which needs a match).
    MaybeCas {
        expected: u64,
        value: u32,
    },
}

impl Action {
    fn is_definite(self) -> bool {
        !matches!(self, Action::MaybePut { .. } | Action::MaybeCas { .. })
    }
}

/// Applies `action` to `state`; `None` when the model forbids it.
fn step(state: State, action: Action) -> Option<State> {
    match action {
        Action::Put { value, revision } => state.rev.may_be_below(revision).then_some(State {
            value: Some(value),
            rev: Rev::Known(revision),
        }),
        Action::Cas {
            expected,
            value,
            revision,
        } => (state.rev.may_equal(expected) && revision > expected).then_some(State {
            value: Some(value),
            rev: Rev::Known(revision),
        }),
        Action::CasMismatch { expected } => (state.rev != Rev::Known(expected)).then_some(state),
        Action::Read { value, revision } => (state.value == value && state.rev.may_equal(revision))
            .then_some(State {
                value,
                rev: Rev::Known(revision),
            }),
        Action::MaybePut { value } => Some(State {
            value: Some(value),
            rev: Rev::Unknown {
                above: state.rev.lower_bound(),
            },
        }),
        Action::MaybeCas { expected, value } => state.rev.may_equal(expected).then_some(State {
            value: Some(value),
            rev: Rev::Unknown { above: expected },
        }),
    }
}

/// Assigns small numbers to value strings.
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, u32>,
    texts: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, text: &'a str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        // More distinct values than u32 can count cannot fit in memory anyway.
        let id = u32::try_from(self.texts.len()).unwrap_or(u32::MAX);
        self.ids.insert(text, id);
        self.texts.push(text);
        id
    }
}

/// Stands for any value written by an unknown-outcome operation that no read returned.
const UNREAD_VALUE: &str = "<a value written with unknown outcome and never read>";

/// The history of one key, ready for the search.
struct Prepared<'a> {
    ops: Vec<&'a Op>,
    actions: Vec<Action>,
    values: Vec<&'a str>,
}

impl<'a> Prepared<'a> {
    /// Drops reads with unknown outcome and translates the rest into model actions. An
    /// operation whose answer cannot belong to its request (say, a read answered with a
    /// revision mismatch) is reported as an error: the history itself is broken.
    fn new(ops: &[&'a Op]) -> Result<Self, String> {
        let mut interner = Interner::default();
        let mut kept = Vec::with_capacity(ops.len());
        let mut actions = Vec::with_capacity(ops.len());
        for &op in ops {
            let action = match (&op.call, &op.result) {
                (Call::Read, Outcome::Unknown) => continue,
                (Call::Read, Outcome::Read { value, revision }) => Action::Read {
                    value: value.as_deref().map(|v| interner.id(v)),
                    revision: *revision,
                },
                (Call::Put { value }, Outcome::Written { revision }) => Action::Put {
                    value: interner.id(value),
                    revision: *revision,
                },
                (Call::Put { value }, Outcome::Unknown) => Action::MaybePut {
                    value: interner.id(value),
                },
                (Call::Cas { expected, value }, Outcome::Written { revision }) => Action::Cas {
                    expected: *expected,
                    value: interner.id(value),
                    revision: *revision,
                },
                (Call::Cas { expected, .. }, Outcome::Mismatch) => {
                    Action::CasMismatch { expected: *expected }
                }
                (Call::Cas { expected, value }, Outcome::Unknown) => Action::MaybeCas {
                    expected: *expected,
                    value: interner.id(value),
                },
                _ => {
                    return Err(format!(
                        "key {:?}: malformed history, this operation's result cannot answer its \
                         request (check the traffic recorder): {}",
                        op.key,
                        describe_op(op)
                    ))
                }
            };
            kept.push(op);
            actions.push(action);
        }
        Ok(Prepared {
            ops: kept,
            actions,
            values: interner.texts,
        })
    }

    /// A value written by an unknown-outcome operation that no read ever returned can only
    /// make reads fail until it is overwritten, whichever value it is. Giving all such values
    /// one shared id makes those operations interchangeable (see `Search::twins`).
    fn merge_unread_values(&mut self) {
        let read_values: HashSet<u32> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Read {
                    value: Some(value), ..
                } => Some(*value),
                _ => None,
            })
            .collect();
        let mut unread = None;
        for action in &mut self.actions {
            if let Action::MaybePut { value } | Action::MaybeCas { value, .. } = action {
                if !read_values.contains(value) {
                    *value = *unread.get_or_insert_with(|| {
                        self.values.push(UNREAD_VALUE);
                        u32::try_from(self.values.len() - 1).unwrap_or(u32::MAX)
                    });
                }
            }
        }
    }

    fn search(&self, key: &str, max_steps: u64) -> Verdict {
        let mut search = Search::new(self);
        match search.run(max_steps) {
            Some(true) => Verdict::Linearizable,
            Some(false) => Verdict::Violation {
                explanation: self.explain(key, search.deepest.as_ref()),
            },
            None => Verdict::Inconclusive,
        }
    }

    fn describe_state(&self, state: State) -> String {
        let value = match state.value.map(|id| self.value_text(id)) {
            Some(UNREAD_VALUE) => UNREAD_VALUE.to_string(),
            Some(text) => format!("{text:?}"),
            None => "absent".to_string(),
        };
        match state.rev {
            Rev::Known(r) => format!("{value} at revision {r}"),
            Rev::Unknown { above } => format!("{value} at an unknown revision above {above}"),
        }
    }

    fn value_text(&self, id: u32) -> &str {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.values.get(i))
            .copied()
            .unwrap_or("?")
    }

    fn explain(&self, key: &str, deepest: Option<&Stuck>) -> String {
        const SHOWN_PREFIX: usize = 20;
        const SHOWN_PENDING: usize = 10;
        let definite = self.actions.iter().filter(|a| a.is_definite()).count();
        let mut out = format!(
            "key {key:?}: not linearizable against a register with compare-and-set \
             ({} operations considered, {definite} with a definite outcome).\n",
            self.ops.len()
        );
        let Some(stuck) = deepest else {
            out.push_str("The search found no operation it could place first.\n");
            return out;
        };
        let _ = writeln!(
            out,
            "Longest linearizable prefix found ({} operations, in the order they took effect):",
            stuck.prefix.len()
        );
        if stuck.prefix.is_empty() {
            out.push_str("  (none: not even the first operation can be placed)\n");
        }
        let skipped = stuck.prefix.len().saturating_sub(SHOWN_PREFIX);
        if skipped > 0 {
            let _ = writeln!(out, "  ... {skipped} earlier operations not shown");
        }
        for (pos, &i) in stuck.prefix.iter().enumerate().skip(skipped) {
            let note = if self.actions[i].is_definite() {
                ""
            } else {
                " [assumed to have taken effect here]"
            };
            let _ = writeln!(out, "  {}. {}{note}", pos + 1, describe_op(self.ops[i]));
        }
        let _ = writeln!(
            out,
            "State after that prefix: {}.",
            self.describe_state(stuck.state)
        );
        let blocked = self.ops[stuck.blocked];
        let direct = if step(stuck.state, self.actions[stuck.blocked]).is_some() {
            "Applied to that state it would be accepted, but every way to continue after it failed"
        } else {
            "Its result does not fit that state"
        };
        let _ = writeln!(
            out,
            "Could not be placed next: {}.\n{direct}, and no other order of the operations \
             concurrent with it lets it take effect before its answer arrived.",
            describe_op(blocked)
        );
        if !stuck.pending.is_empty() {
            out.push_str("Other operations still pending at that point:\n");
            for &i in stuck.pending.iter().take(SHOWN_PENDING) {
                let _ = writeln!(out, "  - {}", describe_op(self.ops[i]));
            }
            if stuck.pending.len() > SHOWN_PENDING {
                let _ = writeln!(out, "  ... and {} more", stuck.pending.len() - SHOWN_PENDING);
            }
        }
        out
    }
}

/// Human-readable one-line description of an operation.
fn describe_op(op: &Op) -> String {
    let call = match &op.call {
        Call::Put { value } => format!("put {value:?}"),
        Call::Cas { expected, value } => format!("cas {value:?} if revision is {expected}"),
        Call::Read => "read".to_string(),
    };
    let result = match &op.result {
        Outcome::Written { revision } => format!("written at revision {revision}"),
        Outcome::Mismatch => "refused (revision mismatch)".to_string(),
        Outcome::Read {
            value: Some(value),
            revision,
        } => format!("returned {value:?} at revision {revision}"),
        Outcome::Read {
            value: None,
            revision,
        } => format!("returned absent (revision {revision})"),
        Outcome::Unknown => "outcome unknown".to_string(),
    };
    let completed = match op.completed_us {
        Some(t) => format!("answered at {t} us"),
        None => "never answered".to_string(),
    };
    format!(
        "client {} {call} -> {result} (sent at {} us, {completed})",
        op.client, op.invoked_us
    )
}

/// The deepest point where the search got stuck.
struct Stuck {
    /// Operations placed, in order.
    prefix: Vec<usize>,
    state: State,
    /// The operation whose return event was reached before it could be placed.
    blocked: usize,
    /// Other operations invoked but not placed at that point.
    pending: Vec<usize>,
}

/// Position of the list head sentinel.
const HEAD: usize = 0;

/// A set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether every member of `self` is also in `other`.
    fn is_subset(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// Part of an explored configuration: the revision and the unknown operations placed.
type Explored = (Rev, Bits);

/// The set of operations placed so far, and the memo of configurations already explored.
///
/// A configuration is (operations placed, model state). Plain Lowe memoization skips a
/// configuration seen before. This memo also skips one that is *dominated* by an explored
/// configuration: the same definite operations placed, a subset of the unknown-outcome ones
/// placed, and a model state that [covers](State::covers) this one. That is safe because an
/// unknown-outcome operation has no deadline and need never be placed, and a covering state
/// accepts every sequence the covered one accepts, so any way to finish from the dominated
/// configuration also finishes from the explored one.
struct Memo {
    definite: Bits,
    unknown: Bits,
    /// (definite operations placed, value) -> antichain of (revision, unknown operations
    /// placed) explored so far.
    explored: HashMap<(Bits, Option<u32>), Vec<Explored>>,
}

impl Memo {
    fn new(n: usize) -> Self {
        Memo {
            definite: Bits::new(n),
            unknown: Bits::new(n),
            explored: HashMap::new(),
        }
    }

    /// Places `op` leading to `state`, unless that configuration is dominated by one already
    /// explored; returns whether it was placed.
    fn place(&mut self, op: usize, definite: bool, state: State) -> bool {
        if definite {
            self.definite.set(op);
        } else {
            self.unknown.set(op);
        }
        let seen = self
            .explored
            .entry((self.definite.clone(), state.value))
            .or_default();
        let unknown = &self.unknown;
        if seen
            .iter()
            .any(|(rev, set)| rev.covers(state.rev) && set.is_subset(unknown))
        {
            self.unplace(op, definite);
            return false;
        }
        seen.retain(|(rev, set)| !(state.rev.covers(*rev) && unknown.is_subset(set)));
        seen.push((state.rev, unknown.clone()));
        true
    }

    fn unplace(&mut self, op: usize, definite: bool) {
        if definite {
            self.definite.clear(op);
        } else {
            self.unknown.clear(op);
        }
    }
}

/// The mutable state of one Wing & Gong search.
struct Search<'p, 'a> {
    prepared: &'p Prepared<'a>,
    /// Linked list of events: positions 1..=2n hold events in time order, `HEAD` and `tail`
    /// are sentinels.
    next: Vec<usize>,
    prev: Vec<usize>,
    tail: usize,
    /// For each list position, the operation it belongs to and whether it is a call event.
    entry_op: Vec<usize>,
    entry_is_call: Vec<bool>,
    /// For each operation, the list positions of its call and return events.
    call_pos: Vec<usize>,
    ret_pos: Vec<usize>,
    /// For each unknown-outcome operation, the index in `twins` of the group of operations
    /// with exactly the same action (after merging unread values), each group sorted by
    /// invocation. Twins are interchangeable: if a linearization places a later twin while an
    /// earlier one is still unplaced, swapping their roles gives another linearization (the
    /// earlier one was sent first, so it may take effect wherever the later one can). So only
    /// the earliest unplaced twin is ever tried.
    twin_group: Vec<usize>,
    twins: Vec<Vec<usize>>,
    deepest: Option<Stuck>,
}

impl<'p, 'a> Search<'p, 'a> {
    fn new(prepared: &'p Prepared<'a>) -> Self {
        let n = prepared.ops.len();
        // (at infinity, time, 0 = call / 1 = return, operation)
        let mut events: Vec<(bool, u64, u8, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in prepared.ops.iter().enumerate() {
            events.push((false, op.invoked_us, 0, i));
            match op.completed_us {
                Some(done) if prepared.actions[i].is_definite() => {
                    events.push((false, done.max(op.invoked_us), 1, i));
                }
                _ => events.push((true, 0, 1, i)),
            }
        }
        events.sort_unstable();
        let tail = 2 * n + 1;
        let mut entry_op = vec![0; tail + 1];
        let mut entry_is_call = vec![false; tail + 1];
        let mut call_pos = vec![0; n];
        let mut ret_pos = vec![0; n];
        for (k, &(_, _, kind, op)) in events.iter().enumerate() {
            let pos = k + 1;
            entry_op[pos] = op;
            if kind == 0 {
                entry_is_call[pos] = true;
                call_pos[op] = pos;
            } else {
                ret_pos[op] = pos;
            }
        }
        let mut groups: HashMap<Action, usize> = HashMap::new();
        let mut twins: Vec<Vec<usize>> = Vec::new();
        let mut twin_group = vec![usize::MAX; n];
        let mut unknown: Vec<usize> = (0..n).filter(|&i| !prepared.actions[i].is_definite()).collect();
        unknown.sort_by_key(|&i| call_pos[i]);
        for i in unknown {
            let group = *groups.entry(prepared.actions[i]).or_insert_with(|| {
                twins.push(Vec::new());
                twins.len() - 1
            });
            twins[group].push(i);
            twin_group[i] = group;
        }
        Search {
            prepared,
            next: (1..=tail + 1).collect(),
            prev: (0..=tail).map(|p| p.saturating_sub(1)).collect(),
            tail,
            entry_op,
            entry_is_call,
            call_pos,
            ret_pos,
            twin_group,
            twins,
            deepest: None,
        }
    }

    /// Whether `op` (unknown outcome) is the earliest of its twins not yet placed.
    fn first_unplaced_twin(&self, op: usize, placed: &Bits) -> bool {
        self.twins
            .get(self.twin_group[op])
            .and_then(|group| group.iter().find(|&&twin| !placed.get(twin)))
            == Some(&op)
    }

    fn unlink(&mut self, pos: usize) {
        let (p, n) = (self.prev[pos], self.next[pos]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, pos: usize) {
        let (p, n) = (self.prev[pos], self.next[pos]);
        self.next[p] = pos;
        self.prev[n] = pos;
    }

    /// Removes both events of an operation that has just been placed.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_pos[op]);
        self.unlink(self.ret_pos[op]);
    }

    /// Undoes [`Search::lift`]; must be called in the reverse order of the lifts.
    fn unlift(&mut self, op: usize) {
        self.relink(self.ret_pos[op]);
        self.relink(self.call_pos[op]);
    }

    /// Runs the search: `Some(true)` linearizable, `Some(false)` not, `None` out of budget.
    fn run(&mut self, max_steps: u64) -> Option<bool> {
        let actions = &self.prepared.actions;
        let mut remaining = actions.iter().filter(|a| a.is_definite()).count();
        let mut memo = Memo::new(actions.len());
        // Placed operations with the state before each of them.
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut state = INITIAL;
        let mut entry = self.next[HEAD];
        // Candidates are tried in two rounds: first the operations with a definite outcome,
        // then (when those are exhausted) the ones with unknown outcome. Trying "the unknown
        // write did not happen (yet)" first lets the memo prune the many equivalent orders
        // in which an unknown write takes effect and is then overwritten.
        let mut unknown_round = false;
        let mut steps: u64 = 0;
        while remaining > 0 {
            if entry == self.tail {
                // Every remaining event was walked past without meeting a deadline. This
                // cannot happen while a definite operation is unplaced (its return event
                // would have been met first), so treat it as a budget problem, not a verdict.
                return None;
            }
            let op = self.entry_op[entry];
            let definite = actions[op].is_definite();
            if self.entry_is_call[entry] {
                let candidate = if definite {
                    !unknown_round
                } else {
                    unknown_round && self.first_unplaced_twin(op, &memo.unknown)
                };
                if candidate {
                    steps += 1;
                    if steps > max_steps {
                        return None;
                    }
                    if let Some(after) = step(state, actions[op]) {
                        // Placing `op` right after an unknown-outcome operation that it does
                        // not depend on leads to a configuration dominated by placing `op`
                        // without it (see `Memo`), which the parent configuration explores
                        // anyway. This stops unobserved unknown writes from being stacked in
                        // every possible combination.
                        let independent = match stack.last() {
                            Some(&(top, before)) if !actions[top].is_definite() => {
                                step(before, actions[op]).is_some_and(|alt| alt.covers(after))
                            }
                            _ => false,
                        };
                        if !independent && memo.place(op, definite, after) {
                            stack.push((op, state));
                            state = after;
                            if definite {
                                remaining -= 1;
                            }
                            self.lift(op);
                            unknown_round = false;
                            entry = self.next[HEAD];
                            continue;
                        }
                    }
                }
                entry = self.next[entry];
            } else if !definite {
                // No deadline for an operation whose answer never came.
                entry = self.next[entry];
            } else if !unknown_round {
                unknown_round = true;
                entry = self.next[HEAD];
            } else {
                steps += 1;
                if steps > max_steps {
                    return None;
                }
                self.note_stuck(&stack, state, op, entry);
                let Some((last, before)) = stack.pop() else {
                    return Some(false);
                };
                state = before;
                let last_definite = actions[last].is_definite();
                memo.unplace(last, last_definite);
                if last_definite {
                    remaining += 1;
                }
                self.unlift(last);
                unknown_round = !last_definite;
                entry = self.next[self.call_pos[last]];
            }
        }
        Some(true)
    }

    /// Remembers the deepest point at which an operation's deadline passed.
    fn note_stuck(&mut self, stack: &[(usize, State)], state: State, blocked: usize, at: usize) {
        if self
            .deepest
            .as_ref()
            .is_some_and(|d| d.prefix.len() >= stack.len())
        {
            return;
        }
        let mut pending = Vec::new();
        let mut pos = self.next[HEAD];
        while pos != at && pos != self.tail {
            let op = self.entry_op[pos];
            if self.entry_is_call[pos] && op != blocked {
                pending.push(op);
            }
            pos = self.next[pos];
        }
        // Operations with a definite outcome first: they are the likelier culprits.
        pending.sort_by_key(|&op| !self.prepared.actions[op].is_definite());
        self.deepest = Some(Stuck {
            prefix: stack.iter().map(|&(op, _)| op).collect(),
            state,
            blocked,
            pending,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 1_000_000;

    fn op(client: u32, call: Call, invoked: u64, completed: Option<u64>, result: Outcome) -> Op {
        Op {
            client,
            key: "k".to_string(),
            call,
            invoked_us: invoked,
            completed_us: completed,
            result,
        }
    }

    fn put(client: u32, value: &str, t0: u64, t1: u64, revision: u64) -> Op {
        op(
            client,
            Call::Put {
                value: value.to_string(),
            },
            t0,
            Some(t1),
            Outcome::Written { revision },
        )
    }

    fn put_unknown(client: u32, value: &str, t0: u64) -> Op {
        op(
            client,
            Call::Put {
                value: value.to_string(),
            },
            t0,
            None,
            Outcome::Unknown,
        )
    }

    fn cas(client: u32, expected: u64, value: &str, t0: u64, t1: u64, result: Outcome) -> Op {
        let completed = (result != Outcome::Unknown).then_some(t1);
        op(
            client,
            Call::Cas {
                expected,
                value: value.to_string(),
            },
            t0,
            completed,
            result,
        )
    }

    fn read(client: u32, value: Option<&str>, t0: u64, t1: u64, revision: u64) -> Op {
        op(
            client,
            Call::Read,
            t0,
            Some(t1),
            Outcome::Read {
                value: value.map(str::to_string),
                revision,
            },
        )
    }

    fn is_violation(v: &Verdict) -> bool {
        matches!(v, Verdict::Violation { .. })
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_key(&[], BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn sequential_history_passes() {
        let h = vec![
            read(1, None, 0, 5, 0),
            cas(1, 0, "a", 10, 15, Outcome::Written { revision: 3 }),
            read(2, Some("a"), 20, 25, 3),
            put(2, "b", 30, 35, 7),
            cas(1, 3, "c", 40, 45, Outcome::Mismatch),
            cas(1, 7, "c", 50, 55, Outcome::Written { revision: 9 }),
            read(3, Some("c"), 60, 65, 9),
        ];
        assert_eq!(check_key(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_writes_pass_in_either_order() {
        // Two overlapping writes; the revisions decide their order, and a read overlapping
        // both may see either intermediate value.
        for (rev_x, rev_y) in [(1, 2), (2, 1)] {
            let last = if rev_x > rev_y { "x" } else { "y" };
            let first = if rev_x > rev_y { "y" } else { "x" };
            let h = vec![
                put(1, "x", 0, 100, rev_x),
                put(2, "y", 10, 90, rev_y),
                read(3, Some(first), 5, 95, 1),
                read(4, Some(last), 50, 150, 2),
                read(3, Some(last), 200, 210, 2),
            ];
            assert_eq!(check_key(&h, BUDGET), Verdict::Linearizable, "{h:?}");
        }
    }

    #[test]
    fn stale_read_is_a_violation() {
        let h = vec![
            put(1, "old", 0, 10, 1),
            put(1, "new", 20, 30, 2),
            read(2, Some("old"), 40, 50, 1),
        ];
        let verdict = check_key(&h, BUDGET);
        let Verdict::Violation { explanation } = verdict else {
            panic!("expected a violation, got {verdict:?}");
        };
        assert!(explanation.contains("client 2 read"), "{explanation}");
        assert!(explanation.contains("\"new\" at revision 2"), "{explanation}");
    }

    #[test]
    fn read_of_a_value_never_written_is_a_violation() {
        let h = vec![put(1, "a", 0, 10, 1), read(2, Some("ghost"), 20, 30, 1)];
        assert!(is_violation(&check_key(&h, BUDGET)));
    }

    #[test]
    fn lost_acknowledged_write_is_a_violation() {
        let h = vec![
            put(1, "a", 0, 10, 3),
            put(2, "b", 20, 30, 5),
            read(3, Some("a"), 40, 50, 3),
        ];
        assert!(is_violation(&check_key(&h, BUDGET)));
    }

    #[test]
    fn mismatch_when_revision_matched_is_a_violation() {
        let h = vec![put(1, "a", 0, 10, 4), cas(2, 4, "b", 20, 30, Outcome::Mismatch)];
        assert!(is_violation(&check_key(&h, BUDGET)));
        // The same refusal is fine if another write may have slipped in between.
        let h = vec![
            put(1, "a", 0, 10, 4),
            cas(2, 4, "b", 20, 30, Outcome::Mismatch),
            put(3, "c", 15, 25, 6),
        ];
        assert_eq!(check_key(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn cas_on_absent_key_needs_expected_zero() {
        let ok = vec![cas(1, 0, "a", 0, 10, Outcome::Written { revision: 2 })];
        assert_eq!(check_key(&ok, BUDGET), Verdict::Linearizable);
        let bad = vec![cas(1, 1, "a", 0, 10, Outcome::Written { revision: 2 })];
        assert!(is_violation(&check_key(&bad, BUDGET)));
        let bad = vec![cas(1, 0, "a", 0, 10, Outcome::Mismatch)];
        assert!(is_violation(&check_key(&bad, BUDGET)));
    }

    #[test]
    fn unknown_write_that_is_read_later_passes() {
        let h = vec![
            put(1, "a", 0, 10, 1),
            put_unknown(2, "b", 20),
            read(3, Some("a"), 25, 30, 1),
            read(3, Some("b"), 1000, 1010, 2),
            put(1, "c", 2000, 2010, 3),
        ];
        assert_eq!(check_key(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn unknown_write_never_seen_passes() {
        let h = vec![
            put(1, "a", 0, 10, 1),
            put_unknown(2, "b", 20),
            read(3, Some("a"), 1000, 1010, 1),
            put(1, "c", 2000, 2010, 4),
            read(3, Some("c"), 3000, 3010, 4),
        ];
        assert_eq!(check_key(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn unknown_write_cannot_lower_the_revision() {
        // Even a write of unknown outcome gets a revision above the one it replaced.
        let h = vec![
            put(1, "a", 0, 10, 5),
            put_unknown(2, "b", 20),
            read(3, Some("b"), 100, 110, 4),
        ];
        assert!(is_violation(&check_key(&h, BUDGET)));
    }

    #[test]
    fn unknown_cas_only_takes_effect_on_a_match() {
        let h = vec![
            put(1, "a", 0, 10, 5),
            cas(2, 3, "b", 20, 0, Outcome::Unknown),
            read(3, Some("b"), 100, 110, 6),
        ];
        assert!(is_violation(&check_key(&h, BUDGET)));
        let h = vec![
            put(1, "a", 0, 10, 5),
            cas(2, 5, "b", 20, 0, Outcome::Unknown),
            read(3, Some("b"), 100, 110, 6),
        ];
        assert_eq!(check_key(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn unknown_read_is_ignored() {
        let h = vec![
            put(1, "a", 0, 10, 1),
            op(2, Call::Read, 20, None, Outcome::Unknown),
        ];
        assert_eq!(check_key(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn revision_going_backwards_is_a_violation() {
        let h = vec![put(1, "a", 0, 10, 5), put(2, "b", 20, 30, 3)];
        assert!(is_violation(&check_key(&h, BUDGET)));
        let h = vec![put(1, "a", 0, 10, 5), read(2, Some("a"), 20, 30, 4)];
        assert!(is_violation(&check_key(&h, BUDGET)));
    }

    #[test]
    fn malformed_operation_is_reported() {
        let h = vec![op(1, Call::Read, 0, Some(5), Outcome::Mismatch)];
        let verdict = check_key(&h, BUDGET);
        let Verdict::Violation { explanation } = verdict else {
            panic!("expected a violation, got {verdict:?}");
        };
        assert!(explanation.contains("malformed"), "{explanation}");
    }

    #[test]
    fn budget_exhaustion_is_inconclusive() {
        let h = vec![put(1, "a", 0, 10, 1), read(2, Some("a"), 20, 30, 1)];
        assert_eq!(check_key(&h, 1), Verdict::Inconclusive);
    }

    #[test]
    fn check_splits_by_key() {
        let mut h = vec![
            put(1, "a", 0, 10, 1),
            put(1, "b", 20, 30, 2),
            read(2, Some("a"), 40, 50, 1),
        ];
        let mut other = put(3, "z", 0, 10, 3);
        other.key = "other".to_string();
        h.push(other);
        let verdicts = check(&h, BUDGET);
        assert_eq!(verdicts.len(), 2);
        assert_eq!(verdicts[0].0, "k");
        assert!(is_violation(&verdicts[0].1));
        assert_eq!(verdicts[1], ("other".to_string(), Verdict::Linearizable));
    }

    /// Small deterministic pseudo-random generator for the simulated histories.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// (read index, index of the write it observed, state before that write)
    type Observed = (usize, usize, (Option<String>, u64));

    /// A generated history plus, for each read, which write it observed and the key's state
    /// just before that write (used to plant a stale read).
    struct Simulated {
        history: Vec<Op>,
        observed: Vec<Observed>,
    }

    /// Runs `clients` sequential clients against a correct in-memory store of `keys` registers
    /// with a global revision counter. Each operation takes effect at a random instant inside
    /// its interval (or, for unknown outcomes, at a random later instant or never).
    fn simulate(
        seed: u64,
        ops_per_client: usize,
        clients: u32,
        keys: u64,
        unknown_percent: u64,
    ) -> Simulated {
        let mut rng = Rng(seed);
        let mut history = Vec::new();
        // (instant it takes effect, op index)
        let mut effects: Vec<(u64, usize)> = Vec::new();
        for client in 0..clients {
            let mut t = rng.below(100);
            for _ in 0..ops_per_client {
                let key = format!("key{}", rng.below(keys));
                let index = history.len();
                let call = match rng.below(100) {
                    0..=39 => Call::Read,
                    40..=74 => Call::Put {
                        value: format!("v{index}"),
                    },
                    _ => Call::Cas {
                        expected: 0,
                        value: format!("v{index}"),
                    },
                };
                let duration = 1 + rng.below(200);
                let unknown = rng.chance(unknown_percent);
                let effect = if unknown {
                    (!rng.chance(30)).then(|| t + rng.below(1000))
                } else {
                    Some(t + rng.below(duration + 1))
                };
                if let Some(at) = effect {
                    effects.push((at, index));
                }
                history.push(Op {
                    client,
                    key,
                    call,
                    invoked_us: t,
                    completed_us: (!unknown).then_some(t + duration),
                    result: Outcome::Unknown,
                });
                t += duration + rng.below(50);
            }
        }
        effects.sort_unstable();
        let mut revision = 0;
        // key -> (value, revision, index of the last write)
        let mut store: HashMap<String, (Option<String>, u64, Option<usize>)> = HashMap::new();
        let mut observed = Vec::new();
        for (_, index) in effects {
            let op = &mut history[index];
            let unknown = op.completed_us.is_none();
            let entry = store.entry(op.key.clone()).or_insert((None, 0, None));
            match &mut op.call {
                Call::Read => {
                    if !unknown {
                        op.result = Outcome::Read {
                            value: entry.0.clone(),
                            revision: entry.1,
                        };
                    }
                    if let Some(writer) = entry.2 {
                        observed.push((index, writer));
                    }
                }
                Call::Put { value } => {
                    revision += 1;
                    *entry = (Some(value.clone()), revision, Some(index));
                    if !unknown {
                        op.result = Outcome::Written { revision };
                    }
                }
                Call::Cas { expected, value } => {
                    *expected = if rng.chance(60) {
                        entry.1
                    } else {
                        entry.1 + 1 + rng.below(3)
                    };
                    if *expected == entry.1 {
                        revision += 1;
                        *entry = (Some(value.clone()), revision, Some(index));
                        if !unknown {
                            op.result = Outcome::Written { revision };
                        }
                    } else if !unknown {
                        op.result = Outcome::Mismatch;
                    }
                }
            }
        }
        // The state just before each acknowledged write, replaying acknowledged writes in
        // revision order (a write of unknown outcome in between only makes it staler).
        let mut before_write: HashMap<usize, (Option<String>, u64)> = HashMap::new();
        {
            let mut replay: HashMap<&str, (Option<String>, u64)> = HashMap::new();
            let mut order: Vec<usize> = (0..history.len())
                .filter(|&i| matches!(history[i].result, Outcome::Written { .. }))
                .collect();
            order.sort_by_key(|&i| match history[i].result {
                Outcome::Written { revision } => revision,
                _ => 0,
            });
            for i in order {
                let op = &history[i];
                let slot = replay.entry(op.key.as_str()).or_insert((None, 0));
                before_write.insert(i, slot.clone());
                if let (Call::Put { value } | Call::Cas { value, .. }, Outcome::Written { revision }) =
                    (&op.call, &op.result)
                {
                    *slot = (Some(value.clone()), *revision);
                }
            }
        }
        let observed = observed
            .into_iter()
            .filter_map(|(r, w)| before_write.get(&w).map(|b| (r, w, b.clone())))
            .collect();
        Simulated { history, observed }
    }

    /// Reference answer by exhaustive search over orders; only for tiny histories.
    fn brute_force(ops: &[Op]) -> bool {
        let prepared = match Prepared::new(&ops.iter().collect::<Vec<_>>()) {
            Ok(p) => p,
            Err(_) => return false,
        };
        fn go(p: &Prepared, state: State, placed: &mut Vec<bool>) -> bool {
            let n = p.ops.len();
            if (0..n).all(|i| placed[i] || !p.actions[i].is_definite()) {
                return true;
            }
            for i in 0..n {
                if placed[i] {
                    continue;
                }
                // Every definite operation answered before this one was sent goes first.
                let ready = (0..n).all(|a| {
                    placed[a]
                        || !p.actions[a].is_definite()
                        || p.ops[a]
                            .completed_us
                            .is_none_or(|done| done >= p.ops[i].invoked_us)
                });
                if !ready {
                    continue;
                }
                if let Some(after) = step(state, p.actions[i]) {
                    placed[i] = true;
                    let found = go(p, after, placed);
                    placed[i] = false;
                    if found {
                        return true;
                    }
                }
            }
            false
        }
        let mut placed = vec![false; prepared.ops.len()];
        go(&prepared, INITIAL, &mut placed)
    }

    #[test]
    fn search_agrees_with_brute_force_on_small_histories() {
        let mut rng = Rng(0xdead_beef);
        let values = ["a", "b", "c", "d", "e"];
        let (mut yes, mut no) = (0, 0);
        for case in 0..4000 {
            let n = 1 + rng.below(7) as usize;
            let mut ops = Vec::new();
            for i in 0..n {
                let t0 = rng.below(20);
                let t1 = t0 + rng.below(10);
                // Reads only return the first three values, so some writes are never read.
                let value = values[rng.below(5) as usize].to_string();
                let revision = rng.below(5);
                let unknown = rng.chance(25);
                let (call, result) = match rng.below(3) {
                    0 => (
                        Call::Put { value },
                        if unknown {
                            Outcome::Unknown
                        } else {
                            Outcome::Written { revision }
                        },
                    ),
                    1 => (
                        Call::Cas {
                            expected: rng.below(4),
                            value,
                        },
                        if unknown {
                            Outcome::Unknown
                        } else if rng.chance(50) {
                            Outcome::Mismatch
                        } else {
                            Outcome::Written { revision }
                        },
                    ),
                    _ => (
                        Call::Read,
                        if unknown {
                            Outcome::Unknown
                        } else {
                            Outcome::Read {
                                value: (revision > 0).then(|| values[rng.below(3) as usize].to_string()),
                                revision,
                            }
                        },
                    ),
                };
                let completed = (result != Outcome::Unknown).then_some(t1);
                ops.push(op(i as u32, call, t0, completed, result));
            }
            let expected = brute_force(&ops);
            let verdict = check_key(&ops, BUDGET);
            assert_eq!(
                verdict == Verdict::Linearizable,
                expected,
                "case {case}: {ops:#?} gave {verdict:?}"
            );
            assert_ne!(verdict, Verdict::Inconclusive);
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        // Make sure the generator exercises both answers.
        assert!(yes > 300 && no > 300, "{yes} linearizable, {no} not");
    }

    #[test]
    fn simulated_correct_history_is_linearizable() {
        for seed in [0x5eed_u64, 42, 7] {
            let sim = simulate(seed, 250, 8, 5, 2);
            assert_eq!(sim.history.len(), 2000);
            let started = std::time::Instant::now();
            let verdicts = check(&sim.history, 2_000_000);
            let elapsed = started.elapsed();
            assert_eq!(verdicts.len(), 5);
            for (key, verdict) in &verdicts {
                assert_eq!(verdict, &Verdict::Linearizable, "seed {seed} key {key}");
            }
            eprintln!("seed {seed}: 2000 ops checked in {elapsed:?}");
        }
    }

    /// Plants a stale read: a read that started after the write it observed had been
    /// acknowledged now returns the state from before that write. `pick` chooses among the
    /// suitable reads (0 = earliest in the history).
    fn plant_stale_read(sim: &mut Simulated, pick: impl Fn(usize) -> usize) -> usize {
        let suitable: Vec<&Observed> = sim
            .observed
            .iter()
            .filter(|(r, w, _)| {
                let (r, w) = (&sim.history[*r], &sim.history[*w]);
                matches!(r.result, Outcome::Read { .. })
                    && matches!(w.result, Outcome::Written { .. })
                    && w.completed_us.is_some_and(|done| done < r.invoked_us)
            })
            .collect();
        assert!(!suitable.is_empty(), "the simulation produces suitable reads");
        let (read_index, _, (value, revision)) = suitable[pick(suitable.len())].clone();
        sim.history[read_index].result = Outcome::Read { value, revision };
        read_index
    }

    fn assert_only_violation_at(sim: &Simulated, read_index: usize, budget: u64) {
        let key = &sim.history[read_index].key;
        let client = sim.history[read_index].client;
        for (k, verdict) in check(&sim.history, budget) {
            if k == *key {
                let Verdict::Violation { explanation } = verdict else {
                    panic!("expected a violation on {k}, got {verdict:?}");
                };
                assert!(
                    explanation.contains(&format!("client {client} read")),
                    "{explanation}"
                );
            } else {
                assert_eq!(verdict, Verdict::Linearizable, "key {k}");
            }
        }
    }

    #[test]
    fn simulated_history_with_a_stale_read_is_a_violation() {
        for pick in [|n: usize| n - 1, |n: usize| n / 2, |_: usize| 0] {
            let mut sim = simulate(0x5eed, 250, 8, 5, 2);
            let read_index = plant_stale_read(&mut sim, pick);
            let started = std::time::Instant::now();
            assert_only_violation_at(&sim, read_index, 2_000_000);
            eprintln!("mutated history checked in {:?}", started.elapsed());
        }
    }

    #[test]
    fn many_unknown_writes_stay_tractable() {
        // A fault-heavy run: half of the writes time out. Every one of them may take effect
        // anywhere later, or never, which is what makes a violation expensive to confirm.
        for percent in [10, 50] {
            let sim = simulate(99, 250, 8, 5, percent);
            for (key, verdict) in check(&sim.history, 2_000_000) {
                assert_eq!(verdict, Verdict::Linearizable, "key {key}");
            }
            for pick in [|n: usize| n - 1, |n: usize| n / 2] {
                let mut sim = simulate(99, 250, 8, 5, percent);
                let started = std::time::Instant::now();
                let read_index = plant_stale_read(&mut sim, pick);
                assert_only_violation_at(&sim, read_index, 2_000_000);
                eprintln!(
                    "mutated history with {percent}% unknown checked in {:?}",
                    started.elapsed()
                );
            }
        }
    }
}
