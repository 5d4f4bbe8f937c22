//! The operator console in a real browser (Debian's chromium, driven by Selenium through
//! chromium-driver: tests/python/browser.py) against a 3-node cluster: every page renders the
//! cluster's data, a change appears without a reload, the kill switch flips a feature that an
//! SDK instance then sees off, and a rolling upgrade empties the readiness list. Screenshots of
//! each page go to `target/console-screenshots/`.
//!
//! Needs chromium, chromium-driver and the virtual environment `.ci/run` makes (Selenium):
//!
//! ```sh
//! SWITCHYARD_PYTHON=target/ofvenv/bin/python cargo test --features failpoints --test console_browser -- --ignored
//! ```

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{boolean_flag, eventually, when_ready, TestCluster};
use switchyard::eval::Context;
use switchyard::pb::v1 as pb;
use switchyard::sdk::{InstanceConfig, Sdk, SdkConfig};

/// The browser process.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start(python: &str) -> Browser {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/browser.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the browser driver");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut b = Browser { child, stdin, stdout };
        let hello = b.answer();
        assert_eq!(hello, json!("ready"), "the browser did not start");
        b
    }

    fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("an answer from the browser");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        if let Some(e) = v.get("error") {
            panic!("browser: {e}");
        }
        v["ok"].clone()
    }

    fn send(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").expect("to the browser");
        self.stdin.flush().expect("to the browser");
        self.answer()
    }

    fn open(&mut self, url: &str) {
        self.send(json!({"cmd": "open", "url": url}));
    }

    /// Waits for an element matching `css` whose text contains `text`; returns its text.
    fn wait(&mut self, css: &str, text: &str) -> String {
        let v = self.send(json!({"cmd": "wait", "css": css, "text": text, "timeout": 15.0}));
        v.as_str().unwrap_or_default().to_string()
    }

    fn click(&mut self, css: &str) {
        self.send(json!({"cmd": "click", "css": css}));
    }

    fn type_text(&mut self, css: &str, text: &str) {
        self.send(json!({"cmd": "type", "css": css, "text": text}));
    }

    fn eval(&mut self, js: &str) -> Value {
        self.send(json!({"cmd": "eval", "js": js}))
    }

    fn screenshot(&mut self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let path = dir.join(format!("{name}.png"));
        self.send(json!({"cmd": "screenshot", "path": path}));
    }

    /// Script errors the page caught (it records them in `window.consoleErrors`).
    fn assert_no_script_errors(&mut self) {
        let errors = self.eval("return window.consoleErrors;");
        assert_eq!(errors, json!([]), "the page's script failed");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn needs(feature: &str, requirements: &[(&str, &str)]) -> pb::Feature {
    pb::Feature {
        name: feature.into(),
        owner: "web".into(),
        description: format!("the {feature} feature"),
        requirements: requirements
            .iter()
            .map(|(s, v)| pb::Requirement {
                service: (*s).into(),
                version_req: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn instance(id: &str, service: &str, version: &str) -> pb::Instance {
    pb::Instance {
        id: id.into(),
        service: service.into(),
        version: version.into(),
        labels: [("zone".to_string(), "eu-1".to_string())].into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs chromium, chromium-driver and Selenium: SWITCHYARD_PYTHON=<venv python> (.ci/run makes one)"]
async fn the_console_in_a_real_browser() {
    let python = std::env::var("SWITCHYARD_PYTHON").expect("SWITCHYARD_PYTHON names the venv's python");
    let cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client().with_actor("release-bot");
    client
        .put_feature(
            needs("checkout", &[("cart", ">=2.3"), ("payment", ">=1.8")]),
            None,
            "",
        )
        .await
        .unwrap();
    client
        .set_toggle("checkout", &boolean_flag(false), None, "installed dark")
        .await
        .unwrap();
    client
        .put_feature(needs("search", &[("search", ">=1.0")]), None, "")
        .await
        .unwrap();
    client
        .set_toggle("search", &boolean_flag(true), None, "")
        .await
        .unwrap();
    for i in 0..60 {
        client
            .put_feature(needs(&format!("zz-{i:02}"), &[]), None, "")
            .await
            .unwrap();
    }
    let lease = client
        .grant_lease(Duration::from_secs(60))
        .await
        .unwrap()
        .lease_id;
    for id in ["cart-1", "cart-2"] {
        client
            .register(instance(id, "cart", "2.2.0"), lease)
            .await
            .unwrap();
    }
    // An instance of payment, with the SDK: it follows checkout and reports what it applied.
    let sdk = Sdk::start(
        &cluster.endpoints(),
        SdkConfig {
            features: vec!["checkout".into(), "search".into()],
            instance: Some(InstanceConfig {
                id: "payment-1".into(),
                service: "payment".into(),
                version: "1.9.0".into(),
                labels: Default::default(),
                ttl: Duration::from_secs(10),
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    client
        .set_toggle_state_with("checkout", true, None, when_ready(), "when the fleet has it")
        .await
        .unwrap();

    let follower = cluster.follower().await;
    let base = format!(
        "http://{}/ui/",
        cluster.nodes[(follower - 1) as usize].metrics_addr
    );
    let mut browser = Browser::start(&python);

    // Features: the catalog with its states and the pending activation, paged.
    browser.open(&format!("{base}#/features"));
    browser.wait("#features tr[data-feature=checkout] td.state", "off");
    browser.wait("#features tr[data-feature=checkout] td.pending", "when ready");
    browser.wait("#features tr[data-feature=search] td.state", "on");
    assert_eq!(
        browser.send(json!({"cmd": "count", "css": "#features tbody tr"})),
        json!(50),
        "one page of 50 of the 62 features"
    );
    browser.wait(".pager", "1–50 of 62");
    browser.wait("#health", "healthy");
    browser.screenshot("features");

    // A change appears without a reload.
    browser.eval("window.notReloaded = true; return true;");
    client.set_toggle_state("search", false, None, "").await.unwrap();
    browser.wait("#features tr[data-feature=search] td.state", "off");
    assert_eq!(browser.eval("return window.notReloaded === true;"), json!(true));

    // Cluster: three members, one leader, replicas agreeing.
    browser.click("#nav a[data-view=cluster]");
    browser.wait("#members", "leader");
    assert_eq!(
        browser.send(json!({"cmd": "count", "css": "#members tbody tr"})),
        json!(3)
    );
    browser.wait("#cluster-problems", "replicas agree");
    browser.screenshot("cluster");

    // Readiness: the two old cart instances block checkout...
    browser.open(&format!("{base}#/readiness/checkout"));
    browser.wait("#blockers", "cart-1");
    browser.wait("#blockers", "cart-2");
    browser.wait("#blocker-count", "2");
    browser.screenshot("readiness");
    // ...and a rolling upgrade empties the list, live; the pending activation then fires.
    for id in ["cart-1", "cart-2"] {
        client.deregister(id).await.unwrap();
        client
            .register(instance(id, "cart", "2.3.0"), lease)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    browser.wait("#no-blockers", "Nothing blocks it");
    browser.wait("#ready", "yes");
    assert!(
        browser.send(json!({"cmd": "count", "css": "#blocker-chart path"})) == json!(1),
        "the chart of blockers over time"
    );
    browser.screenshot("readiness-after-upgrade");
    eventually(Duration::from_secs(10), "the SDK sees checkout on", || {
        sdk.is_enabled("checkout", &Context::default())
    })
    .await;

    // Rollout: the SDK instance reported applying checkout's change.
    browser.open(&format!("{base}#/rollout/checkout"));
    browser.wait("#count-applied", "1");
    browser.wait("#lag-histogram", "");
    browser.screenshot("rollout");

    // The kill switch, with its confirmation step: the SDK instance sees checkout off.
    browser.open(&format!("{base}#/features"));
    browser.wait("#features tr[data-feature=checkout] td.state", "on");
    browser.click("#features tr[data-feature=checkout] button[data-action=off]");
    browser.wait("#confirm-title", "Turn off checkout?");
    assert!(
        sdk.is_enabled("checkout", &Context::default()),
        "nothing happens before confirming"
    );
    browser.type_text("#confirm-reason", "error rate up");
    browser.click("#confirm-ok");
    browser.wait("#features tr[data-feature=checkout] td.state", "off");
    eventually(Duration::from_secs(10), "the SDK sees checkout off", || {
        !sdk.is_enabled("checkout", &Context::default())
    })
    .await;

    // History: the kill switch, by the console, with its reason and a diff.
    browser.open(&format!("{base}#/history/checkout"));
    let row = browser.wait("#history tbody tr", "error rate up");
    assert!(row.contains("console"), "{row}");
    browser.wait("#history .diff .del", "ENABLED");
    browser.screenshot("history");

    // Instances: by service and version, paged.
    browser.open(&format!("{base}#/instances"));
    browser.wait("#instances", "payment-1");
    browser.wait("#versions", "2.3.0");
    browser.screenshot("instances");

    browser.assert_no_script_errors();
    drop(browser);
    drop(sdk);
}
