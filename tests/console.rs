//! The operator console's JSON and Server-Sent Events API (`/api/v1/` on the HTTP listener),
//! as a browser page calls it: what it answers (the same as the CLI), bad input (a clear error,
//! nothing changed), authentication and roles, the shared event feed, a node that cannot vouch
//! for its data, and `--no-console`. The page itself is driven in a real browser by
//! `tests/console_browser.rs`.

mod support;

use std::time::Duration;

use support::{
    boolean_flag, eventually_some, feature, http_request, single_node, when_ready, HttpAnswer, SingleNode,
    TestCluster,
};
use switchyard::client::{Client, ConnectOptions};
use switchyard::pb::v1 as pb;

fn http(node: &SingleNode) -> String {
    node.node.metrics_addr.expect("HTTP listener").to_string()
}

async fn get(addr: &str, path: &str, token: Option<&str>) -> HttpAnswer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_request(addr, "GET", path, &headers, "").await
}

async fn post(addr: &str, path: &str, token: Option<&str>, body: &str) -> HttpAnswer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    http_request(addr, "POST", path, &headers, body).await
}

/// The node's revision and digest: a refused request must leave both alone.
async fn fingerprint(client: &Client) -> (u64, String) {
    let s = client.status().await.expect("status");
    (s.members[0].revision, s.members[0].digest.clone())
}

fn instance(id: &str, service: &str, version: &str) -> pb::Instance {
    pb::Instance {
        id: id.into(),
        service: service.into(),
        version: version.into(),
        labels: [(
            "zone".to_string(),
            if id.ends_with('0') { "eu-1" } else { "us-1" }.to_string(),
        )]
        .into(),
        ..Default::default()
    }
}

async fn console_node() -> SingleNode {
    single_node(|c| c.metrics_listen = Some("127.0.0.1:0".parse().expect("address"))).await
}

/// A catalog with a feature waiting for two instances of `cart` to be upgraded.
async fn checkout_waiting(client: &Client) -> u64 {
    let mut f = feature("checkout");
    f.owner = "web".into();
    f.requirements = vec![pb::Requirement {
        service: "cart".into(),
        version_req: ">=2.3".into(),
    }];
    client.put_feature(f, None, "").await.expect("feature");
    client
        .set_toggle("checkout", &boolean_flag(false), None, "")
        .await
        .expect("toggle");
    let lease = client
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("lease")
        .lease_id;
    for i in 0..250 {
        let version = if i < 2 { "2.2.0" } else { "2.3.1" };
        client
            .register(instance(&format!("cart-{i}"), "cart", version), lease)
            .await
            .expect("register");
    }
    client
        .set_toggle_state_with("checkout", true, None, when_ready(), "")
        .await
        .expect("activate when ready");
    lease
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_what_the_cli_shows() {
    let node = console_node().await;
    let at = http(&node);
    checkout_waiting(&node.client).await;

    let r = get(&at, "/api/v1/features", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["features"][0]["name"], "checkout");
    assert_eq!(v["features"][0]["requirements"][0]["version_req"], ">=2.3");
    assert_eq!(v["pending"][0]["feature"], "checkout");
    assert!(v["toggles"][0]["definition_json"]
        .as_str()
        .unwrap()
        .contains("DISABLED"));

    // Only the named features (what a page refetches when a change frame names them).
    node.client
        .put_feature(feature("search"), None, "")
        .await
        .unwrap();
    let v = get(&at, "/api/v1/features?names=search,gone", None).await.json();
    assert_eq!(v["features"].as_array().unwrap().len(), 1);
    assert_eq!(v["features"][0]["name"], "search");
    assert!(v["pending"].as_array().unwrap().is_empty());

    let v = get(&at, "/api/v1/features/checkout/readiness", None).await.json();
    assert_eq!(v["ready"], false);
    let blockers: Vec<&str> = v["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["instance"].as_str().unwrap())
        .collect();
    assert_eq!(blockers, ["cart-0", "cart-1"]);
    assert_eq!(
        v["blocker_counts"].as_array().unwrap().last().unwrap()["blockers"],
        2
    );
    let cli = node.client.readiness("checkout", false).await.unwrap();
    assert_eq!(cli.blockers.len(), 2);

    let v = get(&at, "/api/v1/features/checkout/history", None).await.json();
    let cli = node.client.history("checkout").await.unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), cli.entries.len());

    // Paging: 250 instances, a page of 100 from 200, and counts by version over all.
    let v = get(&at, "/api/v1/instances?service=cart&offset=200&limit=100", None)
        .await
        .json();
    assert_eq!(v["total"], 250);
    assert_eq!(v["instances"].as_array().unwrap().len(), 50);
    assert!(
        v["instances"][0]["lease_id"].is_string(),
        "lease ids exceed a JavaScript number"
    );
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["count"], 2);
    let v = get(&at, "/api/v1/instances?labels=zone%3Deu-1", None)
        .await
        .json();
    assert_eq!(v["total"], 25);
    let v = get(&at, "/api/v1/instances?q=cart-24", None).await.json();
    assert_eq!(v["total"], 11, "cart-24 and cart-240..249");

    let v = get(&at, "/api/v1/features/checkout/rollout", None).await.json();
    assert_eq!(v["feature"], "checkout");
    assert_eq!(v["instances"].as_array().unwrap().len(), 250);

    let v = get(&at, "/api/v1/cluster", None).await.json();
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    assert_eq!(v["leader_id"], 1);
    assert!(v["serving"].is_null());

    let v = get(&at, "/api/v1/whoami", None).await.json();
    assert_eq!(v["authentication"], false);

    // The page and its files, with headers that keep other sites from framing it.
    let r = get(&at, "/ui/", None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("/ui/console.js"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert_eq!(get(&at, "/ui/console.js", None).await.status, 200);
    assert_eq!(get(&at, "/ui/console.css", None).await.status, 200);
    assert_eq!(get(&at, "/", None).await.header("location"), Some("/ui/"));

    // Actions: cancel the pending activation, the kill switch (recorded as the console's), on
    // when ready, rollback.
    let r = post(&at, "/api/v1/features/checkout/cancel", None, "{}").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(node.client.list_pending(false).await.unwrap().pending.is_empty());
    let r = post(
        &at,
        "/api/v1/features/checkout/off",
        None,
        r#"{"reason":"errors up"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = node.client.history("checkout").await.unwrap();
    let last = h.entries.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.reason.as_str()),
        ("console", "errors up")
    );
    let r = post(
        &at,
        "/api/v1/features/checkout/on",
        None,
        r#"{"mode":"when-ready"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["pending"]["feature"], "checkout");
    let r = post(&at, "/api/v1/features/checkout/rollback", None, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    node.shutdown().await;
}

/// A bad request: method, path, headers, body, and the status and code it must get.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let node = console_node().await;
    let at = http(&node);
    checkout_waiting(&node.client).await;
    let big = format!(r#"{{"reason":"{}"}}"#, "x".repeat(20_000));
    let names: Vec<String> = (0..201).map(|i| format!("f{i}")).collect();
    let too_many_names = format!("/api/v1/features?names={}", names.join(","));
    let json = ("Content-Type", "application/json");
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/api/v1/features/nope/history",
            vec![],
            "",
            404,
            "NOT_FOUND",
        ),
        (
            "GET",
            "/api/v1/features/nope/readiness",
            vec![],
            "",
            404,
            "NOT_FOUND",
        ),
        (
            "GET",
            "/api/v1/features/nope/rollout",
            vec![],
            "",
            404,
            "NOT_FOUND",
        ),
        (
            "POST",
            "/api/v1/features/nope/off",
            vec![json],
            "{}",
            404,
            "NOT_FOUND",
        ),
        (
            "POST",
            "/api/v1/features/checkout/rollback",
            vec![json],
            r#"{"to_revision":999999}"#,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/checkout/rollback",
            vec![json],
            r#"{"to_revision":-1}"#,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/checkout/off",
            vec![],
            "{}",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/checkout/off",
            vec![("Content-Type", "text/plain")],
            "{}",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/checkout/off",
            vec![json],
            "{not json",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/checkout/off",
            vec![json],
            r#"{"reason":"x","force":true}"#,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/checkout/off",
            vec![json],
            r#"{"mode":"now"}"#,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/checkout/on",
            vec![json],
            r#"{"mode":"whenever"}"#,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/checkout/off",
            vec![json],
            &big,
            429,
            "RESOURCE_EXHAUSTED",
        ),
        (
            "POST",
            "/api/v1/features/checkout/explode",
            vec![json],
            "{}",
            404,
            "NOT_FOUND",
        ),
        (
            "POST",
            "/api/v1/features/bad%20name/off",
            vec![json],
            "{}",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/%FF/off",
            vec![json],
            "{}",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "GET",
            "/api/v1/features/checkout/off",
            vec![],
            "",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features",
            vec![json],
            "{}",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/api/v1/features/checkout/off",
            vec![json, ("Origin", "http://evil.example")],
            "{}",
            403,
            "PERMISSION_DENIED",
        ),
        (
            "GET",
            "/api/v1/instances?limit=100000",
            vec![],
            "",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "GET",
            "/api/v1/instances?offset=abc",
            vec![],
            "",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "GET",
            "/api/v1/instances?labels=zone",
            vec![],
            "",
            400,
            "INVALID_ARGUMENT",
        ),
        ("GET", "/api/v1/nothing", vec![], "", 404, "NOT_FOUND"),
        // A page of another site that points its own name at the node (DNS rebinding).
        (
            "POST",
            "/api/v1/features/checkout/off",
            vec![json, ("Host", "evil.example:9701")],
            "{}",
            403,
            "PERMISSION_DENIED",
        ),
        ("GET", &too_many_names, vec![], "", 400, "INVALID_ARGUMENT"),
    ];
    let before = fingerprint(&node.client).await;
    for (method, path, headers, body, status, code) in cases {
        let r = http_request(&at, method, path, &headers, body).await;
        assert_eq!(r.status, status, "{method} {path} {body:.60}: {}", r.body);
        let v = r.json();
        assert_eq!(v["code"], code, "{method} {path}: {}", r.body);
        assert!(
            !v["error"].as_str().unwrap_or_default().is_empty(),
            "{method} {path}: says why"
        );
        assert_eq!(
            fingerprint(&node.client).await,
            before,
            "{method} {path} changed nothing"
        );
    }
    for path in ["/ui/../Cargo.toml", "/ui/other.js", "/ui/%2e%2e/Cargo.toml"] {
        assert_eq!(get(&at, path, None).await.status, 404, "{path}");
    }
    // A request from the page's own origin is fine.
    let origin = format!("http://{at}");
    let r = http_request(&at, "GET", "/api/v1/features", &[("Origin", &origin)], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_on_the_console_needs_a_token_and_history_names_its_holder() {
    let node = console_node().await;
    let at = http(&node);
    checkout_waiting(&node.client).await;
    let admin_token = node
        .client
        .create_token("root", "admin", None)
        .await
        .unwrap()
        .secret;
    let reader = node
        .client
        .create_token("viewer", "read", None)
        .await
        .unwrap()
        .secret;
    let release = node
        .client
        .create_token("alice", "release", None)
        .await
        .unwrap()
        .secret;
    node.client.set_auth_enabled(true).await.unwrap();
    let admin = Client::connect(
        &[node.addr()],
        &ConnectOptions {
            token: Some(admin_token),
            ..Default::default()
        },
    )
    .unwrap();
    let before = fingerprint(&admin).await;

    let r = get(&at, "/api/v1/features", None).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let r = get(&at, "/api/v1/events", Some("syt_nonsense")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.body.contains("syt_nonsense"), "errors never echo a secret");
    let r = get(&at, "/api/v1/features", Some(&reader)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = get(&at, "/api/v1/whoami", Some(&reader)).await.json();
    assert_eq!(
        (v["identity"].as_str(), v["role"].as_str()),
        (Some("token:viewer"), Some("read"))
    );

    let r = post(&at, "/api/v1/features/checkout/off", Some(&reader), "{}").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("permission release"), "{}", r.body);
    assert_eq!(
        fingerprint(&admin).await,
        before,
        "a denied action changes nothing"
    );

    // With authentication on, the token counts, whatever name the page was opened by.
    let bearer = format!("Bearer {release}");
    let r = http_request(
        &at,
        "POST",
        "/api/v1/features/checkout/off",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
            ("Host", "switchyard.internal:9701"),
        ],
        r#"{"reason":"pager"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = admin.history("checkout").await.unwrap();
    let last = h.entries.last().unwrap();
    assert_eq!(
        last.actor, "token:alice",
        "the token's identity, never the console's name"
    );
    assert_eq!(last.reason, "pager");
    node.shutdown().await;
}

/// Reads an event stream's frames until `until` holds for one, or `within` passes.
async fn read_frames(
    stream: &mut tokio::net::TcpStream,
    within: Duration,
    until: impl Fn(&str) -> bool,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 8192];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(frame) = seen.split("\n\n").find(|f| until(f)) {
            return Some(frame.to_string());
        }
    }
}

/// The revision a change frame carries.
fn frame_revision(frame: &str) -> u64 {
    frame
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|v| v["revision"].as_u64())
        .unwrap_or(0)
}

async fn open_events(at: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(at).await.expect("HTTP listener");
    s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_open_page_shares_one_subscription_and_sees_changes_batched() {
    let node = console_node().await;
    let at = http(&node);
    node.client
        .put_feature(feature("checkout"), None, "")
        .await
        .unwrap();
    let mut pages = Vec::new();
    for _ in 0..20 {
        let mut s = open_events(&at).await;
        read_frames(&mut s, Duration::from_secs(5), |f| f.contains("event: hello"))
            .await
            .expect("hello");
        pages.push(s);
    }
    // 20 pages, and not one watch stream more on the node.
    let metrics = get(&at, "/metrics", None).await.body;
    assert!(
        metrics.lines().any(|l| l == "switchyard_watch_streams 0"),
        "the console's feed is not a watch stream per page: {}",
        metrics
            .lines()
            .filter(|l| l.starts_with("switchyard_watch_streams"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    // The feed is live once a change reaches a page (by name, or as "everything" when the
    // feed has just subscribed to the node's hub).
    let warm_up = node
        .client
        .put_feature(feature("warm-up"), None, "")
        .await
        .unwrap()
        .revision;
    read_frames(&mut pages[0], Duration::from_secs(10), |f| {
        f.contains("event: change") && frame_revision(f) >= warm_up
    })
    .await
    .expect("the feed is live");
    // A burst of 30 changes: each page gets a few frames naming the feature, not 30.
    for _ in 0..30 {
        node.client
            .set_toggle("checkout", &boolean_flag(true), None, "")
            .await
            .unwrap();
    }
    let revision = node.client.status().await.unwrap().members[0].revision;
    for page in &mut pages {
        let frame = read_frames(page, Duration::from_secs(5), |f| {
            f.contains("event: change") && f.contains(&format!("\"revision\":{revision}"))
        })
        .await
        .expect("a change frame at the last revision");
        assert!(frame.contains("\"checkout\""), "{frame}");
    }
    // The status beat reaches every page too.
    let frame = read_frames(&mut pages[0], Duration::from_secs(5), |f| {
        f.contains("event: status")
    })
    .await;
    assert!(frame.expect("a status frame").contains("\"members\""));
    drop(pages);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_can_be_turned_off() {
    let node = single_node(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
        c.console = false;
    })
    .await;
    let at = http(&node);
    for path in ["/ui/", "/api/v1/features", "/api/v1/events"] {
        let r = get(&at, path, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.body.contains("--no-console"), "{}", r.body);
    }
    assert_eq!(get(&at, "/metrics", None).await.status, 200);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_cluster_says_so_and_shows_nothing_stale() {
    let mut cluster = TestCluster::start(3, &[]).await;
    cluster
        .client()
        .put_feature(feature("checkout"), None, "")
        .await
        .unwrap();
    let follower = cluster.follower().await;
    cluster.wait_converged(Duration::from_secs(10)).await;
    let at = cluster.nodes[(follower - 1) as usize].metrics_addr.clone();
    assert_eq!(get(&at, "/api/v1/features", None).await.status, 200);
    for id in 1..=3 {
        if id != follower {
            cluster.kill(id);
        }
    }
    let last = eventually_some(Duration::from_secs(15), "the console answers 503", || async {
        Some(get(&at, "/api/v1/features", None).await).filter(|a| a.status == 503)
    })
    .await;
    assert_eq!(last.json()["code"], "UNAVAILABLE", "{}", last.body);
    // The page itself still loads, and says why it shows nothing.
    assert_eq!(get(&at, "/ui/", None).await.status, 200);
    let v = get(&at, "/api/v1/whoami", None).await.json();
    assert_eq!(v["node"], follower);
}
