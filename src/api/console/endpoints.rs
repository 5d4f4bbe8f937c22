//! The console's JSON and Server-Sent Events API, `/api/v1/`:
//!
//! | method and path | answers with | permission |
//! |---|---|---|
//! | `GET whoami` | the caller's identity and role | authenticated |
//! | `GET cluster` | every member's status, the leader changes of the last hour | follow |
//! | `GET features[?names=a,b]` | the catalog, the toggles and the pending activations (of the named features only) | read |
//! | `GET features/{name}/readiness` | the blockers, and how their count went | read |
//! | `GET features/{name}/rollout` | the convergence of the latest change | read |
//! | `GET features/{name}/history` | every change, with its definition | read |
//! | `GET instances?service=&labels=k=v,..&q=&offset=&limit=` | a page of instances, counts by service and version | read |
//! | `GET events` | Server-Sent Events: `change` (what changed, batched), `status` (the cluster) | read |
//! | `POST features/{name}/off`, `on`, `rollback`, `cancel` | the change made | release |
//!
//! Each answer comes from the same service code as the gRPC call of the same name (so the
//! same validation, errors and history), read from this node's applied state once it can
//! vouch for it (else 503). Errors are JSON, `{"code": "NOT_FOUND", "error": "..."}`, with
//! the HTTP status of the gRPC code. A change needs a JSON body (`{"reason": "..."}`, and
//! `to_revision` or `mode` where they apply), which a browser only sends cross-site after a
//! preflight this API never grants; a request whose `Origin` is another site is refused.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::StreamExt;
use tonic::Code;

use super::feed::{frame, Point};
use super::Console;
use crate::api::http::{query_param, text, Connection, Response};
use crate::auth::{Caller, Permission};
use crate::clock::now_ms;
use crate::error::Error;
use crate::pb::v1 as pb;
use crate::pb::v1::registry_server::Registry;
use crate::pb::v1::toggles_server::Toggles;

/// Largest request body (an action's reason) accepted.
const MAX_BODY: usize = 16 * 1024;
/// Most instances one page lists.
const MAX_PAGE: usize = 500;
/// Console event streams one node serves at once (each open page holds one).
const MAX_PAGES: usize = 512;
/// How often an idle event stream says it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

enum Route {
    WhoAmI,
    Cluster,
    Features,
    Readiness(String),
    Rollout(String),
    History(String),
    Instances,
    Events,
    Act(String, Action),
}

#[derive(Clone, Copy)]
enum Action {
    Off,
    On,
    Rollback,
    Cancel,
}

impl Route {
    /// The gRPC method whose permission the route needs.
    fn method(&self) -> &'static str {
        match self {
            Route::WhoAmI => "/switchyard.v1.Auth/WhoAmI",
            Route::Cluster => "/switchyard.v1.Cluster/Status",
            Route::Features | Route::Events => "/switchyard.v1.Toggles/ListPending",
            Route::Readiness(_) => "/switchyard.v1.Toggles/Readiness",
            Route::Rollout(_) => "/switchyard.v1.Toggles/RolloutStatus",
            Route::History(_) => "/switchyard.v1.Toggles/History",
            Route::Instances => "/switchyard.v1.Registry/ListInstances",
            Route::Act(_, Action::Off | Action::On) => "/switchyard.v1.Toggles/SetToggleState",
            Route::Act(_, Action::Rollback) => "/switchyard.v1.Toggles/Rollback",
            Route::Act(_, Action::Cancel) => "/switchyard.v1.Toggles/CancelActivation",
        }
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    json_bytes(status, Bytes::from(body.to_string()))
}

fn json_bytes(status: u16, body: Bytes) -> Response {
    let mut r = text(status, body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn ok(body: impl serde::Serialize) -> Response {
    match serde_json::to_value(body) {
        Ok(v) => json_response(200, &v),
        Err(e) => failure(Code::Internal, &format!("encoding the answer: {e}")),
    }
}

/// The HTTP status for a gRPC code.
fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => 409,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 500,
    }
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
            sep.into_iter().chain(std::iter::once(c.to_ascii_uppercase()))
        })
        .collect()
}

fn failure(code: Code, message: &str) -> Response {
    json_response(
        http_status(code),
        &json!({ "code": code_name(code), "error": message }),
    )
}

fn refused(status: tonic::Status) -> Response {
    failure(status.code(), status.message())
}

fn error(e: Error) -> Response {
    refused(e.into())
}

fn too_many(e: Error, wait: Duration) -> Response {
    let mut r = error(e);
    let seconds = wait.as_millis().div_ceil(1000).max(1);
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
    r
}

/// A refused request: the gRPC code, and why.
struct Refusal(Code, String);

impl Refusal {
    fn response(self) -> Response {
        failure(self.0, &self.1)
    }
}

fn route(method: &Method, path: &str) -> Result<Route, Refusal> {
    let rest = path.strip_prefix("/api/v1/").unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let feature = |raw: &str| -> Result<String, Refusal> {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| Refusal(Code::InvalidArgument, "the feature name is not UTF-8".into()))
    };
    let route = match parts.as_slice() {
        ["whoami"] if get => Route::WhoAmI,
        ["cluster"] if get => Route::Cluster,
        ["features"] if get => Route::Features,
        ["instances"] if get => Route::Instances,
        ["events"] if get => Route::Events,
        ["features", name, "readiness"] if get => Route::Readiness(feature(name)?),
        ["features", name, "rollout"] if get => Route::Rollout(feature(name)?),
        ["features", name, "history"] if get => Route::History(feature(name)?),
        ["features", name, action] if post => {
            let action = match *action {
                "off" => Action::Off,
                "on" => Action::On,
                "rollback" => Action::Rollback,
                "cancel" => Action::Cancel,
                _ => {
                    return Err(Refusal(
                        Code::NotFound,
                        format!("no action {action:?}: off, on, rollback, cancel"),
                    ))
                }
            };
            Route::Act(feature(name)?, action)
        }
        ["whoami" | "cluster" | "features" | "instances" | "events"]
        | ["features", _, "readiness" | "rollout" | "history"] => {
            return Err(Refusal(Code::InvalidArgument, "use GET to read; POST is for actions".into()))
        }
        ["features", _, _] => return Err(Refusal(Code::InvalidArgument, "use POST for an action".into())),
        _ => {
            return Err(Refusal(
                Code::NotFound,
                "served here: whoami, cluster, features, features/{name}/{readiness|rollout|history}, instances, events; POST features/{name}/{off|on|rollback|cancel}".into(),
            ))
        }
    };
    Ok(route)
}

/// Answers one request under `/api/v1/`.
pub(super) async fn handle(console: &Arc<Console>, req: Request<Incoming>, conn: Connection) -> Response {
    let route = match route(req.method(), req.uri().path()) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    if let Some(refusal) = foreign_origin(&req) {
        return refusal;
    }
    let node = &console.node;
    let permission = Permission::for_method(route.method());
    let caller = match crate::api::guard::authorize_http(node, req.headers(), permission) {
        Ok(c) => c,
        Err(e) => {
            node.metrics().auth_refused(e.kind());
            return error(e);
        }
    };
    let who = caller
        .as_ref()
        .map_or_else(|| format!("address {}", conn.remote.ip()), |c| c.identity.clone());
    if let Err((e, wait)) = console.limiter.admit(&who) {
        node.metrics().auth_refused("rate_limited");
        return too_many(e, wait);
    }
    let caller = caller.unwrap_or_else(Caller::anonymous);
    // What this node cannot vouch for, it does not show (the page says so, and why); who the
    // caller is, it can always say.
    if !matches!(route, Route::WhoAmI) {
        if let Err(e) = node.can_serve() {
            return error(e);
        }
    }
    match route {
        Route::WhoAmI => ok(json!({
            "identity": caller.identity,
            "role": caller.role.to_string(),
            "authentication": node.read_state(|m| m.state.auth().enabled()),
            "node": node.id(),
        })),
        Route::Cluster => {
            let status = crate::api::cluster::ClusterApi::new(node.clone())
                .gather_status()
                .await;
            ok(console.feed.cluster_json(status))
        }
        Route::Features => features(console, &caller, &req).await,
        Route::Readiness(name) => readiness(console, &caller, name).await,
        Route::Rollout(name) => {
            let req = pb::RolloutStatusRequest { feature: name };
            answer(toggles(console).rollout_status(as_caller(req, &caller)).await)
        }
        Route::History(name) => {
            let req = pb::HistoryRequest {
                feature: name,
                read: serializable(),
            };
            answer(toggles(console).history(as_caller(req, &caller)).await)
        }
        Route::Instances => instances(console, &caller, &req).await,
        Route::Events => events(console, &who, &conn),
        Route::Act(name, action) => {
            let authentication = node.read_state(|m| m.state.auth().enabled());
            if let Some(refusal) = rebinding_guard(&req, authentication) {
                return refusal;
            }
            act(console, &caller, name, action, req).await
        }
    }
}

/// Refuses a request a browser sent on behalf of another site.
fn foreign_origin(req: &Request<Incoming>) -> Option<Response> {
    let origin = req.headers().get("origin")?.to_str().ok().unwrap_or("?");
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o == host);
    (!same).then(|| {
        failure(
            Code::PermissionDenied,
            &format!("requests from another site ({origin}) are refused"),
        )
    })
}

/// Whether `host` (a `Host` header) names the node by address or as localhost, not by a
/// domain name: a page of another site can point its own name at the node (DNS rebinding)
/// and then pass the same-origin check.
fn host_is_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Without authentication, an action needs the page to be opened by the node's address (see
/// [`host_is_address`]); with it, the token a page holds is what counts.
fn rebinding_guard(req: &Request<Incoming>, authentication: bool) -> Option<Response> {
    if authentication {
        return None;
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    (!host_is_address(host)).then(|| {
        failure(
            Code::PermissionDenied,
            &format!(
                "with authentication off, actions are taken only on a page opened by the node's address, not by the name {host:?}; turn authentication on to act through a name"
            ),
        )
    })
}

fn toggles(console: &Console) -> crate::api::toggles::TogglesApi {
    crate::api::toggles::TogglesApi::new(console.node.clone())
}

fn serializable() -> Option<pb::ReadOptions> {
    Some(pb::ReadOptions { serializable: true })
}

fn as_caller<T>(message: T, caller: &Caller) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.extensions_mut().insert(caller.clone());
    r
}

fn answer<T: serde::Serialize>(result: Result<tonic::Response<T>, tonic::Status>) -> Response {
    match result {
        Ok(r) => ok(r.into_inner()),
        Err(status) => refused(status),
    }
}

/// Most names one `features?names=` request may carry.
const MAX_NAMES: usize = 200;

/// A catalog answer kept for the pages that ask the same after it.
pub(super) struct Cached {
    revision: u64,
    query: String,
    body: Bytes,
}

/// The catalog, from the cache when another page asked the same at this revision. (Every
/// caller allowed this route sees the same catalog, so one answer serves them all.)
async fn features(console: &Console, caller: &Caller, req: &Request<Incoming>) -> Response {
    let revision = console.node.revision();
    let query = req.uri().query().unwrap_or_default().to_string();
    let hit = console
        .catalog
        .lock()
        .as_ref()
        .filter(|c| c.revision == revision && c.query == query)
        .map(|c| c.body.clone());
    if let Some(body) = hit {
        return json_bytes(200, body);
    }
    match read_features(console, caller, req).await {
        Ok(value) => {
            let body = Bytes::from(value.to_string());
            *console.catalog.lock() = Some(Cached {
                revision,
                query,
                body: body.clone(),
            });
            json_bytes(200, body)
        }
        Err(refusal) => refusal,
    }
}

async fn read_features(
    console: &Console,
    caller: &Caller,
    req: &Request<Incoming>,
) -> Result<Value, Response> {
    let names: Option<std::collections::BTreeSet<String>> = query_param(req, "names").map(|n| {
        n.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    });
    if names.as_ref().is_some_and(|n| n.len() > MAX_NAMES) {
        return Err(failure(
            Code::InvalidArgument,
            &format!("names lists at most {MAX_NAMES} features; leave it out for all"),
        ));
    }
    let wanted = |name: &str| names.as_ref().is_none_or(|n| n.contains(name));
    let catalog = crate::api::catalog::CatalogApi::new(console.node.clone());
    let toggles = toggles(console);
    use crate::pb::v1::catalog_server::Catalog;
    let features = catalog
        .list_features(as_caller(
            pb::ListFeaturesRequest { read: serializable() },
            caller,
        ))
        .await;
    let list = toggles
        .list_toggles(as_caller(pb::ListTogglesRequest { read: serializable() }, caller))
        .await;
    let pending = toggles
        .list_pending(as_caller(pb::ListPendingRequest { read: serializable() }, caller))
        .await;
    match (features, list, pending) {
        (Ok(f), Ok(t), Ok(p)) => {
            let (mut f, mut t, mut p) = (f.into_inner(), t.into_inner(), p.into_inner());
            f.features.retain(|x| wanted(&x.name));
            t.toggles.retain(|x| wanted(&x.feature));
            p.pending.retain(|x| wanted(&x.feature));
            Ok(json!({
                "features": f.features,
                "toggles": t.toggles,
                "pending": p.pending,
                "names": names,
                "revision": f.revision.max(t.revision).max(p.revision),
            }))
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(refused(e)),
    }
}

async fn readiness(console: &Console, caller: &Caller, name: String) -> Response {
    let req = pb::ReadinessRequest {
        feature: name.clone(),
        allow_empty: false,
        read: serializable(),
    };
    match toggles(console).readiness(as_caller(req, caller)).await {
        Ok(r) => {
            let r = r.into_inner();
            let now = Point {
                at_ms: now_ms(),
                blockers: r.blockers.len(),
            };
            let points = console.feed.blocker_counts(&name, now);
            ok(json!({
                "feature": name,
                "ready": r.ready,
                "blockers": r.blockers,
                "revision": r.revision,
                "blocker_counts": points,
            }))
        }
        Err(status) => refused(status),
    }
}

async fn instances(console: &Console, caller: &Caller, req: &Request<Incoming>) -> Response {
    let service = query_param(req, "service").unwrap_or_default();
    let mut labels = std::collections::HashMap::new();
    for pair in query_param(req, "labels")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some((k, v)) => {
                labels.insert(k.trim().to_string(), v.trim().to_string());
            }
            None => return failure(Code::InvalidArgument, &format!("label {pair:?} is not key=value")),
        }
    }
    let number = |name: &str, default: usize| -> Result<usize, Refusal> {
        match query_param(req, name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Refusal(
                    Code::InvalidArgument,
                    format!("{name} must be a number, not {v:?}"),
                )
            }),
        }
    };
    let (offset, limit) = match (number("offset", 0), number("limit", 100)) {
        (Ok(o), Ok(l)) if l <= MAX_PAGE => (o, l),
        (Ok(_), Ok(_)) => return failure(Code::InvalidArgument, &format!("limit is at most {MAX_PAGE}")),
        (Err(r), _) | (_, Err(r)) => return r.response(),
    };
    let text = query_param(req, "q").unwrap_or_default();
    let registry = crate::api::registry::RegistryApi::new(console.node.clone());
    let list = registry
        .list_instances(as_caller(
            pb::ListInstancesRequest {
                service,
                labels,
                read: serializable(),
            },
            caller,
        ))
        .await;
    let list = match list {
        Ok(l) => l.into_inner(),
        Err(status) => return refused(status),
    };
    let matching: Vec<&pb::Instance> = list
        .instances
        .iter()
        .filter(|i| text.is_empty() || i.id.contains(&text) || i.version.contains(&text))
        .collect();
    let mut versions: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for i in &matching {
        *versions.entry((&i.service, &i.version)).or_default() += 1;
    }
    let versions: Vec<Value> = versions
        .into_iter()
        .map(|((service, version), count)| json!({"service": service, "version": version, "count": count}))
        .collect();
    let page: Vec<&pb::Instance> = matching.iter().skip(offset).take(limit).copied().collect();
    let revision = list.revision;
    let rows: Vec<Value> = console.node.read_state(|m| {
        page.iter()
            .map(|i| {
                let lease = m.state.registry().lease(i.lease_id);
                json!({
                    "id": i.id,
                    "service": i.service,
                    "version": i.version,
                    "labels": i.labels,
                    // Lease ids use all 64 bits: past what a JavaScript number holds exactly.
                    "lease_id": i.lease_id.to_string(),
                    "lease_ttl_ms": lease.map(|l| l.ttl_ms),
                    "lease_granted_revision": lease.map(|l| l.granted_revision),
                    "registered_revision": i.revision,
                })
            })
            .collect()
    });
    ok(json!({
        "instances": rows,
        "total": matching.len(),
        "offset": offset,
        "versions": versions,
        "revision": revision,
    }))
}

/// An action's body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    reason: String,
    /// For `rollback`: the revision whose definition to restore.
    #[serde(default)]
    to_revision: Option<u64>,
    /// For `on`: `now` (the default) or `when-ready`.
    #[serde(default)]
    mode: Option<String>,
}

async fn act(
    console: &Console,
    caller: &Caller,
    feature: String,
    action: Action,
    req: Request<Incoming>,
) -> Response {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return failure(
            Code::InvalidArgument,
            "an action needs a JSON body (content-type: application/json)",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return failure(
                Code::ResourceExhausted,
                &format!("the body is larger than {MAX_BODY} bytes, or unreadable"),
            )
        }
    };
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return failure(Code::InvalidArgument, &format!("the body is not an action: {e}")),
        }
    };
    // Without authentication the history names the console; with it, the caller's identity.
    let write = Some(pb::WriteOptions {
        actor: if caller.is_authenticated() {
            String::new()
        } else {
            "console".into()
        },
        reason: body.reason,
        ..Default::default()
    });
    let toggles = toggles(console);
    let result = match action {
        Action::Off | Action::On => {
            let activation = match (action, body.mode.as_deref()) {
                (Action::Off, None) => None,
                (Action::Off, Some(m)) => {
                    return failure(
                        Code::InvalidArgument,
                        &format!("off takes no mode (got {m:?}): it is immediate"),
                    )
                }
                (_, None | Some("now")) => Some(pb::activation::Mode::Now),
                (_, Some("when-ready")) => Some(pb::activation::Mode::WhenReady),
                (_, Some(m)) => {
                    return failure(
                        Code::InvalidArgument,
                        &format!("mode {m:?}: use now or when-ready"),
                    )
                }
            };
            let req = pb::SetToggleStateRequest {
                feature,
                enabled: matches!(action, Action::On),
                expected_revision: None,
                write,
                activation: activation.map(|mode| pb::Activation {
                    mode: mode as i32,
                    ..Default::default()
                }),
            };
            toggles
                .set_toggle_state(as_caller(req, caller))
                .await
                .map(|r| serde_json::to_value(r.into_inner()))
        }
        Action::Rollback => {
            let req = pb::RollbackRequest {
                feature,
                to_revision: body.to_revision,
                write,
                activation: None,
            };
            toggles
                .rollback(as_caller(req, caller))
                .await
                .map(|r| serde_json::to_value(r.into_inner()))
        }
        Action::Cancel => {
            let req = pb::CancelActivationRequest { feature, write };
            toggles
                .cancel_activation(as_caller(req, caller))
                .await
                .map(|r| serde_json::to_value(r.into_inner()))
        }
    };
    match result {
        Ok(Ok(v)) => json_response(200, &v),
        Ok(Err(e)) => failure(Code::Internal, &format!("encoding the answer: {e}")),
        Err(status) => refused(status),
    }
}

/// Clears the connection's streaming mark when the stream ends.
struct Streaming(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Opens a page's event stream: a `hello`, then the shared feed's frames, and a keep-alive
/// comment when idle. A page that falls behind is told to reload everything.
fn events(console: &Console, who: &str, conn: &Connection) -> Response {
    if console.feed.pages() >= MAX_PAGES {
        return too_many(
            Error::ResourceExhausted(format!("{MAX_PAGES} console pages are open on this node")),
            Duration::from_secs(5),
        );
    }
    let permit = match console.limiter.open_watch(who) {
        Ok(p) => p,
        Err((e, wait)) => {
            console.node.metrics().auth_refused("watch_limited");
            return too_many(e, wait);
        }
    };
    conn.streaming.store(true, std::sync::atomic::Ordering::Release);
    let held = (permit, Streaming(conn.streaming.clone()));
    let hello = frame(
        "hello",
        &json!({ "node": console.node.id(), "revision": console.node.revision() }),
    );
    let shared = tokio_stream::wrappers::BroadcastStream::new(console.feed.subscribe()).map(|f| match f {
        Ok(bytes) => bytes,
        Err(_) => frame(
            "change",
            &json!({ "everything": true, "features": [], "services": [] }),
        ),
    });
    let keep_alive = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + KEEP_ALIVE,
        KEEP_ALIVE,
    ))
    .map(|_| Bytes::from_static(b": keep-alive\n\n"));
    // The stream ends when the node shuts down (its feed would otherwise keep it open).
    let mut stop = console.node.stop_signal();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let frames = tokio_stream::once(Bytes::from("retry: 2000\n\n"))
        .chain(tokio_stream::once(hello))
        .chain(shared.merge(keep_alive));
    let frames = futures::StreamExt::take_until(frames, Box::pin(stopped)).map(move |b| {
        let _held = &held;
        Ok::<_, std::convert::Infallible>(Frame::data(b))
    });
    let mut r = hyper::Response::new(StreamBody::new(frames).boxed());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_their_grpc_names_and_map_to_http() {
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::PermissionDenied), "PERMISSION_DENIED");
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
        assert_eq!(http_status(Code::NotFound), 404);
        assert_eq!(http_status(Code::Unauthenticated), 401);
        assert_eq!(http_status(Code::FailedPrecondition), 409);
    }

    #[test]
    fn only_an_address_or_localhost_is_a_host_that_cannot_be_rebound() {
        for host in [
            "127.0.0.1:9701",
            "10.1.2.3",
            "[::1]:9701",
            "localhost:9701",
            "LOCALHOST",
        ] {
            assert!(host_is_address(host), "{host}");
        }
        for host in [
            "evil.example:9701",
            "switchyard.internal",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!host_is_address(host), "{host}");
        }
    }

    #[test]
    fn routes_take_their_method_and_name_the_feature() {
        assert!(matches!(
            route(&Method::GET, "/api/v1/features"),
            Ok(Route::Features)
        ));
        assert!(matches!(
            route(&Method::GET, "/api/v1/features/check%20out/history"),
            Ok(Route::History(n)) if n == "check out"
        ));
        assert!(matches!(
            route(&Method::POST, "/api/v1/features/x/off"),
            Ok(Route::Act(n, Action::Off)) if n == "x"
        ));
        assert!(route(&Method::GET, "/api/v1/features/x/off").is_err());
        assert!(route(&Method::POST, "/api/v1/features").is_err());
        assert!(route(&Method::POST, "/api/v1/features/x/explode").is_err());
        assert!(route(&Method::GET, "/api/v1/nothing").is_err());
    }
}
