//! The one place protobuf messages become domain types and back. The domain never sees prost
//! types; everything a client sends is checked here or in the domain's own `validate`.

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::pb::v1 as pb;
use crate::state::activation::{Blocker, PendingActivation, Timing};
use crate::state::catalog::{Feature, FeatureSpec, Requirement};
use crate::state::command::{Command, Request};
use crate::state::event::{Change, Event};
use crate::state::registry::{Instance, InstanceSpec};
use crate::state::toggle::{HistoryEntry, Toggle};

/// Longest actor or reason accepted.
const MAX_META_LEN: usize = 1024;

/// Builds the log request for `command` from the client's write options. A client that sends
/// no session id gets a fresh one, so the node's own retries (across a leader change) still
/// apply the write once.
/// A write from `caller`: history records the caller's identity (the client's `actor` text
/// added after it), and the session is the caller's own.
pub fn request(caller: &Caller, write: Option<pb::WriteOptions>, command: Command) -> Result<Request> {
    let w = write.unwrap_or_default();
    if w.actor.len() > MAX_META_LEN || w.reason.len() > MAX_META_LEN || w.client_id.len() > MAX_META_LEN {
        return Err(Error::ResourceExhausted(format!(
            "actor, reason and client_id are limited to {MAX_META_LEN} bytes each"
        )));
    }
    let (client_id, request_id) = if w.client_id.is_empty() {
        (uuid::Uuid::new_v4().to_string(), 1)
    } else {
        (caller.session(&w.client_id), w.request_id)
    };
    Ok(Request {
        client_id,
        request_id,
        proposed_at_ms: 0,
        actor: caller.actor(&w.actor),
        reason: w.reason,
        command,
    })
}

/// A feature spec from the wire.
pub fn feature_spec(f: pb::Feature) -> FeatureSpec {
    FeatureSpec {
        name: f.name,
        description: f.description,
        owner: f.owner,
        requirements: f
            .requirements
            .into_iter()
            .map(|r| Requirement {
                service: r.service,
                version_req: r.version_req,
            })
            .collect(),
    }
}

/// Whether a read asked to be served from the local applied state.
pub fn serializable(read: &Option<pb::ReadOptions>) -> bool {
    read.as_ref().is_some_and(|r| r.serializable)
}

/// A stored feature for the wire.
pub fn feature(f: &Feature) -> pb::Feature {
    pb::Feature {
        name: f.spec.name.clone(),
        description: f.spec.description.clone(),
        owner: f.spec.owner.clone(),
        requirements: f
            .spec
            .requirements
            .iter()
            .map(|r| pb::Requirement {
                service: r.service.clone(),
                version_req: r.version_req.clone(),
            })
            .collect(),
        revision: f.revision,
        created_revision: f.created_revision,
    }
}

/// A stored toggle for the wire.
pub fn toggle(t: &Toggle) -> pb::Toggle {
    pb::Toggle {
        feature: t.feature.clone(),
        definition_json: t.definition.as_str().to_string(),
        revision: t.revision,
        effective_at_ms: t.effective_at_ms,
    }
}

/// The timing a client asked for; `default` where it left the mode at DEFAULT.
pub fn timing(activation: Option<pb::Activation>, default: Timing) -> Result<Timing> {
    let Some(a) = activation else {
        return Ok(default);
    };
    let mode = pb::activation::Mode::try_from(a.mode)
        .map_err(|_| Error::invalid(format!("unknown activation mode {}", a.mode)))?;
    let timing = match mode {
        pb::activation::Mode::Default => match default {
            Timing::Synchronized { .. } => Timing::Synchronized {
                switch_delay_ms: a.switch_delay_ms,
            },
            other => other,
        },
        pb::activation::Mode::Now => Timing::Synchronized {
            switch_delay_ms: a.switch_delay_ms,
        },
        pb::activation::Mode::At => {
            if a.at_ms <= 0 {
                return Err(Error::invalid("activation AT needs at_ms (unix milliseconds)"));
            }
            Timing::At { at_ms: a.at_ms }
        }
        pb::activation::Mode::WhenReady => Timing::WhenReady {
            allow_empty: a.allow_empty,
            switch_delay_ms: a.switch_delay_ms,
        },
        pb::activation::Mode::Immediate => Timing::Immediate,
    };
    timing.validate()?;
    Ok(timing)
}

/// A pending activation for the wire.
pub fn pending(p: &PendingActivation) -> pb::PendingActivation {
    pb::PendingActivation {
        feature: p.feature.clone(),
        allow_empty: p.allow_empty,
        switch_delay_ms: p.switch_delay_ms,
        requested_revision: p.requested_revision,
        requested_at_ms: p.requested_at_ms,
        actor: p.actor.clone(),
        reason: p.reason.clone(),
        definition_json: p
            .definition
            .as_ref()
            .map(|d| d.as_str().to_string())
            .unwrap_or_default(),
    }
}

/// A readiness blocker for the wire.
pub fn blocker(b: &Blocker) -> pb::Blocker {
    match b {
        Blocker::NoInstance { service, requirement } => pb::Blocker {
            service: service.clone(),
            requirement: requirement.clone(),
            ..Default::default()
        },
        Blocker::Version {
            instance,
            service,
            version,
            requirement,
        } => pb::Blocker {
            service: service.clone(),
            requirement: requirement.clone(),
            instance: instance.clone(),
            version: version.clone(),
        },
    }
}

/// A history entry for the wire.
pub fn history_entry(e: &HistoryEntry) -> pb::HistoryEntry {
    pb::HistoryEntry {
        revision: e.revision,
        at_ms: e.at_ms,
        actor: e.actor.clone(),
        change: e.change.clone(),
        reason: e.reason.clone(),
        definition_json: e
            .definition
            .as_ref()
            .map(|d| d.as_str().to_string())
            .unwrap_or_default(),
    }
}

/// An instance spec from the wire.
pub fn instance_spec(i: pb::Instance) -> InstanceSpec {
    InstanceSpec {
        id: i.id,
        service: i.service,
        version: i.version,
        labels: i.labels.into_iter().collect(),
    }
}

/// A registered instance for the wire.
pub fn instance(i: &Instance) -> pb::Instance {
    pb::Instance {
        id: i.spec.id.clone(),
        service: i.spec.service.clone(),
        version: i.spec.version.clone(),
        labels: i.spec.labels.clone().into_iter().collect(),
        lease_id: i.lease,
        revision: i.revision,
    }
}

/// A watch event for the wire.
pub fn event(e: &Event) -> pb::WatchEvent {
    use pb::watch_event::Change as C;
    let change = match &e.change {
        Change::Feature(f) => C::Feature(feature(f)),
        Change::FeatureDeleted(name) => C::FeatureDeleted(name.clone()),
        Change::Toggle(t) => C::Toggle(toggle(t)),
        Change::Instance(i) => C::Instance(instance(i)),
        Change::InstanceGone { id, service } => C::InstanceGone(pb::InstanceGone {
            id: id.clone(),
            service: service.clone(),
        }),
    };
    pb::WatchEvent {
        revision: e.revision,
        change: Some(change),
    }
}
