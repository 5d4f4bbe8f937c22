//! The node's HTTP listener (`--metrics-listen`): `/livez` and `/readyz` for orchestrators
//! (open), Prometheus metrics at `/metrics` (with the read permission once authentication is
//! on: Prometheus sends its token as a bearer token), OFREP under `/ofrep/v1/` (see
//! [`crate::ofrep`]), the operator console at `/ui` and its API under `/api/v1/` (see
//! [`super::console`]; unless the node runs with `--no-console`),
//! over TLS when the node has a certificate, and in builds with failpoints, `/failpoints/NAME`
//! (see [`crate::failpoint`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use super::console::Console;
use crate::auth::limits::Limiter;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::ofrep::Ofrep;

/// How long one connection may stay open, unless it carries an event stream (a scrape or an
/// evaluation takes milliseconds).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a request's headers, or its TLS handshake.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A response of the HTTP listener.
pub(crate) type Response = hyper::Response<BoxBody<Bytes, std::convert::Infallible>>;

/// A response with a whole body.
pub(crate) fn text(status: u16, body: impl Into<Bytes>) -> Response {
    let mut r = hyper::Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// The query parameter `name` of `req`, decoded (`+` as a space).
pub(crate) fn query_param<B>(req: &hyper::Request<B>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// What a connection's requests share: who is calling, and whether the connection carries an
/// event stream (which may stay open past [`CONNECTION_TIMEOUT`]).
#[derive(Clone)]
pub(crate) struct Connection {
    /// The caller's address.
    pub(crate) remote: SocketAddr,
    /// Set while an event stream is open on the connection.
    pub(crate) streaming: Arc<AtomicBool>,
}

/// Answers one request of a connection.
pub(crate) type Router = Arc<
    dyn Fn(hyper::Request<hyper::body::Incoming>, Connection) -> BoxFuture<'static, Response> + Send + Sync,
>;

async fn route(
    node: Arc<Node>,
    ofrep: Arc<Ofrep>,
    console: Option<Arc<Console>>,
    conn: Connection,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response {
    if req.uri().path().starts_with("/ofrep/") {
        return ofrep.handle(req, &conn).await;
    }
    if Console::serves(req.uri().path()) {
        return match console {
            Some(console) => console.handle(req, conn).await,
            None => text(
                404,
                "the console is off on this node (it runs with --no-console)\n",
            ),
        };
    }
    #[cfg(feature = "failpoints")]
    if let Some(name) = req.uri().path().strip_prefix("/failpoints/") {
        let name = name.to_string();
        let method = req.method().clone();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let (code, answer) = crate::failpoint::handle(&method, &name, &String::from_utf8_lossy(&body));
        return text(code, answer);
    }
    match req.uri().path() {
        // Open, as health checks are: orchestrators and load balancers probe them.
        "/livez" => match live(&node) {
            Ok(()) => text(200, "ok\n"),
            Err(why) => text(503, format!("not live: {why}\n")),
        },
        "/readyz" => match ready(&node).await {
            Ok(()) => text(200, "ok\n"),
            Err(why) => text(503, format!("not ready: {why}\n")),
        },
        "/metrics" => {
            if let Err(e) = super::guard::authorize_http(&node, req.headers(), crate::auth::Permission::Read)
            {
                let code = match e {
                    Error::Unauthenticated(_) => 401,
                    _ => 403,
                };
                return text(code, format!("{e}\n"));
            }
            let mut r = text(200, node.metrics().render(&node.state_gauges()));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/" => {
            let mut r = text(302, "the console is at /ui/\n");
            r.headers_mut().insert(
                hyper::header::LOCATION,
                hyper::header::HeaderValue::from_static("/ui/"),
            );
            r
        }
        _ => text(
            404,
            "served here: /metrics, /livez, /readyz, /ofrep/v1/..., /ui/ and /api/v1/... (the console)\n",
        ),
    }
}

/// How long `/readyz` waits for a linearizable read before saying the node is not ready.
const READY_READ_WAIT: Duration = Duration::from_secs(2);

/// Live: the process runs and its Raft core has not stopped (a failed storage stops it). A
/// node that is not live should be restarted.
fn live(node: &Node) -> std::result::Result<(), String> {
    if node.is_shut_down() {
        return Err("shutting down".into());
    }
    let metrics = node.raft().metrics();
    let running = metrics.borrow_watched().running_state.clone();
    running.map_err(|e| format!("the Raft core stopped: {e}"))
}

/// Ready (as etcd's `/readyz`): live, with a leader, in contact with it and caught up, and a
/// linearizable read through the leader's read index completes. A node that is not ready should
/// get no traffic.
async fn ready(node: &Node) -> std::result::Result<(), String> {
    live(node)?;
    let metrics = node.raft().metrics();
    if metrics.borrow_watched().current_leader.is_none() {
        return Err("no leader".into());
    }
    node.can_serve().map_err(|e| e.to_string())?;
    match tokio::time::timeout(READY_READ_WAIT, node.read_barrier(false)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("a linearizable read failed: {e}")),
        Err(_) => Err(format!(
            "a linearizable read did not complete within {READY_READ_WAIT:?}"
        )),
    }
}

/// Serves `node`'s HTTP endpoints on `listener` (over TLS with `tls`), the console with
/// them if `console`, until the node shuts down; OFREP and console callers are held to
/// `limiter`, as gRPC callers are.
pub(crate) async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limiter: Arc<Limiter>,
    console: bool,
) {
    let console = console.then(|| Console::start(node.clone(), limiter.clone()));
    let source = Arc::new(crate::flagd::resolver::Resolver::new(node.clone()));
    let gate = crate::ofrep::Gate {
        node: node.clone(),
        limiter,
    };
    let ofrep = Arc::new(Ofrep::new(source, Some(gate)));
    let router_node = node.clone();
    let router: Router = Arc::new(move |req, conn| {
        Box::pin(route(
            router_node.clone(),
            ofrep.clone(),
            console.clone(),
            conn,
            req,
        ))
    });
    serve_connections(listener, tls, router, move || node.is_shut_down()).await
}

/// Accepts connections on `listener` (over TLS with `tls`) and answers their requests with
/// `router`, until `stopped` says so. A connection lives at most [`CONNECTION_TIMEOUT`] unless
/// it carries an event stream; a client gets [`HEADER_TIMEOUT`] for its TLS handshake and
/// each request's headers.
pub(crate) async fn serve_connections(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    stopped: impl Fn() -> bool,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP listener");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if stopped() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            remote,
            streaming: Arc::new(AtomicBool::new(false)),
        };
        let tls = tls.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let streaming = conn.streaming.clone();
            let service = hyper::service::service_fn(move |req| {
                let answer = router(req, conn.clone());
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let served = async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await
                        {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    }
                }
            };
            // A client that holds the connection is cut off, unless it reads an event stream
            // (which ends when the client leaves or the source stops serving it).
            let deadline = async {
                loop {
                    tokio::time::sleep(CONNECTION_TIMEOUT).await;
                    if !streaming.load(Ordering::Acquire) {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = deadline => {}
            }
        });
    }
}

/// Binds the HTTP listener.
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen for HTTP (metrics) on {addr}: {e}")))
}
