//! The replicated state machine: the cluster revision, the feature catalog, toggles and their
//! history, and the client sessions that make retried writes apply once.
//!
//! [`State::apply`] is a pure function of the state and one [`Request`]: no IO, no clock (time
//! comes in the request), no randomness. Every replica that applies the same log holds the same
//! state, which [`State::digest`] makes visible.

pub mod catalog;
pub mod command;
pub mod definition;
pub mod toggle;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use catalog::Feature;
use command::{Applied, Command, Outcome, Request, Response};
use definition::FlagDefinition;
use toggle::{History, HistoryEntry, Toggle};

/// How long a client session is remembered after its last write (ms of proposed time).
pub const SESSION_TTL_MS: i64 = 60 * 60 * 1000;
/// Sessions are swept of expired entries once every this many applied requests.
const SESSION_SWEEP_EVERY: u64 = 1024;

/// The last write of one client session, to answer a retry without applying it twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Session {
    request_id: u64,
    last_seen_ms: i64,
    response: Response,
}

/// The whole replicated application state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    revision: u64,
    applied_requests: u64,
    features: BTreeMap<String, Feature>,
    toggles: BTreeMap<String, Toggle>,
    history: BTreeMap<String, History>,
    sessions: BTreeMap<String, Session>,
}

impl State {
    /// The cluster revision: +1 for every applied change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A catalog entry.
    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.get(name)
    }

    /// All catalog entries, by name.
    pub fn features(&self) -> impl Iterator<Item = &Feature> {
        self.features.values()
    }

    /// A feature's toggle.
    pub fn toggle(&self, feature: &str) -> Option<&Toggle> {
        self.toggles.get(feature)
    }

    /// All toggles, by feature name.
    pub fn toggles(&self) -> impl Iterator<Item = &Toggle> {
        self.toggles.values()
    }

    /// A feature's history, oldest first.
    pub fn history(&self, feature: &str) -> Option<&History> {
        self.history.get(feature)
    }

    /// SHA-256 of the encoded state, hex: equal on every replica that applied the same log.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        // Encoding a tree of owned, ordered maps cannot fail; if it ever did, the digest of the
        // error text still differs from every healthy replica's, which is what an operator needs.
        match bincode::serialize(self) {
            Ok(bytes) => hasher.update(&bytes),
            Err(e) => hasher.update(e.to_string().as_bytes()),
        }
        hex::encode(hasher.finalize())
    }

    /// Applies one request and answers it. A rejected command changes nothing but the session
    /// table (so its retry gets the same rejection).
    pub fn apply(&mut self, req: &Request) -> Response {
        self.applied_requests += 1;
        if self.applied_requests.is_multiple_of(SESSION_SWEEP_EVERY) {
            let now = req.proposed_at_ms;
            self.sessions
                .retain(|_, s| now.saturating_sub(s.last_seen_ms) < SESSION_TTL_MS);
        }
        if !req.client_id.is_empty() {
            if let Some(s) = self.sessions.get(&req.client_id) {
                if req.request_id == s.request_id {
                    return s.response.clone();
                }
                if req.request_id < s.request_id {
                    return Err(Error::FailedPrecondition(format!(
                        "request {} of client {} is older than its last request {}; it was not applied",
                        req.request_id, req.client_id, s.request_id
                    )));
                }
            }
        }
        let response = self.execute(req);
        if !req.client_id.is_empty() {
            self.sessions.insert(
                req.client_id.clone(),
                Session {
                    request_id: req.request_id,
                    last_seen_ms: req.proposed_at_ms,
                    response: response.clone(),
                },
            );
        }
        response
    }

    fn execute(&mut self, req: &Request) -> Response {
        match &req.command {
            Command::PutFeature {
                feature,
                expected_revision,
            } => {
                // Checked again here (the API checks first) so a log written by a buggy or
                // hostile client cannot store an invalid entry.
                feature.validate()?;
                let current = self
                    .features
                    .get(&feature.name)
                    .map(|f| (f.revision, f.created_revision));
                check_revision(&feature.name, *expected_revision, current.map_or(0, |c| c.0))?;
                let revision = self.next_revision();
                let stored = Feature {
                    spec: feature.clone(),
                    revision,
                    created_revision: current.map_or(revision, |c| c.1),
                };
                self.features.insert(feature.name.clone(), stored.clone());
                self.record(&feature.name, req, None);
                Ok(Applied {
                    revision,
                    outcome: Outcome::Feature(stored),
                })
            }
            Command::DeleteFeature {
                name,
                expected_revision,
            } => {
                let current = self.features.get(name).ok_or_else(|| not_found_feature(name))?;
                check_revision(name, *expected_revision, current.revision)?;
                let revision = self.next_revision();
                self.features.remove(name);
                self.toggles.remove(name);
                self.history.remove(name);
                Ok(Applied {
                    revision,
                    outcome: Outcome::Deleted,
                })
            }
            Command::SetToggle {
                feature,
                definition,
                expected_revision,
            } => self.set_toggle(req, feature, *expected_revision, |_| definition.clone()),
            Command::SetToggleState {
                feature,
                enabled,
                expected_revision,
            } => self.set_toggle(req, feature, *expected_revision, |current| match current {
                Some(t) => t.definition.with_state(*enabled),
                None => FlagDefinition::boolean(*enabled),
            }),
        }
    }

    fn set_toggle(
        &mut self,
        req: &Request,
        feature: &str,
        expected_revision: Option<u64>,
        definition: impl FnOnce(Option<&Toggle>) -> FlagDefinition,
    ) -> Response {
        if !self.features.contains_key(feature) {
            return Err(not_found_feature(feature));
        }
        let current = self.toggles.get(feature);
        check_revision(
            &format!("toggle {feature}"),
            expected_revision,
            current.map_or(0, |t| t.revision),
        )?;
        let definition = definition(current);
        let revision = self.next_revision();
        let toggle = Toggle {
            feature: feature.to_string(),
            definition: definition.clone(),
            revision,
            effective_at_ms: req.proposed_at_ms,
        };
        self.toggles.insert(feature.to_string(), toggle.clone());
        self.record(feature, req, Some(definition));
        Ok(Applied {
            revision,
            outcome: Outcome::Toggle(toggle),
        })
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn record(&mut self, feature: &str, req: &Request, definition: Option<FlagDefinition>) {
        self.history
            .entry(feature.to_string())
            .or_default()
            .push(HistoryEntry {
                revision: self.revision,
                at_ms: req.proposed_at_ms,
                actor: req.actor.clone(),
                change: req.command.kind().to_string(),
                reason: req.reason.clone(),
                definition,
            });
    }
}

fn not_found_feature(name: &str) -> Error {
    Error::NotFound(format!("feature {name:?} is not in the catalog"))
}

fn check_revision(object: &str, expected: Option<u64>, current: u64) -> Result<(), Error> {
    match expected {
        Some(expected) if expected != current => Err(Error::RevisionMismatch {
            object: object.to_string(),
            expected,
            current,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::catalog::{FeatureSpec, Requirement};
    use super::*;

    fn req(client: &str, id: u64, command: Command) -> Request {
        Request {
            client_id: client.into(),
            request_id: id,
            proposed_at_ms: 1_000,
            actor: "tester".into(),
            reason: String::new(),
            command,
        }
    }

    fn put(name: &str, expected: Option<u64>) -> Command {
        Command::PutFeature {
            feature: FeatureSpec {
                name: name.into(),
                requirements: vec![Requirement::parse_cli("cart>=2").unwrap()],
                ..Default::default()
            },
            expected_revision: expected,
        }
    }

    #[test]
    fn revisions_count_changes_only() {
        let mut s = State::default();
        assert_eq!(s.apply(&req("", 0, put("a", None))).unwrap().revision, 1);
        assert!(s.apply(&req("", 0, put("b", Some(7)))).is_err());
        assert_eq!(s.revision(), 1);
        assert!(s.feature("b").is_none());
        let on = Command::SetToggleState {
            feature: "a".into(),
            enabled: true,
            expected_revision: None,
        };
        assert_eq!(s.apply(&req("", 0, on)).unwrap().revision, 2);
        assert!(s.toggle("a").unwrap().definition.enabled());
    }

    #[test]
    fn retried_request_applies_once() {
        let mut s = State::default();
        let first = s.apply(&req("c1", 1, put("a", Some(0))));
        let again = s.apply(&req("c1", 1, put("a", Some(0))));
        assert_eq!(first, again);
        assert_eq!(s.revision(), 1);
        assert!(s.apply(&req("c1", 0, put("z", None))).is_err());
        assert!(s.feature("z").is_none());
    }

    #[test]
    fn compare_and_set_has_one_winner() {
        let mut s = State::default();
        s.apply(&req("", 0, put("a", None))).unwrap();
        let rev = s.feature("a").unwrap().revision;
        assert!(s.apply(&req("w1", 1, put("a", Some(rev)))).is_ok());
        assert!(matches!(
            s.apply(&req("w2", 1, put("a", Some(rev)))),
            Err(Error::RevisionMismatch { .. })
        ));
    }

    #[test]
    fn toggle_needs_a_feature_and_delete_removes_everything() {
        let mut s = State::default();
        let on = || Command::SetToggleState {
            feature: "a".into(),
            enabled: true,
            expected_revision: None,
        };
        assert!(matches!(s.apply(&req("", 0, on())), Err(Error::NotFound(_))));
        s.apply(&req("", 0, put("a", None))).unwrap();
        s.apply(&req("", 0, on())).unwrap();
        assert_eq!(s.history("a").unwrap().entries().count(), 2);
        let del = Command::DeleteFeature {
            name: "a".into(),
            expected_revision: None,
        };
        s.apply(&req("", 0, del)).unwrap();
        assert!(s.toggle("a").is_none() && s.history("a").is_none());
    }

    #[test]
    fn digest_tracks_content() {
        let mut a = State::default();
        let mut b = State::default();
        assert_eq!(a.digest(), b.digest());
        a.apply(&req("", 0, put("x", None))).unwrap();
        assert_ne!(a.digest(), b.digest());
        b.apply(&req("", 0, put("x", None))).unwrap();
        assert_eq!(a.digest(), b.digest());
    }
}
