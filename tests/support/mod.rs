//! A test cluster harness: real `switchyard serve` processes, each on its own loopback address
//! (127.a.b.c, unique per test process and cluster, so tests run in parallel without port
//! collisions), with data in a temporary directory. Nodes can be killed (SIGKILL), restarted,
//! wiped and re-added. Everything is killed when the cluster is dropped.

#![allow(dead_code)]

pub mod forwarder;
pub mod workload;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use switchyard::client::{Client, ConnectOptions};
use switchyard::pb::v1 as pb;

static NEXT_CLUSTER: AtomicU8 = AtomicU8::new(1);

/// One node process.
pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    /// Where the node serves metrics (and, in builds with failpoints, `/failpoints/NAME`).
    pub metrics_addr: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    restarts: u32,
}

/// A cluster of node processes.
pub struct TestCluster {
    pub nodes: Vec<NodeProc>,
    extra: Vec<String>,
    initial_cluster: String,
    /// How the harness's clients connect (TLS for a TLS cluster).
    pub connect: ConnectOptions,
    /// Where a TLS cluster's certificates are (`switchyard certs` layout).
    pub certs: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// A port free on `ip` now, as `ip:port`. The port is released before it is used, so `ip`
/// should be a loopback address of this test's own ([`own_loopback`]): there no other
/// process (nor an outgoing connection, whose source is 127.0.0.1) can take it in between.
pub fn free_addr(ip: Ipv4Addr) -> String {
    let l = TcpListener::bind(SocketAddrV4::new(ip, 0)).expect("bind a loopback port");
    l.local_addr().expect("local addr").to_string()
}

/// A loopback address (127.a.b.1) that no cluster and no other caller in this test process
/// uses, for processes a test starts beside its clusters (agents, applications).
pub fn own_loopback() -> Ipv4Addr {
    let a = (std::process::id() % 250) as u8 + 2;
    let b = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
    Ipv4Addr::new(127, a, b, 1)
}

impl TestCluster {
    /// Starts `n` voters with `extra` serve flags and waits for a leader.
    pub async fn start(n: u64, extra: &[&str]) -> TestCluster {
        let c = TestCluster::prepare(n, extra);
        c.launch().await
    }

    /// Starts `n` voters serving TLS, with mutual TLS between them: certificates from a
    /// throwaway CA (in [`TestCluster::certs`]) valid for every node's address, a client CA
    /// for client certificates `admin` and `ops`. The harness's clients trust the CA.
    pub async fn start_tls(n: u64, extra: &[&str]) -> TestCluster {
        let mut c = TestCluster::prepare(n, extra);
        let dir = c._dir.path().join("certs");
        let mut hosts: Vec<String> = c
            .nodes
            .iter()
            .map(|n| n.addr.split(':').next().unwrap_or_default().to_string())
            .collect();
        hosts.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
        switchyard::tls::certs::create(&dir, &hosts, 1, &["admin".into(), "ops".into()])
            .expect("make certificates");
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        c.extra.extend([
            "--tls-cert".into(),
            file("node-1.pem"),
            "--tls-key".into(),
            file("node-1-key.pem"),
            "--peer-ca".into(),
            file("ca.pem"),
            "--client-ca".into(),
            file("client-ca.pem"),
        ]);
        c.connect.tls.ca = Some(dir.join("ca.pem"));
        c.certs = Some(dir);
        c.launch().await
    }

    /// Starts `n` voters seeded from a backup file with `switchyard snapshot restore` (each
    /// member from the same file, with the same initial cluster), and waits for a leader.
    pub async fn start_from_backup(n: u64, extra: &[&str], backup: &std::path::Path) -> TestCluster {
        let c = TestCluster::prepare(n, extra);
        for node in &c.nodes {
            let out = Command::new(binary())
                .args(["snapshot", "restore"])
                .arg(backup)
                .arg("--data-dir")
                .arg(&node.data_dir)
                .args([
                    "--id",
                    &node.id.to_string(),
                    "--initial-cluster",
                    &c.initial_cluster,
                ])
                .output()
                .expect("run switchyard snapshot restore");
            assert!(
                out.status.success(),
                "restore of node {}: {}",
                node.id,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        c.launch().await
    }

    /// Runs the `switchyard` CLI against this cluster's endpoints.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args(["--endpoints", &self.endpoints().join(",")])
            .args(args)
            .output()
            .expect("run the switchyard CLI")
    }

    async fn launch(mut self) -> TestCluster {
        for id in 1..=self.nodes.len() as u64 {
            self.spawn(id, false);
        }
        self.wait_leader(Duration::from_secs(30)).await;
        self
    }

    /// Addresses and data directories for `n` voters, none started.
    fn prepare(n: u64, extra: &[&str]) -> TestCluster {
        let [_, a, b, _] = own_loopback().octets();
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<NodeProc> = (1..=n)
            .map(|id| NodeProc {
                id,
                addr: free_addr(Ipv4Addr::new(127, a, b, id as u8)),
                metrics_addr: free_addr(Ipv4Addr::new(127, a, b, id as u8)),
                data_dir: dir.path().join(format!("node{id}")),
                child: None,
                restarts: 0,
            })
            .collect();
        let initial_cluster = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        TestCluster {
            nodes,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            initial_cluster,
            connect: ConnectOptions::default(),
            certs: None,
            _dir: dir,
        }
    }

    fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[(id - 1) as usize]
    }

    fn spawn(&mut self, id: u64, join: bool) {
        self.spawn_with(id, join, &[]);
    }

    fn spawn_with(&mut self, id: u64, join: bool, env: &[(&str, &str)]) {
        let extra = self.extra.clone();
        let ic = self.initial_cluster.clone();
        let n = &mut self.nodes[(id - 1) as usize];
        std::fs::create_dir_all(&n.data_dir).expect("data dir");
        let log =
            std::fs::File::create(n.data_dir.with_extension(format!("log{}", n.restarts))).expect("log file");
        n.restarts += 1;
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .args(["--id", &id.to_string(), "--listen", &n.addr])
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(["--heartbeat-ms", "100", "--election-timeout-ms", "800"])
            .args(["--metrics-listen", &n.metrics_addr])
            .args(&extra)
            .env(
                "RUST_LOG",
                std::env::var("SWITCHYARD_TEST_NODE_LOG").unwrap_or_else(|_| "warn,switchyard=info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if join {
            cmd.arg("--join");
        } else {
            cmd.args(["--initial-cluster", &ic]);
        }
        n.child = Some(cmd.spawn().expect("spawn switchyard serve"));
    }

    /// SIGKILL a node.
    pub fn kill(&mut self, id: u64) {
        let n = &mut self.nodes[(id - 1) as usize];
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes a node (SIGSTOP): it keeps its sockets but answers nothing, like a long GC
    /// pause or a stalled VM.
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
        // kill returns once the signal is sent; the process's threads stop a moment later, and
        // until then it may still answer. Wait until every thread is stopped.
        let pid = self.node(id).child.as_ref().expect("node is running").id();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks.filter_map(Result::ok).all(|t| {
                        std::fs::read_to_string(t.path().join("stat"))
                            .map(|st| {
                                st.rsplit_once(") ")
                                    .is_some_and(|(_, rest)| rest.starts_with('T'))
                            })
                            .unwrap_or(true)
                    })
                })
                .unwrap_or(false);
            if stopped {
                return;
            }
            assert!(Instant::now() < deadline, "node {id} did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Thaws a paused node (SIGCONT).
    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    pub fn signal(&self, id: u64, sig: &str) {
        let pid = self.node(id).child.as_ref().expect("node is running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Stops a node as an orchestrator does (SIGTERM), and waits until it has exited.
    pub async fn stop(&mut self, id: u64) -> std::process::ExitStatus {
        self.signal(id, "-TERM");
        let n = &mut self.nodes[(id - 1) as usize];
        let mut child = n.child.take().expect("node is running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the node") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not exit within 20 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a stopped node again on its data.
    pub fn start_again(&mut self, id: u64) {
        assert!(self.node(id).child.is_none(), "node {id} is running");
        // A node added later (a learner) was never in the initial cluster: it comes back as it
        // started, joining.
        let added_later = id as usize > self.initial_cluster.split(',').count();
        self.spawn(id, added_later);
    }

    /// Starts a killed node again on its data.
    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id, false);
    }

    /// Starts a killed node again on its data, with environment variables (e.g. `FAILPOINTS`).
    pub fn restart_with(&mut self, id: u64, env: &[(&str, &str)]) {
        self.kill(id);
        self.spawn_with(id, false, env);
    }

    /// Whether the node's process is running (false once it has exited, e.g. at a failpoint).
    pub fn is_running(&mut self, id: u64) -> bool {
        let n = &mut self.nodes[(id - 1) as usize];
        match n.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                n.child = None;
                false
            }
            None => false,
        }
    }

    /// Arms a failpoint on a running node (`action` in the `fail` crate's syntax; see
    /// `src/failpoint.rs`). Needs a build with the `failpoints` feature.
    pub fn failpoint(&self, id: u64, name: &str, action: &str) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.node(id).metrics_addr).expect("metrics listener");
        let req = format!(
            "PUT /failpoints/{name} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{action}",
            action.len()
        );
        s.write_all(req.as_bytes()).expect("send failpoint");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "failpoint {name} on node {id}: {answer}"
        );
    }

    /// The text of a node's log file of its latest start.
    pub fn last_log_text(&self, id: u64) -> String {
        let n = self.node(id);
        std::fs::read_to_string(
            n.data_dir
                .with_extension(format!("log{}", n.restarts.saturating_sub(1))),
        )
        .unwrap_or_default()
    }

    /// The text of a node's log files (every start of it), for a test to search.
    pub fn log_text(&self, id: u64) -> String {
        let n = self.node(id);
        (0..n.restarts)
            .filter_map(|r| std::fs::read_to_string(n.data_dir.with_extension(format!("log{r}"))).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills a node, deletes its data, and starts it empty with `--join`, with `extra` serve
    /// flags in place of the cluster's (e.g. a certificate from another CA).
    pub fn wipe_and_join_with(&mut self, id: u64, extra: Vec<String>) {
        self.kill(id);
        let dir = self.node(id).data_dir.clone();
        let _ = std::fs::remove_dir_all(&dir);
        let saved = std::mem::replace(&mut self.extra, extra);
        self.spawn(id, true);
        self.extra = saved;
    }

    /// Starts a new, empty node (`--join`) beside the others and adds it as a learner: it
    /// replicates and applies the log but never votes or counts for a commit. Its id.
    pub async fn add_learner(&mut self) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let first = self.nodes[0].addr.clone();
        let ip: Ipv4Addr = first
            .split(':')
            .next()
            .and_then(|h| h.parse().ok())
            .expect("a node's address");
        let [x, a, b, _] = ip.octets();
        let ip = Ipv4Addr::new(x, a, b, id as u8);
        let dir = self.nodes[0].data_dir.parent().expect("data root").to_path_buf();
        self.nodes.push(NodeProc {
            id,
            addr: free_addr(ip),
            metrics_addr: free_addr(ip),
            data_dir: dir.join(format!("node{id}")),
            child: None,
            restarts: 0,
        });
        self.spawn(id, true);
        let addr = self.addr(id);
        let client = self.client();
        eventually_some(Duration::from_secs(30), "the learner is added", || async {
            client.add_learner(id, &addr).await.ok()
        })
        .await;
        id
    }

    /// Kills a node, deletes its data, and starts it empty with `--join`.
    pub fn wipe_and_join(&mut self, id: u64) {
        self.kill(id);
        let dir = self.node(id).data_dir.clone();
        let _ = std::fs::remove_dir_all(&dir);
        self.spawn(id, true);
    }

    /// Every node's address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// A client of every node.
    pub fn client(&self) -> Client {
        Client::connect(&self.endpoints(), &self.connect).expect("client")
    }

    /// A client of one node only.
    pub fn client_of(&self, id: u64) -> Client {
        Client::connect(&[self.node(id).addr.clone()], &self.connect).expect("client")
    }

    /// A client of every node with `options` (another CA, a token, a client certificate).
    pub fn client_with(&self, options: &ConnectOptions) -> Client {
        Client::connect(&self.endpoints(), options).expect("client")
    }

    /// The address of a node.
    pub fn addr(&self, id: u64) -> String {
        self.node(id).addr.clone()
    }

    /// Waits until some live node reports a leader that is alive; returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        self.wait_leader_except(timeout, &[]).await
    }

    /// Like [`Self::wait_leader`], ignoring the nodes in `skip` (e.g. paused ones) both as
    /// sources of status and as leaders.
    pub async fn wait_leader_except(&self, timeout: Duration, skip: &[u64]) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            for n in &self.nodes {
                if n.child.is_none() || skip.contains(&n.id) {
                    continue;
                }
                if let Ok(Ok(s)) =
                    tokio::time::timeout(Duration::from_secs(2), self.client_of(n.id).status()).await
                {
                    let alive = !skip.contains(&s.leader_id)
                        && self
                            .nodes
                            .iter()
                            .any(|m| m.id == s.leader_id && m.child.is_some());
                    let leader_says = s
                        .members
                        .iter()
                        .any(|m| m.id == s.leader_id && m.role == "leader");
                    if alive && leader_says {
                        return s.leader_id;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A live node's current term, as it reports it.
    pub async fn term_of(&self, id: u64) -> u64 {
        eventually_some(Duration::from_secs(10), "the node reports its term", || async {
            let s = self.client_of(id).status().await.ok()?;
            s.members.iter().find(|m| m.id == id).map(|m| m.term)
        })
        .await
    }

    /// A live node other than the leader.
    pub async fn follower(&self) -> u64 {
        let leader = self.wait_leader(Duration::from_secs(20)).await;
        self.nodes
            .iter()
            .find(|n| n.id != leader && n.child.is_some())
            .map(|n| n.id)
            .expect("a live follower")
    }

    /// Waits until every node is reachable and all report the same applied index and digest.
    pub async fn wait_converged(&self, timeout: Duration) -> pb::StatusResponse {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let leader = self.wait_leader(timeout).await;
            if let Ok(s) = self.client_of(leader).status().await {
                let all_up =
                    s.members.len() == self.nodes.len() && s.members.iter().all(|m| m.role != "unreachable");
                let same = s.members.iter().all(|m| {
                    m.applied_index == s.members[0].applied_index && m.digest == s.members[0].digest
                });
                if all_up && same {
                    return s;
                }
                last = Some(s);
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not converge within {timeout:?}: {last:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A feature named `name` with no requirements.
pub fn feature(name: &str) -> pb::Feature {
    pb::Feature {
        name: name.to_string(),
        ..Default::default()
    }
}

/// A `when-ready` activation (the readiness gate, then the switch delay).
pub fn when_ready() -> Option<pb::Activation> {
    Some(pb::Activation {
        mode: pb::activation::Mode::WhenReady as i32,
        ..Default::default()
    })
}

/// A boolean flag definition with the given state.
pub fn boolean_flag(enabled: bool) -> String {
    format!(
        r#"{{"state":"{}","variants":{{"on":true,"off":false}},"defaultVariant":"on"}}"#,
        if enabled { "ENABLED" } else { "DISABLED" }
    )
}

/// Waits until `condition` holds, checking every 50 ms; fails the test with `what` after
/// `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the future `check()` gives `Some`, trying every 100 ms; returns the value, or
/// fails the test with `what` after `timeout`.
pub async fn eventually_some<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The local wall clock, unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One node started in this process (not a child process), leading its own one-node cluster.
pub struct SingleNode {
    /// The running node.
    pub node: switchyard::server::RunningNode,
    /// A client of it.
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl SingleNode {
    /// The node's client address.
    pub fn addr(&self) -> String {
        self.node.addr.to_string()
    }

    /// Shuts the node down (its data goes with it).
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

/// Starts one node in this process, its settings adjusted by `tweak`, and waits until it leads.
pub async fn single_node(tweak: impl FnOnce(&mut switchyard::node::NodeConfig)) -> SingleNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = switchyard::node::NodeConfig::single(
        1,
        "127.0.0.1:0".parse().expect("address"),
        dir.path().join("n1"),
    );
    tweak(&mut config);
    let node = switchyard::server::start(config).await.expect("start the node");
    let client = Client::new(&[node.addr.to_string()]).expect("client");
    eventually_some(Duration::from_secs(10), "the node leads", || async {
        client.status().await.ok().filter(|s| s.leader_id == 1)
    })
    .await;
    SingleNode {
        node,
        client,
        _dir: dir,
    }
}

/// The `switchyard` binary the tests run: this build's, or the one `SWITCHYARD_TEST_BIN` names
/// (to run the tests against another build, e.g. the one before a fix).
pub fn binary() -> PathBuf {
    std::env::var_os("SWITCHYARD_TEST_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchyard")))
}

/// The value of a node's Prometheus metric `name` (without labels).
pub async fn metric(cluster: &TestCluster, id: u64, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = cluster.nodes[(id - 1) as usize].metrics_addr.clone();
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("metrics listener");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("scrape");
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .expect("scraped in time")
        .expect("scrape");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Reads `stream` until it ends with a status (within `within`), skipping its messages.
/// Panics if it ends without a status, or not in time (`what` says which stream).
pub async fn stream_end<T>(stream: &mut tonic::Streaming<T>, within: Duration, what: &str) -> tonic::Status {
    tokio::time::timeout(within, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within {within:?}"))
}

/// A plain HTTP/1.1 GET of `path` at `addr`, with a bearer `token` if given: status and body.
pub async fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("HTTP listener");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .expect("answered in time")
        .expect("answer");
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (code, body)
}

/// An HTTP answer: status, headers (names lowercase) and body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A plain HTTP/1.1 request to `addr` (closing the connection after it).
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("HTTP listener");
    // The node's address as the host, as a browser would send it, unless the caller names one.
    let host = if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        String::new()
    } else {
        format!("Host: {addr}\r\n")
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\n{host}Connection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes()).await.expect("request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .expect("answer");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    HttpAnswer {
        status,
        headers,
        body,
    }
}

/// The body of a chunked transfer, joined.
fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        raw = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// OpenFeature's Rust flagd provider (`resolver_type`: in-process over flagd's sync protocol,
/// or rpc over its evaluation protocol) connected to `addr` (`host:port`).
pub async fn flagd_provider(
    addr: &str,
    resolver_type: open_feature_flagd::ResolverType,
) -> open_feature_flagd::FlagdProvider {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let options = open_feature_flagd::FlagdOptions {
        host: host.into(),
        port: port.parse().expect("a port"),
        resolver_type,
        deadline_ms: 2_000,
        retry_backoff_ms: 100,
        retry_backoff_max_ms: 500,
        ..Default::default()
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        open_feature_flagd::FlagdProvider::new(options),
    )
    .await
    .expect("the provider connects in time")
    .expect("the provider connects")
}
