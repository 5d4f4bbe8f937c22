//! The agent (`switchyard agent`): a process beside one instance of a service written in any
//! language. It does for the instance what the SDK does for a Rust one:
//!
//! - registers the instance (service, version, labels) under a lease, and keeps it in the
//!   registry only while the application is healthy ([`health`]: an HTTP or TCP check, or
//!   while the process it supervises runs), so the readiness gate counts it;
//! - follows the cluster with an SDK (watch, resume, failover, flips at `effective_at` by the
//!   flip clock) and reports what the instance put into effect, so `rollout-status` covers it;
//! - serves the instance's flags on loopback ([`local`]) over flagd's sync and evaluation
//!   protocols (flagd's ports 8013 and 8015 by default) and OFREP (with `/livez`, `/readyz`
//!   and `/status`, on 8016), so the application's unchanged OpenFeature provider points at
//!   `localhost` and evaluates as this instance.
//!
//! While the cluster is away the agent serves the last flags it holds and says so in
//! `/status` and its log; it catches up with no gap when the cluster is back.

pub mod health;
pub(crate) mod local;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::http::{serve_connections, text, Response, Router};
use crate::client::{Client, ConnectOptions};
use crate::error::{Error, Result};
use crate::flagd::source::FlagSource;
use crate::ofrep::Ofrep;
use crate::sdk::{FollowState, InstanceConfig, Sdk, SdkConfig};
pub use health::HealthCheck;
use local::LocalFlags;

/// Most concurrent HTTP/2 streams on one connection to the agent's flagd port.
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// What an agent registers, follows, serves and checks.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The cluster's nodes.
    pub endpoints: Vec<String>,
    /// TLS and the token (a `service:NAME` token is enough).
    pub connect: ConnectOptions,
    /// The instance.
    pub instance: InstanceConfig,
    /// Features to follow besides those of `services`.
    pub features: Vec<String>,
    /// Follow the features whose requirements involve these services (the instance's own
    /// service when this and `features` are empty).
    pub services: Vec<String>,
    /// Addresses serving flagd's sync and evaluation protocols (gRPC).
    pub flagd_listen: Vec<SocketAddr>,
    /// The address serving OFREP, `/livez`, `/readyz` and `/status` (HTTP), if any.
    pub http_listen: Option<SocketAddr>,
    /// The application's health check (none: healthy while the agent, or the process it
    /// supervises, runs).
    pub health: Option<HealthCheck>,
    /// How often the health check runs.
    pub health_interval: Duration,
    /// How long one check may take.
    pub health_timeout: Duration,
    /// Failures in a row that take the instance out of the registry.
    pub unhealthy_after: u32,
    /// Start with the instance out of the registry, until [`Agent::set_app_running`] (for a
    /// supervised process not started yet).
    pub hold_registration: bool,
    /// How long to wait for the first copy of the flags.
    pub start_timeout: Duration,
}

/// What the agent tells `/status`.
#[derive(Debug, Clone, Default)]
struct AppState {
    /// The last health check's failure, if it failed.
    unhealthy: Option<String>,
    /// Whether the checks say healthy.
    healthy: bool,
    /// Whether the application (the supervised process) runs.
    running: bool,
}

/// A running agent.
pub struct Agent {
    sdk: Arc<Sdk>,
    app: Arc<Mutex<AppState>>,
    /// The addresses flagd's protocols are served on.
    pub flagd_addrs: Vec<SocketAddr>,
    /// The address OFREP and the status are served on.
    pub http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    has_health_check: bool,
}

impl Agent {
    /// Starts the agent: follows the cluster (waiting for the first copy of the flags), binds
    /// its listeners, and registers the instance once it is healthy.
    pub async fn start(config: AgentConfig) -> Result<Agent> {
        let mut instance = config.instance.clone();
        instance.service = instance.service.trim().to_string();
        let spec = crate::state::registry::InstanceSpec {
            id: instance.id.clone(),
            service: instance.service.clone(),
            version: instance.version.clone(),
            labels: instance.labels.clone(),
        };
        spec.validate()?;
        let services = if config.services.is_empty() && config.features.is_empty() {
            vec![instance.service.clone()]
        } else {
            config.services.clone()
        };
        let has_health_check = config.health.is_some();
        let client = Arc::new(Client::connect(&config.endpoints, &config.connect)?);
        let sdk = Arc::new(
            Sdk::start_with_client(
                client,
                SdkConfig {
                    features: config.features.clone(),
                    services,
                    instance: Some(instance.clone()),
                    start_timeout: config.start_timeout,
                    connect: config.connect.clone(),
                    hold_registration: has_health_check || config.hold_registration,
                    discover: true,
                },
            )
            .await?,
        );
        let source: Arc<dyn FlagSource> = Arc::new(LocalFlags::new(sdk.clone()));
        let (stop, stopped) = watch::channel(false);
        let app = Arc::new(Mutex::new(AppState {
            running: !config.hold_registration,
            ..Default::default()
        }));
        let mut tasks = Vec::new();

        let mut flagd_addrs = Vec::new();
        for at in &config.flagd_listen {
            let listener = tokio::net::TcpListener::bind(at).await.map_err(|e| {
                Error::unavailable(format!("cannot listen on {at} for flagd's protocols: {e}"))
            })?;
            flagd_addrs.push(
                listener
                    .local_addr()
                    .map_err(|e| Error::internal(format!("listener address: {e}")))?,
            );
            let (_, grpc_health) = tonic_health::server::health_reporter();
            let router = crate::flagd::add_services(
                tonic::transport::Server::builder()
                    .timeout(Duration::from_secs(30))
                    .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
                    .add_service(grpc_health),
                source.clone(),
            );
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let mut stopping = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stopping.wait_for(|s| *s).await;
                };
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped).await {
                    tracing::error!(error = %e, "the flagd listener failed");
                }
            }));
        }

        let mut http_addr = None;
        if let Some(at) = config.http_listen {
            let listener = crate::api::http::bind(at).await?;
            http_addr = Some(
                listener
                    .local_addr()
                    .map_err(|e| Error::internal(format!("listener address: {e}")))?,
            );
            let ofrep = Arc::new(Ofrep::new(source.clone(), None));
            let (status_sdk, status_app) = (sdk.clone(), app.clone());
            let router: Router = Arc::new(move |req, conn| {
                let (ofrep, sdk, app) = (ofrep.clone(), status_sdk.clone(), status_app.clone());
                Box::pin(async move {
                    if req.uri().path().starts_with("/ofrep/") {
                        return ofrep.handle(req, &conn).await;
                    }
                    route_status(req.uri().path(), &sdk, &app.lock(), has_health_check)
                })
            });
            let stopping = stopped.clone();
            tasks.push(tokio::spawn(async move {
                serve_connections(listener, None, router, move || *stopping.borrow()).await
            }));
        }

        tasks.push(tokio::spawn(log_follow_states(sdk.clone())));
        if let Some(check) = config.health.clone() {
            tasks.push(tokio::spawn(check_health(
                sdk.clone(),
                app.clone(),
                check,
                config.health_interval,
                config.health_timeout,
                config.unhealthy_after,
            )));
        }
        for addr in flagd_addrs.iter().chain(http_addr.iter()) {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "serving the instance's flags without authentication on an address other hosts may reach; keep the agent's listeners on loopback");
            }
        }
        tracing::info!(
            instance = %instance.id,
            service = %instance.service,
            version = %instance.version,
            flagd = ?flagd_addrs,
            http = ?http_addr,
            revision = sdk.received_revision(),
            "agent started"
        );
        Ok(Agent {
            sdk,
            app,
            flagd_addrs,
            http_addr,
            stop,
            tasks,
            has_health_check,
        })
    }

    /// Tells the agent whether the supervised application runs: while it does not, the
    /// instance is out of the registry; once it does, it is in (after its health check passes,
    /// if there is one).
    pub fn set_app_running(&self, running: bool) {
        let healthy = {
            let mut app = self.app.lock();
            app.running = running;
            app.healthy
        };
        self.sdk
            .set_registered(running && (healthy || !self.has_health_check));
    }

    /// The SDK behind the agent.
    pub fn sdk(&self) -> &Sdk {
        &self.sdk
    }

    /// Stops serving and takes the instance out of the registry at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        self.sdk.leave_registry().await;
        tracing::info!("agent stopped; the instance left the registry");
    }
}

/// `/livez`, `/readyz` and `/status` of the agent's HTTP listener.
fn route_status(path: &str, sdk: &Sdk, app: &AppState, has_health_check: bool) -> Response {
    let follow = sdk.follow_state();
    let cluster = match &follow {
        FollowState::Following => "following".to_string(),
        FollowState::Starting => "starting".to_string(),
        FollowState::Retrying { error, .. } => format!("cut off from the cluster, retrying: {error}"),
        FollowState::Stopped { error } => format!("stopped following: {error}"),
    };
    match path {
        "/livez" => text(200, "ok\n"),
        // The agent serves the flags it holds whether or not the cluster is reachable: the
        // application should start and run either way.
        "/readyz" => match follow {
            FollowState::Following => text(200, "ok\n"),
            _ => text(
                200,
                format!(
                    "ok, serving the flags held at revision {} ({cluster})\n",
                    sdk.received_revision()
                ),
            ),
        },
        "/status" => {
            let app_health = match (&app.unhealthy, has_health_check, app.running) {
                (_, _, false) => "not running".to_string(),
                (Some(why), _, _) => format!("unhealthy: {why}"),
                (None, true, _) if !app.healthy => "not checked yet".to_string(),
                (None, _, _) => "healthy".to_string(),
            };
            let instance = sdk.instance();
            let body = json!({
                "instance": instance.map(|i| json!({
                    "id": i.id, "service": i.service, "version": i.version, "labels": i.labels,
                })),
                "registered": sdk.lease_id() != 0,
                "lease_id": sdk.lease_id(),
                "app": app_health,
                "cluster": cluster,
                "following": matches!(follow, FollowState::Following),
                "revision": sdk.received_revision(),
                "flags": sdk.flags().len(),
            });
            let mut r = text(200, body.to_string());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(404, "served here: /ofrep/v1/..., /livez, /readyz, /status\n"),
    }
}

/// Logs each change of the SDK's hold on the cluster, one line each.
async fn log_follow_states(sdk: Arc<Sdk>) {
    let mut states = sdk.follow_states();
    let mut cut_off = false;
    while states.changed().await.is_ok() {
        let state = states.borrow_and_update().clone();
        match state {
            FollowState::Following if cut_off => {
                cut_off = false;
                tracing::info!(revision = sdk.received_revision(), "following the cluster again");
            }
            FollowState::Retrying { error, attempts } if !cut_off && attempts >= 2 => {
                cut_off = true;
                tracing::warn!(revision = sdk.received_revision(), error = %error, "cut off from the cluster; serving the flags held");
            }
            FollowState::Stopped { error } => {
                tracing::error!(error = %error, "the cluster refused this agent's watch; serving the flags held, no change will arrive");
            }
            _ => {}
        }
    }
}

/// Runs the health check, putting the instance into the registry while it passes and taking
/// it out after `unhealthy_after` failures in a row.
async fn check_health(
    sdk: Arc<Sdk>,
    app: Arc<Mutex<AppState>>,
    check: HealthCheck,
    every: Duration,
    timeout: Duration,
    unhealthy_after: u32,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tick.tick().await;
        let result = check.probe(timeout).await;
        failures = if result.is_ok() { 0 } else { failures + 1 };
        let (was, now, running) = {
            let mut a = app.lock();
            let was = a.healthy;
            a.healthy = health::judge(was, result.is_ok(), failures, unhealthy_after);
            a.unhealthy = result.as_ref().err().cloned();
            (was, a.healthy, a.running)
        };
        match (was, now) {
            (false, true) => tracing::info!("the application is healthy"),
            (true, false) => tracing::warn!(
                why = result.as_ref().err().map(String::as_str).unwrap_or(""),
                failures,
                "the application is unhealthy; taking the instance out of the registry"
            ),
            _ => {}
        }
        sdk.set_registered(now && running);
    }
}
