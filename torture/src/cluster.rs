//! A cluster of `switchyard serve` processes, one per network namespace, each with its data on
//! its own small tmpfs (so a fault can fill its disk). The harness is the nodes' supervisor: it
//! kills, freezes, restarts, wipes and replaces them, and asks them how they are.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use switchyard::client::Client;
use switchyard::pb::v1 as pb;
use tonic::transport::{Channel, Endpoint};

use crate::net::{sh, Network};

/// The port every node listens on inside its namespace.
const PORT: u16 = 7700;
const METRICS_PORT: u16 = 9700;
/// Size of each node's tmpfs.
const DISK_MB: u32 = 256;

/// How the nodes are started.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `switchyard` binary.
    pub binary: PathBuf,
    /// Where logs and mount points go.
    pub dir: PathBuf,
    /// Run number (1..=250): names of namespaces and the address range.
    pub run: u8,
    pub nodes: usize,
    /// Extra `serve` flags (snapshot and timing settings).
    pub serve_args: Vec<String>,
}

struct NodeProc {
    id: u64,
    mount: PathBuf,
    child: Option<Child>,
    starts: u32,
    paused: bool,
    /// Killed by the nemesis and kept down until the heal.
    held_down: bool,
    /// When the supervisor last started it.
    last_start: Option<std::time::Instant>,
}

/// The running cluster. Dropping it kills every node, unmounts the disks and removes the
/// namespaces.
pub struct Cluster {
    config: ClusterConfig,
    net: Network,
    nodes: Vec<NodeProc>,
    initial_cluster: String,
}

impl Cluster {
    /// Creates the hosts and starts every node as a member of a new cluster.
    pub fn start(config: ClusterConfig) -> Result<Cluster> {
        let net = Network::create(config.run, config.nodes)?;
        std::fs::create_dir_all(&config.dir)?;
        let mut nodes = Vec::new();
        for i in 1..=config.nodes {
            let mount = config.dir.join(format!("disk{i}"));
            let _ = Command::new("umount").arg("-l").arg(&mount).output();
            std::fs::create_dir_all(&mount)?;
            sh(
                "mount",
                &[
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={DISK_MB}m"),
                    "tmpfs",
                    &mount.to_string_lossy(),
                ],
            )?;
            nodes.push(NodeProc {
                id: i as u64,
                mount,
                child: None,
                starts: 0,
                paused: false,
                held_down: false,
                last_start: None,
            });
        }
        let initial_cluster = (1..=config.nodes)
            .map(|i| format!("{i}={}:{PORT}", net.ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            config,
            net,
            nodes,
            initial_cluster,
        };
        for i in 1..=cluster.nodes.len() {
            cluster.spawn(i as u64, false)?;
        }
        Ok(cluster)
    }

    /// The network the nodes live on.
    pub fn net(&self) -> &Network {
        &self.net
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// A node's client address.
    pub fn addr(&self, id: u64) -> String {
        format!("{}:{PORT}", self.net.ip(id as usize))
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.ids().into_iter().map(|id| self.addr(id)).collect()
    }

    fn node(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[(id - 1) as usize]
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.nodes[(id - 1) as usize].mount.join("data")
    }

    fn spawn(&mut self, id: u64, join: bool) -> Result<()> {
        let ns = self.net.namespace(id as usize);
        let ip = self.net.ip(id as usize);
        let data = self.data_dir(id);
        let starts = self.node(id).starts;
        let log_path = self.config.dir.join(format!("node{id}.log{starts}"));
        let log = std::fs::File::create(&log_path).context("node log file")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(&self.config.binary)
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--listen", &format!("{ip}:{PORT}")])
            .args(["--metrics-listen", &format!("{ip}:{METRICS_PORT}")])
            .arg("--data-dir")
            .arg(&data)
            .args(&self.config.serve_args)
            .env("RUST_LOG", "warn,switchyard=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if join {
            cmd.arg("--join");
        } else {
            cmd.args(["--initial-cluster", &self.initial_cluster]);
        }
        let child = cmd.spawn().context("spawn switchyard serve")?;
        let n = self.node(id);
        n.child = Some(child);
        n.starts += 1;
        n.paused = false;
        n.held_down = false;
        n.last_start = Some(std::time::Instant::now());
        Ok(())
    }

    /// What a supervisor (systemd, an orchestrator) does: a node that exited by itself (e.g. on
    /// a storage failure) is started again, at most once a second. Nodes the nemesis killed
    /// stay down until the heal.
    pub fn supervise(&mut self) -> Result<()> {
        for id in self.ids() {
            let n = self.node(id);
            let recent = n.last_start.is_some_and(|t| t.elapsed() < Duration::from_secs(1));
            if !n.held_down && !recent && !self.is_running(id) {
                tracing::info!("node {id} exited by itself; starting it again");
                self.spawn(id, false)?;
            }
        }
        Ok(())
    }

    /// Whether the node's process is alive (it may have exited by itself, e.g. on a storage
    /// failure).
    pub fn is_running(&mut self, id: u64) -> bool {
        let n = self.node(id);
        match &mut n.child {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    n.child = None;
                    false
                }
            },
            None => false,
        }
    }

    /// SIGKILL; the node stays down until restarted or healed.
    pub fn kill(&mut self, id: u64) {
        let n = self.node(id);
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        n.paused = false;
        n.held_down = true;
    }

    fn signal(&mut self, id: u64, sig: i32) {
        if let Some(c) = &self.node(id).child {
            // SAFETY: kill(2) on a pid we own; a stale pid only yields ESRCH.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGSTOP: the node keeps its sockets and answers nothing.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, libc::SIGSTOP);
        self.node(id).paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT);
        self.node(id).paused = false;
    }

    /// Starts a node that is not running, on its data.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        if self.is_running(id) {
            return Ok(());
        }
        self.spawn(id, false)
    }

    /// Kills the node, deletes its data and starts it empty, waiting to be added.
    pub fn wipe_and_join(&mut self, id: u64) -> Result<()> {
        self.kill(id);
        let data = self.data_dir(id);
        if data.exists() {
            std::fs::remove_dir_all(&data).context("wiping the data dir")?;
        }
        self.spawn(id, true)
    }

    /// Fills the node's disk to the last byte.
    pub fn fill_disk(&mut self, id: u64) -> Result<()> {
        use std::io::Write;
        let mount = &self.node(id).mount;
        // Only ever the node's own small tmpfs: were it gone (unmounted under a run), this
        // would fill the machine's disk.
        let total = fs2::total_space(mount).context("reading the size of the node's disk")?;
        if total > 2 * u64::from(DISK_MB) * 1024 * 1024 {
            anyhow::bail!(
                "node {id}'s disk {} is {} MiB, not its own {DISK_MB} MiB tmpfs: not filling it",
                mount.display(),
                total / (1024 * 1024)
            );
        }
        let path = mount.join("filler");
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // The last partial chunk.
        while f.write(&chunk[..4096]).is_ok_and(|n| n > 0) {}
        Ok(())
    }

    /// Gives the node's disk its space back.
    pub fn free_disk(&mut self, id: u64) {
        let path = self.node(id).mount.join("filler");
        let _ = std::fs::remove_file(path);
    }

    /// Undoes every fault: network healed, disks freed, paused nodes resumed, stopped nodes
    /// started (a node that exited on a storage failure is restarted, as a supervisor would).
    pub fn heal(&mut self) -> Result<()> {
        self.net.heal()?;
        for id in self.ids() {
            self.free_disk(id);
            if self.node(id).paused {
                self.resume(id);
            }
            if !self.is_running(id) {
                self.spawn(id, false)?;
            }
        }
        Ok(())
    }

    /// A channel to one node, connecting lazily with short timeouts.
    pub fn channel(&self, id: u64) -> Result<Channel> {
        Ok(Endpoint::from_shared(format!("http://{}", self.addr(id)))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .connect_lazy())
    }

    /// An admin client of one node.
    pub fn client_of(&self, id: u64) -> Result<Client> {
        Ok(Client::new(&[self.addr(id)])?)
    }

    /// An admin client of every node.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(&self.endpoints())?)
    }

    /// One node's own view of itself, or None when it does not answer in time.
    pub async fn local_status(&self, id: u64) -> Option<pb::MemberStatus> {
        let mut c = pb::cluster_client::ClusterClient::new(self.channel(id).ok()?);
        let r = tokio::time::timeout(Duration::from_secs(2), c.local_status(pb::LocalStatusRequest {})).await;
        r.ok()?.ok().map(|r| r.into_inner())
    }

    /// The leader, if a running node says it leads.
    pub async fn leader(&self) -> Option<u64> {
        for id in self.ids() {
            if let Some(s) = self.local_status(id).await {
                if s.role == "leader" {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Waits until a node says it leads.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of a node's logs (every start), for a failure report.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let starts = self.nodes[(id - 1) as usize].starts;
        let mut text = String::new();
        for s in 0..starts {
            let p = self.config.dir.join(format!("node{id}.log{s}"));
            text.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Where the logs are.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.resume(id);
            self.kill(id);
        }
        for n in &self.nodes {
            let _ = Command::new("umount").arg("-l").arg(&n.mount).output();
        }
    }
}
