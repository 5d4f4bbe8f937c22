//! Activations: when a toggle change takes effect (`effective_at`), the readiness gate that
//! holds a `when-ready` activation until every live instance of every required service runs a
//! version with the feature's code, and the pending activations waiting for it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::catalog::Feature;
use crate::state::definition::FlagDefinition;
use crate::state::registry::Registry;

/// Cluster default delay between commit and `effective_at` for a `now` activation: longer than
/// the watch lag, so every subscriber holds the change before the instant it applies it.
pub const DEFAULT_SWITCH_DELAY_MS: u64 = 500;
/// Longest switch delay accepted.
pub const MAX_SWITCH_DELAY_MS: u64 = 10 * 60 * 1000;

/// When a toggle change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timing {
    /// At commit + switch delay: the fleet flips together a moment later (the CLI's `--now`).
    Synchronized {
        /// Override of the default switch delay.
        switch_delay_ms: Option<u64>,
    },
    /// At a given time (unix ms).
    At {
        /// The instant.
        at_ms: i64,
    },
    /// At commit, no delay: each instance applies on arrival (kill switch, rollback).
    Immediate,
    /// When the feature becomes ready, then + switch delay.
    WhenReady {
        /// Whether a required service with no live instance counts as ready.
        allow_empty: bool,
        /// Override of the default switch delay.
        switch_delay_ms: Option<u64>,
    },
}

impl Timing {
    /// Checks the delay bound.
    pub fn validate(&self) -> Result<()> {
        let delay = match self {
            Timing::Synchronized { switch_delay_ms } | Timing::WhenReady { switch_delay_ms, .. } => {
                *switch_delay_ms
            }
            _ => None,
        };
        if delay.is_some_and(|d| d > MAX_SWITCH_DELAY_MS) {
            return Err(Error::invalid(format!(
                "switch delay is limited to {MAX_SWITCH_DELAY_MS} ms"
            )));
        }
        Ok(())
    }

    /// `effective_at` for a change committed at `proposed_at_ms` (not for `WhenReady`, which
    /// waits: it yields the instant it would take effect if ready now).
    pub fn effective_at(&self, proposed_at_ms: i64) -> i64 {
        match *self {
            Timing::Synchronized { switch_delay_ms } | Timing::WhenReady { switch_delay_ms, .. } => {
                proposed_at_ms + switch_delay_ms.unwrap_or(DEFAULT_SWITCH_DELAY_MS) as i64
            }
            Timing::At { at_ms } => at_ms,
            Timing::Immediate => proposed_at_ms,
        }
    }

    /// A short name for history and listings.
    pub fn name(&self) -> &'static str {
        match self {
            Timing::Synchronized { .. } => "now",
            Timing::At { .. } => "at",
            Timing::Immediate => "immediate",
            Timing::WhenReady { .. } => "when-ready",
        }
    }
}

/// An activation waiting for its feature to become ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingActivation {
    /// The feature to turn on.
    pub feature: String,
    /// Whether a required service with no live instance counts as ready.
    pub allow_empty: bool,
    /// Delay from the ready revision's commit to `effective_at`.
    pub switch_delay_ms: u64,
    /// The definition to install when ready; `None`: the current one with state ENABLED.
    pub definition: Option<FlagDefinition>,
    /// Revision that requested it.
    pub requested_revision: u64,
    /// When it was requested (unix ms).
    pub requested_at_ms: i64,
    /// Who requested it.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// One thing keeping a feature from being ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blocker {
    /// A required service has no live instance (and the activation does not allow that).
    NoInstance {
        /// The service.
        service: String,
        /// Its requirement.
        requirement: String,
    },
    /// A live instance runs a version that does not satisfy the requirement.
    Version {
        /// The instance.
        instance: String,
        /// Its service.
        service: String,
        /// Its version.
        version: String,
        /// The requirement it misses.
        requirement: String,
    },
}

/// Whether a feature is ready, and what blocks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Every requirement holds.
    pub ready: bool,
    /// What blocks it (all of it, or only the first when asked to stop early).
    pub blockers: Vec<Blocker>,
}

/// Evaluates the readiness gate of `feature` on `registry`. `first_only` stops at the first
/// blocker (what apply needs); otherwise every blocker is listed (what `readiness` shows).
pub fn readiness(feature: &Feature, registry: &Registry, allow_empty: bool, first_only: bool) -> Readiness {
    let mut blockers = Vec::new();
    for req in &feature.spec.requirements {
        // Requirements were validated on write; one that no longer parses blocks.
        let Ok(version_req) = semver::VersionReq::parse(&req.version_req) else {
            blockers.push(Blocker::NoInstance {
                service: req.service.clone(),
                requirement: req.version_req.clone(),
            });
            continue;
        };
        let mut any = false;
        for instance in registry.instances_of(&req.service) {
            any = true;
            if !version_req.matches(&instance.version) {
                blockers.push(Blocker::Version {
                    instance: instance.spec.id.clone(),
                    service: req.service.clone(),
                    version: instance.spec.version.clone(),
                    requirement: req.version_req.clone(),
                });
                if first_only {
                    return Readiness {
                        ready: false,
                        blockers,
                    };
                }
            }
        }
        if !any && !allow_empty {
            blockers.push(Blocker::NoInstance {
                service: req.service.clone(),
                requirement: req.version_req.clone(),
            });
            if first_only {
                return Readiness {
                    ready: false,
                    blockers,
                };
            }
        }
    }
    Readiness {
        ready: blockers.is_empty(),
        blockers,
    }
}
