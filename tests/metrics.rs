//! Prometheus metrics over HTTP: a node started with a metrics address serves `/metrics` with
//! its state and counters. Also: a node shuts down promptly with a watch open.

use std::time::Duration;

mod support;

use switchyard::pb::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// The value of a metric line `name value` (or `name{labels} value`).
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_its_metrics() {
    let single = support::single_node(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics = single.node.metrics_addr.unwrap();
    let client = &single.client;
    let feature = pb::Feature {
        name: "checkout".into(),
        ..Default::default()
    };
    client.put_feature(feature.clone(), None, "").await.unwrap();
    assert!(
        client.put_feature(feature, Some(0), "").await.is_err(),
        "a failed CAS is counted too"
    );
    let mut watch = client.watch(pb::WatchRequest::default()).await.unwrap();

    // The contact check runs every 100 ms: a node that just started says it has lost contact
    // until its first check.
    let mut text = scrape(metrics, "/metrics").await;
    for _ in 0..50 {
        if value(&text, "switchyard_lost_contact") == Some(0.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        text = scrape(metrics, "/metrics").await;
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(value(&text, "switchyard_revision"), Some(1.0), "{text}");
    assert_eq!(value(&text, "switchyard_features"), Some(1.0));
    assert_eq!(value(&text, "switchyard_raft_is_leader"), Some(1.0));
    assert_eq!(value(&text, "switchyard_watch_streams"), Some(1.0));
    assert_eq!(value(&text, "switchyard_lost_contact"), Some(0.0));
    assert!(
        text.contains(r#"switchyard_writes_total{outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"switchyard_writes_total{outcome="revision_mismatch"} 1"#),
        "{text}"
    );
    assert!(value(&text, "switchyard_events_published_total").unwrap() >= 1.0);
    assert!(text.contains("switchyard_write_duration_seconds_bucket"));

    let missing = scrape(metrics, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // Shutting down ends the open watch (so its subscriber moves on) instead of waiting for it.
    tokio::time::timeout(Duration::from_secs(10), single.shutdown())
        .await
        .expect("a node with an open watch shuts down");
    let ended = loop {
        match watch.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    match ended {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(None) => panic!("the watch ended without saying why"),
        Ok(Some(_)) => unreachable!(),
    }
}
