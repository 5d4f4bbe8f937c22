//! `/livez` and `/readyz`: live while the process serves; ready only with a leader, in contact,
//! caught up, and able to complete a linearizable read.

mod support;

use std::time::Duration;

use support::{eventually_some, http_get, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_quorum_is_live_but_not_ready() {
    let mut cluster = TestCluster::start(3, &[]).await;
    for n in &cluster.nodes {
        assert_eq!(http_get(&n.metrics_addr, "/livez", None).await.0, 200);
        let ready = eventually_some(Duration::from_secs(10), "every node ready", || async {
            let (code, _) = http_get(&n.metrics_addr, "/readyz", None).await;
            (code == 200).then_some(())
        });
        ready.await;
    }
    // Two of three gone: the last one lives on, but cannot serve a linearizable read.
    cluster.kill(2);
    cluster.kill(3);
    let addr = cluster.nodes[0].metrics_addr.clone();
    let why = eventually_some(Duration::from_secs(15), "node 1 says it is not ready", || async {
        let (code, body) = http_get(&addr, "/readyz", None).await;
        (code == 503).then_some(body)
    })
    .await;
    assert!(why.starts_with("not ready:"), "{why}");
    assert_eq!(http_get(&addr, "/livez", None).await.0, 200);
    // Back to a quorum: ready again.
    cluster.restart(2);
    eventually_some(Duration::from_secs(20), "node 1 ready again", || async {
        let (code, _) = http_get(&addr, "/readyz", None).await;
        (code == 200).then_some(())
    })
    .await;
}
