//! The layer in front of every service of a node: it names the caller of each call (a bearer
//! token, a client certificate mapped to a role, another member by its certificate, or nobody
//! while authentication is off), checks the permission the method needs, counts the call and
//! any watch it opens against the caller's limits, and hands the [`Caller`] (and the watch
//! permit) to the service in the request's extensions. A refused call never reaches a service,
//! so it changes nothing.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tower::{Layer, Service};

use crate::auth::limits::Limiter;
use crate::auth::token::Token;
use crate::auth::{Caller, Permission};
use crate::error::Error;
use crate::node::Node;
use crate::tls::PeerCheck;

/// Methods that open a long-lived stream counted as a watch.
fn is_watch(path: &str) -> bool {
    matches!(
        path,
        "/switchyard.v1.Watch/Watch"
            | "/flagd.sync.v1.FlagSyncService/SyncFlags"
            | "/flagd.evaluation.v1.Service/EventStream"
            | "/flagd.evaluation.v2.Service/EventStream"
    )
}

/// What the guard needs: the node's state (tokens and whether auth is on), how to recognise a
/// member's certificate, and the limits.
#[derive(Clone)]
pub(crate) struct GuardLayer {
    node: Arc<Node>,
    peers: Option<Arc<PeerCheck>>,
    limiter: Arc<Limiter>,
}

impl GuardLayer {
    pub(crate) fn new(node: Arc<Node>, peers: Option<Arc<PeerCheck>>, limiter: Arc<Limiter>) -> Self {
        GuardLayer { node, peers, limiter }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            config: self.clone(),
        }
    }
}

/// The guard around one service stack.
#[derive(Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    config: GuardLayer,
}

/// The certificates the client presented on this connection (TLS only).
fn client_certs<B>(req: &http::Request<B>) -> Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
}

fn remote<B>(req: &http::Request<B>) -> String {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let addr = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| {
            req.extensions()
                .get::<TcpConnectInfo>()
                .and_then(|i| i.remote_addr())
        });
    match addr {
        Some(a) => format!("address {}", a.ip()),
        None => "address unknown".into(),
    }
}

impl GuardLayer {
    /// Who calls, and whether they may: the caller, or the status to answer.
    fn decide<B>(&self, req: &http::Request<B>, permission: Permission) -> Result<Caller, Error> {
        let path = req.uri().path();
        if permission == Permission::Open {
            return Ok(Caller::anonymous());
        }
        let certs = client_certs(req);
        if permission == Permission::Peer {
            return match (&self.peers, &certs) {
                // Without TLS the internal service cannot tell members from anyone else; the
                // node warns about it at start.
                (None, _) => Ok(Caller::anonymous()),
                (Some(check), Some(chain)) if check.is_member(chain) => Ok(Caller::anonymous()),
                (Some(_), _) => Err(Error::PermissionDenied(format!(
                    "permission peer: {path} is the cluster's internal service; only members, by a certificate from the cluster's peer CA, may call it"
                ))),
            };
        }
        let (enabled, caller) = self.node.read_state(|m| {
            let auth = m.state.auth();
            if !auth.enabled() {
                return (false, None);
            }
            (true, Some(self.authenticate(auth, req, certs.as_deref())))
        });
        let caller = match (enabled, caller) {
            (false, _) | (true, None) => return Ok(Caller::anonymous()),
            (true, Some(c)) => c?,
        };
        if !permission.granted_to(&caller.role) {
            return Err(Error::PermissionDenied(format!(
                "permission {} is needed for {path}; {} has role {}",
                permission.name(),
                caller.identity,
                caller.role
            )));
        }
        Ok(caller)
    }

    fn authenticate<B>(
        &self,
        auth: &crate::state::auth::AuthState,
        req: &http::Request<B>,
        certs: Option<&Vec<rustls::pki_types::CertificateDer<'static>>>,
    ) -> Result<Caller, Error> {
        authenticate(auth, req.headers(), certs)
    }
}

/// Checks that an HTTP request (metrics, OFREP) carries a credential with `permission`, when
/// authentication is on: the caller, or `None` while authentication is off.
pub(crate) fn authorize_http(
    node: &Node,
    headers: &http::HeaderMap,
    permission: Permission,
) -> Result<Option<Caller>, Error> {
    node.read_state(|m| {
        let auth = m.state.auth();
        if !auth.enabled() {
            return Ok(None);
        }
        let caller = authenticate(auth, headers, None)?;
        if permission.granted_to(&caller.role) {
            Ok(Some(caller))
        } else {
            Err(Error::PermissionDenied(format!(
                "permission {} is needed; {} has role {}",
                permission.name(),
                caller.identity,
                caller.role
            )))
        }
    })
}

/// Names the caller by its bearer token, else by its client certificate's mapped role.
fn authenticate(
    auth: &crate::state::auth::AuthState,
    headers: &http::HeaderMap,
    certs: Option<&Vec<rustls::pki_types::CertificateDer<'static>>>,
) -> Result<Caller, Error> {
    {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let text = value
                .to_str()
                .map_err(|_| Error::Unauthenticated("the authorization header is not text".into()))?;
            let bearer = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .ok_or_else(|| {
                    Error::Unauthenticated("the authorization header must be `Bearer <token>`".into())
                })?;
            let token = Token::parse(bearer)?;
            let stored = auth.token(&token.id).ok_or_else(|| {
                if auth.was_revoked(&token.id) {
                    Error::Unauthenticated(format!("token {} was revoked", token.id))
                } else {
                    Error::Unauthenticated(format!("token {} is not known to this cluster", token.id))
                }
            })?;
            if !token.matches(&stored.secret_hash) {
                return Err(Error::Unauthenticated(format!(
                    "token {} has the wrong secret",
                    token.id
                )));
            }
            if stored.expired(crate::clock::now_ms()) {
                return Err(Error::Unauthenticated(format!("token {} has expired", token.id)));
            }
            return Ok(Caller {
                identity: format!("token:{}", stored.name),
                role: stored.role.clone(),
            });
        }
        if let Some(identity) = certs
            .and_then(|c| c.first())
            .and_then(|leaf| crate::tls::certificate_identity(leaf))
        {
            if let Some(role) = auth.certificate_role(&identity) {
                return Ok(Caller {
                    identity: format!("cert:{identity}"),
                    role: role.clone(),
                });
            }
            return Err(Error::Unauthenticated(format!(
                "the client certificate {identity:?} has no role in this cluster (`switchyard auth certificate map`), and no token was sent"
            )));
        }
        Err(Error::Unauthenticated(
            "this cluster requires authentication: send a token (`--token`, or SWITCHYARD_TOKEN; on the wire `authorization: Bearer <token>`) or a client certificate mapped to a role".into(),
        ))
    }
}

fn refuse(e: Error, retry_after: Option<std::time::Duration>) -> http::Response<tonic::body::Body> {
    let mut status: Status = e.into();
    if let Some(wait) = retry_after {
        if let Ok(v) = wait.as_millis().to_string().parse() {
            status.metadata_mut().insert("retry-after-ms", v);
        }
    }
    status.into_http()
}

impl<S, B> Service<http::Request<B>> for Guard<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let permission = Permission::for_method(req.uri().path());
        let caller = match self.config.decide(&req, permission) {
            Ok(c) => c,
            Err(e) => {
                self.config.node.metrics().auth_refused(e.kind());
                return Box::pin(async move { Ok(refuse(e, None)) });
            }
        };
        let path = req.uri().path();
        if Permission::for_method(path) != Permission::Open
            && Permission::for_method(path) != Permission::Peer
        {
            let who = if caller.is_authenticated() {
                caller.identity.clone()
            } else {
                remote(&req)
            };
            if let Err((e, wait)) = self.config.limiter.admit(&who) {
                self.config.node.metrics().auth_refused("rate_limited");
                return Box::pin(async move { Ok(refuse(e, Some(wait))) });
            }
            if is_watch(req.uri().path()) {
                match self.config.limiter.open_watch(&who) {
                    Ok(permit) => {
                        req.extensions_mut().insert(permit);
                    }
                    Err((e, wait)) => {
                        self.config.node.metrics().auth_refused("watch_limited");
                        return Box::pin(async move { Ok(refuse(e, Some(wait))) });
                    }
                }
            }
        }
        req.extensions_mut().insert(caller);
        // The inner service was made ready by poll_ready; a clone takes its place for the
        // next call (tower's usual pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(req).await })
    }
}
