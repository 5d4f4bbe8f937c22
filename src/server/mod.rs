//! Starting a node: open its storage, start Raft, wire the node together, bind the gRPC
//! server with every service (public API, internal Raft service, health, reflection) and the
//! HTTP listener (metrics), and form or join the cluster. [`local`] starts a whole cluster in
//! one process.

pub mod local;
mod serving;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, SnapshotPolicy};
use tonic::transport::Server;

use crate::api;
use crate::error::{Error, Result};
use crate::node::peer::Peers;
use crate::node::{Bootstrap, Node, NodeConfig};
use crate::pb::raft::raft_server::RaftServer;
use crate::raft::network::{ChannelPool, Network, MAX_MESSAGE};
use crate::raft::service::RaftService;
use crate::raft::Raft;
use crate::store::{LogStore, SledBackend, StateMachineStore};

pub use local::LocalCluster;
pub use serving::default_threads;
use serving::Serving;

/// How long a leader asked to stop waits for another node to take over.
const HANDOFF_WITHIN: Duration = Duration::from_secs(3);
/// How long calls in progress (keepalive streams included) may run on after a shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Most concurrent HTTP/2 streams (calls, watches) on one client connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 4096;

/// A started node: the addresses it listens on, and the means to stop it.
pub struct RunningNode {
    node: Arc<Node>,
    /// The address the gRPC server is bound to.
    pub addr: SocketAddr,
    /// The address metrics are served on, if they are.
    pub metrics_addr: Option<SocketAddr>,
    /// The addresses serving flagd's protocols alone (`NodeConfig::flagd_listen`).
    pub flagd_addrs: Vec<SocketAddr>,
    /// The threads serving the gRPC listeners (the main one, then flagd's).
    serving: Vec<Serving>,
    data_dir: std::path::PathBuf,
}

/// Completes once the disk holding `dir` is nearly full, with why.
async fn disk_nearly_full(dir: std::path::PathBuf) -> String {
    let mut tick = tokio::time::interval(crate::store::space::CHECK_EVERY);
    loop {
        tick.tick().await;
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || fs2::available_space(&d)).await {
            Ok(Ok(free)) => {
                if let Err(why) = crate::store::space::too_little(&dir, free) {
                    return why;
                }
            }
            // Not knowing is no reason to stop (a full disk shows up as a failed write).
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the data disk's free space"),
            Err(_) => {}
        }
    }
}

impl RunningNode {
    /// Stops serving and shuts Raft down. Watch streams end with `UNAVAILABLE` at once; other
    /// calls get [`SHUTDOWN_GRACE`] to finish (those that need Raft fail as unavailable), then
    /// their connections are closed.
    pub async fn shutdown(mut self) {
        self.node.mark_shut_down();
        for s in &self.serving {
            s.drain();
        }
        // Raft stops first: a node on its way out must neither vote nor campaign. Its peers
        // can no longer connect to it (the listener is closed), so it would soon stop hearing
        // from the leader and start an election whose higher term deposes that leader. Calls
        // still in progress that need Raft fail as unavailable and are retried elsewhere.
        if let Err(e) = self.node.raft().shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for s in &mut self.serving {
            let grace = deadline.saturating_duration_since(tokio::time::Instant::now());
            if s.shutdown(grace).await {
                tracing::info!("closed the connections still open after {SHUTDOWN_GRACE:?}");
            }
        }
    }

    /// A leader asked to stop hands leadership to the most caught-up voter first (waiting up
    /// to [`HANDOFF_WITHIN`]), so a planned restart costs the cluster a vote, not an election
    /// timeout. Not leading, or alone: nothing to do.
    pub async fn hand_off_leadership(&self) {
        let voters = self
            .node
            .raft()
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        if !self.node.is_leader() || voters < 2 {
            return;
        }
        match self.node.transfer_leader_here(None, HANDOFF_WITHIN).await {
            Ok(()) => {
                tracing::info!(leader = ?self.node.known_leader().map(|(id, _)| id), "leadership handed over")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not hand leadership over; the others will elect a leader once this node is gone")
            }
        }
    }

    /// Serves until `signal` completes, then shuts down. If the node fails on its own first
    /// (its storage failed: it can no longer persist or vouch for its data), it shuts down
    /// and says why, so the process can exit and a supervisor restart it.
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::select! {
            _ = signal => {
                tracing::info!("shutting down");
                self.hand_off_leadership().await;
                self.shutdown().await;
                Ok(())
            }
            why = self.failure() => {
                tracing::error!(reason = %why, "storage failed: this node stops; restart it once the disk is healthy (nothing it acknowledged is lost: that is on disk or on a majority)");
                self.shutdown().await;
                Err(Error::Internal(format!("the node stopped: {why}")))
            }
        }
    }

    /// Completes when the node's Raft core stops by itself (a storage failure), or its data
    /// disk is nearly full (stopping then keeps sled from failing a write half-done), with why.
    pub async fn failure(&self) -> String {
        tokio::select! {
            why = self.raft_failure() => why,
            why = disk_nearly_full(self.data_dir.clone()) => why,
        }
    }

    async fn raft_failure(&self) -> String {
        let mut metrics = self.node.raft().metrics();
        loop {
            let failed = metrics
                .borrow_watched()
                .running_state
                .as_ref()
                .err()
                .map(|f| f.to_string());
            if let Some(why) = failed {
                return why;
            }
            if metrics.changed().await.is_err() {
                return "the Raft core stopped".into();
            }
        }
    }
}

fn disk(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

/// The node's data cannot be trusted: it refuses to start, saying what to do.
fn damaged(config: &NodeConfig, what: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!(
        "the data in {dir} is damaged: {what}. This node cannot vouch for its data and will not \
         start. To replace it: `switchyard member remove {id}` (from any other node), move {dir} \
         aside, start this node empty with --join, then `switchyard member add-learner {id} \
         {addr}` and `switchyard member promote {id}`: it catches up from the others",
        dir = config.data_dir.display(),
        id = config.id,
        addr = config.advertise,
    ))
}

/// Starts a node as configured.
pub async fn start(config: NodeConfig) -> Result<RunningNode> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| disk(&format!("creating data dir {}", config.data_dir.display()), e))?;
    crate::store::space::check(&config.data_dir).map_err(Error::Unavailable)?;
    let backend = Arc::new(
        SledBackend::open(&config.data_dir.join("raft"))
            .map_err(|e| disk(&format!("opening storage in {}", config.data_dir.display()), e))?,
    );
    let log = LogStore::new(backend.clone()).map_err(|e| disk("starting log flusher", e))?;
    let hub = Arc::new(crate::watch::WatchHub::with_max_streams(config.max_watches));
    let machine = StateMachineStore::open(backend, hub.clone()).map_err(|e| damaged(&config, e))?;
    log.verify(machine.snapshot_log_id())
        .map_err(|e| damaged(&config, e))?;

    let raft_config = openraft::Config {
        cluster_name: "switchyard".into(),
        heartbeat_interval: config.heartbeat.as_millis() as u64,
        election_timeout_min: config.election_timeout.0.as_millis() as u64,
        election_timeout_max: config.election_timeout.1.as_millis() as u64,
        install_snapshot_timeout: 60_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: config.keep_logs,
        // A restarted leader campaigns like any other node. Resuming leadership in the term it
        // had before the crash (openraft's default) reuses log ids: the entries it had sent to
        // followers but not yet flushed itself are gone from its log, so it proposes different
        // entries under the same (term, index), followers keep theirs as "already present", and
        // the replicas diverge.
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::invalid(format!("raft settings: {e}")))?;

    let tls = match &config.tls {
        Some(t) => {
            let loaded = crate::tls::ServerTls::load(t)?;
            loaded.cert.clone().watch();
            Some(loaded)
        }
        None => {
            tracing::warn!("no TLS: connections are in clear text and the internal service cannot tell members from anyone who reaches this port; use --tls-cert, --tls-key and --peer-ca outside a trusted network");
            None
        }
    };
    let peer_tls = config.tls.as_ref().map(|t| crate::tls::ClientTls {
        ca: Some(t.peer_ca.clone()),
        identity: Some((t.cert.clone(), t.key.clone())),
        domain: None,
    });
    let pool = ChannelPool::new(peer_tls)
        .map_err(|e| Error::internal(format!("starting the peer connection thread: {e}")))?;
    let raft = Raft::new(
        config.id,
        Arc::new(raft_config),
        Network::new(pool.clone()),
        log,
        machine.clone(),
    )
    .await
    .map_err(|e| Error::internal(format!("starting raft: {e}")))?;

    let node = Arc::new(Node::new(
        config.id,
        config.advertise.clone(),
        raft.clone(),
        machine,
        Peers::new(pool.clone()),
        hub,
    ));
    tokio::spawn(crate::node::leases::expiry_loop(node.clone()));
    tokio::spawn(crate::node::contact::contact_loop(node.clone()));
    let limiter = Arc::new(crate::auth::limits::Limiter::new(config.limits));
    let metrics_addr = match config.metrics_listen {
        Some(at) => {
            let listener = api::http::bind(at).await?;
            let bound = listener
                .local_addr()
                .map_err(|e| Error::internal(format!("metrics listener address: {e}")))?;
            tokio::spawn(api::http::serve(
                node.clone(),
                listener,
                tls.as_ref().map(|t| t.http_acceptor()),
                limiter.clone(),
                config.console,
            ));
            Some(bound)
        }
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("listener address: {e}")))?;

    let (health_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(health_loop(node.clone(), health_reporter));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::internal(format!("reflection: {e}")))?;

    let guard = api::guard::GuardLayer::new(node.clone(), tls.as_ref().map(|t| t.peers.clone()), limiter);
    let router = Server::builder()
        .layer(guard.clone())
        .layer(api::watch::WatchRoute::serving(node.clone()))
        .timeout(Duration::from_secs(30))
        // Bounds what one connection can open (each watch stream is one HTTP/2 stream).
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(health)
        .add_service(reflection)
        .add_service(
            RaftServer::new(RaftService::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        );
    let router = api::add_services(router, node.clone());
    let threads = config.serving_threads;
    let tls = tls.map(Arc::new);
    let mut serving = vec![Serving::start(
        "switchyard-serve",
        listener,
        threads,
        serve_grpc(router, tls.clone()),
    )?];

    let mut flagd_addrs = Vec::new();
    for at in &config.flagd_listen {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .map_err(|e| Error::unavailable(format!("cannot listen on {at} for flagd's protocols: {e}")))?;
        flagd_addrs.push(
            listener
                .local_addr()
                .map_err(|e| Error::internal(format!("listener address: {e}")))?,
        );
        let router = api::add_flagd_services(
            Server::builder()
                .layer(guard.clone())
                .layer(api::watch::WatchRoute::none())
                .timeout(Duration::from_secs(30))
                .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
                .add_routes(Default::default()),
            node.clone(),
        );
        serving.push(Serving::start(
            "switchyard-flagd",
            listener,
            threads,
            serve_grpc(router, tls.clone()),
        )?);
    }

    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| Error::internal(format!("raft: {e}")))?;
    if let Bootstrap::InitialCluster(members) = &config.bootstrap {
        if !initialized {
            let members: std::collections::BTreeMap<_, _> = members
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            if let Err(e) = raft.initialize(members).await {
                // Another member initialized first and reached us: nothing to do.
                tracing::info!(error = %e, "cluster already initialized");
            }
        }
    }
    // After a restart, serve reads only once the state machine has re-applied what this node
    // knew to be committed (from its own log: no quorum needed).
    if initialized {
        if let Err(e) = raft.wait_for_recovery(Some(Duration::from_secs(10))).await {
            tracing::warn!(error = %e, "state machine still recovering");
        }
    }
    tracing::info!(id = config.id, %addr, "node started");
    Ok(RunningNode {
        node,
        addr,
        metrics_addr,
        flagd_addrs,
        serving,
        data_dir: config.data_dir.clone(),
    })
}

/// A gRPC listener's routes behind the guard (authentication, limits) and the watch route.
type GuardedRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<
        api::watch::WatchRoute,
        tower::layer::util::Stack<api::guard::GuardLayer, tower::layer::util::Identity>,
    >,
>;

/// What each serving thread runs for a gRPC listener: the router over the thread's own
/// clone of the listening socket (TLS handshakes there too), until the node drains.
fn serve_grpc(
    router: GuardedRouter,
    tls: Option<Arc<crate::tls::ServerTls>>,
) -> impl Fn(tokio::net::TcpListener, serving::Drain) -> futures::future::LocalBoxFuture<'static, ()>
       + Send
       + Sync
       + Clone
       + 'static {
    move |listener, drain| {
        let router = router.clone();
        let tls = tls.clone();
        Box::pin(async move {
            // Accepted sockets get TCP_NODELAY here (Server::tcp_nodelay covers only listeners
            // tonic binds itself): without it Nagle's algorithm and delayed ACKs add ~40 ms to
            // small replies.
            let served = match &tls {
                Some(t) => {
                    router
                        .serve_with_incoming_shutdown(t.grpc_incoming(listener), drain.wait())
                        .await
                }
                None => {
                    let incoming =
                        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                    router.serve_with_incoming_shutdown(incoming, drain.wait()).await
                }
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "a serving thread stopped");
            }
        })
    }
}

/// Names the gRPC health service reports for (`""` is the node as a whole).
const HEALTH_SERVICES: [&str; 6] = [
    "",
    "switchyard.v1.Catalog",
    "switchyard.v1.Toggles",
    "switchyard.v1.Registry",
    "switchyard.v1.Watch",
    "switchyard.v1.Cluster",
];

/// Keeps gRPC health (`grpc.health.v1`) saying the truth: `SERVING` while the node can vouch
/// for its data, `NOT_SERVING` while it cannot (cut off, removed, storage failed), so load
/// balancers and orchestrators send traffic elsewhere.
async fn health_loop(node: Arc<Node>, reporter: tonic_health::server::HealthReporter) {
    let mut serving = None;
    let mut tick = tokio::time::interval(crate::node::contact::CHECK_EVERY);
    loop {
        tick.tick().await;
        let now = !node.contact().is_lost() && !node.is_shut_down();
        if serving != Some(now) {
            let status = if now {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for name in HEALTH_SERVICES {
                reporter.set_service_status(name, status).await;
            }
            serving = Some(now);
        }
        if node.is_shut_down() {
            return;
        }
    }
}
