//! Targeting: a flag's JsonLogic rule with flagd's operators, compiled once per change and
//! evaluated per call.
//!
//! The rule engine is [`datalogic_rs`] with its `flagd` feature's `sem_ver`, plus flagd's
//! `fractional` (murmur3 bucketing), `starts_with` and `ends_with` ([`operators`]). `$ref`s to shared `$evaluators` are substituted before compiling, so a
//! compiled [`Rule`] stands alone. Evaluation builds the facts ([`Facts`]: the caller's
//! context, `targetingKey`, the injected `$flagd.flagKey` and `$flagd.timestamp`, and the
//! instance's `instance.service` / `instance.version` / `instance.labels`) directly in a
//! per-thread arena that is reset after each call, so evaluating allocates nothing on the heap
//! once the arena has grown.
//!
//! What a rule's result means follows flagd: a string names the variant, a boolean names the
//! variant `"true"` or `"false"`, `null` means no rule matched (the default variant), anything
//! else is an error.

mod facts;
mod operators;
mod refs;

use std::cell::RefCell;
use std::sync::OnceLock;

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::{DataValue, Engine, Logic};
use serde_json::{Map, Value};

pub use facts::{Facts, InstanceFacts};

/// Why a rule could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetingError {
    /// The rule is not valid JsonLogic, or names an evaluator that does not exist (OpenFeature
    /// `PARSE_ERROR`).
    #[error("targeting rule: {0}")]
    Parse(String),
    /// The rule ran but failed, or gave something that cannot name a variant (OpenFeature
    /// `GENERAL`).
    #[error("targeting evaluation: {0}")]
    Evaluation(String),
}

/// The engine shared by every rule: JsonLogic, flagd's `fractional` and `sem_ver`, and our
/// `starts_with` / `ends_with`.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::builder()
            .add_operator("starts_with", operators::STARTS_WITH)
            .add_operator("ends_with", operators::ENDS_WITH)
            .add_operator(operators::FRACTIONAL, operators::Fractional)
            .build()
    })
}

thread_local! {
    /// Each thread's scratch arena for evaluations, reset after each.
    static ARENA: RefCell<Bump> = RefCell::new(Bump::with_capacity(4096));
}

/// A compiled targeting rule.
#[derive(Debug)]
pub struct Rule {
    logic: Logic,
}

/// What a rule chose (for tests: [`Rule::evaluate_with`] borrows the name instead).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// This variant.
    Variant(String),
    /// No rule matched: the flag's default variant.
    NoMatch,
}

impl Rule {
    /// Compiles `rule`, substituting each `{"$ref": NAME}` with `evaluators[NAME]`.
    pub fn compile(rule: &Value, evaluators: &Map<String, Value>) -> Result<Rule, TargetingError> {
        let resolved = refs::resolve(rule, evaluators)?;
        let logic = engine()
            .compile(&resolved)
            .map_err(|e| TargetingError::Parse(e.to_string()))?;
        Ok(Rule { logic })
    }

    /// Evaluates the rule for `facts`. Calls `choose` with the variant name (borrowed from the
    /// evaluation's arena) so the caller can look it up without allocating.
    pub fn evaluate_with<R>(
        &self,
        facts: &Facts<'_>,
        choose: impl FnOnce(Option<&str>) -> R,
    ) -> Result<R, TargetingError> {
        ARENA.with(|arena| {
            let mut arena = arena.borrow_mut();
            let out = {
                let bump: &Bump = &arena;
                let data = facts.in_arena(bump);
                match engine().evaluate(&self.logic, data, bump) {
                    Ok(DataValue::String(s)) => Ok(choose(Some(s))),
                    Ok(DataValue::Bool(true)) => Ok(choose(Some("true"))),
                    Ok(DataValue::Bool(false)) => Ok(choose(Some("false"))),
                    Ok(DataValue::Null) => Ok(choose(None)),
                    Ok(other) => Err(TargetingError::Evaluation(format!(
                        "the rule gave {other:?}, which names no variant"
                    ))),
                    Err(e) => Err(TargetingError::Evaluation(e.to_string())),
                }
            };
            // Keep one chunk for the next call; drop what a large context made it grow to.
            if arena.allocated_bytes() > 1 << 20 {
                *arena = Bump::with_capacity(4096);
            } else {
                arena.reset();
            }
            out
        })
    }

    /// Evaluates the rule for `facts`: the variant it chose, or no match.
    #[cfg(test)]
    pub fn evaluate(&self, facts: &Facts<'_>) -> Result<Choice, TargetingError> {
        self.evaluate_with(facts, |v| match v {
            Some(name) => Choice::Variant(name.to_string()),
            None => Choice::NoMatch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(rule: Value, ctx: Value, key: Option<&str>) -> Result<Choice, TargetingError> {
        let evaluators = json!({"is_ballmer": {"==": ["ballmer@macrosoft.com", {"var": "email"}]}});
        let rule = Rule::compile(&rule, evaluators.as_object().unwrap())?;
        let attrs = ctx.as_object().cloned().unwrap_or_default();
        let facts = Facts {
            flag_key: "flag",
            timestamp_s: 1_700_000_000,
            targeting_key: key,
            attributes: &attrs,
            instance: None,
        };
        rule.evaluate(&facts)
    }

    fn variant(s: &str) -> Result<Choice, TargetingError> {
        Ok(Choice::Variant(s.into()))
    }

    #[test]
    fn plain_jsonlogic_picks_a_variant_or_falls_through() {
        let rule = json!({"if": [{"==": [{"var": "plan"}, "gold"]}, "on", null]});
        assert_eq!(eval(rule.clone(), json!({"plan": "gold"}), None), variant("on"));
        assert_eq!(eval(rule, json!({"plan": "free"}), None), Ok(Choice::NoMatch));
    }

    #[test]
    fn refs_are_substituted_and_a_missing_one_is_a_parse_error() {
        let rule = json!({"if": [{"$ref": "is_ballmer"}, "hi", "bye"]});
        assert_eq!(
            eval(rule.clone(), json!({"email": "ballmer@macrosoft.com"}), None),
            variant("hi")
        );
        assert_eq!(eval(rule, json!({"email": "x@y"}), None), variant("bye"));
        assert!(matches!(
            eval(json!({"$ref": "nope"}), json!({}), None),
            Err(TargetingError::Parse(_))
        ));
    }

    #[test]
    fn booleans_name_variants_and_numbers_are_errors() {
        assert_eq!(eval(json!({"==": [1, 1]}), json!({}), None), variant("true"));
        assert!(matches!(
            eval(json!({"+": [1, 1]}), json!({}), None),
            Err(TargetingError::Evaluation(_))
        ));
    }

    #[test]
    fn a_fifty_fifty_split_is_even_and_sticky() {
        let rule = Rule::compile(&json!({"fractional": [["a", 50], ["b", 50]]}), &Map::new()).unwrap();
        let attrs = Map::new();
        let pick = |key: &str| {
            rule.evaluate(&Facts {
                flag_key: "ab-test",
                timestamp_s: 0,
                targeting_key: Some(key),
                attributes: &attrs,
                instance: None,
            })
            .unwrap()
        };
        let n = 100_000;
        let a = (0..n)
            .filter(|i| pick(&format!("customer-{i}")) == Choice::Variant("a".into()))
            .count();
        let share = a as f64 / n as f64;
        assert!((0.49..=0.51).contains(&share), "variant a got {share}");
        // The same customer, asked again (another instance, after a restart): the same variant.
        for i in [0, 7, 99_999] {
            let key = format!("customer-{i}");
            assert_eq!(pick(&key), pick(&key));
        }
    }

    #[test]
    fn flagd_operators_and_injected_facts_are_available() {
        let rule = json!({"if": [{"sem_ver": [{"var": "v"}, ">=", "1.2.0"]}, "new", "old"]});
        assert_eq!(eval(rule, json!({"v": "1.3.0"}), None), variant("new"));
        let rule = json!({"if": [{"starts_with": [{"var": "id"}, "ab"]}, "yes", "no"]});
        assert_eq!(eval(rule, json!({"id": "abc"}), None), variant("yes"));
        let rule = json!({"if": [{"==": [{"var": "$flagd.flagKey"}, "flag"]}, "yes", "no"]});
        assert_eq!(eval(rule, json!({}), None), variant("yes"));
        let rule = json!({"if": [{"==": [{"var": "targetingKey"}, "k"]}, "yes", "no"]});
        assert_eq!(eval(rule.clone(), json!({}), Some("k")), variant("yes"));
        assert_eq!(
            eval(rule, json!({"targetingKey": "x"}), Some("k")),
            variant("yes")
        );
        // Without an instance, a caller's own `instance` attribute is read as given.
        let rule = json!({"if": [{"==": [{"var": "instance.zone"}, "eu"]}, "yes", "no"]});
        assert_eq!(
            eval(rule, json!({"instance": {"zone": "eu"}}), None),
            variant("yes")
        );
        let rule = json!({"fractional": [["a", 50], ["b", 50]]});
        assert!(matches!(eval(rule, json!({}), Some("k")), Ok(Choice::Variant(_))));
    }
}
