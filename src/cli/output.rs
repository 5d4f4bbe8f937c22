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
    let agreement = Agreement::of(s);
    json!({
        "leader_id": s.leader_id,
        "members": s.members.iter().map(|m| json!({
            "id": m.id, "address": m.address, "role": m.role, "voter": m.voter, "term": m.term,
            "last_log_index": m.last_log_index, "applied_index": m.applied_index,
            "snapshot_index": m.snapshot_index, "purged_index": m.purged_index,
            "revision": m.revision, "digest": m.digest, "leader_id": m.leader_id, "error": m.error,
        })).collect::<Vec<_>>(),
        "agreement": {
            "agree": agreement.problems.is_empty(),
            "problems": agreement.problems,
            "unreachable": agreement.unreachable,
            "caught_up": agreement.caught_up,
        },
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

/// `member list`: each member's id, address, kind, role and health (a member answering is
/// healthy when it knows a leader and has applied what the most advanced member has written).
pub fn member_table(s: &pb::StatusResponse) -> String {
    let mut t = table(&["id", "address", "kind", "role", "leader", "health"]);
    let newest = s.members.iter().map(|m| m.last_log_index).max().unwrap_or(0);
    for m in &s.members {
        let health = if m.role == "unreachable" {
            format!("unreachable: {}", m.error)
        } else if m.leader_id == 0 {
            "no leader known".to_string()
        } else if m.applied_index < newest {
            format!("behind by {} entries", newest - m.applied_index)
        } else {
            "healthy".to_string()
        };
        t.add_row(vec![
            m.id.to_string(),
            m.address.clone(),
            if m.voter { "voter" } else { "learner" }.to_string(),
            m.role.clone(),
            if m.leader_id == 0 {
                "-".to_string()
            } else {
                m.leader_id.to_string()
            },
            health,
        ]);
    }
    t.to_string()
}

/// Whether the members hold the same state where they must: members at the same applied index
/// (the same log applied) must be at the same revision with the same digest, and members at the
/// same revision must have the same digest. Members that could not be asked are named apart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Agreement {
    /// Each disagreement found, as a sentence.
    pub problems: Vec<String>,
    /// Members that could not be compared (unreachable).
    pub unreachable: Vec<u64>,
    /// Whether every compared member is at the same applied index.
    pub caught_up: bool,
}

impl Agreement {
    /// Compares the members of a status answer.
    pub fn of(s: &pb::StatusResponse) -> Agreement {
        use std::collections::BTreeMap;
        let live: Vec<&pb::MemberStatus> = s.members.iter().filter(|m| m.role != "unreachable").collect();
        let ids =
            |ms: &[&pb::MemberStatus]| ms.iter().map(|m| m.id.to_string()).collect::<Vec<_>>().join(", ");
        let mut problems = Vec::new();
        let mut by_index: BTreeMap<u64, Vec<&pb::MemberStatus>> = BTreeMap::new();
        let mut by_revision: BTreeMap<u64, Vec<&pb::MemberStatus>> = BTreeMap::new();
        for m in &live {
            by_index.entry(m.applied_index).or_default().push(m);
            by_revision.entry(m.revision).or_default().push(m);
        }
        for (index, ms) in &by_index {
            if ms
                .iter()
                .any(|m| m.revision != ms[0].revision || m.digest != ms[0].digest)
            {
                let states = ms
                    .iter()
                    .map(|m| format!("{}: revision {} digest {}", m.id, m.revision, short(&m.digest)))
                    .collect::<Vec<_>>()
                    .join("; ");
                problems.push(format!(
                    "members {} applied the same log (index {index}) but hold different states ({states})",
                    ids(ms)
                ));
            }
        }
        for (revision, ms) in &by_revision {
            let same_index = ms.iter().all(|m| m.applied_index == ms[0].applied_index);
            if !same_index && ms.iter().any(|m| m.digest != ms[0].digest) {
                let digests = ms
                    .iter()
                    .map(|m| format!("{}: {}", m.id, short(&m.digest)))
                    .collect::<Vec<_>>()
                    .join("; ");
                problems.push(format!(
                    "members {} are at revision {revision} with different digests ({digests})",
                    ids(ms)
                ));
            }
        }
        Agreement {
            problems,
            unreachable: s
                .members
                .iter()
                .filter(|m| m.role == "unreachable")
                .map(|m| m.id)
                .collect(),
            caught_up: by_index.len() <= 1,
        }
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let note = if !self.problems.is_empty() {
            format!("REPLICAS DISAGREE: {}", self.problems.join("; "))
        } else if self.caught_up {
            "all reachable replicas agree".to_string()
        } else {
            "replicas at the same applied index or revision agree (some are still catching up)".to_string()
        };
        if self.unreachable.is_empty() {
            note
        } else {
            let ids: Vec<String> = self.unreachable.iter().map(|i| i.to_string()).collect();
            format!(
                "{note}; could not compare member(s) {} (unreachable)",
                ids.join(", ")
            )
        }
    }
}

fn short(digest: &str) -> &str {
    digest.get(..16).unwrap_or(digest)
}

/// One line: do the members that applied the same log hold the same state?
pub fn agreement(s: &pb::StatusResponse) -> String {
    Agreement::of(s).line()
}

/// A unix-milliseconds time for people (RFC 3339, UTC, milliseconds).
pub fn time_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, applied_index: u64, revision: u64, digest: &str) -> pb::MemberStatus {
        pb::MemberStatus {
            id,
            role: "follower".into(),
            applied_index,
            revision,
            digest: digest.into(),
            ..Default::default()
        }
    }

    fn status(members: Vec<pb::MemberStatus>) -> pb::StatusResponse {
        pb::StatusResponse {
            members,
            leader_id: 1,
        }
    }

    #[test]
    fn members_that_applied_the_same_log_must_hold_the_same_state() {
        // The divergence once seen under kill -9: same applied index, revisions one apart.
        let a = Agreement::of(&status(vec![
            member(1, 2106, 2099, "aaaa"),
            member(2, 2106, 2099, "aaaa"),
            member(3, 2106, 2100, "bbbb"),
        ]));
        assert_eq!(a.problems.len(), 1, "{a:?}");
        assert!(a.problems[0].contains("index 2106"), "{a:?}");
        assert!(a.line().starts_with("REPLICAS DISAGREE"));
    }

    #[test]
    fn members_at_the_same_revision_must_have_the_same_digest() {
        // Different applied indexes (a blank entry between) but the same revision.
        let a = Agreement::of(&status(vec![member(1, 10, 7, "aaaa"), member(2, 11, 7, "bbbb")]));
        assert_eq!(a.problems.len(), 1, "{a:?}");
        assert!(a.problems[0].contains("revision 7"), "{a:?}");
    }

    #[test]
    fn catching_up_and_unreachable_members_are_said_apart() {
        let mut down = member(3, 0, 0, "");
        down.role = "unreachable".into();
        let a = Agreement::of(&status(vec![
            member(1, 10, 7, "aaaa"),
            member(2, 8, 6, "cccc"),
            down,
        ]));
        assert!(a.problems.is_empty(), "{a:?}");
        assert!(!a.caught_up);
        assert_eq!(a.unreachable, vec![3]);
        assert!(a.line().contains("could not compare member(s) 3"), "{}", a.line());
        let ok = Agreement::of(&status(vec![member(1, 10, 7, "aaaa"), member(2, 10, 7, "aaaa")]));
        assert_eq!(ok.line(), "all reachable replicas agree");
    }
}
