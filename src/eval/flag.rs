//! A toggle compiled for evaluation, and evaluating it.
//!
//! A toggle's flagd definition is compiled once per change into a [`Flag`]: the state, the
//! variants with their values, and the default variant resolved to an index. Evaluating a flag
//! without targeting then costs a match, with no allocation.
//!
//! A flag's targeting rule (JsonLogic with flagd's operators) is compiled with the flag, once
//! per change (a targeting `Rule`); evaluating it reads the caller's [`Context`] and
//! the instance's identity in place. Reasons and error codes follow flagd: `STATIC` without
//! targeting, `TARGETING_MATCH` when a rule chose a variant, `DEFAULT` when none matched,
//! `DISABLED` for a killed flag, `ERROR` with `PARSE_ERROR` / `GENERAL` / `TYPE_MISMATCH` /
//! `FLAG_NOT_FOUND` otherwise.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::eval::targeting::{Facts, InstanceFacts, Rule, TargetingError};

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
    /// The targeting rule is not valid (or names an unknown evaluator).
    ParseError,
    /// The rule failed, or chose a variant the flag does not have.
    General,
}

impl ErrorCode {
    /// The OpenFeature name (`FLAG_NOT_FOUND`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::General => "GENERAL",
        }
    }
}

/// The caller's context: the customer's attributes (`targetingKey` = customer id, region,
/// plan, ...). The SDK adds the instance's identity under `instance`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// The bucketing key (e.g. the customer id).
    pub targeting_key: Option<String>,
    /// Other attributes.
    pub attributes: Map<String, Value>,
    /// The evaluating instance (`instance.service`, `instance.version`, `instance.labels.*`).
    /// The SDK supplies its own when this is empty.
    pub instance: Option<Arc<InstanceFacts>>,
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

    /// As seen from this instance.
    pub fn with_instance(mut self, instance: InstanceFacts) -> Self {
        self.instance = Some(Arc::new(instance));
        self
    }
}

/// A flag's compiled targeting, or why it does not compile (reported at evaluation, as flagd
/// does, so one bad rule does not hide the other flags).
#[derive(Debug, Clone)]
struct Targeting {
    source: Value,
    rule: std::result::Result<Arc<Rule>, TargetingError>,
}

impl PartialEq for Targeting {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
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
    targeting: Option<Targeting>,
    metadata: Arc<Map<String, Value>>,
}

impl Flag {
    /// Compiles a toggle's flagd definition (JSON text).
    pub fn compile(key: &str, revision: u64, effective_at_ms: i64, definition_json: &str) -> Result<Flag> {
        let def: Value = serde_json::from_str(definition_json)
            .map_err(|e| Error::invalid(format!("toggle {key:?}: definition is not JSON: {e}")))?;
        Flag::compile_value(key, revision, effective_at_ms, &def, &Map::new())
    }

    /// Compiles a parsed flagd definition, resolving `$ref`s against `evaluators`.
    pub fn compile_value(
        key: &str,
        revision: u64,
        effective_at_ms: i64,
        def: &Value,
        evaluators: &Map<String, Value>,
    ) -> Result<Flag> {
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
            Some(t) => Some(Targeting {
                source: t.clone(),
                rule: Rule::compile(t, evaluators).map(Arc::new),
            }),
        };
        let metadata = match def.get("metadata") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
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
            metadata: Arc::new(metadata),
        })
    }

    /// The flag as a flagd definition (state, variants, default variant, targeting, metadata):
    /// one that compiles back to this flag.
    pub fn definition(&self) -> Value {
        let mut d = Map::new();
        let state = if self.enabled { "ENABLED" } else { "DISABLED" };
        d.insert("state".into(), state.into());
        let variants: Map<String, Value> = self
            .variants
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        d.insert("variants".into(), Value::Object(variants));
        let default = self
            .default_variant
            .map_or(Value::Null, |i| Value::String(self.variants[i].0.to_string()));
        d.insert("defaultVariant".into(), default);
        if let Some(t) = &self.targeting {
            d.insert("targeting".into(), t.source.clone());
        }
        if !self.metadata.is_empty() {
            d.insert("metadata".into(), Value::Object((*self.metadata).clone()));
        }
        Value::Object(d)
    }

    /// The flag's metadata (flagd's `metadata`).
    pub fn metadata(&self) -> &Arc<Map<String, Value>> {
        &self.metadata
    }

    /// Whether the flag is ENABLED (not killed).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Resolves the variant: its index and the reason, or why there is none. `instance` stands
    /// in for the context's when that is empty.
    fn resolve(
        &self,
        ctx: &Context,
        instance: Option<&InstanceFacts>,
    ) -> std::result::Result<(Option<usize>, Reason), ErrorCode> {
        if !self.enabled {
            return Ok((None, Reason::Disabled));
        }
        let Some(targeting) = &self.targeting else {
            return Ok((self.default_variant, Reason::Static));
        };
        let rule = targeting.rule.as_ref().map_err(|_| ErrorCode::ParseError)?;
        let facts = Facts {
            flag_key: &self.key,
            timestamp_s: crate::clock::now_ms() / 1000,
            targeting_key: ctx.targeting_key.as_deref(),
            attributes: &ctx.attributes,
            instance: ctx.instance.as_deref().or(instance),
        };
        let chosen = rule.evaluate_with(&facts, |name| {
            name.map(|n| self.variants.iter().position(|(v, _)| **v == *n))
        });
        match chosen {
            Ok(Some(Some(i))) => Ok((Some(i), Reason::TargetingMatch)),
            // A variant the flag does not have.
            Ok(Some(None)) => Err(ErrorCode::General),
            Ok(None) => Ok((self.default_variant, Reason::Default)),
            Err(TargetingError::Parse(_)) => Err(ErrorCode::ParseError),
            Err(TargetingError::Evaluation(_)) => Err(ErrorCode::General),
        }
    }

    /// Evaluates the flag for `ctx`.
    pub fn evaluate(&self, ctx: &Context) -> Evaluation {
        self.evaluate_in(ctx, None)
    }

    /// Whether its targeting reads the targeting key: a `fractional` split that buckets by it
    /// (no bucketing expression of its own), or `var targetingKey`. Such a flag cannot be
    /// evaluated as meant for a caller that sends none.
    pub fn reads_targeting_key(&self) -> bool {
        fn reads(v: &Value) -> bool {
            match v {
                Value::Object(m) => m.iter().any(|(op, args)| {
                    let splits_by_key = op == "fractional"
                        && args
                            .as_array()
                            .and_then(|a| a.first())
                            .is_some_and(Value::is_array);
                    let names_key = op == "var"
                        && match args {
                            Value::String(s) => s == "targetingKey",
                            Value::Array(a) => a.first().and_then(Value::as_str) == Some("targetingKey"),
                            _ => false,
                        };
                    splits_by_key || names_key || reads(args)
                }),
                Value::Array(a) => a.iter().any(reads),
                _ => false,
            }
        }
        self.enabled && self.targeting.as_ref().is_some_and(|t| reads(&t.source))
    }

    /// Evaluates the flag for `ctx` on `instance`.
    pub fn evaluate_in(&self, ctx: &Context, instance: Option<&InstanceFacts>) -> Evaluation {
        let (value, variant, reason, error) = match self.resolve(ctx, instance) {
            Ok((Some(i), reason)) => (
                Some(self.variants[i].1.clone()),
                Some(self.variants[i].0.clone()),
                reason,
                None,
            ),
            // No default variant: the caller's default.
            Ok((None, Reason::Static)) => (None, None, Reason::Default, None),
            Ok((None, reason)) => (None, None, reason, None),
            Err(code) => (None, None, Reason::Error, Some(code)),
        };
        Evaluation {
            value,
            variant,
            reason,
            error,
            revision: self.revision,
            metadata: self.metadata.clone(),
        }
    }

    /// The boolean value for `ctx`, or `default` when disabled, not boolean or not evaluable.
    /// Allocates nothing.
    pub fn bool_value(&self, ctx: &Context, default: bool) -> bool {
        self.bool_value_in(ctx, None, default)
    }

    /// [`Flag::bool_value`] on `instance`.
    pub fn bool_value_in(&self, ctx: &Context, instance: Option<&InstanceFacts>, default: bool) -> bool {
        match self.resolve(ctx, instance) {
            Ok((Some(i), _)) => self.variants[i].1.as_bool().unwrap_or(default),
            _ => default,
        }
    }

    /// The variant's name for `ctx` (none when disabled or not evaluable). Allocates nothing.
    pub fn variant(&self, ctx: &Context) -> Option<Arc<str>> {
        self.variant_in(ctx, None)
    }

    /// [`Flag::variant`] on `instance`.
    pub fn variant_in(&self, ctx: &Context, instance: Option<&InstanceFacts>) -> Option<Arc<str>> {
        match self.resolve(ctx, instance) {
            Ok((Some(i), _)) => Some(self.variants[i].0.clone()),
            _ => None,
        }
    }

    /// The variant's value for `ctx` (none when disabled or not evaluable).
    pub fn value(&self, ctx: &Context) -> Option<&Value> {
        self.value_in(ctx, None)
    }

    /// [`Flag::value`] on `instance`.
    pub fn value_in(&self, ctx: &Context, instance: Option<&InstanceFacts>) -> Option<&Value> {
        match self.resolve(ctx, instance) {
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
    /// The flag's metadata.
    pub metadata: Arc<Map<String, Value>>,
}

/// The type a caller asks a flag's value to have (OpenFeature's typed resolvers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `true` / `false`.
    Bool,
    /// A string.
    String,
    /// An integer.
    Int,
    /// Any number.
    Float,
    /// A JSON object.
    Object,
}

impl ValueType {
    /// Whether `value` is of this type.
    pub fn matches(self, value: &Value) -> bool {
        match self {
            ValueType::Bool => value.is_boolean(),
            ValueType::String => value.is_string(),
            ValueType::Int => value.is_i64() || value.is_u64(),
            ValueType::Float => value.is_number(),
            ValueType::Object => value.is_object(),
        }
    }
}

impl Evaluation {
    /// This evaluation as a resolver of `ty` sees it: a value of another type is an error
    /// (`TYPE_MISMATCH`, the caller's default), as in OpenFeature.
    pub fn as_type(self, ty: ValueType) -> Evaluation {
        match &self.value {
            Some(v) if !ty.matches(v) => Evaluation {
                value: None,
                variant: None,
                reason: Reason::Error,
                error: Some(ErrorCode::TypeMismatch),
                ..self
            },
            _ => self,
        }
    }

    /// The evaluation of a flag the local copy does not hold.
    pub fn not_found() -> Self {
        Evaluation {
            value: None,
            variant: None,
            reason: Reason::Error,
            error: Some(ErrorCode::FlagNotFound),
            revision: 0,
            metadata: Arc::default(),
        }
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
    fn targeting_reads_the_context_and_the_instance() {
        let f = flag(
            r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
                "targeting":{"if":[{"==":[{"var":"instance.labels.canary"},"true"]},"on",
                    {"if":[{"==":[{"var":"plan"},"gold"]},"on",null]}]}}"#,
        );
        let canary = InstanceFacts {
            service: "api".into(),
            version: "1.2.0".into(),
            labels: [("canary".to_string(), "true".to_string())].into(),
        };
        let e = f.evaluate_in(&Context::new(), Some(&canary));
        assert_eq!(
            (e.reason, e.variant.as_deref()),
            (Reason::TargetingMatch, Some("on"))
        );
        let e = f.evaluate(&Context::new());
        assert_eq!((e.reason, e.variant.as_deref()), (Reason::Default, Some("off")));
        assert!(f.bool_value(&Context::new().with("plan", "gold"), false));
        assert!(f.bool_value(&Context::new().with_instance(canary), false));
        let bad = flag(
            r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on",
                "targeting":{"if":[true,"missing",null]}}"#,
        );
        assert_eq!(bad.evaluate(&Context::new()).error, Some(ErrorCode::General));
        let unparsable = flag(
            r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on",
                "targeting":{"no_such_operator":[1]}}"#,
        );
        assert_eq!(
            unparsable.evaluate(&Context::new()).error,
            Some(ErrorCode::ParseError)
        );
        let empty =
            flag(r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","targeting":{}}"#);
        assert_eq!(empty.evaluate(&Context::new()).reason, Reason::Static);
    }

    #[test]
    fn a_flag_gives_back_a_definition_that_compiles_to_it() {
        let def = serde_json::json!({"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "off", "metadata": {"flagSetId": "checkout"},
            "targeting": {"if": [{"==": [{"var": "plan"}, "gold"]}, "on", null]}});
        let f = Flag::compile_value("f", 3, 10, &def, &Map::new()).unwrap();
        assert_eq!(f.definition(), def);
        let back = Flag::compile_value("f", 3, 10, &f.definition(), &Map::new()).unwrap();
        assert_eq!(back, f);
        let killed =
            serde_json::json!({"state": "DISABLED", "variants": {"on": true}, "defaultVariant": null});
        let k = Flag::compile_value("k", 1, 0, &killed, &Map::new()).unwrap();
        assert_eq!(k.definition(), killed);
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
}
