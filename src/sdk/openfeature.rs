//! An OpenFeature provider backed by the SDK: code written against the `open-feature` crate
//! evaluates Switchyard toggles locally (no network per evaluation), with the SDK's fleet-wide
//! flips, instance identity (`instance.*`) and convergence reports.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use switchyard::sdk::{openfeature::SwitchyardProvider, Sdk, SdkConfig};
//! let sdk = Sdk::start(&["127.0.0.1:7700".to_string()], SdkConfig::default()).await?;
//! let mut api = open_feature::OpenFeature::singleton_mut().await;
//! api.set_provider(SwitchyardProvider::new(sdk)).await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use open_feature::provider::{FeatureProvider, ProviderMetadata, ResolutionDetails};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode, EvaluationReason,
    EvaluationResult, FlagMetadata, FlagMetadataValue, StructValue,
};
use serde_json::{Map, Number, Value};

use crate::eval::{Context, ErrorCode, Reason, ValueType};
use crate::sdk::Sdk;

/// The provider: one SDK, evaluated through OpenFeature.
pub struct SwitchyardProvider {
    sdk: Sdk,
    metadata: ProviderMetadata,
}

impl SwitchyardProvider {
    /// A provider evaluating with `sdk`.
    pub fn new(sdk: Sdk) -> Self {
        SwitchyardProvider {
            sdk,
            metadata: ProviderMetadata::new("switchyard"),
        }
    }

    /// The SDK underneath (to subscribe to changes, or close it).
    pub fn sdk(&self) -> &Sdk {
        &self.sdk
    }

    fn resolve(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        ty: ValueType,
    ) -> EvaluationResult<(Value, Option<String>, EvaluationReason, Option<FlagMetadata>)> {
        let e = self.sdk.evaluate(key, &context(ctx)).as_type(ty);
        let fail = |code: EvaluationErrorCode, message: String| EvaluationError {
            code,
            message: Some(message),
        };
        if let Some(code) = e.error {
            return Err(match code {
                ErrorCode::FlagNotFound => {
                    fail(EvaluationErrorCode::FlagNotFound, format!("no flag {key:?}"))
                }
                ErrorCode::TypeMismatch => fail(
                    EvaluationErrorCode::TypeMismatch,
                    format!("flag {key:?} is of another type"),
                ),
                ErrorCode::ParseError => fail(
                    EvaluationErrorCode::ParseError,
                    format!("flag {key:?} has a rule that does not parse"),
                ),
                ErrorCode::General => fail(
                    EvaluationErrorCode::General(format!("flag {key:?} could not be evaluated")),
                    format!("flag {key:?} could not be evaluated for this context"),
                ),
            });
        }
        let Some(value) = e.value.clone() else {
            // Disabled, or no default variant: the caller's default applies.
            let why = if e.reason == Reason::Disabled {
                "is disabled"
            } else {
                "has no default variant"
            };
            return Err(fail(
                EvaluationErrorCode::General(format!("flag {key:?} {why}")),
                format!("flag {key:?} {why}: the caller's default applies"),
            ));
        };
        let reason = match e.reason {
            Reason::Static => EvaluationReason::Static,
            Reason::Default => EvaluationReason::Default,
            Reason::TargetingMatch => EvaluationReason::TargetingMatch,
            Reason::Split => EvaluationReason::Split,
            Reason::Disabled => EvaluationReason::Disabled,
            Reason::Error => EvaluationReason::Error,
        };
        Ok((
            value,
            e.variant.as_deref().map(str::to_string),
            reason,
            metadata(&e.metadata),
        ))
    }

    fn details<T>(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        ty: ValueType,
        convert: impl FnOnce(Value) -> Option<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let (value, variant, reason, flag_metadata) = self.resolve(key, ctx, ty)?;
        let value = convert(value).ok_or_else(|| EvaluationError {
            code: EvaluationErrorCode::TypeMismatch,
            message: Some(format!("flag {key:?} is of another type")),
        })?;
        Ok(ResolutionDetails {
            value,
            variant,
            reason: Some(reason),
            flag_metadata,
        })
    }
}

/// An OpenFeature context as ours.
pub fn context(ctx: &EvaluationContext) -> Context {
    Context {
        targeting_key: ctx.targeting_key.clone(),
        attributes: ctx
            .custom_fields
            .iter()
            .map(|(k, v)| (k.clone(), field(v)))
            .collect(),
        instance: None,
    }
}

fn field(v: &EvaluationContextFieldValue) -> Value {
    match v {
        EvaluationContextFieldValue::Bool(b) => Value::Bool(*b),
        EvaluationContextFieldValue::Int(i) => Value::Number((*i).into()),
        EvaluationContextFieldValue::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        EvaluationContextFieldValue::String(s) => Value::String(s.clone()),
        EvaluationContextFieldValue::DateTime(t) => Value::String(t.to_string()),
        EvaluationContextFieldValue::Struct(s) => s
            .downcast_ref::<StructValue>()
            .map_or(Value::Null, |s| Value::Object(struct_to_json(s))),
    }
}

fn struct_to_json(s: &StructValue) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

fn value_to_json(v: &open_feature::Value) -> Value {
    match v {
        open_feature::Value::Bool(b) => Value::Bool(*b),
        open_feature::Value::Int(i) => Value::Number((*i).into()),
        open_feature::Value::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        open_feature::Value::String(s) => Value::String(s.clone()),
        open_feature::Value::Array(a) => Value::Array(a.iter().map(value_to_json).collect()),
        open_feature::Value::Struct(s) => Value::Object(struct_to_json(s)),
    }
}

fn json_to_value(v: &Value) -> open_feature::Value {
    match v {
        Value::Null => open_feature::Value::Struct(StructValue::default()),
        Value::Bool(b) => open_feature::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => open_feature::Value::Int(i),
            None => open_feature::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => open_feature::Value::String(s.clone()),
        Value::Array(a) => open_feature::Value::Array(a.iter().map(json_to_value).collect()),
        Value::Object(m) => open_feature::Value::Struct(json_to_struct(m)),
    }
}

fn json_to_struct(m: &Map<String, Value>) -> StructValue {
    StructValue {
        fields: m.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect(),
    }
}

fn metadata(m: &Map<String, Value>) -> Option<FlagMetadata> {
    if m.is_empty() {
        return None;
    }
    let values: HashMap<String, FlagMetadataValue> = m
        .iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::Bool(b) => FlagMetadataValue::Bool(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => FlagMetadataValue::Int(i),
                    None => FlagMetadataValue::Float(n.as_f64()?),
                },
                Value::String(s) => FlagMetadataValue::String(s.clone()),
                _ => return None,
            };
            Some((k.clone(), v))
        })
        .collect();
    Some(FlagMetadata { values })
}

#[tonic::async_trait]
impl FeatureProvider for SwitchyardProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.details(flag_key, ctx, ValueType::Bool, |v| v.as_bool())
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.details(flag_key, ctx, ValueType::Int, |v| v.as_i64())
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.details(flag_key, ctx, ValueType::Float, |v| v.as_f64())
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.details(flag_key, ctx, ValueType::String, |v| {
            v.as_str().map(str::to_string)
        })
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.details(flag_key, ctx, ValueType::Object, |v| {
            v.as_object().map(json_to_struct)
        })
    }
}
