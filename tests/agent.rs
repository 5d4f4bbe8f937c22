//! `switchyard agent` as a process beside an application, against a 3-node cluster, talked to
//! as an application's OpenFeature providers would: OFREP over HTTP, and OpenFeature's Rust
//! flagd providers (in-process over flagd's sync protocol, rpc over its evaluation protocol)
//! pointed at the agent's loopback port. The instance is in the registry only while the
//! application's health check passes (or its supervised process runs), leaves it within its
//! TTL when the agent is killed, and the agent serves its last flags while the cluster is away.

mod support;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use open_feature::provider::FeatureProvider;
use open_feature::EvaluationContext;
use open_feature_flagd::ResolverType;
use serde_json::{json, Value};
use support::forwarder::Forwarder;
use support::{binary, eventually_some, http_get, http_request, TestCluster};
use switchyard::client::Client;
use switchyard::pb::v1 as pb;

/// On for instances in zone `eu`, off elsewhere: only an evaluation that knows the instance's
/// labels says on.
const BY_ZONE: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
  "targeting":{"if":[{"==":[{"var":"instance.labels.zone"},"eu"]},"on",null]}}"#;
const OFF: &str = r#"{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}"#;

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One agent process.
struct AgentProc {
    child: Child,
    flagd: String,
    http: String,
}

impl AgentProc {
    fn start(endpoints: &str, args: &[&str], command: &[&str]) -> AgentProc {
        // On an address of the agent's own: a port picked on 127.0.0.1 could be taken by
        // another process before the agent binds it.
        let ip = support::own_loopback();
        let (flagd, http) = (support::free_addr(ip), support::free_addr(ip));
        let mut cmd = Command::new(binary());
        cmd.args(["--endpoints", endpoints, "agent"]).args(args).args([
            "--flagd-listen",
            &flagd,
            "--http-listen",
            &http,
        ]);
        if !command.is_empty() {
            cmd.arg("--").args(command);
        }
        let log = std::env::var("SWITCHYARD_TEST_NODE_LOG").is_ok();
        let child = cmd
            .env(
                "RUST_LOG",
                std::env::var("SWITCHYARD_TEST_NODE_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(if log { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("start the agent");
        AgentProc { child, flagd, http }
    }

    async fn ready(&self) {
        eventually_some(Duration::from_secs(20), "the agent serves", || async {
            tokio::net::TcpStream::connect(&self.http).await.ok()?;
            let (code, _) =
                tokio::time::timeout(Duration::from_secs(2), http_get(&self.http, "/readyz", None))
                    .await
                    .ok()?;
            (code == 200).then_some(())
        })
        .await;
    }

    async fn status(&self) -> Value {
        let (code, body) = http_get(&self.http, "/status", None).await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// The value OFREP gives for `flag` (a caller that names no instance).
    async fn ofrep(&self, flag: &str) -> Value {
        let a = http_request(
            &self.http,
            "POST",
            &format!("/ofrep/v1/evaluate/flags/{flag}"),
            &[("content-type", "application/json")],
            r#"{"context":{"targetingKey":"customer-1"}}"#,
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.json()["value"].clone()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An application's health endpoint that answers 200 or 503 as told.
struct App {
    addr: String,
    healthy: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl App {
    async fn start(healthy: bool) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let flag = Arc::new(AtomicBool::new(healthy));
        let h = flag.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let healthy = h.load(Ordering::Acquire);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let status = if healthy {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let _ = s
                        .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                        .await;
                });
            }
        });
        App {
            addr,
            healthy: flag,
            _task: task,
        }
    }

    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }
}

/// The instances blocking a feature that needs a version no instance has (`cart>=3`).
async fn blockers_of_v3(client: &Client) -> Vec<String> {
    let r = client.readiness("needs-cart-v3", false).await.unwrap();
    r.blockers.into_iter().map(|b| b.instance).collect()
}

async fn registered(client: &Client, id: &str) -> bool {
    client
        .list_instances("cart", Default::default())
        .await
        .map(|r| r.instances.iter().any(|i| i.id == id))
        .unwrap_or(false)
}

/// Waits until the instance is (or is not) in the registry; how long that took.
async fn until_registered(client: &Client, id: &str, wanted: bool, within: Duration) -> Duration {
    let start = Instant::now();
    let what = format!("instance {id} registered: {wanted}");
    eventually_some(within, &what, || async {
        (registered(client, id).await == wanted).then_some(())
    })
    .await;
    start.elapsed()
}

/// A feature requiring `cart` at `version_req`.
fn needs_cart(name: &str, version_req: &str) -> pb::Feature {
    pb::Feature {
        name: name.into(),
        requirements: vec![pb::Requirement {
            service: "cart".into(),
            version_req: version_req.into(),
        }],
        ..Default::default()
    }
}

async fn setup(cluster: &TestCluster) -> Client {
    let client = cluster.client();
    for (name, req) in [("new-checkout", ">=2.0.0"), ("needs-cart-v3", ">=3.0.0")] {
        client
            .put_feature(needs_cart(name, req), None, "test")
            .await
            .unwrap();
    }
    let set = client
        .set_toggle("new-checkout", BY_ZONE, None, "test")
        .await
        .unwrap();
    // The first definition takes effect after the switch delay: wait for it.
    let at = set.toggle.map_or(0, |t| t.effective_at_ms);
    tokio::time::sleep(Duration::from_millis((at - support::now_ms()).max(0) as u64 + 50)).await;
    client
}

async fn bool_of(p: &dyn FeatureProvider, flag: &str) -> Option<bool> {
    let ctx = EvaluationContext::default().with_targeting_key("customer-1");
    p.resolve_bool_value(flag, &ctx).await.ok().map(|d| d.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_serves_its_instance_and_keeps_it_registered_only_while_healthy() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = setup(&cluster).await;
    let app = App::start(false).await;
    let agent = AgentProc::start(
        &cluster.endpoints().join(","),
        &[
            "--service",
            "cart",
            "--version",
            "2.1.0",
            "--id",
            "cart-a",
            "--label",
            "zone=eu",
            "--ttl",
            "3s",
            "--health-http",
            &format!("http://{}/healthz", app.addr),
            "--health-interval",
            "200ms",
            "--unhealthy-after",
            "2",
        ],
        &[],
    );
    agent.ready().await;

    // Its flags are served before the application is healthy (it reads them as it starts),
    // evaluated as this instance: in zone eu, on. A node (which does not know the caller) says
    // off.
    assert_eq!(agent.ofrep("new-checkout").await, json!(true));
    let node_http = cluster.nodes[0].metrics_addr.clone();
    let node_answer = http_request(
        &node_http,
        "POST",
        "/ofrep/v1/evaluate/flags/new-checkout",
        &[],
        r#"{"context":{"targetingKey":"customer-1"}}"#,
    )
    .await;
    assert_eq!(node_answer.json()["value"], json!(false), "{}", node_answer.body);
    let in_process = support::flagd_provider(&agent.flagd, ResolverType::InProcess).await;
    let rpc = support::flagd_provider(&agent.flagd, ResolverType::Rpc).await;
    assert_eq!(bool_of(&in_process, "new-checkout").await, Some(true));
    assert_eq!(bool_of(&rpc, "new-checkout").await, Some(true));

    // Unhealthy: not in the registry, so the gate does not count it.
    let status = agent.status().await;
    assert_eq!(status["registered"], json!(false), "{status}");
    assert!(!registered(&client, "cart-a").await);
    // Healthy: in.
    app.set_healthy(true);
    until_registered(&client, "cart-a", true, Duration::from_secs(10)).await;
    let instance = client
        .list_instances("cart", Default::default())
        .await
        .unwrap()
        .instances
        .into_iter()
        .find(|i| i.id == "cart-a")
        .unwrap();
    assert_eq!(instance.version, "2.1.0");
    assert_eq!(instance.labels.get("zone").map(String::as_str), Some("eu"));
    assert_eq!(
        blockers_of_v3(&client).await,
        ["cart-a"],
        "a live old instance blocks"
    );

    // A change reaches every provider, flipping at its effective_at: the agent reports it
    // applied on time, as an SDK does.
    let change = client
        .set_toggle("new-checkout", OFF, None, "test")
        .await
        .unwrap();
    eventually_some(
        Duration::from_secs(10),
        "every provider sees the change",
        || async {
            // Disabled: OFREP answers the code's default (no value).
            let off = agent.ofrep("new-checkout").await != json!(true)
                && bool_of(&in_process, "new-checkout").await != Some(true)
                && bool_of(&rpc, "new-checkout").await != Some(true);
            off.then_some(())
        },
    )
    .await;
    let report = eventually_some(
        Duration::from_secs(10),
        "the agent reports the change",
        || async {
            let r = client.rollout_status("new-checkout").await.ok()?;
            let i = r.instances.iter().find(|i| i.instance_id == "cart-a")?.clone();
            (r.revision == change.revision && i.state == pb::instance_rollout::State::Applied as i32)
                .then_some(i)
        },
    )
    .await;
    assert_eq!(report.late_ms, 0, "flipped at effective_at: {report:?}");

    // The application stops answering: out of the registry well within its TTL of the failure.
    app.set_healthy(false);
    let took = until_registered(&client, "cart-a", false, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(3), "left the registry after {took:?}");
    assert!(
        !blockers_of_v3(&client).await.contains(&"cart-a".to_string()),
        "a hung instance blocks nothing"
    );
    let status = agent.status().await;
    assert!(
        status["app"]
            .as_str()
            .unwrap_or_default()
            .starts_with("unhealthy"),
        "{status}"
    );
    // Back when it answers again.
    app.set_healthy(true);
    until_registered(&client, "cart-a", true, Duration::from_secs(10)).await;

    // The agent is killed: the instance leaves when its TTL (3 s) runs out.
    drop(agent);
    let took = until_registered(&client, "cart-a", false, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_secs(5),
        "left the registry {took:?} after the agent died"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_supervised_application_leaves_the_registry_the_moment_it_exits() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = setup(&cluster).await;
    let mut agent = AgentProc::start(
        &cluster.endpoints().join(","),
        &[
            "--service",
            "cart",
            "--version",
            "2.0.0",
            "--id",
            "cart-s",
            "--ttl",
            "30s",
        ],
        &["sh", "-c", "sleep 4; exit 7"],
    );
    until_registered(&client, "cart-s", true, Duration::from_secs(15)).await;
    // The application exits: out at once (its TTL is 30 s), and the agent exits with its code.
    let start = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let s = agent.child.wait();
        (s, agent)
    })
    .await
    .unwrap();
    let exited = start.elapsed();
    let code = status.0.expect("agent status").code();
    assert_eq!(code, Some(7), "the agent exits with the application's code");
    assert!(
        !registered(&client, "cart-s").await,
        "out of the registry when the agent exits"
    );
    assert!(exited < Duration::from_secs(15));

    // An agent killed with -9 does not leave its application running unregistered (an old
    // version the gate no longer sees): the application gets SIGTERM.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("app.pid");
    let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let agent = AgentProc::start(
        &cluster.endpoints().join(","),
        &[
            "--service",
            "cart",
            "--version",
            "2.0.0",
            "--id",
            "cart-k",
            "--ttl",
            "3s",
        ],
        &["sh", "-c", &script],
    );
    until_registered(&client, "cart-k", true, Duration::from_secs(15)).await;
    let app_pid: String = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let alive = |pid: &str| {
        Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(alive(&app_pid));
    drop(agent);
    eventually_some(
        Duration::from_secs(5),
        "the application ends with its agent",
        || async { (!alive(&app_pid)).then_some(()) },
    )
    .await;
    until_registered(&client, "cart-k", false, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_cut_off_from_the_cluster_serves_what_it_holds_then_catches_up() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = setup(&cluster).await;
    let balancer = Forwarder::start(&cluster.addr(1)).await;
    let agent = AgentProc::start(
        &balancer.addr,
        &["--service", "cart", "--version", "2.0.0", "--label", "zone=eu"],
        &[],
    );
    agent.ready().await;
    assert_eq!(agent.ofrep("new-checkout").await, json!(true));
    let in_process = support::flagd_provider(&agent.flagd, ResolverType::InProcess).await;

    // The cluster goes away (nothing listens where the balancer now points).
    balancer.switch_to(&format!("127.0.0.1:{}", free_port()));
    let status = eventually_some(
        Duration::from_secs(15),
        "the agent says it is cut off",
        || async {
            let s = agent.status().await;
            (s["following"] == json!(false)).then_some(s)
        },
    )
    .await;
    assert!(
        status["cluster"].as_str().unwrap_or_default().contains("cut off"),
        "{status}"
    );
    let held = status["revision"].as_u64().unwrap();
    // Changes made meanwhile do not arrive, and the flags held are served all along.
    let first = client
        .set_toggle("new-checkout", OFF, None, "test")
        .await
        .unwrap();
    client
        .set_toggle("new-checkout", BY_ZONE, None, "test")
        .await
        .unwrap();
    let third = client
        .set_toggle("new-checkout", OFF, None, "test")
        .await
        .unwrap();
    assert!(first.revision > held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(agent.ofrep("new-checkout").await, json!(true));
    assert_eq!(bool_of(&in_process, "new-checkout").await, Some(true));
    let (code, ready) = http_get(&agent.http, "/readyz", None).await;
    assert_eq!(code, 200, "it still serves: {ready}");
    assert!(ready.contains("serving the flags held"), "{ready}");

    // The cluster is back: the agent resumes from where it was and holds the latest.
    balancer.switch_to(&cluster.addr(2));
    let status = eventually_some(Duration::from_secs(15), "the agent catches up", || async {
        let s = agent.status().await;
        (s["following"] == json!(true) && s["revision"].as_u64() >= Some(third.revision)).then_some(s)
    })
    .await;
    assert!(status["revision"].as_u64() >= Some(third.revision), "{status}");
    eventually_some(
        Duration::from_secs(10),
        "the latest reaches the providers",
        || async {
            (agent.ofrep("new-checkout").await != json!(true)
                && bool_of(&in_process, "new-checkout").await != Some(true))
            .then_some(())
        },
    )
    .await;
}

#[test]
fn an_agent_refuses_a_version_that_is_not_semver() {
    let out = Command::new(binary())
        .args([
            "--endpoints",
            "127.0.0.1:1",
            "agent",
            "--service",
            "cart",
            "--version",
            "two",
        ])
        .output()
        .expect("run the agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not semver"), "{err}");
    // A version file holding garbage is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("VERSION");
    std::fs::write(&file, "release-7\n").unwrap();
    let out = Command::new(binary())
        .args([
            "--endpoints",
            "127.0.0.1:1",
            "agent",
            "--service",
            "cart",
            "--version-file",
        ])
        .arg(&file)
        .output()
        .expect("run the agent");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not semver"));
}
