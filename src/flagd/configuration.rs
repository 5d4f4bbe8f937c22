//! The flag configuration a flagd provider is sent: a flagd flags document holding the toggles
//! its selector picks, each as it should evaluate from now on.
//!
//! A toggle whose change is scheduled for later (`effective_at` in the future) is sent ahead of
//! time as one flag that holds both definitions: the targeting becomes
//! `if $flagd.timestamp >= effective_at then <new> else <old>`, so every in-process provider
//! flips by its own clock at the same second, without waiting for a push. flagd's timestamp is
//! in whole seconds, so the condition uses the first second not before `effective_at` (a flip
//! is never early, and at most a second late). Where the two definitions cannot be folded
//! into one (a disabled side, or one variant name with two values) the old one is sent and the
//! new one is pushed when it takes effect. After `effective_at` the plain new definition is
//! sent again.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::state::State;

/// Which toggles a provider gets, from the request's `selector` (or `Flagd-Selector` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every toggle (an empty selector).
    All,
    /// These features (`feature=a,b`, or just `a,b`).
    Features(BTreeSet<String>),
    /// The features whose requirements involve this service (`service=NAME`).
    Service(String),
    /// The toggles of a flag set (`flagSetId=NAME`): those whose definition's
    /// `metadata.flagSetId` names it, as flagd's selectors pick them.
    FlagSet(String),
}

impl Selector {
    /// Reads a selector: empty, `service=NAME`, `flagSetId=NAME`, `feature=A,B` or `A,B`.
    pub fn parse(text: &str) -> Result<Selector> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Selector::All);
        }
        let names = |list: &str| -> Result<BTreeSet<String>> {
            let set: BTreeSet<String> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            for name in &set {
                crate::state::catalog::validate_name("feature", name)?;
            }
            if set.is_empty() {
                return Err(Error::invalid(format!("selector {text:?} names no feature")));
            }
            Ok(set)
        };
        match text.split_once('=') {
            Some(("service", name)) => {
                crate::state::catalog::validate_name("service", name.trim())?;
                Ok(Selector::Service(name.trim().to_string()))
            }
            Some(("feature" | "features", list)) => Ok(Selector::Features(names(list)?)),
            Some(("flagSetId", name)) => {
                let name = name.trim();
                if name.is_empty() || name.len() > 253 || name.chars().any(char::is_control) {
                    return Err(Error::invalid(format!(
                        "selector {text:?}: a flag set id is 1 to 253 printable characters"
                    )));
                }
                Ok(Selector::FlagSet(name.to_string()))
            }
            Some((other, _)) => Err(Error::invalid(format!(
                "selector {text:?}: unknown key {other:?} (use service=NAME, flagSetId=NAME, feature=A,B or A,B)"
            ))),
            None => Ok(Selector::Features(names(text)?)),
        }
    }

    /// Whether the selector picks `feature`.
    pub fn picks(&self, state: &State, feature: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Features(set) => set.contains(feature),
            Selector::Service(service) => state
                .feature(feature)
                .is_some_and(|f| f.spec.requirements.iter().any(|r| &r.service == service)),
            Selector::FlagSet(id) => state
                .toggle(feature)
                .is_some_and(|t| t.definition.flag_set_id().as_deref() == Some(id.as_str())),
        }
    }

    /// The flag set it names, if it names one.
    pub fn flag_set_id(&self) -> Option<&str> {
        match self {
            Selector::FlagSet(id) => Some(id),
            _ => None,
        }
    }

    /// The selector as a provider would write it (empty for every toggle).
    pub fn text(&self) -> String {
        match self {
            Selector::All => String::new(),
            Selector::Features(set) => {
                format!("feature={}", set.iter().cloned().collect::<Vec<_>>().join(","))
            }
            Selector::Service(s) => format!("service={s}"),
            Selector::FlagSet(id) => format!("flagSetId={id}"),
        }
    }
}

/// A flag as evaluated now: its definition and the revision it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct InEffect {
    /// The flagd definition.
    pub definition: Value,
    /// The revision of the change that set it.
    pub revision: u64,
}

/// The definition of `feature` in effect at `now_ms`: the toggle's, or while its change waits
/// for `effective_at`, the one before it.
pub fn in_effect(state: &State, feature: &str, now_ms: i64) -> Option<InEffect> {
    let toggle = state.toggle(feature)?;
    if toggle.effective_at_ms <= now_ms {
        return Some(InEffect {
            definition: toggle.definition.to_value(),
            revision: toggle.revision,
        });
    }
    previous(state, feature, toggle.revision)
}

/// The definition set before `revision`, from the feature's history.
fn previous(state: &State, feature: &str, revision: u64) -> Option<InEffect> {
    state
        .history(feature)?
        .entries()
        .filter(|e| e.revision < revision)
        .filter_map(|e| {
            e.definition.as_ref().map(|d| InEffect {
                definition: d.to_value(),
                revision: e.revision,
            })
        })
        .last()
}

/// What a provider is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Configuration {
    /// Flag key to flagd definition.
    pub flags: Map<String, Value>,
    /// The flag set's metadata (`flagSetId` when the selector names one), as flagd's
    /// document carries it at the top level.
    pub metadata: Map<String, Value>,
    /// When the configuration changes by itself (a scheduled change takes effect), unix ms.
    pub next_change_ms: Option<i64>,
}

impl Configuration {
    /// The configuration of `flags` picked by `selector` (its flag set named in the metadata).
    pub fn for_selector(selector: &Selector, flags: Map<String, Value>, next_change_ms: Option<i64>) -> Self {
        let mut metadata = Map::new();
        if let Some(id) = selector.flag_set_id() {
            metadata.insert("flagSetId".into(), Value::String(id.to_string()));
        }
        Configuration {
            flags,
            metadata,
            next_change_ms,
        }
    }

    /// The flagd flags document, as JSON text.
    pub fn document(&self) -> String {
        if self.metadata.is_empty() {
            json!({ "flags": self.flags }).to_string()
        } else {
            json!({ "flags": self.flags, "metadata": self.metadata }).to_string()
        }
    }
}

/// The configuration for `selector` at `now_ms`.
pub fn build(state: &State, selector: &Selector, now_ms: i64) -> Configuration {
    let mut flags = Map::new();
    let mut next_change_ms: Option<i64> = None;
    for toggle in state.toggles() {
        if !selector.picks(state, &toggle.feature) {
            continue;
        }
        let new = toggle.definition.to_value();
        if toggle.effective_at_ms <= now_ms {
            flags.insert(toggle.feature.clone(), new);
            continue;
        }
        next_change_ms =
            Some(next_change_ms.map_or(toggle.effective_at_ms, |n| n.min(toggle.effective_at_ms)));
        let Some(old) = previous(state, &toggle.feature, toggle.revision) else {
            // Nothing before: the flag appears when its change takes effect.
            continue;
        };
        let sent = fold(&old.definition, &new, toggle.effective_at_ms).unwrap_or(old.definition);
        flags.insert(toggle.feature.clone(), sent);
    }
    Configuration::for_selector(selector, flags, next_change_ms)
}

/// One definition that evaluates as `old` before `at_ms` and as `new` from then on, or `None`
/// where flagd's format cannot say it.
pub fn fold(old: &Value, new: &Value, at_ms: i64) -> Option<Value> {
    let enabled = |d: &Value| d.get("state").and_then(Value::as_str) == Some("ENABLED");
    if !enabled(old) || !enabled(new) {
        return None;
    }
    let mut variants = old.get("variants")?.as_object()?.clone();
    for (name, value) in new.get("variants")?.as_object()? {
        match variants.get(name) {
            Some(existing) if existing != value => return None,
            _ => {
                variants.insert(name.clone(), value.clone());
            }
        }
    }
    let at_s = at_ms.div_euclid(1000) + i64::from(at_ms.rem_euclid(1000) != 0);
    let mut folded = json!({
        "state": "ENABLED",
        "variants": variants,
        "defaultVariant": null,
        "targeting": {"if": [
            {">=": [{"var": "$flagd.timestamp"}, at_s]},
            outcome(new),
            outcome(old),
        ]},
    });
    if let (Some(m), Some(obj)) = (new.get("metadata"), folded.as_object_mut()) {
        obj.insert("metadata".into(), m.clone());
    }
    Some(folded)
}

/// A rule that gives the variant `def` would: its targeting's choice, or its default variant
/// where the targeting chooses none.
fn outcome(def: &Value) -> Value {
    let default = match def.get("defaultVariant") {
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::Null,
    };
    match def.get("targeting") {
        Some(t) if t.as_object().is_some_and(|m| !m.is_empty()) => {
            if default.is_null() {
                t.clone()
            } else {
                json!({"if": [{"!==": [t, null]}, t, default]})
            }
        }
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Context, Flag};

    fn variant_at(def: &Value, ctx: &Context) -> Option<String> {
        Flag::compile_value("f", 1, 0, def, &Map::new())
            .unwrap()
            .variant(ctx)
            .map(|v| v.to_string())
    }

    #[test]
    fn selectors_parse_or_say_what_is_wrong() {
        assert_eq!(Selector::parse("").unwrap(), Selector::All);
        assert_eq!(
            Selector::parse("service=cart").unwrap(),
            Selector::Service("cart".into())
        );
        assert_eq!(
            Selector::parse("a, b").unwrap(),
            Selector::Features(["a".to_string(), "b".to_string()].into())
        );
        assert_eq!(
            Selector::parse("flagSetId=checkout").unwrap(),
            Selector::FlagSet("checkout".into())
        );
        assert!(Selector::parse("flagSetId=").is_err());
        assert!(Selector::parse("source=x")
            .unwrap_err()
            .to_string()
            .contains("unknown key"));
        assert!(Selector::parse("feature=").is_err());
    }

    #[test]
    fn a_scheduled_change_is_folded_behind_the_timestamp() {
        let old =
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"});
        let new = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "plan"}, "gold"]}, "on", null]}});
        let at_ms = 2_000_000_000_500;
        let folded = fold(&old, &new, at_ms).unwrap();
        assert_eq!(folded["targeting"]["if"][0][">="][1], json!(2_000_000_001));
        // Before the instant (now, in 2026) the old definition answers: off for everyone.
        let gold = Context::new().with("plan", "gold");
        assert_eq!(variant_at(&folded, &gold).as_deref(), Some("off"));
        // From the instant the new one does: on for gold, the default for others.
        let at_now = fold(&old, &new, 1_000).unwrap();
        assert_eq!(variant_at(&at_now, &gold).as_deref(), Some("on"));
        assert_eq!(variant_at(&at_now, &Context::new()).as_deref(), Some("off"));
    }

    #[test]
    fn definitions_that_cannot_be_folded_are_not() {
        let a = json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"});
        let b = json!({"state": "ENABLED", "variants": {"on": "yes"}, "defaultVariant": "on"});
        let off = json!({"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"});
        assert!(fold(&a, &b, 0).is_none());
        assert!(fold(&a, &off, 0).is_none());
    }
}
