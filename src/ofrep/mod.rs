//! The OpenFeature Remote Evaluation Protocol (OFREP) on the node's HTTP listener, for the
//! OFREP providers of every language (JavaScript, Go, Java, .NET, Python, Rust, Swift):
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}`: one flag for the request's context (200; 404
//!   `FLAG_NOT_FOUND`; 400 `INVALID_CONTEXT`, `TARGETING_KEY_MISSING`, `PARSE_ERROR` or
//!   `GENERAL`);
//! - `POST /ofrep/v1/evaluate/flags`: every flag the selector picks (each a success or a
//!   failure object), with the flag set's `metadata` (`flagSetId`, `version` = the revision),
//!   an `ETag` (a matching `If-None-Match` gets 304) and `eventStreams` naming
//!   `/ofrep/v1/events` ([`events`]);
//! - `GET /ofrep/v1/events`: Server-Sent Events, `refetchEvaluation` when the client's flags
//!   change in effect.
//!
//! The `Flagd-Selector` header (or `selector` in the event stream's query) picks the flags:
//! `flagSetId=NAME`, `service=NAME`, `feature=A,B`. A caller names its instance with the
//! `x-switchyard-service`/`-version`/`-labels` headers or an `instance` object in its context.
//! Authentication as for gRPC (bearer token: 401 without a valid one, 403 without the follow
//! permission), and the same per-caller limits (429 with `Retry-After`). A node that cannot
//! vouch for its data answers 503, so a balancer sends the caller elsewhere.

mod evaluation;
mod events;

use std::sync::Arc;

use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, RETRY_AFTER};
use hyper::{Method, Request};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::api::http::{query_param, text, Connection, Response};
use crate::auth::limits::Limiter;
use crate::auth::Permission;
use crate::error::Error;
use crate::flagd::configuration::Selector;
use crate::flagd::resolver::instance_from_headers;
use crate::flagd::source::FlagSource;
use crate::node::Node;
use evaluation::{Failure, Outcome, GENERAL, INVALID_CONTEXT};

/// Largest request body (a context) accepted.
const MAX_BODY: usize = 64 * 1024;
/// When a caller refused at the stream limit should try again.
const RETRY_STREAM: std::time::Duration = std::time::Duration::from_secs(1);
/// Seconds of inactivity after which a client should close its event stream (OFREP's
/// default).
const INACTIVITY_DELAY_S: u64 = 120;

/// OFREP on one node (or agent).
pub(crate) struct Ofrep {
    source: Arc<dyn FlagSource>,
    /// A node's authentication and per-caller limits (an agent serves its own instance on
    /// loopback, with neither).
    gate: Option<Gate>,
}

/// Who may call, and how much.
pub(crate) struct Gate {
    /// The node holding the tokens and recording refusals.
    pub node: Arc<Node>,
    /// The per-caller limits.
    pub limiter: Arc<Limiter>,
}

/// Why a request's context was not read.
enum Rejected {
    /// The context is wrong (reported with an OFREP error code).
    Context(Failure),
    /// The body is too large or unreadable: the status and why.
    Body(u16, String),
}

enum Route {
    Single(String),
    Bulk,
    Events,
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut r = text(status, body.to_string());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn details(status: u16, why: impl std::fmt::Display) -> Response {
    json_response(status, &json!({ "errorDetails": why.to_string() }))
}

fn header<'r>(req: &'r Request<Incoming>, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Ofrep {
    /// OFREP serving `source`'s flags, its callers checked by `gate` (if any).
    pub(crate) fn new(source: Arc<dyn FlagSource>, gate: Option<Gate>) -> Self {
        Ofrep { source, gate }
    }

    /// Authenticates and admits a caller: who it is (for its open streams), or the refusal.
    fn admit(&self, req: &Request<Incoming>, conn: &Connection) -> Result<String, Box<Response>> {
        let Some(gate) = &self.gate else {
            return Ok(format!("address {}", conn.remote.ip()));
        };
        let node = &gate.node;
        let caller = match crate::api::guard::authorize_http(node, req.headers(), Permission::Follow) {
            Ok(c) => c,
            Err(e) => {
                let status = match e {
                    Error::Unauthenticated(_) => {
                        node.metrics().auth_refused("unauthenticated");
                        401
                    }
                    _ => {
                        node.metrics().auth_refused("permission_denied");
                        403
                    }
                };
                return Err(Box::new(details(status, e)));
            }
        };
        let who = caller.map_or_else(|| format!("address {}", conn.remote.ip()), |c| c.identity);
        if let Err((e, wait)) = gate.limiter.admit(&who) {
            node.metrics().auth_refused("rate_limited");
            return Err(Box::new(too_many(e, wait)));
        }
        Ok(who)
    }

    /// Answers one request under `/ofrep/`.
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: &Connection) -> Response {
        let path = req.uri().path().to_string();
        let route = match (req.method(), path.strip_prefix("/ofrep/v1/")) {
            (&Method::POST, Some("evaluate/flags" | "evaluate/flags/")) => Route::Bulk,
            (&Method::POST, Some(rest)) if rest.starts_with("evaluate/flags/") => {
                let raw = &rest["evaluate/flags/".len()..];
                match percent_encoding::percent_decode_str(raw).decode_utf8() {
                    Ok(key) => Route::Single(key.into_owned()),
                    Err(_) => return details(400, "the flag key is not UTF-8"),
                }
            }
            (&Method::GET, Some("events")) => Route::Events,
            (_, Some("events")) => return details(405, "use GET for the event stream"),
            (_, Some(p)) if p.starts_with("evaluate/flags") => {
                return details(405, "use POST to evaluate flags")
            }
            _ => {
                return details(
                    404,
                    "served here: POST /ofrep/v1/evaluate/flags[/{key}], GET /ofrep/v1/events",
                )
            }
        };
        let who = match self.admit(&req, conn) {
            Ok(who) => who,
            Err(refused) => return *refused,
        };
        if let Err(e) = self.source.can_serve() {
            return details(503, e);
        }
        let selector_text = match &route {
            Route::Events => query_param(&req, "selector"),
            _ => header(&req, "flagd-selector").map(str::to_string),
        };
        let selector = match Selector::parse(selector_text.as_deref().unwrap_or_default()) {
            Ok(s) => s,
            Err(e) => {
                let failure = Failure::new(GENERAL, format!("invalid selector: {e}"));
                return json_response(400, &failure.for_request());
            }
        };
        match route {
            Route::Events => self.events(req, conn, &who, selector).await,
            Route::Single(key) => match self.context(req).await {
                Ok(ctx) => match evaluation::evaluate(&*self.source, &key, &selector, &ctx) {
                    Outcome::Evaluated(v) => json_response(200, &v),
                    Outcome::NotFound(f) => json_response(404, &f.for_flag(&key)),
                    Outcome::Failed(f) => json_response(400, &f.for_flag(&key)),
                },
                Err(Rejected::Context(f)) => json_response(400, &f.for_flag(&key)),
                Err(Rejected::Body(status, why)) => details(status, why),
            },
            Route::Bulk => {
                let if_none_match = header(&req, "if-none-match").map(str::to_string);
                match self.context(req).await {
                    Ok(ctx) => self.bulk(&selector, &ctx, if_none_match.as_deref()),
                    Err(Rejected::Context(f)) => json_response(400, &f.for_request()),
                    Err(Rejected::Body(status, why)) => details(status, why),
                }
            }
        }
    }

    /// The request's context: its body's, with the instance its headers name.
    async fn context(&self, req: Request<Incoming>) -> Result<crate::eval::Context, Rejected> {
        let instance = instance_from_headers(|name| header(&req, name))
            .map_err(|why| Rejected::Context(Failure::new(INVALID_CONTEXT, why)))?;
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Rejected::Body(
                    413,
                    format!("the request body is over {MAX_BODY} bytes"),
                ))
            }
            Err(e) => {
                return Err(Rejected::Body(
                    400,
                    format!("the request body could not be read: {e}"),
                ))
            }
        };
        evaluation::parse_context(&body, instance).map_err(Rejected::Context)
    }

    /// The bulk answer.
    fn bulk(&self, selector: &Selector, ctx: &crate::eval::Context, if_none_match: Option<&str>) -> Response {
        let now = crate::clock::now_ms();
        let state = events::in_effect_state(&*self.source, selector, now);
        let mut flags = Vec::new();
        for key in self.source.keys(selector) {
            match evaluation::evaluate(&*self.source, &key, selector, ctx) {
                Outcome::Evaluated(v) => flags.push(v),
                // A toggle whose first change is not in effect yet: not there yet.
                Outcome::NotFound(_) => {}
                Outcome::Failed(f) => flags.push(f.for_flag(&key)),
            }
        }
        let flags = Value::Array(flags);
        let etag = evaluation::etag(selector, &flags);
        if if_none_match.is_some_and(|inm| evaluation::matches(inm, &etag)) {
            let mut r = text(304, Bytes::new());
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert(ETAG, v);
            }
            return r;
        }
        let mut metadata = serde_json::Map::new();
        if let Some(id) = selector.flag_set_id() {
            metadata.insert("flagSetId".into(), id.into());
        }
        metadata.insert("version".into(), self.source.revision().to_string().into());
        let mut uri = format!("/ofrep/v1/events?since={}", state.id);
        let selector_text = selector.text();
        if !selector_text.is_empty() {
            uri.push_str(&format!("&selector={}", encode(&selector_text)));
        }
        let body = json!({
            "flags": flags,
            "metadata": metadata,
            "eventStreams": [{
                "type": "sse",
                "endpoint": {"requestUri": uri},
                "inactivityDelaySec": INACTIVITY_DELAY_S,
            }],
        });
        let mut r = json_response(200, &body);
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(ETAG, v);
        }
        r
    }

    /// Opens an event stream.
    async fn events(
        &self,
        req: Request<Incoming>,
        conn: &Connection,
        who: &str,
        selector: Selector,
    ) -> Response {
        let since = header(&req, "last-event-id")
            .map(str::to_string)
            .or_else(|| query_param(&req, "since"));
        let permit = match &self.gate {
            Some(gate) => match gate.limiter.open_watch(who) {
                Ok(p) => Some(p),
                Err((e, wait)) => {
                    gate.node.metrics().auth_refused("watch_limited");
                    return too_many(e, wait);
                }
            },
            None => None,
        };
        let changes = match self.source.open().await {
            Ok(c) => c,
            // At the source's stream limit: come back later, as for the per-caller limits.
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                return too_many(
                    Error::ResourceExhausted(status.message().to_string()),
                    RETRY_STREAM,
                )
            }
            // Shed (the node is at its bound, or cannot vouch for its data): another node
            // should serve it; come back later if there is none.
            Err(status) => {
                let mut r = details(503, status.message());
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
        };
        let (tx, rx) = mpsc::channel(events::STREAM_BUFFER);
        let held = events::Held {
            permit,
            streaming: conn.streaming.clone(),
        };
        tokio::spawn(events::follow(
            self.source.clone(),
            selector,
            since,
            tx,
            changes,
            held,
        ));
        let frames = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok(Frame::data(b)));
        let mut r = hyper::Response::new(StreamBody::new(frames).boxed());
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}

/// 429 with `Retry-After` (whole seconds, rounded up) and the reason.
fn too_many(e: Error, wait: std::time::Duration) -> Response {
    let mut r = details(429, e);
    let seconds = wait.as_millis().div_ceil(1000).max(1);
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
    r
}
