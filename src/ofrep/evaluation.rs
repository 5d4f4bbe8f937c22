//! OFREP's evaluation shapes: the request's context, a flag's success or failure object, the
//! bulk response's ETag. Pure functions over an [`Evaluation`]; the HTTP side is in
//! [`super`].

use serde_json::{json, Map, Value};
use sha2::Digest;

use crate::eval::{Context, ErrorCode, Evaluation, Flag, InstanceFacts, Reason};
use crate::flagd::configuration::Selector;
use crate::flagd::source::{FlagSource, Lookup};

/// OFREP error codes (OpenFeature's).
pub(crate) const INVALID_CONTEXT: &str = "INVALID_CONTEXT";
pub(crate) const TARGETING_KEY_MISSING: &str = "TARGETING_KEY_MISSING";
pub(crate) const PARSE_ERROR: &str = "PARSE_ERROR";
pub(crate) const FLAG_NOT_FOUND: &str = "FLAG_NOT_FOUND";
pub(crate) const GENERAL: &str = "GENERAL";

/// A failed evaluation: its error code and details.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub code: &'static str,
    pub details: String,
}

impl Failure {
    pub(crate) fn new(code: &'static str, details: impl Into<String>) -> Self {
        Failure {
            code,
            details: details.into(),
        }
    }

    /// The failure object for flag `key` (`key`, `errorCode`, `errorDetails`).
    pub(crate) fn for_flag(&self, key: &str) -> Value {
        json!({"key": key, "errorCode": self.code, "errorDetails": self.details})
    }

    /// The failure object of a whole request (bulk).
    pub(crate) fn for_request(&self) -> Value {
        json!({"errorCode": self.code, "errorDetails": self.details})
    }
}

/// Reads a request body: `{"context": {...}}`. An empty body or an absent context is an
/// empty context (as flagd takes it); a context that is not an object, or a `targetingKey`
/// that is not a string, is `INVALID_CONTEXT`.
pub(crate) fn parse_context(body: &[u8], instance: Option<InstanceFacts>) -> Result<Context, Failure> {
    let mut ctx = Context::new();
    ctx.instance = instance.map(std::sync::Arc::new);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ctx);
    }
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::new(INVALID_CONTEXT, format!("the request body is not JSON: {e}")))?;
    let Value::Object(mut request) = request else {
        return Err(Failure::new(
            INVALID_CONTEXT,
            "the request body must be an object: {\"context\": {...}}",
        ));
    };
    let attributes = match request.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(Failure::new(
                INVALID_CONTEXT,
                "context must be an object of attributes",
            ))
        }
    };
    ctx.attributes = attributes;
    match ctx.attributes.remove("targetingKey") {
        None | Some(Value::Null) => {}
        Some(Value::String(k)) => ctx.targeting_key = Some(k),
        Some(_) => {
            return Err(Failure::new(
                INVALID_CONTEXT,
                "context.targetingKey must be a string",
            ))
        }
    }
    Ok(ctx)
}

/// The success object for `key`: `value` and `variant` left out where the code's default
/// applies (a disabled flag, or no variant chosen and none by default).
pub(crate) fn success(key: &str, e: &Evaluation) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), key.into());
    m.insert("reason".into(), e.reason.as_str().into());
    if e.reason != Reason::Disabled {
        if let (Some(value), Some(variant)) = (&e.value, &e.variant) {
            m.insert("value".into(), value.clone());
            m.insert("variant".into(), Value::String(variant.to_string()));
        }
    }
    m.insert("metadata".into(), Value::Object((*e.metadata).clone()));
    Value::Object(m)
}

/// One flag's outcome.
pub(crate) enum Outcome {
    /// Evaluated (HTTP 200 alone).
    Evaluated(Value),
    /// No such flag (404 alone; left out of a bulk answer).
    NotFound(Failure),
    /// Could not be evaluated for this context (400 alone).
    Failed(Failure),
}

/// Evaluates `key` among the toggles `selector` picks, for `ctx`.
pub(crate) fn evaluate(source: &dyn FlagSource, key: &str, selector: &Selector, ctx: &Context) -> Outcome {
    let flag = match source.flag(key, selector) {
        Ok(f) => f,
        Err(Lookup::NotFound) => {
            return Outcome::NotFound(Failure::new(
                FLAG_NOT_FOUND,
                format!("flag {key:?} was not found"),
            ))
        }
        Err(Lookup::Parse(why)) => return Outcome::Failed(Failure::new(PARSE_ERROR, why)),
    };
    evaluate_flag(&flag, key, ctx, source.instance())
}

fn evaluate_flag(flag: &Flag, key: &str, ctx: &Context, instance: Option<&InstanceFacts>) -> Outcome {
    if ctx.targeting_key.is_none() && flag.reads_targeting_key() {
        return Outcome::Failed(Failure::new(
            TARGETING_KEY_MISSING,
            format!("flag {key:?} splits by the targeting key: send context.targetingKey"),
        ));
    }
    let e = flag.evaluate_in(ctx, instance);
    match e.error {
        None => Outcome::Evaluated(success(key, &e)),
        Some(ErrorCode::ParseError) => Outcome::Failed(Failure::new(
            PARSE_ERROR,
            format!("flag {key:?} has a targeting rule that does not parse"),
        )),
        Some(ErrorCode::FlagNotFound) => Outcome::NotFound(Failure::new(
            FLAG_NOT_FOUND,
            format!("flag {key:?} was not found"),
        )),
        Some(ErrorCode::TypeMismatch | ErrorCode::General) => Outcome::Failed(Failure::new(
            GENERAL,
            format!("flag {key:?} could not be evaluated for this context"),
        )),
    }
}

/// The bulk answer's entity tag: a digest of what was evaluated (the selector and every
/// flag's outcome, which the revisions in effect and the context decide), quoted.
pub(crate) fn etag(selector: &Selector, flags: &Value) -> String {
    let mut h = sha2::Sha256::new();
    h.update(selector.text().as_bytes());
    h.update([0]);
    h.update(flags.to_string().as_bytes());
    format!("\"{}\"", &hex::encode(h.finalize())[..24])
}

/// Whether an `If-None-Match` header value matches `etag` (a list, weak tags, or `*`).
pub(crate) fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(def: Value) -> Flag {
        Flag::compile_value("f", 3, 0, &def, &Map::new()).unwrap()
    }

    fn evaluated(o: Outcome) -> Value {
        match o {
            Outcome::Evaluated(v) => v,
            Outcome::NotFound(f) | Outcome::Failed(f) => panic!("failed: {f:?}"),
        }
    }

    #[test]
    fn contexts_are_read_or_refused_with_the_reason() {
        let ctx = parse_context(br#"{"context":{"targetingKey":"u1","plan":"gold"}}"#, None).unwrap();
        assert_eq!(ctx.targeting_key.as_deref(), Some("u1"));
        assert_eq!(ctx.attributes["plan"], "gold");
        assert!(parse_context(b"", None).unwrap().attributes.is_empty());
        assert!(parse_context(b"{}", None).unwrap().targeting_key.is_none());
        for bad in [
            &b"[1]"[..],
            b"{\"context\": 3}",
            b"{\"context\":{\"targetingKey\":7}}",
            b"{not json",
        ] {
            assert_eq!(parse_context(bad, None).unwrap_err().code, INVALID_CONTEXT);
        }
    }

    #[test]
    fn a_code_default_has_no_value_and_no_variant() {
        let disabled = flag(json!({"state":"DISABLED","variants":{"on":true},"defaultVariant":"on"}));
        let v = evaluated(evaluate_flag(&disabled, "f", &Context::new(), None));
        assert_eq!(v["reason"], "DISABLED");
        assert!(v.get("value").is_none() && v.get("variant").is_none(), "{v}");

        let no_default = flag(
            json!({"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":null,
            "targeting":{"if":[{"==":[{"var":"plan"},"gold"]},"on",null]}}),
        );
        let v = evaluated(evaluate_flag(&no_default, "f", &Context::new(), None));
        assert_eq!(v["reason"], "DEFAULT");
        assert!(v.get("value").is_none(), "{v}");
        let gold = Context::new().with("plan", "gold");
        let v = evaluated(evaluate_flag(&no_default, "f", &gold, None));
        assert_eq!(
            (v["value"].clone(), v["variant"].clone(), v["reason"].clone()),
            (json!(true), json!("on"), json!("TARGETING_MATCH"))
        );
    }

    #[test]
    fn a_split_by_targeting_key_needs_one() {
        let split = flag(
            json!({"state":"ENABLED","variants":{"a":1,"b":2},"defaultVariant":"a",
            "targeting":{"fractional":[["a",50],["b",50]]}}),
        );
        match evaluate_flag(&split, "f", &Context::new(), None) {
            Outcome::Failed(f) => assert_eq!(f.code, TARGETING_KEY_MISSING),
            _ => panic!("a split without a targeting key must fail"),
        }
        let v = evaluated(evaluate_flag(
            &split,
            "f",
            &Context::new().with_targeting_key("u1"),
            None,
        ));
        assert_eq!(v["reason"], "TARGETING_MATCH");
        // A split by another attribute needs none.
        let by_email = flag(
            json!({"state":"ENABLED","variants":{"a":1,"b":2},"defaultVariant":"a",
            "targeting":{"fractional":[{"var":"email"},["a",50],["b",50]]}}),
        );
        assert!(!by_email.reads_targeting_key());
    }

    #[test]
    fn etags_follow_the_outcome_and_match_as_http_says() {
        let all = Selector::All;
        let a = etag(&all, &json!([{"key":"f","value":true}]));
        assert_eq!(a, etag(&all, &json!([{"key":"f","value":true}])));
        assert_ne!(a, etag(&all, &json!([{"key":"f","value":false}])));
        assert_ne!(
            a,
            etag(&Selector::FlagSet("x".into()), &json!([{"key":"f","value":true}]))
        );
        assert!(matches(&a, &a));
        assert!(matches(&format!("W/{a}, \"other\""), &a));
        assert!(matches("*", &a));
        assert!(!matches("\"other\"", &a));
    }
}
