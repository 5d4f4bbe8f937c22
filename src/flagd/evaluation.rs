//! `flagd.evaluation.v1.Service`: remote evaluation for rpc-mode flagd providers. A node
//! evaluates with the SDK's evaluator ([`crate::eval::Flag`]) on the definition in effect
//! now (a scheduled change counts from its `effective_at`; see [`super::resolver`]), among the
//! toggles the `Flagd-Selector` header picks (all without one). `EventStream` says
//! `provider_ready`, then `configuration_change` (with the changed keys) after each change to a
//! toggle and when a scheduled one takes effect, and `keep_alive` every 30 s.
//!
//! Errors are the statuses flagd gives: `NOT_FOUND` for an unknown or disabled flag,
//! `INVALID_ARGUMENT` for a value of another type, `DATA_LOSS` for a rule that does not parse,
//! `UNKNOWN` for one that fails.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::limits::WatchPermit;
use crate::clock::now_ms;
use crate::eval::{Context, ErrorCode, Evaluation, Flag, Reason, ValueType};
use crate::flagd::resolver::instance_from_headers;
use crate::flagd::source::{next_scheduled, Changes, FlagSource, Lookup};
use crate::flagd::sync::selector;
use crate::pb::flagd::evaluation as pb;
use crate::pb::flagd::evaluation::service_server::Service;
use crate::pb::structs;

/// How often the event stream says it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Events buffered per event stream.
const STREAM_BUFFER: usize = 64;

/// The evaluation service of one node (or agent).
pub struct FlagdEvaluation {
    source: Arc<dyn FlagSource>,
}

impl FlagdEvaluation {
    /// The service evaluating `source`'s flags.
    pub(crate) fn new(source: Arc<dyn FlagSource>) -> Self {
        FlagdEvaluation { source }
    }

    /// Evaluates `key` for the request's context as a resolver of `ty`.
    fn resolve<T>(
        &self,
        request: &Request<T>,
        key: &str,
        context: Option<&prost_types::Struct>,
        ty: ValueType,
    ) -> Result<Evaluation, Status> {
        let (e, _) = evaluate(&*self.source, request, key, context, ty)?;
        match (e.reason, e.error) {
            (Reason::Disabled, _) => Err(Status::not_found(format!(
                "FLAG_DISABLED: flag {key:?} is disabled"
            ))),
            (_, Some(code)) => Err(error_status(key, code)),
            _ => Ok(e),
        }
    }
}

/// The status flagd gives for an evaluation error.
pub(crate) fn error_status(key: &str, code: ErrorCode) -> Status {
    match code {
        ErrorCode::TypeMismatch => Status::invalid_argument(format!(
            "TYPE_MISMATCH: flag {key:?} is not of the requested type"
        )),
        ErrorCode::ParseError => Status::data_loss(format!(
            "PARSE_ERROR: flag {key:?} has a targeting rule that does not parse"
        )),
        ErrorCode::FlagNotFound => Status::not_found(format!("FLAG_NOT_FOUND: no flag {key:?}")),
        ErrorCode::General => Status::unknown(format!(
            "GENERAL: flag {key:?} could not be evaluated for this context"
        )),
    }
}

/// Evaluates `key` for a flagd request (its selector header, the instance its headers name,
/// its context) as a resolver of `ty`: the evaluation, or the status for a flag that is not
/// there or does not compile.
pub(crate) fn evaluate<T>(
    source: &dyn FlagSource,
    request: &Request<T>,
    key: &str,
    context: Option<&prost_types::Struct>,
    ty: ValueType,
) -> Result<(Evaluation, Arc<Flag>), Status> {
    // A node cut off from the leader, removed, or with failed storage answers from no copy.
    source.can_serve()?;
    let selector = selector(request, "")?;
    let ctx = request_context(request, context)?;
    let flag = source.flag(key, &selector).map_err(|e| match e {
        Lookup::NotFound => Status::not_found(format!("FLAG_NOT_FOUND: no flag {key:?}")),
        Lookup::Parse(why) => Status::data_loss(format!("PARSE_ERROR: {why}")),
    })?;
    Ok((flag.evaluate_in(&ctx, source.instance()).as_type(ty), flag))
}

/// The context of a flagd request: its `context`, and the instance its headers name.
pub(crate) fn request_context<T>(
    request: &Request<T>,
    context: Option<&prost_types::Struct>,
) -> Result<Context, Status> {
    let mut ctx = context_of(context);
    let meta = request.metadata();
    let instance = instance_from_headers(|name| meta.get(name).and_then(|v| v.to_str().ok()))
        .map_err(Status::invalid_argument)?;
    ctx.instance = instance.map(Arc::new);
    Ok(ctx)
}

/// A flagd request context: `targetingKey` and the other attributes.
pub fn context_of(s: Option<&prost_types::Struct>) -> Context {
    let mut attributes = s.map(structs::to_json).unwrap_or_default();
    let targeting_key = match attributes.remove("targetingKey") {
        Some(Value::String(k)) => Some(k),
        _ => None,
    };
    Context {
        targeting_key,
        attributes,
        instance: None,
    }
}

pub(crate) fn metadata(e: &Evaluation) -> Option<prost_types::Struct> {
    (!e.metadata.is_empty()).then(|| structs::from_json(&e.metadata))
}

fn variant(e: &Evaluation) -> String {
    e.variant.as_deref().unwrap_or_default().to_string()
}

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::EventStreamResponse, Status>> + Send>>;

fn event(kind: &str, data: Option<Value>) -> pb::EventStreamResponse {
    pb::EventStreamResponse {
        r#type: kind.to_string(),
        data: data.as_ref().and_then(Value::as_object).map(structs::from_json),
    }
}

/// Feeds one event stream.
pub(crate) async fn events<E: Send + 'static>(
    source: Arc<dyn FlagSource>,
    tx: mpsc::Sender<Result<E, Status>>,
    mut changes: Box<dyn Changes>,
    event: fn(&str, Option<Value>) -> E,
) {
    if tx.send(Ok(event("provider_ready", None))).await.is_err() {
        return;
    }
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        let now = now_ms();
        let scheduled = next_scheduled(&*source, now);
        let until = scheduled.as_ref().map_or(Duration::from_secs(3600), |(at, _)| {
            Duration::from_millis((at - now).max(0) as u64 + 1)
        });
        let changed: Option<String> = tokio::select! {
            change = changes.next() => match change {
                Ok(Some(feature)) => Some(feature),
                // Missed changes: tell the provider everything may have changed.
                Ok(None) => Some(String::new()),
                Err(status) => {
                    let _ = tx.try_send(Err(status));
                    return;
                }
            },
            _ = tokio::time::sleep(until), if scheduled.is_some() => scheduled.map(|(_, f)| f),
            _ = keep_alive.tick() => {
                if tx.try_send(Ok(event("keep_alive", None))).is_err() && tx.is_closed() {
                    return;
                }
                None
            }
            _ = tx.closed() => return,
        };
        if let Some(feature) = changed {
            let flags = if feature.is_empty() {
                json!({})
            } else {
                json!({ feature: {} })
            };
            // A provider that does not read loses change events, never the stream's memory.
            if tx
                .try_send(Ok(event("configuration_change", Some(json!({ "flags": flags })))))
                .is_err()
                && tx.is_closed()
            {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Service for FlagdEvaluation {
    async fn resolve_all(
        &self,
        request: Request<pb::ResolveAllRequest>,
    ) -> Result<Response<pb::ResolveAllResponse>, Status> {
        self.source.can_serve()?;
        let ctx = request_context(&request, request.get_ref().context.as_ref())?;
        let selector = selector(&request, "")?;
        let mut flags = HashMap::new();
        for key in self.source.keys(&selector) {
            // A toggle whose first change is not in effect yet is not found: left out.
            let Ok(flag) = self.source.flag(&key, &selector) else {
                continue;
            };
            let e = flag.evaluate_in(&ctx, self.source.instance());
            use pb::any_flag::Value as V;
            let value = match &e.value {
                Some(Value::Bool(b)) => V::BoolValue(*b),
                Some(Value::String(s)) => V::StringValue(s.clone()),
                Some(Value::Number(n)) => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
                Some(Value::Object(m)) => V::ObjectValue(structs::from_json(m)),
                // Disabled, no default, or an error: flagd leaves such flags out.
                _ => continue,
            };
            flags.insert(
                key,
                pb::AnyFlag {
                    reason: e.reason.as_str().to_string(),
                    variant: variant(&e),
                    metadata: metadata(&e),
                    value: Some(value),
                },
            );
        }
        Ok(Response::new(pb::ResolveAllResponse {
            flags,
            metadata: None,
        }))
    }

    async fn resolve_boolean(
        &self,
        request: Request<pb::ResolveBooleanRequest>,
    ) -> Result<Response<pb::ResolveBooleanResponse>, Status> {
        let r = request.get_ref();
        let e = self.resolve(&request, &r.flag_key, r.context.as_ref(), ValueType::Bool)?;
        Ok(Response::new(pb::ResolveBooleanResponse {
            value: e.value.as_ref().and_then(Value::as_bool).unwrap_or_default(),
            reason: e.reason.as_str().to_string(),
            variant: variant(&e),
            metadata: metadata(&e),
        }))
    }

    async fn resolve_string(
        &self,
        request: Request<pb::ResolveStringRequest>,
    ) -> Result<Response<pb::ResolveStringResponse>, Status> {
        let r = request.get_ref();
        let e = self.resolve(&request, &r.flag_key, r.context.as_ref(), ValueType::String)?;
        Ok(Response::new(pb::ResolveStringResponse {
            value: e
                .value
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            reason: e.reason.as_str().to_string(),
            variant: variant(&e),
            metadata: metadata(&e),
        }))
    }

    async fn resolve_float(
        &self,
        request: Request<pb::ResolveFloatRequest>,
    ) -> Result<Response<pb::ResolveFloatResponse>, Status> {
        let r = request.get_ref();
        let e = self.resolve(&request, &r.flag_key, r.context.as_ref(), ValueType::Float)?;
        Ok(Response::new(pb::ResolveFloatResponse {
            value: e.value.as_ref().and_then(Value::as_f64).unwrap_or_default(),
            reason: e.reason.as_str().to_string(),
            variant: variant(&e),
            metadata: metadata(&e),
        }))
    }

    async fn resolve_int(
        &self,
        request: Request<pb::ResolveIntRequest>,
    ) -> Result<Response<pb::ResolveIntResponse>, Status> {
        let r = request.get_ref();
        let e = self.resolve(&request, &r.flag_key, r.context.as_ref(), ValueType::Int)?;
        Ok(Response::new(pb::ResolveIntResponse {
            value: e.value.as_ref().and_then(Value::as_i64).unwrap_or_default(),
            reason: e.reason.as_str().to_string(),
            variant: variant(&e),
            metadata: metadata(&e),
        }))
    }

    async fn resolve_object(
        &self,
        request: Request<pb::ResolveObjectRequest>,
    ) -> Result<Response<pb::ResolveObjectResponse>, Status> {
        let r = request.get_ref();
        let e = self.resolve(&request, &r.flag_key, r.context.as_ref(), ValueType::Object)?;
        Ok(Response::new(pb::ResolveObjectResponse {
            value: e
                .value
                .as_ref()
                .and_then(Value::as_object)
                .map(structs::from_json),
            reason: e.reason.as_str().to_string(),
            variant: variant(&e),
            metadata: metadata(&e),
        }))
    }

    type EventStreamStream = EventStream;

    async fn event_stream(
        &self,
        request: Request<pb::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let permit = request.extensions().get::<WatchPermit>().cloned();
        let changes = self.source.open().await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let source = self.source.clone();
        tokio::spawn(async move {
            // Counted against the caller's open watches until the stream ends.
            let _permit = permit;
            events(source, tx, changes, event).await
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
