//! The Raft network client: how this node sends vote, append-entries and snapshot RPCs to a
//! peer over gRPC. Channels are pooled per address and shared with request forwarding; every
//! call has a deadline.
//!
//! The channels' connections run on a thread of their own ([`PeerRuntime`]), so traffic to
//! peers never queues behind the node's other work: when a commit wakes thousands of watch
//! streams, the append-entries telling followers of that commit still leaves at once, and the
//! followers start their own fan-out in parallel with the leader's instead of after it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkV2};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::pb::raft::raft_client::RaftClient;
use crate::pb::raft::{Payload, SnapshotChunk};
use crate::raft::{decode, encode, NodeId, Snapshot, TypeConfig, Vote};

/// How long to wait for a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// Largest internal message accepted or sent.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The thread running the node's connections to its peers (a single-threaded runtime); it
/// ends when the last [`ChannelPool`] holding it is dropped.
struct PeerRuntime {
    handle: tokio::runtime::Handle,
    /// Dropped with the pool: the thread's runtime then stops, closing its connections.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl PeerRuntime {
    fn start() -> std::io::Result<PeerRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("switchyard-peers".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(PeerRuntime { handle, _stop: stop })
    }
}

/// Spawns a channel's tasks (its request buffer and its HTTP/2 connection) on the peer thread.
#[derive(Clone)]
struct PeerExecutor(tokio::runtime::Handle);

impl<F> hyper::rt::Executor<F> for PeerExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// Lazily connected gRPC channels to peers, one per address, shared by every user on the node.
#[derive(Clone)]
pub struct ChannelPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    runtime: Arc<PeerRuntime>,
    /// How to reach peers over TLS (the peer CA, this node's certificate); files are read for
    /// each new channel, so a renewed certificate is used from the next connection on.
    tls: Option<crate::tls::ClientTls>,
}

impl ChannelPool {
    /// An empty pool, with the thread its connections will run on; over TLS with `tls`.
    pub fn new(tls: Option<crate::tls::ClientTls>) -> std::io::Result<ChannelPool> {
        Ok(ChannelPool {
            channels: Default::default(),
            runtime: Arc::new(PeerRuntime::start()?),
            tls,
        })
    }

    /// The channel to `addr` (`host:port`), created on first use. Connection happens lazily and
    /// is retried by tonic; an address that does not parse is an error.
    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let tls = match &self.tls {
            Some(t) => t.tonic_config().map_err(|e| e.to_string())?,
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| e.to_string())?;
        if let Some(t) = tls {
            endpoint = endpoint.tls_config(t).map_err(|e| e.to_string())?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .executor(PeerExecutor(self.runtime.handle.clone()))
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// An internal-service client to `addr`.
    pub fn raft_client(&self, addr: &str) -> Result<RaftClient<Channel>, String> {
        Ok(RaftClient::new(self.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}

/// Creates a [`Connection`] per peer for openraft.
pub struct Network {
    pool: ChannelPool,
}

impl Network {
    /// A network factory using `pool`.
    pub fn new(pool: ChannelPool) -> Self {
        Network { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            target,
            client: self.pool.raft_client(&node.addr).map_err(|e| e.to_string()),
        }
    }
}

/// The RPC client to one peer.
pub struct Connection {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

fn unreachable(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&Msg(e.to_string())))
}

fn network(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&Msg(e.to_string())))
}

/// A transport-level failure (peer down, connection refused) makes openraft back off; any other
/// failure is retried at once.
fn status_error(s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            unreachable(format!("{}: {}", s.code(), s.message()))
        }
        _ => network(format!("{}: {}", s.code(), s.message())),
    }
}

impl Connection {
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        self.client
            .clone()
            .map_err(|e| unreachable(format!("bad address of node {}: {e}", self.target)))
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        ttl: Duration,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, Payload) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
    {
        let payload = Payload {
            data: encode(req).map_err(network)?,
        };
        let fut = f(self.client()?, payload);
        let resp = tokio::time::timeout(ttl, fut)
            .await
            .map_err(|_| unreachable(format!("node {} did not answer within {ttl:?}", self.target)))?
            .map_err(status_error)?;
        decode(&resp.into_inner().data).map_err(network)
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, option.hard_ttl(), |mut c, p| async move {
            c.append_entries(p).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, option.hard_ttl(), |mut c, p| async move { c.vote(p).await })
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, option.hard_ttl(), |mut c, p| async move {
            c.transfer_leader(p).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let first = SnapshotChunk {
            vote: encode(&vote).map_err(network)?,
            meta: encode(&snapshot.meta).map_err(network)?,
            data: Vec::new(),
        };
        let data = snapshot.snapshot;
        let rest: Vec<SnapshotChunk> = data
            .chunks(SNAPSHOT_CHUNK)
            .map(|c| SnapshotChunk {
                vote: Vec::new(),
                meta: Vec::new(),
                data: c.to_vec(),
            })
            .collect();
        let chunks = tokio_stream::iter(std::iter::once(first).chain(rest));
        // A snapshot is bigger than an append: give it at least a minute.
        let ttl = option.hard_ttl().max(Duration::from_secs(60));
        let send = async {
            tokio::time::timeout(ttl, client.install_snapshot(chunks))
                .await
                .map_err(|_| unreachable(format!("snapshot to node {} timed out", self.target)))?
                .map_err(status_error)
        };
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => r?,
        };
        decode(&resp.into_inner().data)
            .map_err(network)
            .map_err(StreamingError::from)
    }
}
