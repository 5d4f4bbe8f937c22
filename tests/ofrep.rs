//! OFREP on a node's HTTP listener, spoken with a plain HTTP client: the single and bulk
//! evaluations' shapes, reasons, error codes and statuses; code defaults (a disabled flag, no
//! default variant); a caller naming its instance; flag-set selectors; the bulk ETag and 304;
//! Server-Sent Events announcing a change when it takes effect, and resuming by
//! `Last-Event-ID`; authentication (401) and the rate limit (429 with `Retry-After`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{feature, http_request, HttpAnswer, TestCluster};
use switchyard::pb::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn immediate() -> Option<pb::Activation> {
    Some(pb::Activation {
        mode: pb::activation::Mode::Immediate as i32,
        ..Default::default()
    })
}

const BANNER: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
  "targeting":{"if":[{"==":[{"var":"plan"},"gold"]},"on",null]},"metadata":{"flagSetId":"web","team":"growth"}}"#;
const SPLIT: &str = r#"{"state":"ENABLED","variants":{"a":"red","b":"blue"},"defaultVariant":"a",
  "targeting":{"fractional":[["a",50],["b",50]]},"metadata":{"flagSetId":"web"}}"#;
const CANARY: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
  "targeting":{"if":[{"==":[{"var":"instance.labels.canary"},"true"]},"on","off"]}}"#;
const KILLED: &str = r#"{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
const KILLED_WEB: &str = r#"{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on","metadata":{"flagSetId":"web"}}"#;
const NO_DEFAULT: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":null,
  "targeting":{"if":[{"==":[{"var":"plan"},"gold"]},"on",null]}}"#;

async fn with_flags(extra: &[&str]) -> (TestCluster, switchyard::client::Client) {
    let cluster = TestCluster::start(3, extra).await;
    let client = cluster.client().with_actor("test");
    for (name, def) in [
        ("banner", BANNER),
        ("split", SPLIT),
        ("canary", CANARY),
        ("killed", KILLED),
        ("no-default", NO_DEFAULT),
    ] {
        client.put_feature(feature(name), None, "test").await.unwrap();
        client
            .set_toggle_with(name, def, None, immediate(), "test")
            .await
            .unwrap();
    }
    cluster.wait_converged(Duration::from_secs(20)).await;
    (cluster, client)
}

/// A request that must fail: flag, body, headers, status, error code.
type ErrorCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16, &'a str);

async fn evaluate(addr: &str, key: &str, body: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    http_request(addr, "POST", &format!("/ofrep/v1/evaluate/flags/{key}"), &h, body).await
}

async fn bulk(addr: &str, body: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    http_request(addr, "POST", "/ofrep/v1/evaluate/flags", &h, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_evaluations_answer_as_the_spec_says() {
    let (cluster, _client) = with_flags(&[]).await;
    let at = cluster.nodes[1].metrics_addr.clone();

    let gold = evaluate(
        &at,
        "banner",
        r#"{"context":{"targetingKey":"c1","plan":"gold"}}"#,
        &[],
    )
    .await;
    assert_eq!(gold.status, 200, "{gold:?}");
    assert_eq!(gold.header("content-type"), Some("application/json"));
    let v = gold.json();
    assert_eq!(
        (&v["key"], &v["value"], &v["variant"], &v["reason"]),
        (
            &json!("banner"),
            &json!(true),
            &json!("on"),
            &json!("TARGETING_MATCH")
        )
    );
    assert_eq!(v["metadata"]["team"], "growth");
    let other = evaluate(&at, "banner", r#"{"context":{"targetingKey":"c2"}}"#, &[])
        .await
        .json();
    assert_eq!(
        (&other["value"], &other["reason"]),
        (&json!(false), &json!("DEFAULT"))
    );

    // Code defaults: no value, no variant.
    let killed = evaluate(&at, "killed", r#"{"context":{}}"#, &[]).await;
    assert_eq!(killed.status, 200);
    let v = killed.json();
    assert_eq!(v["reason"], "DISABLED");
    assert!(v.get("value").is_none() && v.get("variant").is_none(), "{v}");
    let v = evaluate(&at, "no-default", r#"{"context":{"plan":"free"}}"#, &[])
        .await
        .json();
    assert_eq!(v["reason"], "DEFAULT");
    assert!(v.get("value").is_none(), "{v}");

    // A split (flagd reports its choice as a targeting match): by the targeting key, the same
    // answer for the same key.
    let a = evaluate(&at, "split", r#"{"context":{"targetingKey":"user-7"}}"#, &[])
        .await
        .json();
    let b = evaluate(&at, "split", r#"{"context":{"targetingKey":"user-7"}}"#, &[])
        .await
        .json();
    assert_eq!(a["reason"], "TARGETING_MATCH");
    assert_eq!(a["value"], b["value"]);

    // The caller's instance, by headers or in the context.
    let canary = [
        ("x-switchyard-service", "cart"),
        ("x-switchyard-version", "2.1.0"),
        ("x-switchyard-labels", "canary=true"),
    ];
    let v = evaluate(&at, "canary", "{}", &canary).await.json();
    assert_eq!(
        (&v["value"], &v["reason"]),
        (&json!(true), &json!("TARGETING_MATCH"))
    );
    let v = evaluate(
        &at,
        "canary",
        r#"{"context":{"instance":{"service":"cart","version":"2.1.0","labels":{"canary":"true"}}}}"#,
        &[],
    )
    .await
    .json();
    assert_eq!(v["value"], true);
    assert_eq!(evaluate(&at, "canary", "{}", &[]).await.json()["value"], false);

    // Errors: status, errorCode, errorDetails.
    let cases: [ErrorCase; 6] = [
        ("nope", "{}", &[], 404, "FLAG_NOT_FOUND"),
        ("banner", r#"{"context": 5}"#, &[], 400, "INVALID_CONTEXT"),
        ("banner", "{not json", &[], 400, "INVALID_CONTEXT"),
        (
            "banner",
            r#"{"context":{"targetingKey":7}}"#,
            &[],
            400,
            "INVALID_CONTEXT",
        ),
        ("split", r#"{"context":{}}"#, &[], 400, "TARGETING_KEY_MISSING"),
        (
            "canary",
            "{}",
            &[("x-switchyard-service", "cart")],
            400,
            "INVALID_CONTEXT",
        ),
    ];
    for (key, body, headers, status, code) in cases {
        let a = evaluate(&at, key, body, headers).await;
        assert_eq!(a.status, status, "{key} {body}: {a:?}");
        let v = a.json();
        assert_eq!(
            (&v["key"], &v["errorCode"]),
            (&json!(key), &json!(code)),
            "{key} {body}: {v}"
        );
        assert!(v["errorDetails"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // A flag outside the selected flag set is not found.
    let a = evaluate(&at, "canary", "{}", &[("Flagd-Selector", "flagSetId=web")]).await;
    assert_eq!(a.status, 404);
    let a = evaluate(&at, "banner", "{}", &[("Flagd-Selector", "bogus=1")]).await;
    assert_eq!(a.status, 400);
    // Wrong method, too large a body.
    let a = http_request(&at, "GET", "/ofrep/v1/evaluate/flags/banner", &[], "").await;
    assert_eq!(a.status, 405);
    let big = format!(r#"{{"context":{{"pad":"{}"}}}}"#, "x".repeat(70_000));
    assert_eq!(evaluate(&at, "banner", &big, &[]).await.status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_evaluation_selects_tags_and_revalidates() {
    let (cluster, client) = with_flags(&[]).await;
    let at = cluster.nodes[0].metrics_addr.clone();
    let gold = r#"{"context":{"targetingKey":"c1","plan":"gold"}}"#;

    let all = bulk(&at, gold, &[]).await;
    assert_eq!(all.status, 200, "{all:?}");
    let v = all.json();
    let keys: Vec<&str> = v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["banner", "canary", "killed", "no-default", "split"]);
    assert!(v["metadata"]["version"].as_str().is_some(), "{v}");
    assert_eq!(v["eventStreams"][0]["type"], "sse");
    assert!(v["eventStreams"][0]["endpoint"]["requestUri"]
        .as_str()
        .unwrap()
        .starts_with("/ofrep/v1/events?since="));
    let etag = all.header("etag").expect("an ETag").to_string();

    // The same context again: 304 with the same tag; another context: 200.
    let again = bulk(&at, gold, &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304, "{again:?}");
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let free = bulk(
        &at,
        r#"{"context":{"targetingKey":"c1"}}"#,
        &[("If-None-Match", &etag)],
    )
    .await;
    assert_eq!(free.status, 200);
    assert_ne!(free.header("etag"), Some(etag.as_str()));

    // A flag set.
    let web = bulk(&at, gold, &[("Flagd-Selector", "flagSetId=web")])
        .await
        .json();
    let keys: Vec<&str> = web["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["banner", "split"]);
    assert_eq!(web["metadata"]["flagSetId"], "web");
    // A bad context fails the whole request.
    let bad = bulk(&at, r#"{"context":[]}"#, &[]).await;
    assert_eq!(
        (bad.status, bad.json()["errorCode"].clone()),
        (400, json!("INVALID_CONTEXT"))
    );
    // Without a targeting key, the split alone fails, in the list.
    let v = bulk(&at, "{}", &[]).await.json();
    let split = v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "split")
        .unwrap()
        .clone();
    assert_eq!(split["errorCode"], "TARGETING_KEY_MISSING");

    // A change: the old tag no longer matches.
    client
        .set_toggle_with("banner", KILLED, None, immediate(), "test")
        .await
        .unwrap();
    cluster.wait_converged(Duration::from_secs(10)).await;
    let after = bulk(&at, gold, &[("If-None-Match", &etag)]).await;
    assert_eq!(after.status, 200);
    let banner = after.json()["flags"][0].clone();
    assert_eq!(banner["reason"], "DISABLED");
}

/// An SSE client of one node.
struct Sse {
    stream: tokio::net::TcpStream,
    seen: String,
    /// Events already returned by `next_event`.
    taken: usize,
}

impl Sse {
    async fn open(addr: &str, path: &str, last_event_id: Option<&str>) -> Sse {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{resume}\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut sse = Sse {
            stream,
            seen: String::new(),
            taken: 0,
        };
        sse.read_until(Duration::from_secs(5), |s| s.contains("retry: "))
            .await;
        assert!(sse.seen.starts_with("HTTP/1.1 200"), "{}", sse.seen);
        assert!(sse
            .seen
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"));
        sse
    }

    /// Reads until `done` holds for what was seen (true) or `within` passes (false).
    async fn read_until(&mut self, within: Duration, done: impl Fn(&str) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 4096];
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => return false,
            }
        }
        true
    }

    /// The ids of the events seen so far.
    fn ids(&self) -> Vec<String> {
        self.seen
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(str::to_string)
            .collect()
    }

    /// The next event's id, if one comes `within`.
    async fn next_event(&mut self, within: Duration) -> Option<String> {
        let taken = self.taken;
        self.read_until(within, |s| {
            s.lines().filter(|l| l.starts_with("id: ")).count() > taken
        })
        .await;
        let id = self.ids().get(taken).cloned()?;
        self.taken += 1;
        Some(id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_announce_changes_when_they_take_effect_and_resume() {
    let (cluster, client) = with_flags(&[]).await;
    let at = cluster.nodes[2].metrics_addr.clone();
    let first = bulk(&at, "{}", &[("Flagd-Selector", "flagSetId=web")])
        .await
        .json();
    let uri = first["eventStreams"][0]["endpoint"]["requestUri"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(uri.contains("selector=flagSetId%3Dweb"), "{uri}");
    let mut sse = Sse::open(&at, &uri, None).await;
    // Nothing changed since the bulk answer: no event.
    assert_eq!(sse.next_event(Duration::from_millis(500)).await, None);

    // A change outside the flag set: no event. Inside: one, at once.
    client
        .set_toggle_with("canary", KILLED, None, immediate(), "test")
        .await
        .unwrap();
    assert_eq!(sse.next_event(Duration::from_millis(700)).await, None);
    client
        .set_toggle_with("banner", KILLED_WEB, None, immediate(), "test")
        .await
        .unwrap();
    let id1 = sse
        .next_event(Duration::from_secs(5))
        .await
        .expect("an event for banner");
    assert!(
        sse.seen.contains(r#"data: {"#) && sse.seen.contains("refetchEvaluation"),
        "{}",
        sse.seen
    );
    assert!(sse.seen.contains("event: message"));

    // A change scheduled 1.5 s ahead: announced when it takes effect, not before.
    let at_ms = support::now_ms() + 1500;
    let scheduled = Some(pb::Activation {
        mode: pb::activation::Mode::At as i32,
        at_ms,
        ..Default::default()
    });
    client
        .set_toggle_with("banner", BANNER, None, scheduled, "test")
        .await
        .unwrap();
    let id2 = sse
        .next_event(Duration::from_secs(6))
        .await
        .expect("an event when it takes effect");
    let announced = support::now_ms();
    assert!(announced >= at_ms, "announced {} ms early", at_ms - announced);
    assert!(
        announced - at_ms < 1000,
        "announced {} ms late",
        announced - at_ms
    );
    assert_ne!(id1, id2);
    // The bulk answer now has the new definition.
    let now = bulk(
        &at,
        r#"{"context":{"targetingKey":"c","plan":"gold"}}"#,
        &[("Flagd-Selector", "flagSetId=web")],
    )
    .await
    .json();
    assert_eq!(now["flags"][0]["value"], true);
    drop(sse);

    // Resuming from the last id seen: no event; from an older one (on another node): one at once.
    let path = "/ofrep/v1/events?selector=flagSetId%3Dweb";
    let mut same = Sse::open(&at, path, Some(&id2)).await;
    assert_eq!(same.next_event(Duration::from_millis(500)).await, None);
    let other = cluster.nodes[0].metrics_addr.clone();
    let started = Instant::now();
    let mut behind = Sse::open(&other, path, Some(&id1)).await;
    assert_eq!(behind.next_event(Duration::from_secs(2)).await, Some(id2));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ofrep_callers_authenticate_and_are_rate_limited() {
    let (cluster, client) = with_flags(&["--limit-rate", "20"]).await;
    let at = cluster.nodes[0].metrics_addr.clone();
    let token = |role: &str, name: &str| {
        let out = cluster.cli(&[
            "--output", "json", "auth", "token", "create", "--name", name, "--role", role,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let admin = token("admin", "ops");
    let service = token("service:cart", "cart");
    let release = token("release", "deploy");
    let out = cluster.cli(&["--token", &admin, "auth", "enable"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(client);

    let bearer = |t: &str| format!("Bearer {t}");
    // Once the node has applied `auth enable`, a call without a token is refused.
    let none = support::eventually_some(Duration::from_secs(10), "node 1 applies auth enable", || async {
        let a = evaluate(&at, "banner", "{}", &[]).await;
        (a.status != 200).then_some(a)
    })
    .await;
    assert_eq!(none.status, 401, "{none:?}");
    assert!(none.json()["errorDetails"].as_str().unwrap().contains("token"));
    let wrong = evaluate(&at, "banner", "{}", &[("Authorization", "Bearer syt_x_y")]).await;
    assert_eq!(wrong.status, 401);
    // Evaluating is the follow permission, which every role holds.
    let r = evaluate(&at, "banner", "{}", &[("Authorization", &bearer(&release))]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let ok = evaluate(&at, "banner", "{}", &[("Authorization", &bearer(&service))]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(
        !ok.body.contains(&service) && !r.body.contains(&release),
        "no secret echoed"
    );

    // Past the rate: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..200 {
        let a = evaluate(&at, "banner", "{}", &[("Authorization", &bearer(&service))]).await;
        if a.status == 429 {
            limited = Some(a);
            break;
        }
        assert_eq!(a.status, 200);
    }
    let limited = limited.expect("refused past 20 calls a second");
    let wait: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
}

/// A node cut off from the rest stops answering from its copy: OFREP with 503, flagd's
/// evaluation with `UNAVAILABLE`, and its OFREP event stream ends; once back, it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_node_stops_answering_evaluations() {
    use switchyard::pb::flagd::evaluation_v2 as v2;
    let (cluster, _client) = with_flags(&[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let node = (1..=3).find(|id| *id != leader).unwrap();
    let at = cluster.nodes[(node - 1) as usize].metrics_addr.clone();
    assert_eq!(evaluate(&at, "banner", "{}", &[]).await.status, 200);
    let mut sse = Sse::open(&at, "/ofrep/v1/events", None).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(node)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut eval = v2::service_client::ServiceClient::new(channel);
    let request = || v2::ResolveBooleanRequest {
        flag_key: "banner".into(),
        context: None,
    };
    assert!(eval.resolve_boolean(request()).await.is_ok());

    let others: Vec<u64> = (1..=3).filter(|id| *id != node).collect();
    for id in &others {
        cluster.pause(*id);
    }
    let refused = support::eventually_some(
        Duration::from_secs(20),
        "OFREP refuses on the cut-off node",
        || async {
            let a = evaluate(&at, "banner", "{}", &[]).await;
            (a.status == 503).then_some(a)
        },
    )
    .await;
    assert!(refused.json()["errorDetails"]
        .as_str()
        .unwrap()
        .contains("cannot vouch"));
    let status = eval.resolve_boolean(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // The event stream ended (the connection closes with the body's end).
    assert!(
        sse.read_until(Duration::from_secs(10), |s| s.ends_with("0\r\n\r\n"))
            .await,
        "the event stream ends: {}",
        sse.seen
    );

    for id in &others {
        cluster.resume(*id);
    }
    support::eventually_some(Duration::from_secs(20), "OFREP answers again", || async {
        (evaluate(&at, "banner", "{}", &[]).await.status == 200).then_some(())
    })
    .await;
}
