//! Gate safety: a `when-ready` activation never takes effect while a live instance of a
//! required service runs a version that does not meet the requirement (or while none runs).
//!
//! Judged from what registry watchers saw (the committed history, whose completeness the watch
//! checker vouches for): the registry is rebuilt from each snapshot and the instance events
//! after it, and at every revision where the gated feature's toggle turns on, the instances
//! live after that revision must all meet the requirement.

use std::collections::BTreeMap;

use super::watch::{Message, WatchRecord};
use super::Anomaly;

/// The gated feature and its one requirement.
pub struct Gate<'a> {
    pub feature: &'a str,
    pub service: &'a str,
    pub requirement: &'a semver::VersionReq,
}

/// Whether a toggle definition (flagd JSON) is on.
fn enabled(definition: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(definition)
        .ok()
        .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(|s| s == "ENABLED"))
        .unwrap_or(false)
}

/// Checks every watcher that sees the whole registry (no filter). Returns the anomalies and
/// how many activations were checked.
pub fn check(watches: &[WatchRecord], gate: &Gate<'_>) -> (Vec<Anomaly>, usize) {
    let toggle_key = format!("toggle/{}", gate.feature);
    let mut anomalies = Vec::new();
    let mut checked = 0;
    for w in watches.iter().filter(|w| w.filter.0.is_none()) {
        let mut instances: BTreeMap<String, String> = BTreeMap::new();
        let mut turned_on_at: Option<u64> = None;
        let mut judge = |instances: &BTreeMap<String, String>,
                         revision: u64,
                         anomalies: &mut Vec<Anomaly>| {
            checked += 1;
            let live: Vec<(&String, &String)> = instances
                .iter()
                .filter(|(_, v)| v.split_once('@').is_some_and(|(s, _)| s == gate.service))
                .collect();
            if live.is_empty() {
                anomalies.push(Anomaly::new(
                    "gate",
                    format!(
                        "{}: {} turned on at revision {revision} with no live {} instance",
                        w.watcher, gate.feature, gate.service
                    ),
                ));
            }
            for (id, v) in live {
                let version = v.split_once('@').map_or("", |(_, ver)| ver);
                let ok = semver::Version::parse(version).is_ok_and(|ver| gate.requirement.matches(&ver));
                if !ok {
                    anomalies.push(Anomaly::new(
                        "gate",
                        format!(
                            "{}: {} turned on at revision {revision} while {} ({version}) was live, needing {}",
                            w.watcher,
                            gate.feature,
                            id.trim_start_matches("instance/"),
                            gate.requirement
                        ),
                    ));
                }
            }
        };
        let mut open: Option<u64> = None;
        for seg in &w.segments {
            for m in &seg.messages {
                let boundary = match m {
                    Message::Event(e) => open.is_some_and(|r| r != e.revision),
                    _ => true,
                };
                if boundary {
                    if let Some(r) = turned_on_at.take() {
                        judge(&instances, r, &mut anomalies);
                    }
                    open = None;
                }
                match m {
                    Message::Snapshot { state, .. } => {
                        instances = state
                            .iter()
                            .filter(|(k, _)| k.starts_with("instance/"))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                    }
                    Message::Event(e) => {
                        open = Some(e.revision);
                        if e.key.starts_with("instance/") {
                            match &e.value {
                                Some(v) => instances.insert(e.key.clone(), v.clone()),
                                None => instances.remove(&e.key),
                            };
                        } else if e.key == toggle_key && e.value.as_deref().is_some_and(enabled) {
                            turned_on_at = Some(e.revision);
                        }
                    }
                    Message::Progress { .. } => {}
                }
            }
            if let Some(r) = turned_on_at.take() {
                judge(&instances, r, &mut anomalies);
            }
            open = None;
        }
    }
    (anomalies, checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::watch::{Event, Filter, Segment};

    fn ev(revision: u64, key: &str, value: Option<&str>) -> Message {
        Message::Event(Event {
            revision,
            key: key.into(),
            value: value.map(String::from),
        })
    }

    fn record(messages: Vec<Message>) -> WatchRecord {
        WatchRecord {
            watcher: "w".into(),
            filter: Filter(None),
            segments: vec![Segment {
                node: "n1".into(),
                resumed_from: None,
                messages,
                ended: None,
            }],
        }
    }

    fn run(messages: Vec<Message>) -> Vec<Anomaly> {
        let req = semver::VersionReq::parse(">=2.0.0").unwrap();
        let gate = Gate {
            feature: "gated",
            service: "shop",
            requirement: &req,
        };
        check(&[record(messages)], &gate).0
    }

    const ON: &str = r#"{"state":"ENABLED"}"#;

    fn start() -> Message {
        Message::Snapshot {
            revision: 5,
            state: [
                ("instance/a".to_string(), "shop@1.0.0".to_string()),
                ("instance/b".to_string(), "shop@2.0.0".to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn turning_on_once_the_old_instance_is_gone_is_safe() {
        assert!(run(vec![
            start(),
            ev(6, "instance/a", None),
            ev(6, "toggle/gated", Some(ON))
        ])
        .is_empty());
        assert!(run(vec![
            start(),
            ev(6, "instance/a", None),
            ev(7, "toggle/gated", Some(ON))
        ])
        .is_empty());
    }

    #[test]
    fn turning_on_while_an_old_instance_lives_is_caught() {
        let a = run(vec![
            start(),
            ev(6, "toggle/gated", Some(ON)),
            ev(7, "instance/a", None),
        ]);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(
            a[0].detail.contains("shop-") || a[0].detail.contains("a (1.0.0)"),
            "{a:?}"
        );
    }

    #[test]
    fn turning_on_with_no_instance_is_caught() {
        let a = run(vec![
            start(),
            ev(6, "instance/a", None),
            ev(7, "instance/b", None),
            ev(8, "toggle/gated", Some(ON)),
        ]);
        assert_eq!(a.len(), 1, "{a:?}");
    }

    #[test]
    fn turning_off_is_not_an_activation() {
        let off = r#"{"state":"DISABLED"}"#;
        assert!(run(vec![start(), ev(6, "toggle/gated", Some(off))]).is_empty());
    }
}
