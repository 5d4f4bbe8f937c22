//! The image and the 3-node compose cluster in `docker/`, driven as an SRE would: `compose up`,
//! the CLI's client from the host through the published ports, the leader's container
//! stopped, the leader cut from the compose network and reconnected, with writers running
//! throughout: nothing acknowledged is lost and every replica ends with the same state.
//!
//! Also the agent example (`docker/agent-example.yml`): a Python app using OpenFeature's flagd
//! provider, unchanged, beside an agent sidecar, registered and served as its instance.
//!
//! Needs Docker with compose and the images `switchyard:dev` (`docker/build-image.sh`) and
//! `switchyard-example-app:dev` (`docker/example-app/build-image.sh`), so a plain `cargo test`
//! skips it; `.ci/run` builds the images and runs it with
//! `cargo test --features failpoints --test containers -- --ignored`. Everything it creates (a
//! compose project of its own, with its network and volumes) is removed at the end, also when
//! it fails.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::feature;
use support::workload::{check_acks_on, start_writers};
use switchyard::client::Client;

/// A compose project of this test's own, on free host ports.
struct Compose {
    project: String,
    /// The compose files, under `docker/`.
    files: Vec<&'static str>,
    /// `docker compose` or `docker-compose`, whichever this machine has.
    command: Vec<String>,
    grpc: [u16; 3],
    http: [u16; 3],
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run docker");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Compose {
    fn up() -> Compose {
        Compose::up_with("cluster", &["compose.yml"])
    }

    /// Brings up the project `name` of these files.
    fn up_with(name: &str, files: &[&'static str]) -> Compose {
        let v2 = Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        let command = if v2 {
            vec!["docker".to_string(), "compose".to_string()]
        } else {
            vec!["docker-compose".to_string()]
        };
        let c = Compose {
            project: format!("switchyard-test-{name}-{}", std::process::id()),
            files: files.to_vec(),
            command,
            grpc: [free_port(), free_port(), free_port()],
            http: [free_port(), free_port(), free_port()],
        };
        run(&mut c.compose(&["up", "-d", "--no-build"]));
        c
    }

    fn compose(&self, args: &[&str]) -> Command {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker");
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..]).args(["-p", &self.project]);
        for file in &self.files {
            cmd.arg("-f").arg(dir.join(file));
        }
        cmd.args(args);
        for i in 0..3 {
            cmd.env(format!("SWITCHYARD_PORT_{}", i + 1), self.grpc[i].to_string())
                .env(
                    format!("SWITCHYARD_HTTP_PORT_{}", i + 1),
                    self.http[i].to_string(),
                );
        }
        cmd
    }

    /// The container of node `id`.
    fn container(&self, id: u64) -> String {
        self.service_container(&format!("node{id}"))
    }

    /// The container of the compose service `name`.
    fn service_container(&self, name: &str) -> String {
        let out = run(&mut self.compose(&["ps", "-q", name]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The project's network.
    fn network(&self) -> String {
        format!("{}_switchyard", self.project)
    }

    fn endpoint(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.grpc[(id - 1) as usize])
    }

    fn endpoints(&self) -> Vec<String> {
        (1..=3).map(|id| self.endpoint(id)).collect()
    }

    /// Whether Docker reports node `id`'s container healthy (its healthcheck: `switchyard
    /// health`, i.e. `/readyz`).
    fn healthy(&self, id: u64) -> bool {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Health.Status}}", &self.container(id)])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout).trim() == "healthy"
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self
            .compose(&["down", "-v", "--remove-orphans", "--timeout", "5"])
            .output();
    }
}

/// The leader as node `via` sees it, if it knows one.
async fn leader_via(compose: &Compose, via: u64) -> Option<u64> {
    let client = Client::new(&[compose.endpoint(via)]).ok()?;
    let s = tokio::time::timeout(Duration::from_secs(2), client.status())
        .await
        .ok()?
        .ok()?;
    s.members
        .iter()
        .any(|m| m.id == s.leader_id && m.role == "leader")
        .then_some(s.leader_id)
}

/// Waits until some node other than `not` leads, as the nodes other than `not` see it; the
/// leader and how long that took.
async fn new_leader(compose: &Compose, not: u64) -> (u64, Duration) {
    let started = Instant::now();
    let leader = support::eventually_some(Duration::from_secs(20), "a new leader", || async {
        for via in (1..=3).filter(|id| *id != not) {
            if let Some(l) = leader_via(compose, via).await.filter(|l| *l != not) {
                return Some(l);
            }
        }
        None
    })
    .await;
    (leader, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Docker and the image from docker/build-image.sh; .ci/run runs it"]
async fn the_compose_cluster_survives_a_stopped_and_a_cut_off_leader() {
    let started = Instant::now();
    let compose = Compose::up();
    support::eventually(Duration::from_secs(60), "every container healthy", || {
        (1..=3).all(|id| compose.healthy(id))
    })
    .await;
    println!(
        "compose up to a ready cluster: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Written through one node, read from every node.
    let one = Client::new(&[compose.endpoint(1)]).expect("client");
    one.put_feature(feature("through-node-1"), None, "")
        .await
        .expect("write");
    for id in 1..=3 {
        let listed = Client::new(&[compose.endpoint(id)])
            .expect("client")
            .list_features(false)
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert!(
            listed.features.iter().any(|f| f.name == "through-node-1"),
            "node {id}"
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writers) = start_writers(2, compose.endpoints(), Duration::from_millis(20), stop.clone());
    support::eventually(Duration::from_secs(20), "writes acknowledged", || {
        acked.lock().len() >= 20
    })
    .await;

    // The leader's container stopped (SIGTERM: it hands over first), then started again.
    let leader =
        support::eventually_some(Duration::from_secs(10), "a leader", || leader_via(&compose, 1)).await;
    let container = compose.container(leader);
    run(Command::new("docker").args(["stop", &container]));
    let (next, took) = new_leader(&compose, leader).await;
    println!(
        "leader {leader} stopped: node {next} leads after {} ms",
        took.as_millis()
    );
    let before = acked.lock().len();
    support::eventually(Duration::from_secs(20), "writes go on", || {
        acked.lock().len() > before + 20
    })
    .await;
    run(Command::new("docker").args(["start", &container]));
    support::eventually(Duration::from_secs(60), "the restarted node is healthy", || {
        compose.healthy(leader)
    })
    .await;

    // The leader cut off from the compose network, then reconnected.
    let leader = support::eventually_some(Duration::from_secs(10), "a leader", || async {
        for via in 1..=3 {
            if let Some(l) = leader_via(&compose, via).await {
                return Some(l);
            }
        }
        None
    })
    .await;
    let container = compose.container(leader);
    run(Command::new("docker").args(["network", "disconnect", &compose.network(), &container]));
    let (next, took) = new_leader(&compose, leader).await;
    println!(
        "leader {leader} cut off: node {next} leads after {} ms",
        took.as_millis()
    );
    let before = acked.lock().len();
    support::eventually(Duration::from_secs(20), "writes go on", || {
        acked.lock().len() > before + 20
    })
    .await;
    run(Command::new("docker").args([
        "network",
        "connect",
        "--alias",
        &format!("node{leader}"),
        &compose.network(),
        &container,
    ]));
    support::eventually(Duration::from_secs(60), "the reconnected node is healthy", || {
        compose.healthy(leader)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    // Every replica holds every acknowledged write, and the same state.
    let status = support::eventually_some(Duration::from_secs(30), "the replicas agree", || async {
        let s = Client::new(&compose.endpoints()).ok()?.status().await.ok()?;
        let first = s.members.first()?.clone();
        let agree = s.members.len() == 3
            && s.members.iter().all(|m| {
                m.role != "unreachable" && m.applied_index == first.applied_index && m.digest == first.digest
            });
        agree.then_some(s)
    })
    .await;
    let acks = acked.lock().clone();
    let nodes: Vec<(String, Client)> = (1..=3)
        .map(|id| {
            (
                format!("node {id}"),
                Client::new(&[compose.endpoint(id)]).expect("client"),
            )
        })
        .collect();
    check_acks_on(&nodes, &acks, &[]).await;
    println!(
        "{} writes acknowledged, all on every node; replicas agree at revision {}",
        acks.len(),
        status.members[0].revision
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Docker and the images from docker/build-image.sh and docker/example-app/build-image.sh; .ci/run runs it"]
async fn a_python_app_beside_an_agent_sidecar_joins_the_gate_and_flips() {
    let compose = Compose::up_with("agent", &["compose.yml", "agent-example.yml"]);
    support::eventually(Duration::from_secs(60), "every node healthy", || {
        (1..=3).all(|id| compose.healthy(id))
    })
    .await;
    let client = Client::new(&compose.endpoints()).expect("client");
    let gated = switchyard::pb::v1::Feature {
        name: "new-checkout".into(),
        requirements: vec![switchyard::pb::v1::Requirement {
            service: "cart".into(),
            version_req: ">=2.0.0".into(),
        }],
        ..Default::default()
    };
    client.put_feature(gated, None, "test").await.expect("feature");
    let dark = r#"{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
    client
        .set_toggle("new-checkout", dark, None, "test")
        .await
        .expect("toggle");

    // The sidecar registers the app's instance (its health check passes) as the compose file
    // describes it.
    let instance = support::eventually_some(Duration::from_secs(60), "cart-1 registered", || async {
        let r = client.list_instances("cart", Default::default()).await.ok()?;
        r.instances.into_iter().find(|i| i.id == "cart-1")
    })
    .await;
    assert_eq!(instance.version, "2.1.0");
    assert_eq!(instance.labels.get("zone").map(String::as_str), Some("eu"));

    // Every cart instance has the code: a when-ready activation fires, and the app (its flagd
    // provider pointed at localhost) sees the feature on.
    client
        .set_toggle_state_with(
            "new-checkout",
            true,
            None,
            Some(switchyard::pb::v1::Activation {
                mode: switchyard::pb::v1::activation::Mode::WhenReady as i32,
                ..Default::default()
            }),
            "test",
        )
        .await
        .expect("activate");
    support::eventually(Duration::from_secs(30), "the app sees the feature on", || {
        let logs = run(&mut compose.compose(&["logs", "--no-color", "cart-1"]));
        String::from_utf8_lossy(&logs.stdout).contains(r#""value": true"#)
    })
    .await;
    let rollout = support::eventually_some(Duration::from_secs(20), "the sidecar reports it", || async {
        let r = client.rollout_status("new-checkout").await.ok()?;
        (r.applied == 1).then_some(r)
    })
    .await;
    assert_eq!(rollout.instances[0].instance_id, "cart-1");

    // The sidecar stopped (SIGTERM, as an orchestrator stops it): out of the registry at once.
    let agent = compose.service_container("cart-1-agent");
    let stopped = Instant::now();
    run(Command::new("docker").args(["stop", &agent]));
    support::eventually_some(Duration::from_secs(10), "cart-1 leaves the registry", || async {
        let r = client.list_instances("cart", Default::default()).await.ok()?;
        (!r.instances.iter().any(|i| i.id == "cart-1")).then_some(())
    })
    .await;
    println!(
        "the sidecar's instance left the registry {} ms after docker stop began",
        stopped.elapsed().as_millis()
    );
}
