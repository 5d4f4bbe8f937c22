//! The one place protobuf messages become domain types and back. The domain never sees prost
//! types; everything a client sends is checked here or in the domain's own `validate`.

use crate::error::{Error, Result};
use crate::node::MemberStatus;
use crate::pb::v1 as pb;
use crate::state::catalog::{Feature, FeatureSpec, Requirement};
use crate::state::command::{Command, Request};
use crate::state::toggle::Toggle;

/// Longest actor or reason accepted.
const MAX_META_LEN: usize = 1024;

/// Builds the log request for `command` from the client's write options. A client that sends
/// no session id gets a fresh one, so the node's own retries (across a leader change) still
/// apply the write once.
pub fn request(write: Option<pb::WriteOptions>, command: Command) -> Result<Request> {
    let w = write.unwrap_or_default();
    if w.actor.len() > MAX_META_LEN || w.reason.len() > MAX_META_LEN || w.client_id.len() > MAX_META_LEN {
        return Err(Error::TooLarge(format!(
            "actor, reason and client_id are limited to {MAX_META_LEN} bytes each"
        )));
    }
    let (client_id, request_id) = if w.client_id.is_empty() {
        (uuid::Uuid::new_v4().to_string(), 1)
    } else {
        (w.client_id, w.request_id)
    };
    Ok(Request {
        client_id,
        request_id,
        proposed_at_ms: 0,
        actor: w.actor,
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

/// A wire feature back into the domain type (client side).
pub fn feature_from_pb(f: pb::Feature) -> Feature {
    let (revision, created_revision) = (f.revision, f.created_revision);
    Feature {
        spec: feature_spec(f),
        revision,
        created_revision,
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

/// A member status for the wire.
pub fn member(m: &MemberStatus) -> pb::MemberStatus {
    pb::MemberStatus {
        id: m.id,
        address: m.address.clone(),
        role: m.role.clone(),
        term: m.term,
        last_log_index: m.last_log_index,
        applied_index: m.applied_index,
        revision: m.revision,
        digest: m.digest.clone(),
        leader_id: m.leader_id,
        voter: m.voter,
        snapshot_index: m.snapshot_index,
        purged_index: m.purged_index,
        error: m.error.clone(),
    }
}
