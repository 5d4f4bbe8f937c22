//! A toggle's definition: one flagd flag definition (`state`, `variants`, `defaultVariant`,
//! `targeting`, `metadata`), checked against flagd's own JSON schema on write.
//!
//! The schema files are flagd's (`schema/flagd/`, Apache-2.0), embedded in the binary so a node
//! validates with no file or network access.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};

/// Largest definition accepted, as JSON text.
pub const MAX_DEFINITION_BYTES: usize = 64 * 1024;

const FLAGS_SCHEMA: &str = include_str!("../../schema/flagd/flags.json");
const TARGETING_SCHEMA: &str = include_str!("../../schema/flagd/targeting.json");
const FLAGS_ID: &str = "https://flagd.dev/schema/v0/flags.json";
const TARGETING_ID: &str = "https://flagd.dev/schema/v0/targeting.json";

/// Validators compiled from flagd's schema: one per typed flag (so an error names the exact
/// path within the flag type the definition uses) and `anyFlag`, the schema's own gate.
struct Validators {
    any: jsonschema::Validator,
    base: jsonschema::Validator,
    boolean: jsonschema::Validator,
    string: jsonschema::Validator,
    number: jsonschema::Validator,
    object: jsonschema::Validator,
}

impl Validators {
    fn compile() -> std::result::Result<Self, String> {
        let parse = |text: &str| serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
        let registry = jsonschema::Registry::new()
            .add(FLAGS_ID, parse(FLAGS_SCHEMA)?)
            .map_err(|e| e.to_string())?
            .add(TARGETING_ID, parse(TARGETING_SCHEMA)?)
            .map_err(|e| e.to_string())?
            .prepare()
            .map_err(|e| e.to_string())?;
        let build = |definition: &str| {
            let root = serde_json::json!({ "$ref": format!("{FLAGS_ID}#/definitions/{definition}") });
            jsonschema::options()
                .with_registry(&registry)
                .build(&root)
                .map_err(|e| e.to_string())
        };
        Ok(Validators {
            any: build("anyFlag")?,
            base: build("baseFlag")?,
            boolean: build("booleanFlag")?,
            string: build("stringFlag")?,
            number: build("numberFlag")?,
            object: build("objectFlag")?,
        })
    }

    /// The typed-flag validator matching the type of the default variant (or the first one).
    fn for_definition(&self, value: &Value) -> &jsonschema::Validator {
        let variants = value.get("variants").and_then(Value::as_object);
        let default = value.get("defaultVariant").and_then(Value::as_str);
        let typical = variants.and_then(|v| default.and_then(|d| v.get(d)).or_else(|| v.values().next()));
        match typical {
            Some(Value::Bool(_)) => &self.boolean,
            Some(Value::String(_)) => &self.string,
            Some(Value::Number(_)) => &self.number,
            Some(Value::Object(_)) => &self.object,
            _ => &self.base,
        }
    }
}

/// Compiled once; `Err` holds why the embedded schema failed to compile (a build defect,
/// reported on every write rather than a panic).
static VALIDATORS: LazyLock<std::result::Result<Validators, String>> = LazyLock::new(Validators::compile);

/// A validated flagd flag definition, kept as canonical JSON text (keys sorted, no spaces).
///
/// Text, not a parsed tree, because a definition is written once and then encoded and decoded
/// many times (log, replication to every follower, snapshots): as text that is a copy, not a
/// JSON serialization. It also travels through bincode, which cannot carry self-describing JSON
/// values. Equal definitions have equal text, which keeps state digests stable. Consumers that
/// need the tree parse it once per change ([`FlagDefinition::to_value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagDefinition(Arc<str>);

impl FlagDefinition {
    /// Parses and validates a definition written by a user.
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > MAX_DEFINITION_BYTES {
            return Err(Error::ResourceExhausted(format!(
                "flag definition is {} bytes; the limit is {MAX_DEFINITION_BYTES}",
                text.len()
            )));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("flag definition is not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Validates a parsed definition against flagd's schema plus the rules the schema cannot say.
    /// Its targeting may not use `$ref`: there are no shared evaluators to refer to.
    pub fn from_value(value: Value) -> Result<Self> {
        Self::from_value_with(value, &serde_json::Map::new())
    }

    /// [`FlagDefinition::from_value`] for a flag of a set whose `$evaluators` are `evaluators`.
    pub fn from_value_with(value: Value, evaluators: &serde_json::Map<String, Value>) -> Result<Self> {
        let validators = VALIDATORS
            .as_ref()
            .map_err(|e| Error::internal(format!("embedded flagd schema does not compile: {e}")))?;
        if let Some(err) = validators.for_definition(&value).iter_errors(&value).next() {
            let path = err.instance_path().to_string();
            let path = if path.is_empty() { "/".to_string() } else { path };
            return Err(Error::invalid(format!(
                "flag definition does not match the flagd schema at {path}: {err}"
            )));
        }
        if let Some(Value::Array(_)) = value
            .get("variants")
            .and_then(Value::as_object)
            .and_then(|v| v.values().next())
        {
            return Err(Error::invalid(
                "flag definition at /variants: variant values must be booleans, strings, numbers or objects, all of one type",
            ));
        }
        if !validators.any.is_valid(&value) {
            return Err(Error::invalid(
                "flag definition does not match the flagd schema: variant values must be all of one type",
            ));
        }
        let variants = value
            .get("variants")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::invalid("flag definition at /variants: variants are required"))?;
        if variants.is_empty() {
            return Err(Error::invalid(
                "flag definition at /variants: at least one variant is required",
            ));
        }
        if let Some(Value::String(default)) = value.get("defaultVariant") {
            if !variants.contains_key(default) {
                return Err(Error::invalid(format!(
                    "flag definition at /defaultVariant: {default:?} is not one of the variants"
                )));
            }
        }
        if let Some(rule) = value
            .get("targeting")
            .filter(|t| t.as_object().is_none_or(|m| !m.is_empty()))
        {
            // Every instance would fail on it: refuse it here, saying why.
            crate::eval::targeting::Rule::compile(rule, evaluators)
                .map_err(|e| Error::invalid(format!("flag definition at /targeting: {e}")))?;
        }
        Ok(Self::canonical(&value))
    }

    fn canonical(value: &Value) -> Self {
        FlagDefinition(value.to_string().into())
    }

    /// The boolean definition `toggle on` creates for a feature that has none yet:
    /// variants `on: true`, `off: false`, default `on`.
    pub fn boolean(enabled: bool) -> Self {
        Self::canonical(&serde_json::json!({
            "state": if enabled { "ENABLED" } else { "DISABLED" },
            "variants": { "on": true, "off": false },
            "defaultVariant": "on",
        }))
    }

    /// The same definition with `state` set to ENABLED or DISABLED.
    pub fn with_state(&self, enabled: bool) -> Self {
        let mut value = self.to_value();
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "state".into(),
                Value::String(if enabled { "ENABLED" } else { "DISABLED" }.into()),
            );
        }
        Self::canonical(&value)
    }

    /// Whether `state` is ENABLED.
    #[cfg(test)]
    pub fn enabled(&self) -> bool {
        self.to_value().get("state").and_then(Value::as_str) == Some("ENABLED")
    }

    /// The definition parsed.
    pub fn to_value(&self) -> Value {
        // The text was produced by serde_json from a Value, so it parses; Null is unreachable.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// The flag set it belongs to: its `metadata.flagSetId`, as flagd names it (none: no set).
    pub fn flag_set_id(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Outer {
            metadata: Option<Inner>,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(rename = "flagSetId")]
            flag_set_id: Option<Value>,
        }
        let outer: Outer = serde_json::from_str(&self.0).ok()?;
        match outer.metadata?.flag_set_id? {
            Value::String(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// The definition as compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for FlagDefinition {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FlagDefinition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // Stored definitions were validated (and made canonical) on write; re-checking here
        // would let a schema change break replay of an old log.
        String::deserialize(d).map(|text| FlagDefinition(text.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_plain_boolean_flag() {
        let d = FlagDefinition::parse(
            r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#,
        )
        .unwrap();
        assert!(d.enabled());
        assert!(!d.with_state(false).enabled());
    }

    #[test]
    fn the_flag_set_is_read_from_the_metadata() {
        let d = FlagDefinition::parse(
            r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","metadata":{"flagSetId":"checkout","team":"x"}}"#,
        )
        .unwrap();
        assert_eq!(d.flag_set_id().as_deref(), Some("checkout"));
        let none =
            FlagDefinition::parse(r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}"#)
                .unwrap();
        assert_eq!(none.flag_set_id(), None);
    }

    #[test]
    fn names_the_wrong_path() {
        let err = FlagDefinition::parse(
            r#"{"state":"WILL-FAIL","variants":{"on":true,"off":false},"defaultVariant":"on"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/state"), "{err}");
    }

    #[test]
    fn rejects_targeting_every_instance_would_fail_on() {
        let with = |t: &str| {
            FlagDefinition::parse(&format!(
                r#"{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"off","targeting":{t}}}"#
            ))
        };
        assert!(with(r#"{"if":[{"==":[{"var":"instance.labels.canary"},"true"]},"on",null]}"#).is_ok());
        assert!(with(r#"{"fractional":[["on",10],["off",90]]}"#).is_ok());
        let err = with(r#"{"if":[{"sem_vr":[{"var":"v"},">","1.0.0"]},"on",null]}"#).unwrap_err();
        assert!(
            err.to_string().contains("/targeting") && err.to_string().contains("sem_vr"),
            "{err}"
        );
        assert!(with(r#"{"$ref":"missing"}"#).is_err());
    }

    #[test]
    fn rejects_unknown_default_variant() {
        let err =
            FlagDefinition::parse(r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"off"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("/defaultVariant"), "{err}");
    }

    #[test]
    fn round_trips_through_bincode() {
        let d = FlagDefinition::boolean(true);
        let bytes = bincode::serialize(&d).unwrap();
        let back: FlagDefinition = bincode::deserialize(&bytes).unwrap();
        assert_eq!(d, back);
    }

    /// Every flag of flagd's negative schema examples is rejected; every flag of the positive
    /// ones is accepted. (Negative files about flag-set metadata concern a whole file, not one
    /// flag, and are skipped when all their flags are individually valid.)
    #[test]
    fn flagd_schema_examples() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/flagd-schema");
        for kind in ["positive", "negative"] {
            let mut seen = 0;
            for entry in std::fs::read_dir(dir.join(kind)).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                let file: Value = serde_json::from_str(&text).unwrap();
                let flags: Vec<Value> = match file.get("flags") {
                    Some(Value::Object(m)) => m.values().cloned().collect(),
                    Some(Value::Array(a)) => a.clone(),
                    _ => continue,
                };
                let evaluators = file
                    .get("$evaluators")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let results: Vec<bool> = flags
                    .into_iter()
                    .map(|f| FlagDefinition::from_value_with(f, &evaluators).is_ok())
                    .collect();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if kind == "positive" {
                    assert!(results.iter().all(|ok| *ok), "{name} should be accepted");
                } else if !name.contains("flag-set-metadata") && !name.contains("array-flags") {
                    assert!(results.iter().any(|ok| !ok), "{name} should be rejected");
                }
                seen += 1;
            }
            assert!(seen > 3, "too few {kind} examples read");
        }
    }
}
