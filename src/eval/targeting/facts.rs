//! The facts a rule is evaluated against, laid out as flagd does: the caller's attributes at
//! the root, `targetingKey`, `$flagd.flagKey` and `$flagd.timestamp` (unix seconds), and ours,
//! `instance.service`, `instance.version` and `instance.labels.*`. They are built straight
//! into the evaluation's arena, borrowing every string from the caller.

use std::collections::BTreeMap;

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::datavalue::NumberValue;
use datalogic_rs::DataValue;
use serde_json::{Map, Value};

/// The identity of the instance evaluating (added by the SDK under `instance`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFacts {
    /// Its service.
    pub service: String,
    /// Its version.
    pub version: String,
    /// Its labels (`canary=true`, ...).
    pub labels: BTreeMap<String, String>,
}

/// Everything one evaluation may look at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'c> {
    /// The flag's key (`$flagd.flagKey`).
    pub flag_key: &'c str,
    /// Now, unix seconds (`$flagd.timestamp`).
    pub timestamp_s: i64,
    /// The bucketing key (`targetingKey`).
    pub targeting_key: Option<&'c str>,
    /// The caller's other attributes.
    pub attributes: &'c Map<String, Value>,
    /// The evaluating instance (`instance.*`), if known.
    pub instance: Option<&'c InstanceFacts>,
}

impl<'c> Facts<'c> {
    /// The root object, in `arena`.
    pub(super) fn in_arena<'a>(&self, arena: &'a Bump) -> &'a DataValue<'a>
    where
        'c: 'a,
    {
        let flagd: &'a [(&'a str, DataValue<'a>)] = arena.alloc_slice_fill_iter([
            ("flagKey", DataValue::String(self.flag_key)),
            (
                "timestamp",
                DataValue::Number(NumberValue::from_i64(self.timestamp_s)),
            ),
        ]);
        let own = [
            self.targeting_key.map(|k| ("targetingKey", DataValue::String(k))),
            Some(("$flagd", DataValue::Object(flagd))),
            self.instance.map(|i| ("instance", instance(i, arena))),
        ];
        // What the evaluator sets replaces an attribute of the same name; other attributes
        // (an `instance` from a caller where the SDK has none, say) stay.
        let (sets_key, sets_instance) = (self.targeting_key.is_some(), self.instance.is_some());
        let overridden = move |k: &str| {
            k == "$flagd" || (sets_key && k == "targetingKey") || (sets_instance && k == "instance")
        };
        let attrs = self
            .attributes
            .iter()
            .filter(|(k, _)| !overridden(k))
            .map(|(k, v)| (k.as_str(), value(v, arena)));
        let shadowed = self.attributes.keys().filter(|k| overridden(k)).count();
        let len = self.attributes.len() - shadowed + own.iter().flatten().count();
        let root = arena.alloc_slice_fill_clone(len, &("", DataValue::Null));
        for (slot, entry) in root.iter_mut().zip(attrs.chain(own.into_iter().flatten())) {
            *slot = entry;
        }
        arena.alloc(DataValue::Object(root))
    }
}

fn instance<'a>(i: &'a InstanceFacts, arena: &'a Bump) -> DataValue<'a> {
    let labels = arena.alloc_slice_fill_iter(
        i.labels
            .iter()
            .map(|(k, v)| (k.as_str(), DataValue::String(v.as_str()))),
    );
    DataValue::Object(arena.alloc_slice_fill_iter([
        ("service", DataValue::String(i.service.as_str())),
        ("version", DataValue::String(i.version.as_str())),
        ("labels", DataValue::Object(labels)),
    ]))
}

/// A JSON value as an arena value, borrowing its strings.
fn value<'a>(v: &'a Value, arena: &'a Bump) -> DataValue<'a> {
    match v {
        Value::Null => DataValue::Null,
        Value::Bool(b) => DataValue::Bool(*b),
        Value::Number(n) => DataValue::Number(if let Some(i) = n.as_i64() {
            NumberValue::from_i64(i)
        } else {
            NumberValue::from_f64(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => DataValue::String(s.as_str()),
        Value::Array(a) => DataValue::Array(arena.alloc_slice_fill_iter(a.iter().map(|v| value(v, arena)))),
        Value::Object(m) => DataValue::Object(
            arena.alloc_slice_fill_iter(m.iter().map(|(k, v)| (k.as_str(), value(v, arena)))),
        ),
    }
}
