//! A client of the public API with endpoint failover, used by the CLI, the benchmarks and the
//! tests. Each write carries this client's session id and a fresh request id, so retrying it on
//! another endpoint after a failure applies it once.
//!
//! Writes go to the leader when the client knows which of its endpoints leads (it asks once, and
//! again after the leader fails): any node accepts a write and forwards it, but going
//! straight to the leader saves that hop. Reads stay on the current endpoint.
//!
//! The SDK for service instances ([`crate::sdk::Sdk`]: registration, a local copy of toggles,
//! evaluation, fleet-wide flips) is built on this client.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::tls::ClientTls;

use crate::error::{Error, Result};
use crate::pb::v1 as pb;
use crate::pb::v1::auth_client::AuthClient;
use crate::pb::v1::catalog_client::CatalogClient;
use crate::pb::v1::cluster_client::ClusterClient;
use crate::pb::v1::registry_client::RegistryClient;
use crate::pb::v1::toggles_client::TogglesClient;
use crate::pb::v1::watch_client::WatchClient;

/// Largest answer (or watch message) accepted from a node: the node caps the data it holds
/// well below it (`MAX_DATA_BYTES`), so a whole catalog, or a watch snapshot of it, always
/// fits.
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Whether a failed call found no process listening at the endpoint (the connection was
/// refused: the cause somewhere down the status's source chain).
fn is_refused(status: &Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
            || c.to_string().contains("Connection refused")
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// How long one attempt on one endpoint may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a call may take across all attempts and endpoints.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Keepalive messages queued before the stream takes them.
const KEEPALIVE_QUEUE: usize = 16;

/// How a client connects: TLS, and the token it authenticates with.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// TLS settings (none: plain connections).
    pub tls: ClientTls,
    /// A token (`syt_...`) sent with every call, for a cluster with authentication on.
    pub token: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    // Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A lazily connected channel to one node that sends the caller's token with every call.
#[derive(Clone)]
pub struct Conn {
    channel: Channel,
    authorization: Option<http::HeaderValue>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Conn {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(v) = &self.authorization {
            req.headers_mut().insert(http::header::AUTHORIZATION, v.clone());
        }
        self.channel.call(req)
    }
}

impl Conn {
    /// A channel to `endpoint` (`host:port`, or a URI) with `options`; it connects on first
    /// use.
    pub fn new(endpoint: &str, options: &ConnectOptions) -> Result<Conn> {
        let tls = options.tls.tonic_config()?;
        let uri = if endpoint.contains("://") {
            endpoint.to_string()
        } else if tls.is_some() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        };
        let mut ep = Endpoint::from_shared(uri)
            .map_err(|err| Error::invalid(format!("endpoint {endpoint:?}: {err}")))?;
        if let Some(t) = tls {
            ep = ep
                .tls_config(t)
                .map_err(|err| Error::invalid(format!("TLS for {endpoint:?}: {err}")))?;
        }
        let channel = ep
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            // A node that stops answering (frozen, cut off) is dropped after ~3 s of
            // unanswered pings instead of holding calls until timeout.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let authorization = match &options.token {
            Some(t) => {
                let mut v = http::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                    .map_err(|_| Error::invalid("the token holds characters a header cannot carry"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Conn {
            channel,
            authorization,
        })
    }
}

/// A connection to a Switchyard cluster through a list of endpoints.
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Conn>,
    /// How it connects, for connections to other members ([`Client::conn_to`]).
    options: ConnectOptions,
    /// Connections to members at their advertised addresses, shared by all that use this
    /// client (SDKs watching from a learner).
    members: parking_lot::Mutex<std::collections::HashMap<String, Conn>>,
    current: AtomicUsize,
    /// Index of the endpoint that leads, or `NO_LEADER`.
    leader: AtomicUsize,
    session: String,
    next_request: AtomicU64,
    actor: String,
}

const NO_LEADER: usize = usize::MAX;

impl Client {
    /// A client of the nodes at `endpoints` (`host:port`), plain and unauthenticated.
    /// Connections are made lazily.
    pub fn new(endpoints: &[String]) -> Result<Self> {
        Client::connect(endpoints, &ConnectOptions::default())
    }

    /// A client of the nodes at `endpoints` with TLS and a token as `options` say.
    pub fn connect(endpoints: &[String], options: &ConnectOptions) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::invalid("no endpoints given"));
        }
        let channels = endpoints
            .iter()
            .map(|e| Conn::new(e, options))
            .collect::<Result<Vec<_>>>()?;
        Ok(Client {
            endpoints: endpoints.to_vec(),
            channels,
            options: options.clone(),
            members: parking_lot::Mutex::new(std::collections::HashMap::new()),
            current: AtomicUsize::new(0),
            leader: AtomicUsize::new(NO_LEADER),
            session: uuid::Uuid::new_v4().to_string(),
            next_request: AtomicU64::new(1),
            actor: std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        })
    }

    /// Sets the actor recorded in history for this client's writes.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    fn write_options(&self, reason: &str) -> Option<pb::WriteOptions> {
        Some(pb::WriteOptions {
            client_id: self.session.clone(),
            request_id: self.next_request.fetch_add(1, Ordering::Relaxed),
            actor: self.actor.clone(),
            reason: reason.to_string(),
        })
    }

    /// Finds which endpoint leads, asking the current one (one cheap call, one second).
    async fn learn_leader(&self) -> Option<usize> {
        let i = self.current.load(Ordering::Relaxed) % self.channels.len();
        let mut c = ClusterClient::new(self.channels[i].clone());
        let leader = tokio::time::timeout(Duration::from_secs(1), c.leader(pb::LeaderRequest {}))
            .await
            .ok()?
            .ok()?
            .into_inner();
        let index = self
            .endpoints
            .iter()
            .position(|e| e.trim_start_matches("http://").trim_start_matches("https://") == leader.address)?;
        self.leader.store(index, Ordering::Relaxed);
        Some(index)
    }

    /// Runs a write: at the leader when known (see the module doc), else like [`Self::call`].
    async fn write<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        if self.channels.len() == 1 {
            return self.call_from(0, f).await;
        }
        let leader = match self.leader.load(Ordering::Relaxed) {
            NO_LEADER => self.learn_leader().await,
            i => Some(i),
        };
        match leader {
            Some(i) => {
                let result = self.call_from(i, f).await;
                if self.current.load(Ordering::Relaxed) != i {
                    // The leader failed over to another endpoint: ask again next time.
                    self.leader.store(NO_LEADER, Ordering::Relaxed);
                }
                result
            }
            None => self.call(f).await,
        }
    }

    /// Runs `f` against the current endpoint, moving on to the next on a retryable failure.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.call_from(self.current.load(Ordering::Relaxed), f).await
    }

    /// Runs `f` against endpoint `start`, moving on to the next on a retryable failure.
    async fn call_from<T, F, Fut>(&self, start: usize, f: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let n = self.channels.len();
        let mut attempt = 0usize;
        // Attempts in a row that found no process listening (connection refused).
        let mut refused = 0usize;
        loop {
            let i = (start + attempt) % n;
            let left = deadline.saturating_duration_since(Instant::now());
            let (err, no_listener) =
                match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), f(self.channels[i].clone())).await {
                    Ok(Ok(resp)) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok(resp.into_inner());
                    }
                    Ok(Err(status)) => (Error::from_status(&status), is_refused(&status)),
                    Err(_) => (
                        Error::Timeout(format!("{} did not answer in time", self.endpoints[i])),
                        false,
                    ),
                };
            if !err.is_retryable() {
                return Err(err);
            }
            refused = if no_listener { refused + 1 } else { 0 };
            if refused >= 2 * n {
                // Twice round every endpoint and nothing listens: no node runs there. (A node
                // that answers, even "no leader", keeps the long retry: it may be electing.)
                return Err(Error::Unavailable(format!(
                    "no node is running at {} (connection refused); is the cluster up? The endpoints come from --endpoints or SWITCHYARD_ENDPOINTS",
                    self.endpoints.join(", ")
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "no endpoint served the request within {CALL_TIMEOUT:?}; last: {}: {err}",
                    self.endpoints[i]
                )));
            }
            tracing::debug!(endpoint = %self.endpoints[i], error = %err, "retrying on another endpoint");
            attempt += 1;
            if attempt.is_multiple_of(n) {
                // Went round every endpoint: give an election time to finish.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Creates or replaces a feature.
    pub async fn put_feature(
        &self,
        feature: pb::Feature,
        expected_revision: Option<u64>,
        reason: &str,
    ) -> Result<pb::PutFeatureResponse> {
        let req = pb::PutFeatureRequest {
            feature: Some(feature),
            expected_revision,
            write: self.write_options(reason),
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                CatalogClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .put_feature(req)
                    .await
            }
        })
        .await
    }

    /// Reads a feature.
    pub async fn get_feature(&self, name: &str, serializable: bool) -> Result<pb::GetFeatureResponse> {
        let req = pb::GetFeatureRequest {
            name: name.to_string(),
            read: Some(pb::ReadOptions { serializable }),
        };
        self.call(|c| {
            let req = req.clone();
            async move {
                CatalogClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .get_feature(req)
                    .await
            }
        })
        .await
    }

    /// Lists features.
    pub async fn list_features(&self, serializable: bool) -> Result<pb::ListFeaturesResponse> {
        let req = pb::ListFeaturesRequest {
            read: Some(pb::ReadOptions { serializable }),
        };
        self.call(|c| async move {
            CatalogClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .list_features(req)
                .await
        })
        .await
    }

    /// Deletes a feature with its toggle and history.
    pub async fn delete_feature(
        &self,
        name: &str,
        expected_revision: Option<u64>,
        reason: &str,
    ) -> Result<pb::DeleteFeatureResponse> {
        let req = pb::DeleteFeatureRequest {
            name: name.to_string(),
            expected_revision,
            write: self.write_options(reason),
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                CatalogClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .delete_feature(req)
                    .await
            }
        })
        .await
    }

    /// Replaces a toggle's flagd definition.
    pub async fn set_toggle(
        &self,
        feature: &str,
        definition_json: &str,
        expected_revision: Option<u64>,
        reason: &str,
    ) -> Result<pb::SetToggleResponse> {
        self.set_toggle_with(feature, definition_json, expected_revision, None, reason)
            .await
    }

    /// Replaces a toggle's flagd definition, taking effect as `activation` says.
    pub async fn set_toggle_with(
        &self,
        feature: &str,
        definition_json: &str,
        expected_revision: Option<u64>,
        activation: Option<pb::Activation>,
        reason: &str,
    ) -> Result<pb::SetToggleResponse> {
        let req = pb::SetToggleRequest {
            feature: feature.to_string(),
            definition_json: definition_json.to_string(),
            expected_revision,
            write: self.write_options(reason),
            activation,
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                TogglesClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .set_toggle(req)
                    .await
            }
        })
        .await
    }

    /// Turns a toggle on (ENABLED) or off (DISABLED).
    pub async fn set_toggle_state(
        &self,
        feature: &str,
        enabled: bool,
        expected_revision: Option<u64>,
        reason: &str,
    ) -> Result<pb::SetToggleResponse> {
        self.set_toggle_state_with(feature, enabled, expected_revision, None, reason)
            .await
    }

    /// Turns a toggle on (activate) or off, taking effect as `activation` says.
    pub async fn set_toggle_state_with(
        &self,
        feature: &str,
        enabled: bool,
        expected_revision: Option<u64>,
        activation: Option<pb::Activation>,
        reason: &str,
    ) -> Result<pb::SetToggleResponse> {
        let req = pb::SetToggleStateRequest {
            feature: feature.to_string(),
            enabled,
            expected_revision,
            write: self.write_options(reason),
            activation,
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                TogglesClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .set_toggle_state(req)
                    .await
            }
        })
        .await
    }

    /// Reads a toggle.
    pub async fn get_toggle(&self, feature: &str, serializable: bool) -> Result<pb::GetToggleResponse> {
        let req = pb::GetToggleRequest {
            feature: feature.to_string(),
            read: Some(pb::ReadOptions { serializable }),
        };
        self.call(|c| {
            let req = req.clone();
            async move {
                TogglesClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .get_toggle(req)
                    .await
            }
        })
        .await
    }

    /// Lists toggles.
    pub async fn list_toggles(&self, serializable: bool) -> Result<pb::ListTogglesResponse> {
        let req = pb::ListTogglesRequest {
            read: Some(pb::ReadOptions { serializable }),
        };
        self.call(|c| async move {
            TogglesClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .list_toggles(req)
                .await
        })
        .await
    }

    /// Restores an earlier definition of a toggle.
    pub async fn rollback(
        &self,
        feature: &str,
        to_revision: Option<u64>,
        activation: Option<pb::Activation>,
        reason: &str,
    ) -> Result<pb::SetToggleResponse> {
        let req = pb::RollbackRequest {
            feature: feature.to_string(),
            to_revision,
            write: self.write_options(reason),
            activation,
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                TogglesClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .rollback(req)
                    .await
            }
        })
        .await
    }

    /// Drops a pending activation.
    pub async fn cancel_activation(
        &self,
        feature: &str,
        reason: &str,
    ) -> Result<pb::CancelActivationResponse> {
        let req = pb::CancelActivationRequest {
            feature: feature.to_string(),
            write: self.write_options(reason),
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                TogglesClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .cancel_activation(req)
                    .await
            }
        })
        .await
    }

    /// Activations waiting for readiness.
    pub async fn list_pending(&self, serializable: bool) -> Result<pb::ListPendingResponse> {
        let req = pb::ListPendingRequest {
            read: Some(pb::ReadOptions { serializable }),
        };
        self.call(|c| async move {
            TogglesClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .list_pending(req)
                .await
        })
        .await
    }

    /// Whether a feature is ready, and what blocks it.
    pub async fn readiness(&self, feature: &str, allow_empty: bool) -> Result<pb::ReadinessResponse> {
        let req = pb::ReadinessRequest {
            feature: feature.to_string(),
            allow_empty,
            read: None,
        };
        self.call(|c| {
            let req = req.clone();
            async move {
                TogglesClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .readiness(req)
                    .await
            }
        })
        .await
    }

    /// A feature's history.
    pub async fn history(&self, feature: &str) -> Result<pb::HistoryResponse> {
        let req = pb::HistoryRequest {
            feature: feature.to_string(),
            read: None,
        };
        self.call(|c| {
            let req = req.clone();
            async move {
                TogglesClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .history(req)
                    .await
            }
        })
        .await
    }

    /// Grants a lease.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<pb::GrantLeaseResponse> {
        let req = pb::GrantLeaseRequest {
            ttl_ms: ttl.as_millis() as u64,
            write: self.write_options(""),
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                RegistryClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .grant_lease(req)
                    .await
            }
        })
        .await
    }

    /// Revokes a lease and removes its instances.
    pub async fn revoke_lease(&self, lease_id: u64) -> Result<pb::RevokeLeaseResponse> {
        let req = pb::RevokeLeaseRequest {
            lease_id,
            write: self.write_options(""),
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                RegistryClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .revoke_lease(req)
                    .await
            }
        })
        .await
    }

    /// Renews a lease once (a unary keepalive over a one-message stream).
    pub async fn keep_alive_once(&self, lease_id: u64) -> Result<pb::KeepAliveResponse> {
        self.call(|c| async move {
            let mut stream = RegistryClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .keep_alive(tokio_stream::iter([pb::KeepAliveRequest {
                    lease_id,
                    applied_revision: 0,
                    ..Default::default()
                }]))
                .await?
                .into_inner();
            match stream.message().await? {
                Some(resp) => Ok(tonic::Response::new(resp)),
                None => Err(Status::unavailable("keepalive stream ended without an answer")),
            }
        })
        .await
    }

    /// Registers an instance under a lease.
    pub async fn register(&self, instance: pb::Instance, lease_id: u64) -> Result<pb::RegisterResponse> {
        let req = pb::RegisterRequest {
            instance: Some(instance),
            lease_id,
            write: self.write_options(""),
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                RegistryClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .register(req)
                    .await
            }
        })
        .await
    }

    /// Removes an instance.
    pub async fn deregister(&self, instance_id: &str) -> Result<pb::DeregisterResponse> {
        let req = pb::DeregisterRequest {
            instance_id: instance_id.to_string(),
            write: self.write_options(""),
        };
        self.write(|c| {
            let req = req.clone();
            async move {
                RegistryClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .deregister(req)
                    .await
            }
        })
        .await
    }

    /// Lists instances, optionally of one service and with given labels.
    pub async fn list_instances(
        &self,
        service: &str,
        labels: std::collections::HashMap<String, String>,
    ) -> Result<pb::ListInstancesResponse> {
        let req = pb::ListInstancesRequest {
            service: service.to_string(),
            labels,
            read: None,
        };
        self.call(|c| {
            let req = req.clone();
            async move {
                RegistryClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .list_instances(req)
                    .await
            }
        })
        .await
    }

    /// Every member's status.
    pub async fn status(&self) -> Result<pb::StatusResponse> {
        self.call(|c| async move {
            ClusterClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .status(pb::StatusRequest {})
                .await
        })
        .await
    }

    /// Every member with its address and whether it votes, as the node asked knows them.
    pub async fn members(&self) -> Result<pb::MembersResponse> {
        self.call(|c| async move { ClusterClient::new(c).members(pb::MembersRequest {}).await })
            .await
    }

    /// Creates a token with `role` for `name` (expiring after `ttl`, if any): the answer holds
    /// its secret, shown this once.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        ttl: Option<Duration>,
    ) -> Result<pb::CreateTokenResponse> {
        let req = pb::CreateTokenRequest {
            name: name.to_string(),
            role: role.to_string(),
            ttl_seconds: ttl.map_or(0, |t| t.as_secs().max(1)),
            write: self.write_options(""),
        };
        self.write(|c| {
            let req = req.clone();
            async move { AuthClient::new(c).create_token(req).await }
        })
        .await
    }

    /// Revokes a token by its id (or the whole token).
    pub async fn revoke_token(&self, id: &str) -> Result<pb::RevokeTokenResponse> {
        let req = pb::RevokeTokenRequest {
            id: id.to_string(),
            write: self.write_options(""),
        };
        self.write(|c| {
            let req = req.clone();
            async move { AuthClient::new(c).revoke_token(req).await }
        })
        .await
    }

    /// Every token (never their secrets).
    pub async fn list_tokens(&self) -> Result<pb::ListTokensResponse> {
        self.call(|c| async move {
            AuthClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .list_tokens(pb::ListTokensRequest {})
                .await
        })
        .await
    }

    /// Gives a client-certificate identity a role (`""`: takes it away).
    pub async fn map_certificate(&self, identity: &str, role: &str) -> Result<pb::MapCertificateResponse> {
        let req = pb::MapCertificateRequest {
            identity: identity.to_string(),
            role: role.to_string(),
            write: self.write_options(""),
        };
        self.write(|c| {
            let req = req.clone();
            async move { AuthClient::new(c).map_certificate(req).await }
        })
        .await
    }

    /// Every certificate mapping.
    pub async fn list_certificates(&self) -> Result<pb::ListCertificatesResponse> {
        self.call(|c| async move {
            AuthClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .list_certificates(pb::ListCertificatesRequest {})
                .await
        })
        .await
    }

    /// Turns authentication on or off.
    pub async fn set_auth_enabled(&self, enabled: bool) -> Result<pb::SetAuthEnabledResponse> {
        let req = pb::SetAuthEnabledRequest {
            enabled,
            write: self.write_options(""),
        };
        self.write(|c| {
            let req = req.clone();
            async move { AuthClient::new(c).set_auth_enabled(req).await }
        })
        .await
    }

    /// Who the node takes this client for.
    pub async fn who_am_i(&self) -> Result<pb::WhoAmIResponse> {
        self.call(|c| async move { AuthClient::new(c).who_am_i(pb::WhoAmIRequest {}).await })
            .await
    }

    /// Adds a learner.
    pub async fn add_learner(&self, id: u64, address: &str) -> Result<pb::MembershipResponse> {
        let req = pb::AddLearnerRequest {
            id,
            address: address.to_string(),
        };
        self.call(|c| {
            let req = req.clone();
            async move {
                ClusterClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .add_learner(req)
                    .await
            }
        })
        .await
    }

    /// Promotes a learner to voter.
    pub async fn promote(&self, id: u64) -> Result<pb::MembershipResponse> {
        self.call(|c| async move {
            ClusterClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .promote(pb::PromoteRequest { id })
                .await
        })
        .await
    }

    /// Removes a member.
    pub async fn remove_member(&self, id: u64) -> Result<pb::MembershipResponse> {
        self.call(|c| async move {
            ClusterClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .remove_member(pb::RemoveMemberRequest { id })
                .await
        })
        .await
    }

    /// Hands leadership to voter `to` (none: the most caught-up voter); answers once another
    /// node leads.
    pub async fn transfer_leader(&self, to: Option<u64>) -> Result<pb::MembershipResponse> {
        self.call(|c| async move {
            ClusterClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .transfer_leader(pb::TransferLeaderRequest { to: to.unwrap_or(0) })
                .await
        })
        .await
    }

    /// A consistent copy of the state: the header (JSON) first, then the state in pieces.
    pub async fn backup(&self) -> Result<tonic::Streaming<pb::BackupChunk>> {
        self.call(|c| async move {
            ClusterClient::new(c)
                .max_decoding_message_size(MAX_RESPONSE)
                .backup(pb::BackupRequest {})
                .await
        })
        .await
    }

    /// Moves on to the next endpoint (after a stream from the current one broke: the node may
    /// be down or frozen, and reconnecting to it could hang until a timeout).
    pub fn rotate(&self) {
        let n = self.channels.len();
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some((c + 1) % n));
    }

    /// A connection to the member at `address` (not necessarily among the endpoints), made
    /// with this client's settings and shared by its users.
    pub(crate) fn conn_to(&self, address: &str) -> Result<Conn> {
        let mut members = self.members.lock();
        if let Some(c) = members.get(address) {
            return Ok(c.clone());
        }
        let c = Conn::new(address, &self.options)?;
        members.insert(address.to_string(), c.clone());
        Ok(c)
    }

    /// The endpoints this client was given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Opens a watch stream on the current endpoint (moving on to the next when it cannot).
    pub async fn watch(&self, req: pb::WatchRequest) -> Result<tonic::Streaming<pb::WatchResponse>> {
        self.call(|c| {
            let req = req.clone();
            async move {
                WatchClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .watch(req)
                    .await
            }
        })
        .await
    }

    /// Opens a keepalive stream on the current endpoint (moving on to the next when it cannot),
    /// sending `first` on it. Returns the sender for further messages and the answers.
    pub async fn open_keep_alive(
        &self,
        first: pb::KeepAliveRequest,
    ) -> Result<(
        tokio::sync::mpsc::Sender<pb::KeepAliveRequest>,
        tonic::Streaming<pb::KeepAliveResponse>,
    )> {
        self.call(|c| {
            let first = first.clone();
            async move {
                let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVE_QUEUE);
                tx.send(first)
                    .await
                    .map_err(|_| Status::internal("keepalive queue closed"))?;
                let answers = RegistryClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                Ok(tonic::Response::new((tx, answers)))
            }
        })
        .await
    }

    /// Where every live instance stands with a feature's latest change.
    pub async fn rollout_status(&self, feature: &str) -> Result<pb::RolloutStatusResponse> {
        let req = pb::RolloutStatusRequest {
            feature: feature.to_string(),
        };
        self.call(|c| {
            let req = req.clone();
            async move {
                TogglesClient::new(c)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .rollout_status(req)
                    .await
            }
        })
        .await
    }
}
