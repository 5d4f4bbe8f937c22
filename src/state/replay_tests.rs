//! Determinism: the same sequence of requests gives the same state on every replica, whether it
//! started from nothing or from a snapshot taken anywhere along the way. Requests are random:
//! every command kind, compare-and-set that fails, retries of the same (client, request id),
//! ids that collide across clients, lease expiries, invalid input.

use proptest::prelude::*;

use super::activation::Timing;
use super::catalog::{FeatureSpec, Requirement};
use super::command::{Command, Request};
use super::definition::FlagDefinition;
use super::registry::InstanceSpec;
use super::State;

const FEATURES: [&str; 3] = ["checkout", "search", "cart-v2"];

fn feature() -> impl Strategy<Value = String> {
    prop::sample::select(FEATURES.to_vec()).prop_map(str::to_string)
}

fn expected() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), Just(Some(0)), (0u64..12).prop_map(Some)]
}

fn timing() -> impl Strategy<Value = Timing> {
    prop_oneof![
        Just(Timing::Immediate),
        (0u64..2000).prop_map(|d| Timing::Synchronized {
            switch_delay_ms: Some(d)
        }),
        (0i64..5000).prop_map(|at_ms| Timing::At { at_ms }),
        any::<bool>().prop_map(|allow_empty| Timing::WhenReady {
            allow_empty,
            switch_delay_ms: None
        }),
    ]
}

/// Whose leases a registry command may touch: anyone's, or one of two identities'.
fn owner_scope() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec![
        "token:a".to_string(),
        "token:b".to_string(),
    ]))
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (feature(), expected(), prop::option::of("cart>=[12]\\.0")).prop_map(
            |(name, expected_revision, req)| {
                Command::PutFeature {
                    feature: FeatureSpec {
                        name,
                        requirements: req
                            .into_iter()
                            .filter_map(|r| Requirement::parse_cli(&r).ok())
                            .collect(),
                        ..Default::default()
                    },
                    expected_revision,
                }
            }
        ),
        (feature(), expected()).prop_map(|(name, expected_revision)| Command::DeleteFeature {
            name,
            expected_revision
        }),
        (feature(), any::<bool>(), expected(), timing()).prop_map(
            |(feature, on, expected_revision, timing)| {
                Command::SetToggle {
                    feature,
                    definition: FlagDefinition::boolean(on),
                    expected_revision,
                    timing,
                }
            }
        ),
        (feature(), any::<bool>(), timing()).prop_map(|(feature, enabled, timing)| Command::SetToggleState {
            feature,
            enabled,
            expected_revision: None,
            timing,
        }),
        feature().prop_map(|feature| Command::CancelActivation { feature }),
        (feature(), prop::option::of(0u64..30)).prop_map(|(feature, to_revision)| Command::Rollback {
            feature,
            to_revision,
            timing: Timing::Immediate,
        }),
        (
            1u64..6,
            500u64..20_000,
            prop::sample::select(vec!["", "token:a", "token:b"])
        )
            .prop_map(|(id, ttl_ms, owner)| Command::GrantLease {
                id,
                ttl_ms,
                owner: owner.into()
            }),
        (1u64..6, any::<bool>(), owner_scope()).prop_map(|(lease, expired, scope)| Command::RevokeLease {
            lease,
            expired,
            scope
        }),
        (
            0u8..5,
            1u64..6,
            prop::sample::select(vec!["1.0.0", "2.1.0", "banana"]),
            owner_scope()
        )
            .prop_map(|(i, lease, version, scope)| Command::Register {
                instance: InstanceSpec {
                    id: format!("cart-{i}"),
                    service: "cart".into(),
                    version: version.into(),
                    labels: Default::default(),
                },
                lease,
                scope,
            }),
        (0u8..5, owner_scope()).prop_map(|(i, scope)| Command::Deregister {
            instance: format!("cart-{i}"),
            scope
        }),
    ]
}

/// A log of requests: clients "a" and "b" count request ids from 1 each (so ids collide across
/// them), some requests are retried later with the same id, some carry no client id.
fn log() -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec((command(), 0u8..3, any::<bool>(), 0i64..400), 1..80).prop_map(|items| {
        let mut next = [1u64, 1, 1];
        let mut at = 1_000i64;
        let mut out: Vec<Request> = Vec::new();
        for (command, client, retry, step) in items {
            at += step;
            let client_id = ["a", "b", ""][client as usize].to_string();
            let previous = out
                .iter()
                .rev()
                .find(|r| r.client_id == client_id && !client_id.is_empty());
            let (request_id, command) = match previous {
                Some(p) if retry => (p.request_id, p.command.clone()),
                _ => {
                    let id = next[client as usize];
                    next[client as usize] += 1;
                    (id, command)
                }
            };
            out.push(Request {
                client_id,
                request_id,
                proposed_at_ms: at,
                actor: "tester".into(),
                reason: String::new(),
                command,
            });
        }
        out
    })
}

/// Encodes and decodes a state as a snapshot does.
fn through_snapshot(state: &State) -> State {
    let bytes = crate::raft::encode(state).expect("encode");
    crate::raft::decode(&bytes).expect("decode")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Two fresh replicas, and replicas restored from a snapshot at any point, hold the same
    /// state (digest, revision, answers) after every entry.
    #[test]
    fn the_same_log_gives_the_same_state(log in log(), cut in any::<prop::sample::Index>()) {
        let mut a = State::default();
        let mut b = State::default();
        let cut = cut.index(log.len());
        let mut restored: Option<State> = None;
        for (i, req) in log.iter().enumerate() {
            if i == cut {
                restored = Some(through_snapshot(&a));
            }
            let answer = a.apply(req);
            prop_assert_eq!(&answer, &b.apply(req), "entry {}: {}", i, req);
            a.take_events();
            b.take_events();
            prop_assert_eq!(a.digest(), b.digest());
            if let Some(r) = restored.as_mut() {
                prop_assert_eq!(&answer, &r.apply(req), "entry {} after a snapshot at {}", i, cut);
                r.take_events();
                prop_assert_eq!(r.digest(), a.digest(), "entry {} after a snapshot at {}", i, cut);
                prop_assert_eq!(r.revision(), a.revision());
            }
        }
        prop_assert_eq!(&through_snapshot(&a), &a);
    }

    /// A retried request (same client, same id) is answered as the first time and changes
    /// nothing, however many other writes came between.
    #[test]
    fn a_retry_changes_nothing(log in log(), pick in any::<prop::sample::Index>()) {
        let mut s = State::default();
        let mut answers = Vec::new();
        for req in &log {
            answers.push(s.apply(req));
        }
        let i = pick.index(log.len());
        let req = &log[i];
        prop_assume!(!req.client_id.is_empty());
        // The first answer to that (client, id) pair is the one a retry must get.
        let first = log.iter().position(|r| r.client_id == req.client_id && r.request_id == req.request_id).unwrap_or(i);
        let before = (s.digest(), s.revision());
        let again = s.apply(req);
        prop_assert_eq!(&again, &answers[first]);
        prop_assert_eq!((s.digest(), s.revision()), before);
    }
}
