//! flagd conformance: runs the flagd-testbed evaluator suite (gherkin features and the testkit
//! flags) against Switchyard's evaluator, the one the SDK uses. Every scenario must pass,
//! except the ones listed in `SKIPPED_TAGS` with the reason (also in the README).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use switchyard::eval::{Context, Evaluation, Flag, ValueType};

/// Tags of examples this evaluator does not run, with why.
const SKIPPED_TAGS: &[(&str, &str)] = &[(
    "@fractional-v1",
    "the legacy float bucketing; flagd and this evaluator use the v2 integer bucketing",
)];

/// Scenarios this evaluator does not pass yet, with why (none today).
const SKIPPED_SCENARIOS: &[(&str, &str)] = &[];

/// Stands for an escaped quote inside a table cell.
const QUOTE: &str = "\u{1}";

/// The suite: the workspace's copy when present, else the vendored one.
fn suite() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/conformance/flagd-testbed/evaluator");
    if shared.join("flags/testkit-flags.json").exists() {
        shared
    } else {
        root.join("tests/conformance/flagd-testbed/evaluator")
    }
}

/// The testkit flags, compiled.
fn flags(dir: &Path) -> BTreeMap<String, Flag> {
    let text = std::fs::read_to_string(dir.join("flags/testkit-flags.json")).expect("testkit flags");
    let doc: Value = serde_json::from_str(&text).expect("testkit flags are JSON");
    let evaluators = doc
        .get("$evaluators")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    doc["flags"]
        .as_object()
        .expect("a flags object")
        .iter()
        .map(|(key, def)| {
            let flag = Flag::compile_value(key, 1, 0, def, &evaluators)
                .unwrap_or_else(|e| panic!("testkit flag {key} does not compile: {e}"));
            (key.clone(), flag)
        })
        .collect()
}

/// One scenario being played.
#[derive(Default)]
struct Play {
    ty: Option<ValueType>,
    key: String,
    fallback: String,
    ctx: Context,
    result: Option<Evaluation>,
}

fn value_type(name: &str) -> ValueType {
    match name {
        "Boolean" => ValueType::Bool,
        "String" => ValueType::String,
        "Integer" => ValueType::Int,
        "Float" => ValueType::Float,
        "Object" => ValueType::Object,
        other => panic!("unknown flag type {other}"),
    }
}

/// A table cell or quoted value as a value of `ty`.
fn typed(ty: ValueType, text: &str) -> Value {
    match ty {
        ValueType::Bool => Value::Bool(text == "true"),
        ValueType::String => Value::String(text.to_string()),
        ValueType::Int => serde_json::from_str(text).unwrap_or_else(|_| panic!("not an integer: {text}")),
        ValueType::Float => serde_json::from_str(text).unwrap_or_else(|_| panic!("not a number: {text}")),
        ValueType::Object => serde_json::from_str(&text.replace(QUOTE, "\""))
            .unwrap_or_else(|e| panic!("not an object: {text}: {e}")),
    }
}

/// The quoted arguments of a step.
fn quoted(step: &str) -> Vec<String> {
    step.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

impl Play {
    fn step(
        &mut self,
        text: &str,
        table: Option<&gherkin::Table>,
        flags: &BTreeMap<String, Flag>,
    ) -> Result<(), String> {
        let q = quoted(text);
        if text == "an evaluator" {
        } else if let Some(rest) = text.strip_prefix("a ").filter(|r| r.contains("-flag with key")) {
            self.ty = Some(value_type(rest.split('-').next().unwrap_or_default()));
            self.key = q[0].clone();
            self.fallback = q[1].clone();
        } else if text.starts_with("a context containing a targeting key") {
            self.ctx.targeting_key = Some(q[0].clone());
        } else if text.starts_with("a context containing a nested property") {
            let outer = self
                .ctx
                .attributes
                .entry(q[0].clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = outer {
                m.insert(q[1].clone(), Value::String(q[2].clone()));
            }
        } else if text.starts_with("a context containing a key") {
            let v = match q[1].as_str() {
                "String" => Value::String(q[2].clone()),
                "Integer" => typed(ValueType::Int, &q[2]),
                "Float" => typed(ValueType::Float, &q[2]),
                "Boolean" => typed(ValueType::Bool, &q[2]),
                other => return Err(format!("unknown context type {other}")),
            };
            self.ctx.attributes.insert(q[0].clone(), v);
        } else if text == "the flag was evaluated with details" {
            let ty = self.ty.ok_or("no flag chosen")?;
            let e = match flags.get(&self.key) {
                Some(f) => f.evaluate(&self.ctx).as_type(ty),
                None => Evaluation::not_found(),
            };
            self.result = Some(e);
        } else if text.starts_with("the resolved details value should be") {
            let (ty, e) = (
                self.ty.ok_or("no flag")?,
                self.result.as_ref().ok_or("not evaluated")?,
            );
            let got = e.value.clone().unwrap_or_else(|| typed(ty, &self.fallback));
            let want = typed(ty, &q[0]);
            if !numbers_equal(&got, &want) {
                return Err(format!("value {got} != {want} ({:?} {:?})", e.reason, e.error));
            }
        } else if text.starts_with("the reason should be") {
            let e = self.result.as_ref().ok_or("not evaluated")?;
            if e.reason.as_str() != q[0] {
                return Err(format!("reason {} != {}", e.reason.as_str(), q[0]));
            }
        } else if text.starts_with("the error-code should be") {
            let e = self.result.as_ref().ok_or("not evaluated")?;
            let got = e.error.map(|c| c.as_str()).unwrap_or("");
            if got != q[0] {
                return Err(format!("error code {got:?} != {:?}", q[0]));
            }
        } else if text == "the resolved metadata is empty" {
            let e = self.result.as_ref().ok_or("not evaluated")?;
            if !e.metadata.is_empty() {
                return Err(format!("metadata {:?} is not empty", e.metadata));
            }
        } else if text == "the resolved metadata should contain" {
            let e = self.result.as_ref().ok_or("not evaluated")?;
            let rows = &table.ok_or("no table")?.rows;
            for row in rows.iter().skip(1) {
                let ty = value_type(&row[1]);
                let want = typed(ty, &row[2]);
                match e.metadata.get(&row[0]) {
                    Some(got) if numbers_equal(got, &want) && ty.matches(got) => {}
                    other => return Err(format!("metadata {}: {other:?} != {want}", row[0])),
                }
            }
        } else {
            return Err(format!("unknown step {text:?}"));
        }
        Ok(())
    }
}

#[test]
fn the_flagd_testbed_evaluator_suite_passes() {
    let dir = suite();
    let flags = flags(&dir);
    let mut features: Vec<PathBuf> = std::fs::read_dir(dir.join("gherkin"))
        .expect("gherkin dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "feature"))
        .collect();
    features.sort();
    assert!(features.len() >= 10, "the suite has {} features", features.len());
    let (mut passed, mut skipped, mut failures) = (0usize, 0usize, Vec::new());
    for path in &features {
        // Escaped quotes in table cells (JSON objects) are not valid Gherkin for the parser:
        // they stand in as QUOTE until the value is read.
        let text = std::fs::read_to_string(path).expect("feature file");
        let feature = gherkin::Feature::parse(text.replace("\\\"", QUOTE), gherkin::GherkinEnv::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let background: Vec<gherkin::Step> =
            feature.background.iter().flat_map(|b| b.steps.clone()).collect();
        for scenario in &feature.scenarios {
            // (values for the placeholders, the example's tags)
            let mut runs: Vec<(BTreeMap<String, String>, Vec<String>)> = Vec::new();
            if scenario.examples.is_empty() {
                runs.push((BTreeMap::new(), Vec::new()));
            }
            for ex in &scenario.examples {
                let Some(table) = &ex.table else { continue };
                let header = &table.rows[0];
                for row in table.rows.iter().skip(1) {
                    runs.push((
                        header.iter().cloned().zip(row.iter().cloned()).collect(),
                        ex.tags.clone(),
                    ));
                }
            }
            for (values, example_tags) in runs {
                let tags: Vec<&String> = feature
                    .tags
                    .iter()
                    .chain(&scenario.tags)
                    .chain(&example_tags)
                    .collect();
                if tags.iter().any(|t| {
                    SKIPPED_TAGS
                        .iter()
                        .any(|(s, _)| t.as_str() == &s[1..] || t.as_str() == *s)
                }) {
                    skipped += 1;
                    continue;
                }
                if SKIPPED_SCENARIOS.iter().any(|(n, _)| *n == scenario.name) {
                    skipped += 1;
                    continue;
                }
                let mut play = Play::default();
                let name = format!(
                    "{}: {} {:?}",
                    path.file_name().unwrap_or_default().to_string_lossy(),
                    scenario.name,
                    values
                );
                for step in background.iter().chain(&scenario.steps) {
                    let mut text = step.value.clone();
                    for (k, v) in &values {
                        text = text.replace(&format!("<{k}>"), v);
                    }
                    if let Err(e) = play.step(&text, step.table.as_ref(), &flags) {
                        failures.push(format!("{name}: {text}: {e}"));
                        break;
                    }
                }
                passed += 1;
            }
        }
    }
    let passed = passed - failures.len();
    eprintln!(
        "flagd-testbed evaluator suite: {passed} passed, {skipped} skipped, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    assert!(passed >= 100, "only {passed} cases ran");
    assert!(skipped > 0 && skipped < 30, "{skipped} skipped");
}

/// The same customer lands in the same bucket in our evaluator and in the engine of
/// OpenFeature's Rust flagd provider (`flagd-evaluation-engine`).
#[test]
fn fractional_buckets_match_the_openfeature_rust_engine() {
    let rule = r#"{"fractional":[["a",25],["b",25],["c",50]]}"#;
    let def = format!(
        r#"{{"state":"ENABLED","variants":{{"a":1,"b":2,"c":3}},"defaultVariant":"c","targeting":{rule}}}"#
    );
    let flag = Flag::compile("ab-test", 1, 0, &def).expect("compiles");
    let engine = flagd_evaluation_engine::targeting::Operator::new();
    for i in 0..2_000 {
        let key = format!("customer-{i}");
        let ours = flag
            .variant(&Context::new().with_targeting_key(key.clone()))
            .map(|v| v.to_string());
        let theirs = engine
            .apply(
                "ab-test",
                rule,
                &open_feature::EvaluationContext::default().with_targeting_key(key.clone()),
            )
            .expect("evaluates");
        assert_eq!(ours, theirs, "{key}");
    }
}
