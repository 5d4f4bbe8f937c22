//! `$ref` substitution: flagd lets a rule say `{"$ref": "name"}` for a shared evaluator from the
//! flag set's `$evaluators`. Substituted before compiling, recursively (an evaluator may refer
//! to another), with a depth bound so a cycle is an error, not a stack overflow. The same walk
//! refuses operators flagd does not have, so a typo is a clear error when the toggle is written
//! rather than a failure at every evaluation, and points `fractional` at our implementation.

use serde_json::{Map, Value};

use super::TargetingError;

/// How deep evaluators may refer to one another.
const MAX_DEPTH: usize = 32;

/// The operators of JsonLogic and flagd's additions: what every flagd provider understands.
const OPERATORS: &[&str] = &[
    "var",
    "missing",
    "missing_some",
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    ">",
    ">=",
    "<",
    "<=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "map",
    "reduce",
    "filter",
    "all",
    "none",
    "some",
    "merge",
    "in",
    "cat",
    "substr",
    "log",
    "fractional",
    "sem_ver",
    "starts_with",
    "ends_with",
];

/// `rule` with every `$ref` replaced by its evaluator.
pub fn resolve(rule: &Value, evaluators: &Map<String, Value>) -> Result<Value, TargetingError> {
    resolve_at(rule, evaluators, 0)
}

fn resolve_at(rule: &Value, evaluators: &Map<String, Value>, depth: usize) -> Result<Value, TargetingError> {
    if depth > MAX_DEPTH {
        return Err(TargetingError::Parse(format!(
            "$ref nested deeper than {MAX_DEPTH}: is there a cycle among the evaluators?"
        )));
    }
    match rule {
        Value::Object(m) if m.len() == 1 && m.contains_key("$ref") => {
            let Some(Value::String(name)) = m.get("$ref") else {
                return Err(TargetingError::Parse("$ref must name an evaluator".into()));
            };
            let target = evaluators
                .get(name)
                .ok_or_else(|| TargetingError::Parse(format!("$ref to unknown evaluator {name:?}")))?;
            resolve_at(target, evaluators, depth + 1)
        }
        Value::Object(m) => {
            if m.len() == 1 {
                if let Some(op) = m.keys().next().filter(|op| !OPERATORS.contains(&op.as_str())) {
                    return Err(TargetingError::Parse(format!("unknown operator {op:?}")));
                }
                if let Some(args) = m.get("fractional") {
                    let mut renamed = Map::new();
                    renamed.insert(
                        super::operators::FRACTIONAL.to_string(),
                        resolve_at(args, evaluators, depth)?,
                    );
                    return Ok(Value::Object(renamed));
                }
            }
            Ok(Value::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), resolve_at(v, evaluators, depth)?)))
                    .collect::<Result<_, TargetingError>>()?,
            ))
        }
        Value::Array(a) => Ok(Value::Array(
            a.iter()
                .map(|v| resolve_at(v, evaluators, depth))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_refs_resolve_and_cycles_are_refused() {
        let ev = json!({"a": {"!": {"$ref": "b"}}, "b": {"var": "x"}, "c": {"$ref": "c"}});
        let ev = ev.as_object().unwrap();
        assert_eq!(
            resolve(&json!({"if": [{"$ref": "a"}, 1, 2]}), ev).unwrap(),
            json!({"if": [{"!": {"var": "x"}}, 1, 2]})
        );
        assert!(resolve(&json!({"$ref": "c"}), ev).is_err());
        assert!(resolve(&json!({"$ref": 3}), ev).is_err());
        assert!(resolve(&json!({"if": [{"sem_vr": [1, "=", 1]}, 1, 2]}), ev).is_err());
    }
}
