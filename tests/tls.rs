//! TLS on every listener and mutual TLS between members: the CLI, the SDK and OpenFeature's
//! Rust flagd provider over TLS; clients trusting another CA refused; the internal service
//! closed to anyone without a member's certificate (a forged vote deposes no one); a node with
//! a certificate from another CA kept out; a renewed certificate served without a restart.

mod support;

use std::time::Duration;

use support::{boolean_flag, eventually_some, feature, TestCluster};
use switchyard::client::ConnectOptions;
use switchyard::error::Error;
use switchyard::pb::raft::raft_client::RaftClient;
use switchyard::pb::raft::Payload;
use switchyard::sdk::{Sdk, SdkConfig};
use switchyard::tls::ClientTls;

fn other_ca(hosts: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    switchyard::tls::certs::create(dir.path(), &hosts, 1, &["admin".into()]).unwrap();
    dir
}

/// What a client trusting only the CA in `ca` connects with.
fn trusting(ca: std::path::PathBuf) -> ConnectOptions {
    ConnectOptions {
        tls: ClientTls {
            ca: Some(ca),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn host_of(addr: &str) -> &str {
    addr.split(':').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_the_sdk_and_the_flagd_provider_work_over_tls_between_mutually_authenticated_nodes() {
    let cluster = TestCluster::start_tls(3, &[]).await;
    let certs = cluster.certs.clone().unwrap();
    let client = cluster.client();
    client.put_feature(feature("secure"), None, "").await.unwrap();
    client
        .set_toggle("secure", &boolean_flag(true), None, "")
        .await
        .unwrap();
    // Every member applied it: replication runs over mutual TLS.
    cluster.wait_converged(Duration::from_secs(20)).await;

    // The CLI.
    let out = std::process::Command::new(support::binary())
        .args(["--endpoints", &cluster.endpoints().join(","), "--output", "json"])
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .args(["toggle", "get", "secure"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ENABLED"));

    // The SDK.
    let sdk = Sdk::start(
        &cluster.endpoints(),
        SdkConfig {
            connect: cluster.connect.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually_some(Duration::from_secs(10), "the SDK holds the toggle", || async {
        sdk.flag("secure")
    })
    .await;
    let r = client
        .set_toggle("secure", &boolean_flag(false), None, "")
        .await
        .unwrap();
    eventually_some(
        Duration::from_secs(10),
        "the SDK sees the change over TLS",
        || async { sdk.flag("secure").filter(|f| f.revision >= r.revision) },
    )
    .await;
    sdk.close().await;

    // OpenFeature's flagd provider, with TLS and the CA.
    use open_feature::provider::FeatureProvider;
    let addr = cluster.addr(1);
    let (host, port) = addr.split_once(':').unwrap();
    let provider = tokio::time::timeout(
        Duration::from_secs(20),
        open_feature_flagd::FlagdProvider::new(open_feature_flagd::FlagdOptions {
            host: host.into(),
            port: port.parse().unwrap(),
            tls: true,
            cert_path: Some(certs.join("ca.pem").to_string_lossy().into_owned()),
            resolver_type: open_feature_flagd::ResolverType::Rpc,
            deadline_ms: 2_000,
            ..Default::default()
        }),
    )
    .await
    .expect("the provider connects in time")
    .expect("the provider connects");
    client
        .set_toggle("secure", &boolean_flag(true), None, "")
        .await
        .unwrap();
    eventually_some(
        Duration::from_secs(10),
        "the provider resolves over TLS",
        || async {
            provider
                .resolve_bool_value("secure", &Default::default())
                .await
                .ok()
                .filter(|v| v.value)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trust_another_ca_or_speak_plain_text_are_refused() {
    let cluster = TestCluster::start_tls(1, &[]).await;
    let other = other_ca(&[host_of(&cluster.addr(1))]);
    let wrong = cluster.client_with(&trusting(other.path().join("ca.pem")));
    let e = wrong.list_features(false).await.expect_err("another CA");
    assert!(matches!(e, Error::Unavailable(_) | Error::Other { .. }), "{e:?}");
    let plain = cluster.client_with(&ConnectOptions::default());
    assert!(
        plain.list_features(false).await.is_err(),
        "plain text to a TLS port"
    );
    cluster.client().list_features(false).await.expect("the right CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_service_refuses_anyone_without_a_members_certificate() {
    let cluster = TestCluster::start_tls(3, &[]).await;
    let certs = cluster.certs.clone().unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let term = cluster.term_of(leader).await;
    let ca = tonic::transport::Certificate::from_pem(std::fs::read(certs.join("ca.pem")).unwrap());
    // A client with no certificate, and one with a client certificate (valid, but no member's).
    let identities = [
        None,
        Some(tonic::transport::Identity::from_pem(
            std::fs::read(certs.join("client-admin.pem")).unwrap(),
            std::fs::read(certs.join("client-admin-key.pem")).unwrap(),
        )),
    ];
    for identity in identities {
        let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(ca.clone());
        if let Some(i) = identity.clone() {
            tls = tls.identity(i);
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", cluster.addr(leader)))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut raft = RaftClient::new(channel);
        // Forged votes (their content does not matter: they never reach Raft).
        for _ in 0..3 {
            let status = raft
                .vote(Payload { data: vec![0xff; 51] })
                .await
                .expect_err("a forged vote");
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
            assert!(status.message().contains("internal service"));
            let status = raft
                .forward(Payload { data: vec![1, 2, 3] })
                .await
                .expect_err("a forged forward");
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
        }
    }
    assert_eq!(cluster.wait_leader(Duration::from_secs(5)).await, leader);
    assert_eq!(
        cluster.term_of(leader).await,
        term,
        "a forged vote changed the term"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let mut cluster = TestCluster::start_tls(3, &[]).await;
    let client = cluster.client();
    client.put_feature(feature("before"), None, "").await.unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let outsider = if leader == 3 { 2 } else { 3 };
    let other = other_ca(&[host_of(&cluster.addr(outsider)), "127.0.0.1"]);
    let file = |n: &str| other.path().join(n).to_string_lossy().into_owned();
    cluster.wipe_and_join_with(
        outsider,
        vec![
            "--tls-cert".into(),
            file("node-1.pem"),
            "--tls-key".into(),
            file("node-1-key.pem"),
            "--peer-ca".into(),
            file("ca.pem"),
        ],
    );
    // The cluster goes on with the other two and never gets through to the outsider.
    for i in 0..10 {
        client
            .put_feature(feature(&format!("after-{i}")), None, "")
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = client.status().await.unwrap();
    let m = status.members.iter().find(|m| m.id == outsider).unwrap();
    assert!(
        m.role == "unreachable" || m.applied_index == 0,
        "the outsider caught up: {m:?}"
    );
    assert!(cluster.log_text(outsider).contains("node started"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let cluster = TestCluster::start_tls(1, &[]).await;
    let certs = cluster.certs.clone().unwrap();
    let renewed = other_ca(&[host_of(&cluster.addr(1)), "127.0.0.1", "localhost"]);
    let trusting_new = cluster.client_with(&trusting(renewed.path().join("ca.pem")));
    assert!(trusting_new.list_features(false).await.is_err());
    // Replace the files in place, then ask for a reload (it would also be noticed within 5 s).
    std::fs::copy(renewed.path().join("node-1.pem"), certs.join("node-1.pem")).unwrap();
    std::fs::copy(
        renewed.path().join("node-1-key.pem"),
        certs.join("node-1-key.pem"),
    )
    .unwrap();
    cluster.signal(1, "-HUP");
    eventually_some(
        Duration::from_secs(15),
        "the new certificate is served",
        || async {
            cluster
                .client_with(&trusting(renewed.path().join("ca.pem")))
                .list_features(false)
                .await
                .ok()
        },
    )
    .await;
    assert!(cluster.log_text(1).contains("TLS certificate reloaded"));
    // A broken file leaves the served certificate alone.
    std::fs::write(certs.join("node-1.pem"), "garbage").unwrap();
    cluster.signal(1, "-HUP");
    support::eventually(Duration::from_secs(10), "the bad file is reported", || {
        cluster.log_text(1).contains("not reloaded")
    })
    .await;
    cluster
        .client_with(&trusting(renewed.path().join("ca.pem")))
        .list_features(false)
        .await
        .expect("still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_mapped_to_a_role_authenticates_without_a_token() {
    let cluster = TestCluster::start_tls(1, &[]).await;
    let certs = cluster.certs.clone().unwrap();
    let admin_token = cluster
        .client()
        .create_token("root", "admin", None)
        .await
        .unwrap()
        .secret;
    let admin = cluster.client_with(&ConnectOptions {
        token: Some(admin_token),
        ..cluster.connect.clone()
    });
    admin.map_certificate("ops", "release").await.unwrap();
    admin.set_auth_enabled(true).await.unwrap();
    let with_cert = |name: &str| {
        cluster.client_with(&ConnectOptions {
            tls: ClientTls {
                ca: Some(certs.join("ca.pem")),
                identity: Some((
                    certs.join(format!("client-{name}.pem")),
                    certs.join(format!("client-{name}-key.pem")),
                )),
                domain: None,
            },
            token: None,
        })
    };
    let ops = with_cert("ops");
    let me = ops.who_am_i().await.unwrap();
    assert_eq!((me.identity.as_str(), me.role.as_str()), ("cert:ops", "release"));
    ops.put_feature(feature("by-cert"), None, "").await.unwrap();
    let h = admin.history("by-cert").await.unwrap();
    assert!(
        h.entries[0].actor.starts_with("cert:ops"),
        "{}",
        h.entries[0].actor
    );
    // A certificate from the client CA with no role mapped is no credential.
    match with_cert("admin").list_features(false).await {
        Err(Error::Unauthenticated(m)) => assert!(m.contains("no role"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Nor is any certificate a way into the internal service (checked above for members).
}
