//! `flagd.evaluation.v2.Service`: what the current OpenFeature flagd providers speak in rpc
//! mode. The same evaluation and event stream as v1 ([`super::evaluation`]), with v2's
//! optional value and variant: a disabled flag answers reason `DISABLED`, and a flag whose
//! rules choose no variant and that has no default variant answers reason `DEFAULT`, both with
//! neither value nor variant, so the provider returns the code's default (as flagd 0.14 does).
//! Errors keep v1's statuses (`NOT_FOUND`, `INVALID_ARGUMENT` for a type mismatch,
//! `DATA_LOSS`, `UNKNOWN`).

use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::limits::WatchPermit;
use crate::eval::{Evaluation, ValueType};
use crate::flagd::evaluation::{error_status, evaluate, events, metadata};
use crate::flagd::source::FlagSource;
use crate::pb::flagd::evaluation_v2 as pb;
use crate::pb::flagd::evaluation_v2::service_server::Service;
use crate::pb::structs;

/// Events buffered per event stream.
const STREAM_BUFFER: usize = 64;

/// The v2 evaluation service of one node (or agent).
pub struct FlagdEvaluationV2 {
    source: Arc<dyn FlagSource>,
}

impl FlagdEvaluationV2 {
    /// The service evaluating `source`'s flags.
    pub(crate) fn new(source: Arc<dyn FlagSource>) -> Self {
        FlagdEvaluationV2 { source }
    }

    /// Evaluates `key` as a resolver of `ty`: the evaluation (its value and variant absent
    /// for a code default), or the error's status.
    fn resolve<T>(
        &self,
        request: &Request<T>,
        key: &str,
        context: Option<&prost_types::Struct>,
        ty: ValueType,
    ) -> Result<Evaluation, Status> {
        let (e, _) = evaluate(&*self.source, request, key, context, ty)?;
        match e.error {
            Some(code) => Err(error_status(key, code)),
            None => Ok(e),
        }
    }
}

fn variant(e: &Evaluation) -> Option<String> {
    e.variant.as_deref().map(str::to_string)
}

fn event(kind: &str, data: Option<Value>) -> pb::EventStreamResponse {
    pb::EventStreamResponse {
        r#type: kind.to_string(),
        data: data.as_ref().and_then(Value::as_object).map(structs::from_json),
    }
}

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::EventStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Service for FlagdEvaluationV2 {
    async fn resolve_boolean(
        &self,
        request: Request<pb::ResolveBooleanRequest>,
    ) -> Result<Response<pb::ResolveBooleanResponse>, Status> {
        let r = request.get_ref();
        let e = self.resolve(&request, &r.flag_key, r.context.as_ref(), ValueType::Bool)?;
        Ok(Response::new(pb::ResolveBooleanResponse {
            value: e.value.as_ref().and_then(Value::as_bool),
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
            value: e.value.as_ref().and_then(Value::as_str).map(str::to_string),
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
            value: e.value.as_ref().and_then(Value::as_f64),
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
            value: e.value.as_ref().and_then(Value::as_i64),
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
