//! The SDK's local copy of toggles and their evaluation.
//!
//! A toggle's flagd definition is compiled once per change into a [`Flag`]: the state, the
//! variants with their values, and the default variant resolved to an index. Evaluating a flag
//! without targeting then costs a hash lookup and a match, with no allocation. The set of
//! flags in effect is an immutable [`FlagSet`] swapped atomically by the SDK when a change takes
//! effect, so readers never take a lock.
//!
//! Targeting rules (JsonLogic with flagd's operators) are not evaluated by this module yet: a
//! flag whose targeting is not empty evaluates to an error (reason `ERROR`), so callers get
//! their own default rather than a variant meant for another audience.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::client::flip_clock::Instant;
use crate::error::{Error, Result};

/// Why an evaluation gave its answer, in OpenFeature's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The flag has no targeting: its default variant.
    Static,
    /// Targeting matched no rule: the default variant.
    Default,
    /// A targeting rule chose the variant.
    TargetingMatch,
    /// A fractional split chose the variant.
    Split,
    /// The flag is disabled (the kill switch): the caller's default.
    Disabled,
    /// The flag could not be evaluated: the caller's default.
    Error,
}

impl Reason {
    /// The OpenFeature name (`STATIC`, `DEFAULT`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::Default => "DEFAULT",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

/// Why an evaluation failed, in OpenFeature's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No such flag in the local copy.
    FlagNotFound,
    /// The variant's value is not of the requested type.
    TypeMismatch,
    /// The flag needs something this evaluator cannot do.
    General,
}

/// The caller's context: the customer's attributes (`targetingKey` = customer id, region,
/// plan, ...). The SDK adds the instance's identity under `instance`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// The bucketing key (e.g. the customer id).
    pub targeting_key: Option<String>,
    /// Other attributes.
    pub attributes: Map<String, Value>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Context::default()
    }

    /// With this targeting key.
    pub fn with_targeting_key(mut self, key: impl Into<String>) -> Self {
        self.targeting_key = Some(key.into());
        self
    }

    /// With this attribute.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }
}

/// A toggle compiled for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// The feature.
    pub key: String,
    /// The revision of the change.
    pub revision: u64,
    /// When it takes effect (unix ms, server clock).
    pub effective_at_ms: i64,
    /// When this SDK received it (unix µs, local clock; 0: not received through a watch).
    pub received_at_us: i64,
    enabled: bool,
    variants: Vec<(Arc<str>, Value)>,
    /// Index into `variants`.
    default_variant: Option<usize>,
    targeting: Option<Value>,
}

impl Flag {
    /// Compiles a toggle's flagd definition (JSON text).
    pub fn compile(key: &str, revision: u64, effective_at_ms: i64, definition_json: &str) -> Result<Flag> {
        let def: Value = serde_json::from_str(definition_json)
            .map_err(|e| Error::invalid(format!("toggle {key:?}: definition is not JSON: {e}")))?;
        let enabled = match def.get("state").and_then(Value::as_str) {
            Some("ENABLED") => true,
            Some("DISABLED") => false,
            other => return Err(Error::invalid(format!("toggle {key:?}: state {other:?}"))),
        };
        let mut variants: Vec<(Arc<str>, Value)> = def
            .get("variants")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (Arc::from(k.as_str()), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        variants.sort_by(|a, b| a.0.cmp(&b.0));
        let default_variant = match def.get("defaultVariant") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => {
                Some(variants.iter().position(|(n, _)| **n == **name).ok_or_else(|| {
                    Error::invalid(format!(
                        "toggle {key:?}: defaultVariant {name:?} is not a variant"
                    ))
                })?)
            }
            Some(other) => return Err(Error::invalid(format!("toggle {key:?}: defaultVariant {other}"))),
        };
        let targeting = match def.get("targeting") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) if m.is_empty() => None,
            Some(t) => Some(t.clone()),
        };
        Ok(Flag {
            key: key.to_string(),
            revision,
            effective_at_ms,
            received_at_us: 0,
            enabled,
            variants,
            default_variant,
            targeting,
        })
    }

    /// Whether the flag is ENABLED (not killed).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Resolves the variant: its index and the reason, or why there is none.
    fn resolve(&self, _ctx: &Context) -> std::result::Result<(Option<usize>, Reason), ErrorCode> {
        if !self.enabled {
            return Ok((None, Reason::Disabled));
        }
        if self.targeting.is_some() {
            return Err(ErrorCode::General);
        }
        Ok((self.default_variant, Reason::Static))
    }

    /// Evaluates the flag for `ctx`.
    pub fn evaluate(&self, ctx: &Context) -> Evaluation {
        match self.resolve(ctx) {
            Ok((Some(i), reason)) => Evaluation {
                value: Some(self.variants[i].1.clone()),
                variant: Some(self.variants[i].0.clone()),
                reason,
                error: None,
                revision: self.revision,
            },
            Ok((None, reason)) => Evaluation {
                value: None,
                variant: None,
                reason: if reason == Reason::Static {
                    Reason::Default
                } else {
                    reason
                },
                error: None,
                revision: self.revision,
            },
            Err(code) => Evaluation {
                value: None,
                variant: None,
                reason: Reason::Error,
                error: Some(code),
                revision: self.revision,
            },
        }
    }

    /// The boolean value for `ctx`, or `default` when disabled, not boolean or not evaluable.
    /// Allocates nothing.
    pub fn bool_value(&self, ctx: &Context, default: bool) -> bool {
        match self.resolve(ctx) {
            Ok((Some(i), _)) => self.variants[i].1.as_bool().unwrap_or(default),
            _ => default,
        }
    }

    /// The variant's name for `ctx` (none when disabled or not evaluable). Allocates nothing.
    pub fn variant(&self, ctx: &Context) -> Option<Arc<str>> {
        match self.resolve(ctx) {
            Ok((Some(i), _)) => Some(self.variants[i].0.clone()),
            _ => None,
        }
    }

    /// The variant's value for `ctx` (none when disabled or not evaluable).
    pub fn value(&self, ctx: &Context) -> Option<&Value> {
        match self.resolve(ctx) {
            Ok((Some(i), _)) => Some(&self.variants[i].1),
            _ => None,
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The variant's value (none: use the caller's default).
    pub value: Option<Value>,
    /// The variant's name.
    pub variant: Option<Arc<str>>,
    /// Why.
    pub reason: Reason,
    /// What went wrong, for reason `ERROR`.
    pub error: Option<ErrorCode>,
    /// The revision of the flag evaluated (0: not found).
    pub revision: u64,
}

impl Evaluation {
    /// The evaluation of a flag the local copy does not hold.
    pub fn not_found() -> Self {
        Evaluation {
            value: None,
            variant: None,
            reason: Reason::Error,
            error: Some(ErrorCode::FlagNotFound),
            revision: 0,
        }
    }
}

/// One feature's flag in a [`FlagSet`]: the one in effect, and possibly a change waiting for
/// an instant, which takes effect the moment the instant fires.
#[derive(Debug, Clone, Default)]
struct Entry {
    current: Option<Arc<Flag>>,
    scheduled: Option<(Arc<Instant>, Arc<Flag>)>,
}

impl Entry {
    #[inline]
    fn effective(&self) -> Option<&Arc<Flag>> {
        match &self.scheduled {
            Some((instant, next)) if instant.has_fired() => Some(next),
            _ => self.current.as_ref(),
        }
    }
}

/// The flags in effect, by feature. Immutable: a change builds a new set. A change staged for an
/// instant ([`FlagSet::with_scheduled`]) is part of the set ahead of time and takes effect when
/// the instant fires, without the set being replaced.
#[derive(Debug, Clone, Default)]
pub struct FlagSet {
    flags: HashMap<String, Entry>,
}

impl FlagSet {
    /// A flag, as in effect now.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Arc<Flag>> {
        self.flags.get(key)?.effective()
    }

    /// A copy with `flag` in effect (and no change waiting for it).
    pub fn with(&self, flag: Arc<Flag>) -> FlagSet {
        let mut flags = self.flags.clone();
        flags.insert(
            flag.key.clone(),
            Entry {
                current: Some(flag),
                scheduled: None,
            },
        );
        FlagSet { flags }
    }

    /// A copy in which `flag` takes effect when `instant` fires (replacing any change already
    /// waiting for that feature).
    pub fn with_scheduled(&self, flag: Arc<Flag>, instant: Arc<Instant>) -> FlagSet {
        let mut flags = self.flags.clone();
        let entry = flags.entry(flag.key.clone()).or_default();
        // A change whose instant already fired is in effect: keep it as the current one.
        if let Some((fired, next)) = entry.scheduled.take() {
            if fired.has_fired() {
                entry.current = Some(next);
            }
        }
        entry.scheduled = Some((instant, flag));
        FlagSet { flags }
    }

    /// The change waiting for `key`'s instant, if any: (revision, instant).
    pub fn scheduled(&self, key: &str) -> Option<(u64, &Arc<Instant>)> {
        self.flags
            .get(key)?
            .scheduled
            .as_ref()
            .map(|(i, f)| (f.revision, i))
    }

    /// A copy without `key`.
    pub fn without(&self, key: &str) -> FlagSet {
        let mut flags = self.flags.clone();
        flags.remove(key);
        FlagSet { flags }
    }

    /// Every flag in effect.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Flag>> {
        self.flags.values().filter_map(Entry::effective)
    }

    /// How many flags are in effect.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(json: &str) -> Flag {
        Flag::compile("f", 3, 0, json).unwrap()
    }

    #[test]
    fn static_flags_give_their_default_variant() {
        let f = flag(r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#);
        let ctx = Context::new();
        assert!(f.bool_value(&ctx, false));
        assert_eq!(f.variant(&ctx).as_deref(), Some("on"));
        let e = f.evaluate(&ctx);
        assert_eq!(e.reason, Reason::Static);
        assert_eq!(e.value, Some(Value::Bool(true)));
        assert_eq!(e.revision, 3);
    }

    #[test]
    fn disabled_flags_give_the_callers_default() {
        let f = flag(r#"{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#);
        let ctx = Context::new();
        assert!(!f.bool_value(&ctx, false));
        assert!(f.bool_value(&ctx, true));
        assert_eq!(f.evaluate(&ctx).reason, Reason::Disabled);
        assert_eq!(f.variant(&ctx), None);
    }

    #[test]
    fn type_mismatches_and_missing_defaults_give_the_callers_default() {
        let f = flag(r#"{"state":"ENABLED","variants":{"red":"f00"},"defaultVariant":"red"}"#);
        assert!(f.bool_value(&Context::new(), true));
        assert_eq!(f.value(&Context::new()), Some(&Value::String("f00".into())));
        let f = flag(r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":null}"#);
        assert_eq!(f.evaluate(&Context::new()).reason, Reason::Default);
        assert!(!f.bool_value(&Context::new(), false));
    }

    #[test]
    fn targeting_is_never_silently_ignored() {
        let f = flag(
            r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
                "targeting":{"if":[{"==":[{"var":"instance.labels.canary"},"true"]},"on","off"]}}"#,
        );
        let e = f.evaluate(&Context::new());
        assert_eq!(e.reason, Reason::Error);
        assert_eq!(e.error, Some(ErrorCode::General));
        assert!(!f.bool_value(&Context::new(), false));
        let empty =
            flag(r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","targeting":{}}"#);
        assert_eq!(empty.evaluate(&Context::new()).reason, Reason::Static);
    }

    #[test]
    fn bad_definitions_are_rejected() {
        assert!(Flag::compile("f", 1, 0, "nope").is_err());
        assert!(Flag::compile("f", 1, 0, r#"{"state":"MAYBE","variants":{}}"#).is_err());
        assert!(Flag::compile(
            "f",
            1,
            0,
            r#"{"state":"ENABLED","variants":{"a":1},"defaultVariant":"b"}"#
        )
        .is_err());
    }

    #[test]
    fn sets_are_copied_on_change() {
        let a = FlagSet::default().with(Arc::new(flag(
            r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}"#,
        )));
        let b = a.without("f");
        assert_eq!(a.len(), 1);
        assert!(b.is_empty());
    }

    #[tokio::test]
    async fn a_scheduled_change_takes_effect_when_its_instant_fires() {
        let on = Arc::new(flag(
            r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#,
        ));
        let off = Arc::new(
            Flag::compile(
                "f",
                4,
                0,
                r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}"#,
            )
            .unwrap(),
        );
        let instant = crate::client::flip_clock::instant(crate::clock::now_us() + 20_000);
        let set = FlagSet::default().with(on).with_scheduled(off, instant.clone());
        let ctx = Context::new();
        assert!(
            set.get("f").unwrap().bool_value(&ctx, false),
            "not before the instant"
        );
        assert_eq!(set.scheduled("f").map(|(r, _)| r), Some(4));
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !instant.has_fired() {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        assert!(
            !set.get("f").unwrap().bool_value(&ctx, true),
            "the same set, flipped"
        );
        assert_eq!(set.get("f").unwrap().revision, 4);
    }
}
