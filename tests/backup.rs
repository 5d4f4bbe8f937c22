//! Backup and restore through the CLI, as an operator runs them: `switchyard snapshot save`
//! from a cluster under writes, `switchyard snapshot restore` into the data directories of a
//! new cluster, and damaged or truncated backups refused without touching anything.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::workload::start_writers;
use support::{feature, TestCluster};
use switchyard::backup::BackupHeader;
use switchyard::pb::v1 as pb;

fn header_of(file: &std::path::Path) -> BackupHeader {
    let text = std::fs::read(file).expect("the backup");
    let line = text.split(|b| *b == b'\n').nth(1).expect("a header line");
    serde_json::from_slice(line).expect("the header parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_writes_restores_into_a_new_cluster() {
    let cluster = TestCluster::start(3, &[]).await;
    let client = cluster.client();
    let lease = client
        .grant_lease(Duration::from_secs(120))
        .await
        .expect("lease")
        .lease_id;
    for i in 0..5 {
        let instance = pb::Instance {
            id: format!("cart-{i}"),
            service: "cart".into(),
            version: "2.0.0".into(),
            ..Default::default()
        };
        client.register(instance, lease).await.expect("register");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writers) = start_writers(3, cluster.endpoints(), Duration::from_millis(10), stop.clone());
    support::eventually(Duration::from_secs(20), "writes acknowledged", || {
        acked.lock().len() >= 50
    })
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.backup");
    let before = acked.lock().clone();
    let file_arg = file.to_string_lossy().into_owned();
    let out = tokio::task::block_in_place(|| cluster.cli(&["snapshot", "save", &file_arg]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let header = header_of(&file);
    assert_eq!(header.instances, 5);
    assert!(header.revision >= before.iter().map(|a| a.revision).max().unwrap_or(0));

    let restored = TestCluster::start_from_backup(3, &[], &file).await;
    let status = restored.wait_converged(Duration::from_secs(30)).await;
    for m in &status.members {
        assert_eq!(
            m.digest, header.digest,
            "member {} holds the backup's state",
            m.id
        );
        assert_eq!(m.revision, header.revision, "member {}", m.id);
    }
    // Every write acknowledged before the save started is there, at its revision.
    let features = restored
        .client()
        .list_features(false)
        .await
        .expect("features")
        .features;
    for a in before.iter().filter(|a| a.name == a.tag) {
        let f = features
            .iter()
            .find(|f| f.name == a.name)
            .unwrap_or_else(|| panic!("{} (revision {}) is not in the restore", a.name, a.revision));
        assert_eq!(f.revision, a.revision, "{}", a.name);
    }
    let live = restored
        .client()
        .list_instances("cart", Default::default())
        .await
        .expect("instances");
    assert_eq!(live.instances.len(), 5, "instances under their lease come back");
    // The new cluster is a cluster: it takes writes and moves on from the backup's revision.
    let put = restored
        .client()
        .put_feature(feature("after-restore"), None, "")
        .await
        .expect("a write");
    assert_eq!(put.feature.expect("feature").revision, header.revision + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_or_truncated_backups_are_refused_and_change_nothing() {
    let cluster = TestCluster::start(1, &[]).await;
    for i in 0..20 {
        cluster
            .client()
            .put_feature(feature(&format!("f{i}")), None, "")
            .await
            .expect("write");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.backup");
    let good_arg = good.to_string_lossy().into_owned();
    let out = tokio::task::block_in_place(|| cluster.cli(&["snapshot", "save", &good_arg]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&good).expect("read");

    let mut flipped = bytes.clone();
    let at = bytes.len() - 40;
    flipped[at] ^= 0x20;
    let cases = [
        ("flipped", flipped, "checksum"),
        ("truncated", bytes[..bytes.len() - 7].to_vec(), "truncated"),
        ("empty", Vec::new(), "first line"),
        ("garbage", b"{\"not\": \"a backup\"}\n".to_vec(), "first line"),
    ];
    for (name, content, why) in cases {
        let file = dir.path().join(format!("{name}.backup"));
        std::fs::write(&file, content).expect("write");
        let data_dir = dir.path().join(format!("data-{name}"));
        let out = std::process::Command::new(support::binary())
            .args(["snapshot", "restore"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .expect("run restore");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: restored anyway");
        assert!(err.contains(why), "{name}: {err}");
        assert!(!data_dir.exists(), "{name}: the data directory was touched");
        let inspected = std::process::Command::new(support::binary())
            .args(["snapshot", "inspect"])
            .arg(&file)
            .output()
            .expect("run inspect");
        assert!(!inspected.status.success(), "{name}: inspect passed it");
    }
    // Restoring over a node's data is refused.
    let used = cluster.nodes[0].data_dir.clone();
    let out = std::process::Command::new(support::binary())
        .args(["snapshot", "restore"])
        .arg(&good)
        .arg("--data-dir")
        .arg(&used)
        .output()
        .expect("run restore");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));
}
