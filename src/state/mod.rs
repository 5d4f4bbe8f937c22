//! The replicated state machine: the cluster revision, the feature catalog, toggles and their
//! history, the service registry and leases, pending activations and the readiness gate, and
//! the client sessions that make retried writes apply once.
//!
//! [`State::apply`] is a pure function of the state and one [`Request`]: no IO, no clock (time
//! comes in the request), no randomness. Every replica that applies the same log holds the same
//! state, which [`State::digest`] makes visible.

pub mod activation;
pub mod auth;
pub mod catalog;
pub mod command;
pub mod definition;
pub mod event;
pub mod registry;
pub mod toggle;

#[cfg(test)]
mod replay_tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use activation::{PendingActivation, Readiness, Timing};
use catalog::{Feature, FeatureSpec};
use command::{Applied, Command, Outcome, Request, Response};
use definition::FlagDefinition;
use event::{Change, Event};
use registry::Registry;
use toggle::{History, HistoryEntry, Toggle};

/// Most bytes the catalog and the toggles may hold together (what `feature list`, `toggle list`
/// and a watch snapshot carry): a write that would pass it is refused with
/// `RESOURCE_EXHAUSTED`, so every answer a client asks for fits the clients' 64 MiB limit.
pub const MAX_CATALOG_BYTES: usize = 16 * 1024 * 1024;

/// How long a client session is remembered after its last write (ms of proposed time).
pub const SESSION_TTL_MS: i64 = 60 * 60 * 1000;
/// Sessions are swept of expired entries once every this many applied requests.
const SESSION_SWEEP_EVERY: u64 = 1024;

/// Answers remembered per client session: a client may have this many writes in flight at
/// once (their ids may arrive in any order) and still have each retry answered, not re-applied.
pub const SESSION_WINDOW: usize = 128;

/// The recent writes of one client session, to answer a retry without applying it twice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Session {
    last_seen_ms: i64,
    responses: BTreeMap<u64, Response>,
}

/// The whole replicated application state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    revision: u64,
    applied_requests: u64,
    features: BTreeMap<String, Feature>,
    toggles: BTreeMap<String, Toggle>,
    history: BTreeMap<String, History>,
    pending: BTreeMap<String, PendingActivation>,
    registry: Registry,
    sessions: BTreeMap<String, Session>,
    auth: auth::AuthState,
    /// Events of the last applied request, drained by the store (not part of the state).
    #[serde(skip)]
    events: Vec<Event>,
}

impl State {
    /// The cluster revision: +1 for every applied change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Authentication settings and credentials.
    pub fn auth(&self) -> &auth::AuthState {
        &self.auth
    }

    /// The answer to an authentication change: it takes no revision.
    fn auth_changed(&self) -> Applied {
        Applied {
            revision: self.revision,
            outcome: Outcome::AuthChanged,
            committed_at_us: 0,
        }
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

    /// SHA-256 of the replicated data (revision, catalog, toggles, history, pending activations,
    /// registry, authentication), hex: equal on every replica at the same applied index. Client sessions are left
    /// out: they only remember answers to retries, and a rejected write, which changes no data
    /// and no revision, must not change the digest either.
    pub fn digest(&self) -> String {
        #[derive(Serialize)]
        struct Data<'a> {
            revision: u64,
            features: &'a BTreeMap<String, Feature>,
            toggles: &'a BTreeMap<String, Toggle>,
            history: &'a BTreeMap<String, History>,
            pending: &'a BTreeMap<String, PendingActivation>,
            registry: &'a Registry,
            auth: &'a auth::AuthState,
        }
        let data = Data {
            revision: self.revision,
            features: &self.features,
            toggles: &self.toggles,
            history: &self.history,
            pending: &self.pending,
            registry: &self.registry,
            auth: &self.auth,
        };
        let mut hasher = Sha256::new();
        // Encoding a tree of owned, ordered maps cannot fail; if it ever did, the digest of the
        // error text still differs from every healthy replica's, which is what an operator needs.
        match bincode::serialize(&data) {
            Ok(bytes) => hasher.update(&bytes),
            Err(e) => hasher.update(e.to_string().as_bytes()),
        }
        hex::encode(hasher.finalize())
    }

    /// Takes the events recorded by the last [`State::apply`] calls.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn emit(&mut self, change: Change) {
        self.events.push(Event {
            revision: self.revision,
            change,
        });
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
                if let Some(previous) = s.responses.get(&req.request_id) {
                    return previous.clone();
                }
                let oldest = s.responses.keys().next().copied().unwrap_or(0);
                if s.responses.len() == SESSION_WINDOW && req.request_id < oldest {
                    // Its answer (if it was applied) is no longer remembered: refusing is the
                    // only way to be sure it is not applied twice.
                    return Err(Error::FailedPrecondition(format!(
                        "request {} of client {} is older than the {SESSION_WINDOW} remembered; it was not applied",
                        req.request_id, req.client_id
                    )));
                }
            }
        }
        let response = self.execute(req);
        if !req.client_id.is_empty() {
            let s = self.sessions.entry(req.client_id.clone()).or_default();
            s.last_seen_ms = req.proposed_at_ms;
            s.responses.insert(req.request_id, response.clone());
            while s.responses.len() > SESSION_WINDOW {
                s.responses.pop_first();
            }
        }
        response
    }

    fn execute(&mut self, req: &Request) -> Response {
        let applied = match &req.command {
            Command::PutFeature {
                feature,
                expected_revision,
            } => {
                // Checked again here (the API checks first) so a log written by a buggy or
                // hostile client cannot store an invalid entry.
                feature.validate()?;
                let old = self
                    .features
                    .get(&feature.name)
                    .map_or(0, |f| feature_bytes(&f.spec));
                self.check_catalog_room(old, feature_bytes(feature))?;
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
                self.emit(Change::Feature(stored.clone()));
                self.record(&feature.name, req, req.command.kind(), None);
                Applied {
                    revision,
                    outcome: Outcome::Feature(stored),
                    committed_at_us: 0,
                }
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
                self.emit(Change::FeatureDeleted(name.clone()));
                self.history.remove(name);
                self.pending.remove(name);
                Applied {
                    revision,
                    outcome: Outcome::Deleted,
                    committed_at_us: 0,
                }
            }
            Command::SetToggle {
                feature,
                definition,
                expected_revision,
                timing,
            } => self.change_toggle(
                req,
                feature,
                *expected_revision,
                *timing,
                Some(definition.clone()),
            )?,
            Command::SetToggleState {
                feature,
                enabled: true,
                expected_revision,
                timing,
            } => self.change_toggle(req, feature, *expected_revision, *timing, None)?,
            Command::SetToggleState {
                feature,
                enabled: false,
                expected_revision,
                timing,
            } => {
                // The kill switch also drops a pending activation: "off" means off.
                let definition = self.toggles.get(feature).map(|t| t.definition.with_state(false));
                let definition = definition.unwrap_or_else(|| FlagDefinition::boolean(false));
                let applied =
                    self.change_toggle(req, feature, *expected_revision, *timing, Some(definition))?;
                self.pending.remove(feature);
                applied
            }
            Command::CancelActivation { feature } => {
                if self.pending.remove(feature).is_none() {
                    return Err(Error::NotFound(format!(
                        "feature {feature:?} has no pending activation"
                    )));
                }
                let revision = self.next_revision();
                self.record(feature, req, req.command.kind(), None);
                Applied {
                    revision,
                    outcome: Outcome::Cancelled,
                    committed_at_us: 0,
                }
            }
            Command::Rollback {
                feature,
                to_revision,
                timing,
            } => {
                let definition = self.rollback_target(feature, *to_revision)?;
                let applied = self.change_toggle(req, feature, None, *timing, Some(definition))?;
                self.pending.remove(feature);
                applied
            }
            Command::GrantLease { id, ttl_ms, owner } => {
                let lease = self.registry.grant(*id, *ttl_ms, owner, self.revision + 1)?;
                Applied {
                    revision: self.next_revision(),
                    outcome: Outcome::Lease(lease),
                    committed_at_us: 0,
                }
            }
            Command::RevokeLease { lease, scope, .. } => {
                let removed = self.registry.revoke(*lease, scope.as_deref())?;
                let revision = self.next_revision();
                for i in &removed {
                    self.emit(Change::InstanceGone {
                        id: i.spec.id.clone(),
                        service: i.spec.service.clone(),
                    });
                }
                Applied {
                    revision,
                    outcome: Outcome::Revoked(removed.into_iter().map(|i| i.spec.id).collect()),
                    committed_at_us: 0,
                }
            }
            Command::Register {
                instance,
                lease,
                scope,
            } => {
                let instance =
                    self.registry
                        .register(instance.clone(), *lease, scope.as_deref(), self.revision + 1)?;
                let revision = self.next_revision();
                // Registry watchers (and the gate's observers) see every instance come, not
                // only go.
                self.emit(Change::Instance(instance.clone()));
                Applied {
                    revision,
                    outcome: Outcome::Instance(Box::new(instance)),
                    committed_at_us: 0,
                }
            }
            Command::Deregister { instance, scope } => {
                let gone = self.registry.deregister(instance, scope.as_deref())?;
                let revision = self.next_revision();
                self.emit(Change::InstanceGone {
                    id: gone.spec.id,
                    service: gone.spec.service,
                });
                Applied {
                    revision,
                    outcome: Outcome::Deregistered,
                    committed_at_us: 0,
                }
            }
            Command::SetAuthEnabled { enabled } => {
                self.auth.set_enabled(*enabled, req.proposed_at_ms)?;
                return Ok(self.auth_changed());
            }
            Command::CreateToken { token } => {
                self.auth.add_token(token.clone())?;
                return Ok(self.auth_changed());
            }
            Command::RevokeToken { id } => {
                self.auth.revoke_token(id, req.proposed_at_ms)?;
                return Ok(self.auth_changed());
            }
            Command::MapCertificate { identity, role } => {
                self.auth
                    .map_certificate(identity, role.clone(), req.proposed_at_ms)?;
                return Ok(self.auth_changed());
            }
        };
        // Every change to the registry, the catalog or the pending set may open the gate; the
        // activations it opens take effect at this very revision.
        if !self.pending.is_empty() {
            self.fire_ready(req);
        }
        Ok(applied)
    }

    /// Changes a feature's toggle: `definition` None means "the current one, ENABLED". A
    /// `WhenReady` timing stores a pending activation unless the feature is ready now.
    fn change_toggle(
        &mut self,
        req: &Request,
        feature: &str,
        expected_revision: Option<u64>,
        timing: Timing,
        definition: Option<FlagDefinition>,
    ) -> Result<Applied, Error> {
        timing.validate()?;
        let spec = self
            .features
            .get(feature)
            .ok_or_else(|| not_found_feature(feature))?;
        let current = self.toggles.get(feature);
        check_revision(
            &format!("toggle {feature}"),
            expected_revision,
            current.map_or(0, |t| t.revision),
        )?;
        if let Timing::WhenReady {
            allow_empty,
            switch_delay_ms,
        } = timing
        {
            if spec.spec.requirements.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "feature {feature:?} has no requirements, so there is nothing to wait for: activate it --now"
                )));
            }
            if !activation::readiness(spec, &self.registry, allow_empty, true).ready {
                let pending = PendingActivation {
                    feature: feature.to_string(),
                    allow_empty,
                    switch_delay_ms: switch_delay_ms.unwrap_or(activation::DEFAULT_SWITCH_DELAY_MS),
                    definition,
                    requested_revision: self.revision + 1,
                    requested_at_ms: req.proposed_at_ms,
                    actor: req.actor.clone(),
                    reason: req.reason.clone(),
                };
                self.pending.insert(feature.to_string(), pending.clone());
                let revision = self.next_revision();
                self.record(feature, req, "activation.pending", None);
                return Ok(Applied {
                    revision,
                    outcome: Outcome::Pending(pending),
                    committed_at_us: 0,
                });
            }
        }
        if let Some(d) = &definition {
            let old = self
                .toggles
                .get(feature)
                .map_or(0, |t| d_bytes(t.definition.as_str()));
            self.check_catalog_room(old, d_bytes(d.as_str()))?;
        }
        let revision = self.next_revision();
        let toggle = self.install(feature, definition, timing.effective_at(req.proposed_at_ms));
        let change = format!("{} ({})", req.command.kind(), timing.name());
        self.record(feature, req, &change, Some(toggle.definition.clone()));
        self.pending.remove(feature);
        Ok(Applied {
            revision,
            outcome: Outcome::Toggle(toggle),
            committed_at_us: 0,
        })
    }

    /// Stores a toggle at the current revision.
    fn install(&mut self, feature: &str, definition: Option<FlagDefinition>, effective_at_ms: i64) -> Toggle {
        let definition = definition.unwrap_or_else(|| match self.toggles.get(feature) {
            Some(t) => t.definition.with_state(true),
            None => FlagDefinition::boolean(true),
        });
        let toggle = Toggle {
            feature: feature.to_string(),
            definition,
            revision: self.revision,
            effective_at_ms,
        };
        self.toggles.insert(feature.to_string(), toggle.clone());
        self.emit(Change::Toggle(toggle.clone()));
        toggle
    }

    /// Activates every pending activation whose feature is now ready, at the current revision.
    fn fire_ready(&mut self, req: &Request) {
        let ready: Vec<String> = self
            .pending
            .values()
            .filter(|p| {
                self.features
                    .get(&p.feature)
                    .is_some_and(|f| activation::readiness(f, &self.registry, p.allow_empty, true).ready)
            })
            .map(|p| p.feature.clone())
            .collect();
        for feature in ready {
            let Some(p) = self.pending.remove(&feature) else {
                continue;
            };
            let effective_at = req.proposed_at_ms + p.switch_delay_ms as i64;
            let toggle = self.install(&feature, p.definition.clone(), effective_at);
            let entry = HistoryEntry {
                revision: self.revision,
                at_ms: req.proposed_at_ms,
                actor: p.actor.clone(),
                change: "activate (when-ready)".into(),
                reason: format!(
                    "{}ready at revision {} (requested at revision {})",
                    if p.reason.is_empty() {
                        String::new()
                    } else {
                        format!("{}; ", p.reason)
                    },
                    self.revision,
                    p.requested_revision
                ),
                definition: Some(toggle.definition),
            };
            self.history.entry(feature).or_default().push(entry);
        }
    }

    /// The definition a rollback restores: the one in force at `to_revision` (default: the one
    /// before the current). Where the feature had no toggle then (it was turned on for the
    /// first time since), that is "off": the current definition, DISABLED.
    fn rollback_target(&self, feature: &str, to_revision: Option<u64>) -> Result<FlagDefinition, Error> {
        let spec = self
            .features
            .get(feature)
            .ok_or_else(|| not_found_feature(feature))?;
        let current = self.toggles.get(feature).ok_or_else(|| {
            Error::FailedPrecondition(format!("feature {feature:?} has no toggle to roll back"))
        })?;
        let history = self.history.get(feature);
        let defined: Vec<&HistoryEntry> = history
            .map(|h| h.entries().filter(|e| e.definition.is_some()).collect())
            .unwrap_or_default();
        let oldest = history.and_then(|h| h.entries().next()).map_or(0, |e| e.revision);
        // The history reaches back to the feature's creation (it was not cut at its bound), so
        // a revision before the first definition is one at which the feature had no toggle.
        let complete = oldest <= spec.created_revision;
        let off = || current.definition.with_state(false);
        let found = match to_revision {
            None => match defined.iter().rev().nth(1) {
                Some(e) => *e,
                None if complete => return Ok(off()),
                None => {
                    return Err(Error::FailedPrecondition(format!(
                        "toggle {feature:?} has no earlier definition in its history (it starts at revision {oldest})"
                    )))
                }
            },
            Some(rev) if rev > self.revision => {
                return Err(Error::invalid(format!(
                    "revision {rev} does not exist yet (the cluster is at revision {})",
                    self.revision
                )))
            }
            Some(rev) => match defined.iter().rev().find(|e| e.revision <= rev) {
                Some(e) => *e,
                None if complete && rev >= spec.created_revision => return Ok(off()),
                None => {
                    return Err(Error::FailedPrecondition(format!(
                        "toggle {feature:?} had no definition at revision {rev} (its history starts at revision {oldest})"
                    )));
                }
            },
        };
        found
            .definition
            .clone()
            .ok_or_else(|| Error::internal("history entry without definition"))
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn record(&mut self, feature: &str, req: &Request, change: &str, definition: Option<FlagDefinition>) {
        self.history
            .entry(feature.to_string())
            .or_default()
            .push(HistoryEntry {
                revision: self.revision,
                at_ms: req.proposed_at_ms,
                actor: req.actor.clone(),
                change: change.to_string(),
                reason: req.reason.clone(),
                definition,
            });
    }

    /// The readiness of a feature, with every blocker (for `readiness`).
    pub fn readiness(&self, feature: &str, allow_empty: bool) -> Result<Readiness, Error> {
        let f = self
            .features
            .get(feature)
            .ok_or_else(|| not_found_feature(feature))?;
        Ok(activation::readiness(f, &self.registry, allow_empty, false))
    }

    /// Pending activations, by feature.
    pub fn pending(&self) -> impl Iterator<Item = &PendingActivation> {
        self.pending.values()
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// What a feature weighs in [`MAX_CATALOG_BYTES`].
fn feature_bytes(f: &FeatureSpec) -> usize {
    64 + f.name.len()
        + f.description.len()
        + f.owner.len()
        + f.requirements
            .iter()
            .map(|r| 16 + r.service.len() + r.version_req.len())
            .sum::<usize>()
}

/// What a toggle's definition weighs in [`MAX_CATALOG_BYTES`].
fn d_bytes(definition: &str) -> usize {
    64 + definition.len()
}

impl State {
    /// What the catalog and toggles weigh now.
    fn catalog_bytes(&self) -> usize {
        self.features
            .values()
            .map(|f| feature_bytes(&f.spec))
            .sum::<usize>()
            + self
                .toggles
                .values()
                .map(|t| d_bytes(t.definition.as_str()))
                .sum::<usize>()
    }

    /// Refuses a write that would replace `old` bytes by `new` and pass [`MAX_CATALOG_BYTES`].
    fn check_catalog_room(&self, old: usize, new: usize) -> Result<(), Error> {
        if new <= old {
            return Ok(());
        }
        let after = self.catalog_bytes() - old + new;
        if after > MAX_CATALOG_BYTES {
            return Err(Error::ResourceExhausted(format!(
                "the catalog and toggles would hold {:.1} MiB; the limit is {} MiB (delete unused features, or shorten descriptions)",
                after as f64 / (1024.0 * 1024.0),
                MAX_CATALOG_BYTES / (1024 * 1024)
            )));
        }
        Ok(())
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
            timing: Timing::Immediate,
        };
        assert_eq!(s.apply(&req("", 0, on)).unwrap().revision, 2);
        assert!(s.toggle("a").unwrap().definition.enabled());
    }

    #[test]
    fn the_registry_emits_an_event_when_an_instance_comes_and_when_it_goes() {
        let mut s = State::default();
        let lease = lease(&mut s);
        s.take_events();
        let r = register(&mut s, lease, "i1", "cart", "2.0.0").unwrap().revision;
        let came = s.take_events();
        assert_eq!(came.len(), 1, "{came:?}");
        assert_eq!(came[0].revision, r);
        assert!(matches!(&came[0].change, Change::Instance(i) if i.spec.id == "i1"));
        deregister(&mut s, "i1").unwrap();
        let went = s.take_events();
        assert!(matches!(&went[..], [Event { change: Change::InstanceGone { id, .. }, .. }] if id == "i1"));
    }

    #[test]
    fn retried_request_applies_once() {
        let mut s = State::default();
        let first = s.apply(&req("c1", 1, put("a", Some(0))));
        let again = s.apply(&req("c1", 1, put("a", Some(0))));
        assert_eq!(first, again);
        assert_eq!(s.revision(), 1);
        // Out-of-order ids from one client (concurrent writes) are each applied once.
        s.apply(&req("c1", 3, put("c", None))).unwrap();
        s.apply(&req("c1", 2, put("b", None))).unwrap();
        assert_eq!(s.apply(&req("c1", 3, put("c", None))).unwrap().revision, 2);
        assert_eq!(s.revision(), 3);
        // Beyond the window, an old id is refused rather than risk applying it twice.
        for id in 10..10 + SESSION_WINDOW as u64 {
            s.apply(&req("c1", id, put(&format!("w{id}"), None))).unwrap();
        }
        assert!(matches!(
            s.apply(&req("c1", 4, put("z", None))),
            Err(Error::FailedPrecondition(_))
        ));
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
            timing: Timing::Immediate,
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

    fn lease(s: &mut State) -> u64 {
        let id = s.registry().leases().map(|l| l.id).max().unwrap_or(0) + 1;
        match s
            .apply(&req(
                "",
                0,
                Command::GrantLease {
                    id,
                    ttl_ms: 10_000,
                    owner: String::new(),
                },
            ))
            .unwrap()
            .outcome
        {
            Outcome::Lease(l) => l.id,
            o => panic!("{o:?}"),
        }
    }

    fn register(s: &mut State, lease: u64, id: &str, service: &str, version: &str) -> Response {
        let instance = registry::InstanceSpec {
            id: id.into(),
            service: service.into(),
            version: version.into(),
            labels: Default::default(),
        };
        s.apply(&req(
            "",
            0,
            Command::Register {
                instance,
                lease,
                scope: None,
            },
        ))
    }

    fn deregister(s: &mut State, id: &str) -> Response {
        s.apply(&req(
            "",
            0,
            Command::Deregister {
                instance: id.into(),
                scope: None,
            },
        ))
    }

    fn feature_needing(s: &mut State, name: &str, reqs: &[&str]) {
        let spec = FeatureSpec {
            name: name.into(),
            requirements: reqs.iter().map(|r| Requirement::parse_cli(r).unwrap()).collect(),
            ..Default::default()
        };
        s.apply(&req(
            "",
            0,
            Command::PutFeature {
                feature: spec,
                expected_revision: None,
            },
        ))
        .unwrap();
    }

    fn activate_when_ready(s: &mut State, name: &str) -> Response {
        let cmd = Command::SetToggleState {
            feature: name.into(),
            enabled: true,
            expected_revision: None,
            timing: Timing::WhenReady {
                allow_empty: false,
                switch_delay_ms: Some(500),
            },
        };
        s.apply(&req("", 0, cmd))
    }

    #[test]
    fn when_ready_fires_at_the_revision_the_last_old_instance_leaves() {
        let mut s = State::default();
        feature_needing(&mut s, "checkout", &["cart>=2", "payment>=1.8"]);
        let l = lease(&mut s);
        register(&mut s, l, "cart-1", "cart", "1.9.0").unwrap();
        register(&mut s, l, "cart-2", "cart", "1.9.0").unwrap();
        register(&mut s, l, "pay-1", "payment", "1.7.0").unwrap();
        let pending = activate_when_ready(&mut s, "checkout").unwrap();
        assert!(matches!(pending.outcome, Outcome::Pending(_)));
        assert!(s.toggle("checkout").is_none());
        // Rolling upgrade: new instances join, old ones leave.
        register(&mut s, l, "cart-3", "cart", "2.0.0").unwrap();
        deregister(&mut s, "cart-1").unwrap();
        register(&mut s, l, "pay-2", "payment", "1.8.0").unwrap();
        deregister(&mut s, "pay-1").unwrap();
        assert!(s.toggle("checkout").is_none(), "cart-2 is still old");
        let last = deregister(&mut s, "cart-2").unwrap();
        let t = s.toggle("checkout").expect("fired");
        assert_eq!(
            t.revision, last.revision,
            "fires at the revision that made it ready"
        );
        assert!(t.definition.enabled());
        assert_eq!(t.effective_at_ms, 1_000 + 500);
        assert_eq!(s.pending().count(), 0);
    }

    #[test]
    fn a_revoked_lease_unblocks_the_gate() {
        let mut s = State::default();
        feature_needing(&mut s, "f", &["cart>=2"]);
        let old = lease(&mut s);
        let new = lease(&mut s);
        register(&mut s, old, "old", "cart", "1.0.0").unwrap();
        register(&mut s, new, "new", "cart", "2.0.0").unwrap();
        activate_when_ready(&mut s, "f").unwrap();
        let readiness = s.readiness("f", false).unwrap();
        assert_eq!(readiness.blockers.len(), 1);
        s.apply(&req(
            "",
            0,
            Command::RevokeLease {
                lease: old,
                expired: true,
                scope: None,
            },
        ))
        .unwrap();
        assert!(s.toggle("f").unwrap().definition.enabled());
    }

    #[test]
    fn empty_services_block_unless_allowed_and_no_requirements_is_an_error() {
        let mut s = State::default();
        feature_needing(&mut s, "f", &["cart>=2"]);
        assert!(!s.readiness("f", false).unwrap().ready);
        assert!(s.readiness("f", true).unwrap().ready);
        feature_needing(&mut s, "bare", &[]);
        assert!(matches!(
            activate_when_ready(&mut s, "bare"),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn registry_rejects_bad_input_without_change() {
        let mut s = State::default();
        let l = lease(&mut s);
        let rev = s.revision();
        assert!(matches!(
            register(&mut s, l, "x", "cart", "banana"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            register(&mut s, 999, "x", "cart", "1.0.0"),
            Err(Error::NotFound(_))
        ));
        register(&mut s, l, "x", "cart", "1.0.0").unwrap();
        let other = lease(&mut s);
        assert!(matches!(
            register(&mut s, other, "x", "cart", "1.0.0"),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(deregister(&mut s, "nope"), Err(Error::NotFound(_))));
        assert_eq!(s.revision(), rev + 2);
    }

    #[test]
    fn rollback_restores_the_exact_earlier_definition() {
        let mut s = State::default();
        feature_needing(&mut s, "f", &[]);
        let set = |s: &mut State, text: &str| {
            let cmd = Command::SetToggle {
                feature: "f".into(),
                definition: FlagDefinition::parse(text).unwrap(),
                expected_revision: None,
                timing: Timing::Immediate,
            };
            s.apply(&req("", 0, cmd)).unwrap().revision
        };
        let v1 = r#"{"state":"ENABLED","variants":{"a":"x","b":"y"},"defaultVariant":"a"}"#;
        let v2 = r#"{"state":"ENABLED","variants":{"a":"x","b":"y"},"defaultVariant":"b"}"#;
        let r1 = set(&mut s, v1);
        set(&mut s, v2);
        let rb = |s: &mut State, to| {
            s.apply(&req(
                "",
                0,
                Command::Rollback {
                    feature: "f".into(),
                    to_revision: to,
                    timing: Timing::Immediate,
                },
            ))
        };
        rb(&mut s, None).unwrap();
        assert_eq!(
            s.toggle("f").unwrap().definition,
            FlagDefinition::parse(v1).unwrap()
        );
        rb(&mut s, Some(r1 + 1)).unwrap();
        assert_eq!(
            s.toggle("f").unwrap().definition,
            FlagDefinition::parse(v2).unwrap()
        );
        assert!(matches!(rb(&mut s, Some(999)), Err(Error::InvalidArgument(_))));
        assert!(matches!(rb(&mut s, Some(0)), Err(Error::FailedPrecondition(_))));
        let changes: Vec<_> = s
            .history("f")
            .unwrap()
            .entries()
            .map(|e| e.change.clone())
            .collect();
        assert_eq!(
            changes.iter().filter(|c| c.starts_with("rollback")).count(),
            2,
            "{changes:?}"
        );
    }

    #[test]
    fn the_catalog_is_capped_and_a_refused_write_changes_nothing() {
        let mut s = State::default();
        let big = |name: &str| Command::PutFeature {
            feature: FeatureSpec {
                name: name.into(),
                description: "d".repeat(catalog::MAX_TEXT_LEN),
                owner: "o".repeat(catalog::MAX_TEXT_LEN),
                ..Default::default()
            },
            expected_revision: None,
        };
        let mut i = 0;
        loop {
            match s.apply(&req("", 0, big(&format!("f{i}")))) {
                Ok(_) => i += 1,
                Err(e) => {
                    assert!(matches!(e, Error::ResourceExhausted(_)), "{e:?}");
                    break;
                }
            }
            assert!(i < 10_000, "never refused");
        }
        assert!(s.catalog_bytes() <= MAX_CATALOG_BYTES);
        let (rev, digest) = (s.revision(), s.digest());
        assert!(s.apply(&req("", 0, big("one-more"))).is_err());
        assert_eq!((s.revision(), s.digest()), (rev, digest));
        // Replacing a feature by a smaller one, or deleting, is always allowed.
        s.apply(&req("", 0, put("f0", None))).expect("smaller");
        s.apply(&req("", 0, big("f0"))).expect("back to the room it had");
    }

    #[test]
    fn rolling_back_a_first_activation_turns_the_feature_off() {
        let mut s = State::default();
        feature_needing(&mut s, "f", &[]);
        let created = s.revision();
        let on = Command::SetToggleState {
            feature: "f".into(),
            enabled: true,
            expected_revision: None,
            timing: Timing::Immediate,
        };
        s.apply(&req("", 0, on)).unwrap();
        let rollback = |to| Command::Rollback {
            feature: "f".into(),
            to_revision: to,
            timing: Timing::Immediate,
        };
        let back = s.apply(&req("", 0, rollback(None))).unwrap();
        let t = s.toggle("f").unwrap();
        assert_eq!(t.revision, back.revision);
        assert!(!t.definition.enabled(), "off, as before the first activation");
        // Rolling back to the revision at which the feature was created says the same.
        s.apply(&req(
            "",
            0,
            Command::SetToggleState {
                feature: "f".into(),
                enabled: true,
                expected_revision: None,
                timing: Timing::Immediate,
            },
        ))
        .unwrap();
        s.apply(&req("", 0, rollback(Some(created)))).unwrap();
        assert!(!s.toggle("f").unwrap().definition.enabled());
        // Before the feature existed there is nothing to restore.
        assert!(matches!(
            s.apply(&req("", 0, rollback(Some(created - 1)))),
            Err(Error::FailedPrecondition(_))
        ));
    }

    mod gate_property {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Register { slot: u8, service: bool, major: u8 },
            Deregister { slot: u8 },
            Expire { lease: u8 },
            Upgrade { slot: u8 },
            Activate,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..8, any::<bool>(), 0u8..4).prop_map(|(slot, service, major)| Op::Register {
                    slot,
                    service,
                    major
                }),
                (0u8..8).prop_map(|slot| Op::Deregister { slot }),
                (0u8..3).prop_map(|lease| Op::Expire { lease }),
                (0u8..8).prop_map(|slot| Op::Upgrade { slot }),
                Just(Op::Activate),
            ]
        }

        proptest! {
            /// Random interleavings of register / deregister / expire / upgrade / activate never
            /// activate the feature while a non-satisfying instance is live.
            #[test]
            fn never_active_while_an_old_instance_is_live(ops in proptest::collection::vec(op(), 1..60)) {
                let mut s = State::default();
                feature_needing(&mut s, "f", &["cart>=2", "payment>=2"]);
                let mut leases: Vec<u64> = (0..3).map(|_| lease(&mut s)).collect();
                for op in ops {
                    let was_enabled = s.toggle("f").is_some_and(|t| t.definition.enabled());
                    match op {
                        Op::Register { slot, service, major } => {
                            let svc = if service { "cart" } else { "payment" };
                            let l = leases[slot as usize % leases.len()];
                            let _ = register(&mut s, l, &format!("i{slot}"), svc, &format!("{major}.0.0"));
                        }
                        Op::Deregister { slot } => { let _ = deregister(&mut s, &format!("i{slot}")); }
                        Op::Expire { lease: i } => {
                            let l = leases[i as usize];
                            let _ = s.apply(&req("", 0, Command::RevokeLease { lease: l, expired: true, scope: None }));
                            leases[i as usize] = lease(&mut s);
                        }
                        Op::Upgrade { slot } => {
                            let id = format!("i{slot}");
                            let found = s.registry().instances().find(|i| i.spec.id == id).cloned();
                            if let Some(i) = found {
                                let _ = register(&mut s, i.lease, &id, &i.spec.service, "2.1.0");
                            }
                        }
                        Op::Activate => { let _ = activate_when_ready(&mut s, "f"); }
                    }
                    let enabled = s.toggle("f").is_some_and(|t| t.definition.enabled());
                    if enabled && !was_enabled {
                        let f = s.feature("f").unwrap().clone();
                        let r = activation::readiness(&f, s.registry(), false, false);
                        prop_assert!(r.ready, "activated while blocked: {:?}", r.blockers);
                    }
                    if s.pending().count() > 0 {
                        prop_assert!(!activation::readiness(s.feature("f").unwrap(), s.registry(), false, true).ready,
                            "a ready feature stayed pending");
                    }
                }
            }
        }
    }
}
