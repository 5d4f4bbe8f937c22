//! Convergence reporting: which instances have put a toggle change into effect, and how late.
//!
//! SDKs report on their keepalive stream (convergence reporting). The node holding a stream
//! keeps that instance's reports in memory: the revision its watch has received and, per
//! feature, the latest change it applied. Nothing here enters the Raft log. `rollout-status`
//! gathers the reports from every member and [`summarize`]s them against the registry.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// Most features one instance may report; further ones are ignored.
pub const MAX_FEATURES_PER_INSTANCE: usize = 4_096;

/// A change an instance put into effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedChange {
    /// The change's revision.
    pub revision: u64,
    /// How late after its `effective_at` it took effect (0: on time).
    pub late_ms: i64,
    /// When it took effect (unix ms, server clock as the instance estimates it).
    pub applied_at_ms: i64,
}

/// One instance's report about one feature, as members exchange them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The reporting instance.
    pub instance_id: String,
    /// The revision its watch has received.
    pub received_revision: u64,
    /// The latest change of the feature it applied, if any.
    pub applied: Option<AppliedChange>,
    /// The member holding its keepalive stream.
    pub via: NodeId,
}

struct InstanceReports {
    /// The keepalive stream the reports came on (a newer stream replaces them).
    stream: u64,
    received_revision: u64,
    applied: HashMap<String, AppliedChange>,
}

/// The reports of the instances whose keepalive streams this node holds.
#[derive(Default)]
pub struct RolloutReports {
    by_instance: Mutex<HashMap<String, InstanceReports>>,
}

impl RolloutReports {
    /// Records what the instance reported on keepalive stream `stream`. A report on a newer
    /// stream than the one recorded starts the instance's reports afresh.
    pub fn record<'a>(
        &self,
        stream: u64,
        instance_id: &str,
        received_revision: u64,
        applied: impl IntoIterator<Item = (&'a str, AppliedChange)>,
    ) {
        let mut all = self.by_instance.lock();
        let entry = all
            .entry(instance_id.to_string())
            .or_insert_with(|| InstanceReports {
                stream,
                received_revision: 0,
                applied: HashMap::new(),
            });
        if entry.stream != stream {
            entry.stream = stream;
            entry.applied.clear();
        }
        entry.received_revision = entry.received_revision.max(received_revision);
        for (feature, change) in applied {
            let newer = entry
                .applied
                .get(feature)
                .is_none_or(|old| old.revision <= change.revision);
            if !newer {
                continue;
            }
            if entry.applied.len() >= MAX_FEATURES_PER_INSTANCE && !entry.applied.contains_key(feature) {
                continue;
            }
            entry.applied.insert(feature.to_string(), change);
        }
    }

    /// Forgets an instance's reports when its stream `stream` ends (it reports elsewhere now).
    pub fn stream_ended(&self, stream: u64, instance_id: &str) {
        let mut all = self.by_instance.lock();
        if all.get(instance_id).is_some_and(|r| r.stream == stream) {
            all.remove(instance_id);
        }
    }

    /// Every instance's report about `feature`, as member `via`.
    pub fn for_feature(&self, feature: &str, via: NodeId) -> Vec<Report> {
        self.by_instance
            .lock()
            .iter()
            .map(|(id, r)| Report {
                instance_id: id.clone(),
                received_revision: r.received_revision,
                applied: r.applied.get(feature).copied(),
                via,
            })
            .collect()
    }
}

/// A live instance, as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInstance {
    /// Instance id.
    pub id: String,
    /// Its service.
    pub service: String,
    /// Its version.
    pub version: String,
    /// Whether it runs a service the feature requires (or the feature requires none).
    pub involved: bool,
}

/// Where one instance stands with a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// In effect.
    Applied(AppliedChange),
    /// Received, waiting for `effective_at`.
    Scheduled,
    /// Not received yet.
    Behind,
    /// No report.
    Unknown,
}

/// One instance's line in a rollout status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRollout {
    /// The instance.
    pub instance: LiveInstance,
    /// Where it stands.
    pub standing: Standing,
    /// The revision its watch received (0: unknown).
    pub received_revision: u64,
    /// The member holding its stream (0: none).
    pub via: NodeId,
}

/// Where every relevant live instance stands with the change at `revision`: the involved
/// instances, plus any other instance that reported applying the feature. When several members
/// hold reports for one instance (it moved its stream), the most advanced one counts.
pub fn summarize(revision: u64, live: &[LiveInstance], reports: Vec<Report>) -> Vec<InstanceRollout> {
    let mut best: HashMap<String, Report> = HashMap::new();
    for r in reports {
        let rank = |r: &Report| (r.applied.map(|a| a.revision).unwrap_or(0), r.received_revision);
        match best.get(&r.instance_id) {
            Some(old) if rank(old) >= rank(&r) => {}
            _ => {
                best.insert(r.instance_id.clone(), r);
            }
        }
    }
    let mut out = Vec::new();
    for instance in live {
        let report = best.get(&instance.id);
        let applied_it = report.and_then(|r| r.applied).filter(|a| a.revision >= revision);
        if !instance.involved && applied_it.is_none() {
            continue;
        }
        let standing = match (report, applied_it) {
            (_, Some(a)) => Standing::Applied(a),
            (Some(r), None) if r.received_revision >= revision => Standing::Scheduled,
            (Some(_), None) => Standing::Behind,
            (None, _) => Standing::Unknown,
        };
        out.push(InstanceRollout {
            instance: instance.clone(),
            standing,
            received_revision: report.map(|r| r.received_revision).unwrap_or(0),
            via: report.map(|r| r.via).unwrap_or(0),
        });
    }
    out.sort_by(|a, b| (&a.instance.service, &a.instance.id).cmp(&(&b.instance.service, &b.instance.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(id: &str, involved: bool) -> LiveInstance {
        LiveInstance {
            id: id.into(),
            service: "cart".into(),
            version: "2.0.0".into(),
            involved,
        }
    }

    fn change(revision: u64, late_ms: i64) -> AppliedChange {
        AppliedChange {
            revision,
            late_ms,
            applied_at_ms: 1_000,
        }
    }

    #[test]
    fn each_instance_gets_its_standing() {
        let reports = RolloutReports::default();
        reports.record(1, "a", 10, [("f", change(10, 0))]);
        reports.record(2, "b", 10, [("f", change(7, 0))]);
        reports.record(3, "c", 9, [("f", change(7, 0))]);
        reports.record(4, "x", 10, [("f", change(10, 35))]);
        let live = [
            live("a", true),
            live("b", true),
            live("c", true),
            live("d", true),
            live("x", false),
        ];
        let got = summarize(10, &live, reports.for_feature("f", 1));
        let standings: Vec<(&str, Standing)> =
            got.iter().map(|r| (r.instance.id.as_str(), r.standing)).collect();
        assert_eq!(
            standings,
            vec![
                ("a", Standing::Applied(change(10, 0))),
                ("b", Standing::Scheduled),
                ("c", Standing::Behind),
                ("d", Standing::Unknown),
                ("x", Standing::Applied(change(10, 35))),
            ]
        );
    }

    #[test]
    fn uninvolved_instances_that_did_not_apply_are_left_out() {
        let got = summarize(5, &[live("x", false)], vec![]);
        assert!(got.is_empty());
    }

    #[test]
    fn a_new_stream_replaces_reports_and_an_ended_one_forgets_them() {
        let reports = RolloutReports::default();
        reports.record(1, "a", 10, [("f", change(10, 0))]);
        reports.record(2, "a", 11, [("g", change(11, 0))]);
        let r = reports.for_feature("f", 1);
        assert_eq!(r[0].applied, None, "the new stream's reports start afresh");
        assert_eq!(r[0].received_revision, 11);
        reports.stream_ended(1, "a");
        assert_eq!(
            reports.for_feature("g", 1).len(),
            1,
            "an older stream ending changes nothing"
        );
        reports.stream_ended(2, "a");
        assert!(reports.for_feature("g", 1).is_empty());
    }

    #[test]
    fn older_changes_never_replace_newer_ones_and_the_most_advanced_member_wins() {
        let reports = RolloutReports::default();
        reports.record(1, "a", 10, [("f", change(10, 0))]);
        reports.record(1, "a", 10, [("f", change(8, 0))]);
        assert_eq!(reports.for_feature("f", 1)[0].applied, Some(change(10, 0)));

        let stale = Report {
            instance_id: "a".into(),
            received_revision: 4,
            applied: Some(change(4, 0)),
            via: 2,
        };
        let fresh = Report {
            instance_id: "a".into(),
            received_revision: 10,
            applied: Some(change(10, 3)),
            via: 3,
        };
        let got = summarize(10, &[live("a", true)], vec![fresh, stale]);
        assert_eq!(got[0].standing, Standing::Applied(change(10, 3)));
        assert_eq!(got[0].via, 3);
    }

    #[test]
    fn reports_per_instance_are_bounded() {
        let reports = RolloutReports::default();
        let names: Vec<String> = (0..MAX_FEATURES_PER_INSTANCE + 10)
            .map(|i| format!("f{i}"))
            .collect();
        reports.record(1, "a", 1, names.iter().map(|n| (n.as_str(), change(1, 0))));
        let held = names
            .iter()
            .filter(|n| reports.for_feature(n, 1)[0].applied.is_some())
            .count();
        assert_eq!(held, MAX_FEATURES_PER_INSTANCE);
    }
}
