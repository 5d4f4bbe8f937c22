//! The operator console on the node's HTTP listener: a web page at `/ui` (plain HTML, CSS and
//! JavaScript embedded in the binary, [`assets`]) and the JSON and Server-Sent Events API it
//! reads and acts through at `/api/v1/` ([`endpoints`]). Every page a node serves is fed by
//! one shared subscription to the node's watch hub ([`feed`]), never by a poll per page.
//!
//! The API answers through the same service code as gRPC, with the same permissions
//! (a bearer token once authentication is on) and per-caller limits, so the console shows
//! exactly what the CLI shows and can do no more than the caller's role allows.

mod assets;
mod endpoints;
mod feed;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Request;

use crate::api::http::{text, Connection, Response};
use crate::auth::limits::Limiter;
use crate::node::Node;

pub(crate) use feed::Feed;

/// The console of one node.
pub(crate) struct Console {
    node: Arc<Node>,
    limiter: Arc<Limiter>,
    feed: Arc<Feed>,
    /// The last catalog answer, by revision and query: every open page refetches the same
    /// thing after the same change frame, and all but the first get it from here.
    catalog: parking_lot::Mutex<Option<endpoints::Cached>>,
}

impl Console {
    /// The console of `node`, its callers held to `limiter`; starts the shared feed.
    pub(crate) fn start(node: Arc<Node>, limiter: Arc<Limiter>) -> Arc<Console> {
        let feed = Feed::start(node.clone());
        Arc::new(Console {
            node,
            limiter,
            feed,
            catalog: parking_lot::Mutex::new(None),
        })
    }

    /// Whether `path` is the console's.
    pub(crate) fn serves(path: &str) -> bool {
        path == "/ui" || path.starts_with("/ui/") || path.starts_with("/api/v1/")
    }

    /// Answers one request under `/ui` or `/api/v1/`.
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: Connection) -> Response {
        let path = req.uri().path().to_string();
        if path.starts_with("/api/v1/") {
            return endpoints::handle(&self, req, conn).await;
        }
        if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
            return text(405, "the console's pages are read with GET\n");
        }
        match assets::find(&path) {
            Some((body, content_type)) => page(body, content_type),
            None => text(404, "not a page of the console; open /ui/\n"),
        }
    }
}

/// One of the console's files, with headers that keep other sites from framing the page (its
/// buttons flip features) or loading scripts into it.
fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut r = text(200, body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    r
}
