//! Rendering command results: tables for people, JSON for scripts.

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde_json::{json, Value};

use crate::pb::v1 as pb;

/// The output format chosen with `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    Table,
    /// One JSON document per command.
    Json,
}

/// A table with the given header.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

/// Prints `value` as pretty JSON, or the table `render` makes.
pub fn emit(format: Format, value: Value, render: impl FnOnce() -> String) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default()),
        Format::Table => println!("{}", render()),
    }
}

/// A feature as JSON.
pub fn feature_json(f: &pb::Feature) -> Value {
    json!({
        "name": f.name,
        "description": f.description,
        "owner": f.owner,
        "requirements": f.requirements.iter().map(|r| format!("{}{}", r.service, r.version_req)).collect::<Vec<_>>(),
        "revision": f.revision,
        "created_revision": f.created_revision,
    })
}

/// Features as a table.
pub fn features_table(features: &[pb::Feature]) -> String {
    let mut t = table(&["feature", "requires", "owner", "description", "revision"]);
    for f in features {
        let reqs: Vec<String> = f
            .requirements
            .iter()
            .map(|r| format!("{}{}", r.service, r.version_req))
            .collect();
        t.add_row(vec![
            f.name.clone(),
            reqs.join(", "),
            f.owner.clone(),
            f.description.clone(),
            f.revision.to_string(),
        ]);
    }
    t.to_string()
}

/// A toggle as JSON (its definition parsed, not as a string).
pub fn toggle_json(t: &pb::Toggle) -> Value {
    json!({
        "feature": t.feature,
        "definition": serde_json::from_str::<Value>(&t.definition_json).unwrap_or(Value::Null),
        "revision": t.revision,
        "effective_at_ms": t.effective_at_ms,
    })
}

/// Toggles as a table.
pub fn toggles_table(toggles: &[pb::Toggle]) -> String {
    let mut t = table(&["feature", "state", "default", "variants", "targeting", "revision"]);
    for tg in toggles {
        let d: Value = serde_json::from_str(&tg.definition_json).unwrap_or(Value::Null);
        let variants = d
            .get("variants")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        t.add_row(vec![
            tg.feature.clone(),
            d.get("state").and_then(Value::as_str).unwrap_or("").to_string(),
            d.get("defaultVariant")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string(),
            variants,
            if d.get("targeting")
                .is_some_and(|v| !v.is_null() && v != &json!({}))
            {
                "yes".into()
            } else {
                "no".into()
            },
            tg.revision.to_string(),
        ]);
    }
    t.to_string()
}

/// Member statuses as JSON.
pub fn status_json(s: &pb::StatusResponse) -> Value {
    json!({
        "leader_id": s.leader_id,
        "members": s.members.iter().map(|m| json!({
            "id": m.id, "address": m.address, "role": m.role, "voter": m.voter, "term": m.term,
            "last_log_index": m.last_log_index, "applied_index": m.applied_index,
            "snapshot_index": m.snapshot_index, "purged_index": m.purged_index,
            "revision": m.revision, "digest": m.digest, "leader_id": m.leader_id, "error": m.error,
        })).collect::<Vec<_>>(),
    })
}

/// Member statuses as a table, with a closing line saying whether the replicas agree.
pub fn status_table(s: &pb::StatusResponse) -> String {
    let mut t = table(&[
        "id", "address", "role", "term", "last log", "applied", "snapshot", "revision", "digest",
    ]);
    for m in &s.members {
        let digest = if m.role == "unreachable" {
            m.error.clone()
        } else {
            m.digest.chars().take(16).collect()
        };
        t.add_row(vec![
            m.id.to_string(),
            m.address.clone(),
            m.role.clone(),
            m.term.to_string(),
            m.last_log_index.to_string(),
            m.applied_index.to_string(),
            m.snapshot_index.to_string(),
            m.revision.to_string(),
            digest,
        ]);
    }
    format!("{t}\n{}", agreement(s))
}

/// One line: do the reachable members that applied the same index hold the same state?
pub fn agreement(s: &pb::StatusResponse) -> String {
    let live: Vec<_> = s.members.iter().filter(|m| m.role != "unreachable").collect();
    let down = s.members.len() - live.len();
    let mut digests: Vec<(u64, &str)> = live
        .iter()
        .map(|m| (m.applied_index, m.digest.as_str()))
        .collect();
    digests.sort();
    digests.dedup();
    let indexes: std::collections::BTreeSet<u64> = digests.iter().map(|d| d.0).collect();
    let note = if digests.len() == indexes.len() {
        if indexes.len() <= 1 {
            "all reachable replicas agree".to_string()
        } else {
            "replicas at the same applied index agree (some are still catching up)".to_string()
        }
    } else {
        "DIGESTS DIFFER at the same applied index: replicas disagree".to_string()
    };
    if down > 0 {
        format!("{note}; {down} member(s) unreachable")
    } else {
        note
    }
}

/// A unix-milliseconds time for people (RFC 3339, UTC, milliseconds).
pub fn time_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
