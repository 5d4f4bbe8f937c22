//! Bad input gets a precise status and changes nothing; a peer sending garbage cannot crash a
//! node.

mod support;

use std::time::Duration;

use support::{boolean_flag, feature, TestCluster};
use switchyard::pb::raft::raft_client::RaftClient;
use switchyard::pb::raft::{Payload, SnapshotChunk};
use switchyard::pb::v1 as pb;
use switchyard::Error;
use tonic::Code;

fn code(e: &Error) -> String {
    format!("{:?}", e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_bad_input_gets_its_status_and_changes_nothing() {
    let cluster = TestCluster::start(3, &[]).await;
    let c = cluster.client();
    c.put_feature(feature("checkout"), None, "").await.unwrap();
    c.set_toggle("checkout", &boolean_flag(true), None, "")
        .await
        .unwrap();
    let before = cluster.wait_converged(Duration::from_secs(20)).await;

    let req = |service: &str, version_req: &str| {
        let mut f = feature("bad-req");
        f.requirements.push(pb::Requirement {
            service: service.into(),
            version_req: version_req.into(),
        });
        f
    };
    let mut cases: Vec<(&str, &str, Result<(), Error>)> = Vec::new();
    macro_rules! case {
        ($name:expr, $want:expr, $call:expr) => {
            cases.push(($name, $want, $call.await.map(|_| ())));
        };
    }
    case!(
        "empty feature name",
        "InvalidArgument",
        c.put_feature(feature(""), None, "")
    );
    case!(
        "over-long feature name",
        "InvalidArgument",
        c.put_feature(feature(&"x".repeat(200)), None, "")
    );
    case!(
        "name with spaces",
        "InvalidArgument",
        c.put_feature(feature("a b"), None, "")
    );
    case!(
        "invalid semver requirement",
        "InvalidArgument",
        c.put_feature(req("cart", ">=banana"), None, "")
    );
    case!(
        "empty service name",
        "InvalidArgument",
        c.put_feature(req("", ">=1"), None, "")
    );
    let mut long = feature("long");
    long.description = "d".repeat(5000);
    case!(
        "over-long description",
        "ResourceExhausted",
        c.put_feature(long, None, "")
    );
    case!(
        "stale expected revision",
        "FailedPrecondition",
        c.put_feature(feature("checkout"), Some(999), "")
    );
    case!(
        "create over an existing one",
        "FailedPrecondition",
        c.put_feature(feature("checkout"), Some(0), "")
    );
    case!("get unknown feature", "NotFound", c.get_feature("nope", false));
    case!(
        "delete unknown feature",
        "NotFound",
        c.delete_feature("nope", None, "")
    );
    case!(
        "toggle of unknown feature",
        "NotFound",
        c.set_toggle("nope", &boolean_flag(true), None, "")
    );
    case!(
        "toggle on unknown feature",
        "NotFound",
        c.set_toggle_state("nope", true, None, "")
    );
    case!(
        "stale toggle revision",
        "FailedPrecondition",
        c.set_toggle_state("checkout", false, Some(1), "")
    );
    case!(
        "definition not JSON",
        "InvalidArgument",
        c.set_toggle("checkout", "{not json", None, "")
    );
    case!(
        "definition over the size limit",
        "ResourceExhausted",
        c.set_toggle(
            "checkout",
            &format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000)),
            None,
            ""
        )
    );
    // tonic refuses a message over the decoding limit with OUT_OF_RANGE, and the client keeps
    // that code (it was once folded into RESOURCE_EXHAUSTED on the way back).
    case!(
        "request over the gRPC size limit",
        "OutOfRange",
        c.set_toggle("checkout", &"x".repeat(2 * 1024 * 1024), None, "")
    );
    // Every flag of flagd's negative schema examples.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/flagd-schema/negative");
    let mut negatives = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if let Some(serde_json::Value::Object(flags)) = file.get("flags") {
            for flag in flags.values() {
                negatives.push((
                    path.file_name().unwrap().to_string_lossy().to_string(),
                    flag.to_string(),
                ));
            }
        }
    }
    // Some negative files hold valid flags beside the invalid one (or are invalid only as a
    // whole file): those flags are accepted, and each acceptance is one revision.
    let mut rejected_files = std::collections::BTreeSet::new();
    let mut accepted = 0;
    for (file, flag) in &negatives {
        match c.set_toggle("checkout", flag, None, "").await {
            Err(e) => {
                assert_eq!(code(&e), "InvalidArgument", "{file}: {e}");
                assert!(e.to_string().contains("at /"), "error names no path: {e}");
                rejected_files.insert(file.clone());
            }
            Ok(_) => accepted += 1,
        }
    }
    c.set_toggle("checkout", &boolean_flag(true), None, "")
        .await
        .unwrap();
    accepted += 1;
    for must in [
        "empty-variants.json",
        "missing-variants.json",
        "mixed-variant-types.ffconfig.json",
        "state-set-incorrectly.json",
        "with-invalid-flag-metadata.json",
        "with-invalid-targeting.json",
        "malformed-flag.json",
    ] {
        assert!(rejected_files.contains(must), "{must} was accepted");
    }

    for (name, want, got) in &cases {
        match got {
            Ok(()) => panic!("{name}: accepted"),
            Err(e) => assert_eq!(code(e), *want, "{name}: {e}"),
        }
    }
    let after = cluster.wait_converged(Duration::from_secs(20)).await;
    assert_eq!(
        after.members[0].revision,
        before.members[0].revision + accepted,
        "bad input changed the revision"
    );
    let got = c.get_toggle("checkout", false).await.unwrap().toggle.unwrap();
    assert!(got.definition_json.contains("ENABLED"));
    assert!(c.get_feature("bad-req", false).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_sending_garbage_cannot_crash_a_node() {
    let cluster = TestCluster::start(3, &[]).await;
    let addr = cluster.addr(2);
    let mut raw = RaftClient::connect(format!("http://{addr}")).await.unwrap();
    let garbage = Payload {
        data: vec![
            0xff, 0x13, 0x37, 0, 1, 2, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
    };
    let e = raw.vote(garbage.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = raw.append_entries(garbage.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = raw.forward(garbage.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let chunk = SnapshotChunk {
        vote: garbage.data.clone(),
        meta: garbage.data.clone(),
        data: vec![1, 2, 3],
    };
    let e = raw
        .install_snapshot(tokio_stream::iter(vec![chunk]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = raw
        .install_snapshot(tokio_stream::iter(Vec::<SnapshotChunk>::new()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // The node is still up and in the cluster.
    cluster
        .client_of(2)
        .put_feature(feature("still-alive"), None, "")
        .await
        .unwrap();
    cluster.wait_converged(Duration::from_secs(20)).await;
}
