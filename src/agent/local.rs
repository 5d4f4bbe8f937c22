//! The agent's flags as a [`FlagSource`]: its SDK's local copy, served on loopback over flagd's
//! protocols and OFREP. Evaluations answer for the agent's instance (`instance.*`) unless the
//! caller names another, and flip when the SDK's flip clock does. In-process providers get the
//! instance's identity written into the rules they are sent (they evaluate without it), and a
//! change staged for its `effective_at` folded in ahead of time, as a node sends it.
//!
//! A local copy is served while the cluster is away (that is the agent's point): the agent's
//! status says how old it may be.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::error::Error;
use crate::eval::{Flag, InstanceFacts};
use crate::flagd::configuration::{fold, Configuration, Selector};
use crate::flagd::source::{Changes, FlagSource, Lookup, ToggleState};
use crate::sdk::Sdk;

/// Most streams (sync, event streams, OFREP event streams) open at once on one agent.
const MAX_STREAMS: usize = 1024;

/// An agent's SDK as a source of flags.
pub(crate) struct LocalFlags {
    sdk: Arc<Sdk>,
    streams: Arc<Semaphore>,
}

impl LocalFlags {
    pub(crate) fn new(sdk: Arc<Sdk>) -> Self {
        LocalFlags {
            sdk,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }

    /// Whether `selector` picks `flag`. A service selector picks the agent's own service's
    /// flags (every flag it follows) and no other.
    fn picks(&self, selector: &Selector, flag: &Flag) -> bool {
        match selector {
            Selector::All => true,
            Selector::Features(set) => set.contains(&flag.key),
            Selector::Service(s) => self.sdk.instance_facts().is_some_and(|i| &i.service == s),
            Selector::FlagSet(id) => {
                flag.metadata().get("flagSetId").and_then(Value::as_str) == Some(id.as_str())
            }
        }
    }

    /// `definition` with the instance's identity written into its rules.
    fn for_instance(&self, mut definition: Value) -> Value {
        if let (Some(facts), Some(targeting)) = (self.sdk.instance_facts(), definition.get_mut("targeting")) {
            bind_instance(targeting, facts);
        }
        definition
    }
}

/// Replaces every `{"var": "instance..."}` in `rule` by the instance's value (or the `var`'s
/// default where it has none), for evaluators that do not know the instance. Values that
/// JsonLogic would read as rules (objects, the labels map) are left as references.
pub(crate) fn bind_instance(rule: &mut Value, facts: &InstanceFacts) {
    match rule {
        Value::Object(m) => {
            if m.len() == 1 {
                if let Some(bound) = m.get("var").and_then(|v| instance_value(v, facts)) {
                    *rule = bound;
                    return;
                }
            }
            for v in m.values_mut() {
                bind_instance(v, facts);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| bind_instance(v, facts)),
        _ => {}
    }
}

/// The value a `var` argument names under `instance`, if it names one there and the value is
/// a plain one.
fn instance_value(arg: &Value, facts: &InstanceFacts) -> Option<Value> {
    let (path, default) = match arg {
        Value::String(p) => (p.as_str(), Value::Null),
        Value::Array(a) => (a.first()?.as_str()?, a.get(1).cloned().unwrap_or(Value::Null)),
        _ => return None,
    };
    let rest = path.strip_prefix("instance")?;
    let found = match rest {
        ".service" => Some(Value::String(facts.service.clone())),
        ".version" => Some(Value::String(facts.version.clone())),
        _ => match rest.strip_prefix(".labels.") {
            Some(label) => facts.labels.get(label).map(|v| Value::String(v.clone())),
            // `instance`, `instance.labels`, or a path into nothing we hold.
            None if rest.is_empty() || rest == ".labels" => return None,
            None if rest.starts_with('.') => None,
            // `instanceX`: another attribute.
            None => return None,
        },
    };
    let value = found.unwrap_or(default);
    (!value.is_object() && !value.is_array()).then_some(value)
}

/// A stream's feed: every replacement of the SDK's flag set.
struct LocalChanges {
    updates: watch::Receiver<u64>,
    _permit: OwnedSemaphorePermit,
}

impl Changes for LocalChanges {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<String>, Status>> {
        Box::pin(async move {
            match self.updates.changed().await {
                Ok(()) => Ok(None),
                Err(_) => Err(Status::unavailable("the agent is stopping")),
            }
        })
    }
}

impl FlagSource for LocalFlags {
    fn can_serve(&self) -> Result<(), Error> {
        // The last flags held are served while the cluster is away.
        Ok(())
    }

    fn barrier(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn flag(&self, key: &str, selector: &Selector) -> Result<Arc<Flag>, Lookup> {
        self.sdk
            .flag(key)
            .filter(|f| self.picks(selector, f))
            .ok_or(Lookup::NotFound)
    }

    fn keys(&self, selector: &Selector) -> Vec<String> {
        let flags = self.sdk.flags();
        let mut keys: Vec<String> = flags
            .iter()
            .filter(|f| self.picks(selector, f))
            .map(|f| f.key.clone())
            .collect();
        keys.sort();
        keys
    }

    fn instance(&self) -> Option<&InstanceFacts> {
        self.sdk.instance_facts()
    }

    fn configuration(&self, selector: &Selector, _now_ms: i64) -> Configuration {
        let set = self.sdk.flags();
        let mut flags = Map::new();
        let mut next_change_ms: Option<i64> = None;
        for entry in set.entries() {
            let (key, current, waiting) = (entry.key, entry.in_effect, entry.waiting);
            let Some(picked) = current.or(waiting.map(|(f, _)| f)) else {
                continue;
            };
            if !self.picks(selector, picked) {
                continue;
            }
            let Some(current) = current else {
                // Nothing in effect yet: the flag appears when its change does.
                if let Some((_, flip)) = waiting {
                    let at = flip.at_us.div_euclid(1000);
                    next_change_ms = Some(next_change_ms.map_or(at, |n| n.min(at)));
                }
                continue;
            };
            let sent = match waiting {
                Some((next, flip)) => {
                    let at = flip.at_us.div_euclid(1000);
                    next_change_ms = Some(next_change_ms.map_or(at, |n| n.min(at)));
                    let old = current.definition();
                    fold(&old, &next.definition(), next.effective_at_ms).unwrap_or(old)
                }
                None => current.definition(),
            };
            flags.insert(key.to_string(), self.for_instance(sent));
        }
        Configuration::for_selector(selector, flags, next_change_ms)
    }

    fn toggles(&self, selector: &Selector, _now_ms: i64) -> Vec<ToggleState> {
        let set = self.sdk.flags();
        set.entries()
            .filter_map(|entry| {
                let (key, current, waiting) = (entry.key, entry.in_effect, entry.waiting);
                let picked = current.or(waiting.map(|(f, _)| f))?;
                self.picks(selector, picked).then(|| ToggleState {
                    feature: key.to_string(),
                    revision: current.map_or(0, |f| f.revision),
                    since_ms: current.map_or(0, |f| f.effective_at_ms),
                    next_change_ms: waiting.map(|(_, flip)| flip.at_us.div_euclid(1000)),
                })
            })
            .collect()
    }

    fn revision(&self) -> u64 {
        self.sdk.received_revision()
    }

    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Changes>, Status>> {
        Box::pin(async move {
            let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(format!("this agent serves at most {MAX_STREAMS} streams"))
            })?;
            let mut updates = self.sdk.flag_set_updates();
            updates.mark_unchanged();
            Ok(Box::new(LocalChanges {
                updates,
                _permit: permit,
            }) as Box<dyn Changes>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts() -> InstanceFacts {
        InstanceFacts {
            service: "cart".into(),
            version: "2.1.0".into(),
            labels: [("zone".to_string(), "eu".to_string())].into(),
        }
    }

    #[test]
    fn the_instance_is_written_into_rules() {
        let mut rule = json!({"if": [
            {"and": [
                {"==": [{"var": "instance.service"}, "cart"]},
                {"sem_ver": [{"var": "instance.version"}, ">=", "2.0.0"]},
                {"==": [{"var": ["instance.labels.zone", "none"]}, "eu"]},
                {"==": [{"var": ["instance.labels.rack", "none"]}, "none"]},
                {"==": [{"var": "plan"}, "gold"]},
                {"==": [{"var": "instanceCount"}, 1]}
            ]}, "on", "off"]});
        bind_instance(&mut rule, &facts());
        let and = &rule["if"][0]["and"];
        assert_eq!(and[0]["=="][0], json!("cart"));
        assert_eq!(and[1]["sem_ver"][0], json!("2.1.0"));
        assert_eq!(and[2]["=="][0], json!("eu"));
        assert_eq!(
            and[3]["=="][0],
            json!("none"),
            "a missing label takes the default"
        );
        assert_eq!(and[4]["=="][0], json!({"var": "plan"}), "other attributes stay");
        assert_eq!(and[5]["=="][0], json!({"var": "instanceCount"}));
    }

    #[test]
    fn values_read_as_rules_stay_references() {
        let mut rule = json!({"==": [{"var": "instance.labels"}, {"var": "instance"}]});
        let before = rule.clone();
        bind_instance(&mut rule, &facts());
        assert_eq!(rule, before);
        let mut missing = json!({"var": "instance.labels.rack"});
        bind_instance(&mut missing, &facts());
        assert_eq!(missing, Value::Null);
    }

    #[test]
    fn a_bound_rule_evaluates_as_the_instance_would() {
        let def = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "instance.labels.zone"}, "eu"]}, "on", "off"]}});
        let flag = Flag::compile_value("f", 1, 0, &def, &Map::new()).unwrap();
        let ctx = crate::eval::Context::new();
        let with_facts = flag.evaluate_in(&ctx, Some(&facts()));
        let mut bound = def.clone();
        bind_instance(&mut bound["targeting"], &facts());
        let without_facts = Flag::compile_value("f", 1, 0, &bound, &Map::new())
            .unwrap()
            .evaluate(&ctx);
        assert_eq!(with_facts.variant, without_facts.variant);
        assert_eq!(with_facts.variant.as_deref(), Some("on"));
    }
}
