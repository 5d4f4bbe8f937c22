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
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::limits::WatchPermit;
use crate::clock::now_ms;
use crate::eval::{Context, ErrorCode, Evaluation, Flag, Reason, ValueType};
use crate::flagd::resolver::{instance_from_headers, Lookup, Resolver};
use crate::flagd::sync::{interrupted, selector};
use crate::node::Node;
use crate::pb::flagd::evaluation as pb;
use crate::pb::flagd::evaluation::service_server::Service;
use crate::pb::structs;
use crate::watch::hub::StreamSlot;
use crate::watch::Interruption;

/// How often the event stream says it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Events buffered per event stream.
const STREAM_BUFFER: usize = 64;

/// The evaluation service of one node.
pub struct FlagdEvaluation {
    resolver: Arc<Resolver>,
}

impl FlagdEvaluation {
    /// The service for `node`, evaluating with `resolver`.
    pub fn new(resolver: Arc<Resolver>) -> Self {
        FlagdEvaluation { resolver }
    }

    /// Evaluates `key` for the request's context as a resolver of `ty`.
    fn resolve<T>(
        &self,
        request: &Request<T>,
        key: &str,
        context: Option<&prost_types::Struct>,
        ty: ValueType,
    ) -> Result<Evaluation, Status> {
        let (e, _) = evaluate(&self.resolver, request, key, context, ty)?;
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
    resolver: &Resolver,
    request: &Request<T>,
    key: &str,
    context: Option<&prost_types::Struct>,
    ty: ValueType,
) -> Result<(Evaluation, Arc<Flag>), Status> {
    // A node cut off from the leader, removed, or with failed storage answers from no copy.
    resolver.node().can_serve()?;
    let selector = selector(request, "")?;
    let ctx = request_context(request, context)?;
    let flag = resolver.flag(key, &selector).map_err(|e| match e {
        Lookup::NotFound => Status::not_found(format!("FLAG_NOT_FOUND: no flag {key:?}")),
        Lookup::Parse(why) => Status::data_loss(format!("PARSE_ERROR: {why}")),
    })?;
    Ok((flag.evaluate(&ctx).as_type(ty), flag))
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

/// The next instant (unix ms) a scheduled change takes effect, with its feature.
fn next_scheduled(node: &Node, now: i64) -> Option<(i64, String)> {
    node.read_state(|m| {
        m.state
            .toggles()
            .filter(|t| t.effective_at_ms > now)
            .map(|t| (t.effective_at_ms, t.feature.clone()))
            .min()
    })
}

/// Feeds one event stream.
pub(crate) async fn events<E: Send + 'static>(
    node: Arc<Node>,
    tx: mpsc::Sender<Result<E, Status>>,
    _slot: StreamSlot,
    event: fn(&str, Option<Value>) -> E,
) {
    let Ok(subscription) = node.hub().subscribe(None) else {
        let _ = tx.try_send(Err(interrupted(Interruption::ShuttingDown)));
        return;
    };
    if let Err(e) = node.can_serve() {
        let _ = tx.try_send(Err(e.into()));
        return;
    }
    // The hub interrupts the receiver when the node can no longer vouch for its data, jumps
    // ahead by a snapshot, or shuts down.
    let mut published = subscription.receiver;
    if tx.send(Ok(event("provider_ready", None))).await.is_err() {
        return;
    }
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        let now = now_ms();
        let scheduled = next_scheduled(&node, now);
        let until = scheduled.as_ref().map_or(Duration::from_secs(3600), |(at, _)| {
            Duration::from_millis((at - now).max(0) as u64 + 1)
        });
        let changed: Option<String> = tokio::select! {
            p = published.recv() => match p {
                Ok(p) => p.event.feature().map(str::to_string),
                // Missed events: tell the provider everything may have changed.
                Err(broadcast::error::RecvError::Lagged(_)) => Some(String::new()),
                Err(broadcast::error::RecvError::Closed) => {
                    let why = node.hub().why_ended(subscription.generation);
                    let _ = tx.try_send(Err(interrupted(why)));
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
        self.resolver.node().can_serve()?;
        let ctx = request_context(&request, request.get_ref().context.as_ref())?;
        let selector = selector(&request, "")?;
        let mut flags = HashMap::new();
        for key in self.resolver.keys(&selector) {
            // A toggle whose first change is not in effect yet is not found: left out.
            let Ok(flag) = self.resolver.flag(&key, &selector) else {
                continue;
            };
            let e = flag.evaluate(&ctx);
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
        let node = self.resolver.node().clone();
        node.admit_reader().await?;
        let slot = node.hub().admit()?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            // Counted against the caller's open watches until the stream ends.
            let _permit = permit;
            events(node, tx, slot, event).await
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
