//! What a node needs to start: its id and address, where its data lives, how the cluster is
//! formed, and the Raft timing and snapshot settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::raft::NodeId;

/// How a node finds its cluster on first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Form a cluster of these members (`id`, `host:port`), this node among them. Calling this
    /// on every member of a new cluster is safe; on a node that has state it does nothing.
    InitialCluster(Vec<(NodeId, String)>),
    /// Start empty and wait to be added by an existing cluster (`member add-learner`).
    Join,
}

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id (unique in the cluster, never reused for another machine's data).
    pub id: NodeId,
    /// The address to listen on.
    pub listen: std::net::SocketAddr,
    /// The address peers and clients use to reach this node (defaults to `listen`).
    pub advertise: String,
    /// Where the Raft log and snapshots are kept.
    pub data_dir: PathBuf,
    /// How the cluster is formed on first start.
    pub bootstrap: Bootstrap,
    /// Build a snapshot (and purge the log behind it) every this many applied entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so slightly lagging followers need no snapshot.
    pub keep_logs: u64,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range (a follower that hears no leader for this long campaigns).
    pub election_timeout: (Duration, Duration),
    /// Where to serve Prometheus metrics over HTTP (`/metrics`); none: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the operator console (`/ui`) and its API (`/api/v1/`) on the HTTP listener.
    pub console: bool,
    /// More addresses serving flagd's two protocols alone (besides the main one), so flagd
    /// providers with default settings find them (flagd's ports: 8013 evaluation, 8015 sync).
    pub flagd_listen: Vec<std::net::SocketAddr>,
    /// TLS for every listener and between members; none: plain connections (the internal
    /// service then cannot tell members from anyone else: for trusted networks only).
    pub tls: Option<crate::tls::NodeTls>,
    /// Per-caller request rate and open watches.
    pub limits: crate::auth::limits::LimitConfig,
    /// Streams (watches, flagd and OFREP event streams) this node serves at once; past it, a
    /// new one is shed with `UNAVAILABLE` naming the other members, so SDKs go elsewhere
    /// rather than every subscriber's lag growing.
    pub max_watches: usize,
    /// Threads serving the gRPC listeners' connections (each connection stays on one of
    /// them; see `server::serving`).
    pub serving_threads: usize,
}

impl NodeConfig {
    /// A single-node cluster on `listen`, keeping data in `data_dir`.
    pub fn single(id: NodeId, listen: std::net::SocketAddr, data_dir: PathBuf) -> Self {
        NodeConfig {
            id,
            listen,
            advertise: listen.to_string(),
            data_dir,
            bootstrap: Bootstrap::InitialCluster(vec![(id, listen.to_string())]),
            snapshot_every: 100_000,
            keep_logs: 5_000,
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(250), Duration::from_millis(375)),
            metrics_listen: None,
            console: true,
            flagd_listen: Vec::new(),
            tls: None,
            limits: Default::default(),
            max_watches: crate::watch::hub::MAX_STREAMS,
            serving_threads: crate::server::default_threads(),
        }
    }

    /// Checks the settings before anything starts.
    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::invalid("node id must be 1 or more"));
        }
        if let Bootstrap::InitialCluster(members) = &self.bootstrap {
            if !members.iter().any(|(id, _)| *id == self.id) {
                return Err(Error::invalid(format!(
                    "--initial-cluster does not name this node's id {}",
                    self.id
                )));
            }
            let mut ids: Vec<_> = members.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() != members.len() {
                return Err(Error::invalid("--initial-cluster names an id twice"));
            }
        }
        if self.snapshot_every == 0 {
            return Err(Error::invalid("--snapshot-every must be 1 or more"));
        }
        if self.election_timeout.0 <= self.heartbeat * 2 || self.election_timeout.1 <= self.election_timeout.0
        {
            return Err(Error::invalid(
                "election timeout must exceed twice the heartbeat, and its max its min",
            ));
        }
        Ok(())
    }
}

/// Parses `1=127.0.0.1:7701,2=127.0.0.1:7702,...`.
pub fn parse_initial_cluster(text: &str) -> Result<Vec<(NodeId, String)>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (id, addr) = item.trim().split_once('=').ok_or_else(|| {
                Error::invalid(format!("--initial-cluster item {item:?} is not ID=HOST:PORT"))
            })?;
            let id: NodeId = id
                .parse()
                .map_err(|_| Error::invalid(format!("--initial-cluster id {id:?} is not a number")))?;
            if !addr.contains(':') {
                return Err(Error::invalid(format!(
                    "--initial-cluster address {addr:?} has no port"
                )));
            }
            Ok((id, addr.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_members() {
        let m = parse_initial_cluster("1=127.0.0.1:7701,2=127.0.0.1:7702").unwrap();
        assert_eq!(
            m,
            vec![(1, "127.0.0.1:7701".into()), (2, "127.0.0.1:7702".into())]
        );
        assert!(parse_initial_cluster("x=1:2").is_err());
        assert!(parse_initial_cluster("1=localhost").is_err());
        assert!(parse_initial_cluster("1").is_err());
    }
}
