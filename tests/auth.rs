//! Authentication and roles: every role against every operation, the identity recorded in
//! history, leases and sessions owned by their identity, bad credentials, per-caller limits.
//! Each denial is checked to change nothing (same revision and digest).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use support::{boolean_flag, feature, single_node, SingleNode};
use switchyard::client::{Client, ConnectOptions};
use switchyard::error::Error;
use switchyard::pb::v1 as pb;

fn as_token(node: &SingleNode, token: Option<&str>) -> Client {
    Client::connect(
        &[node.addr()],
        &ConnectOptions {
            token: token.map(str::to_string),
            ..Default::default()
        },
    )
    .expect("client")
}

async fn token(admin: &Client, name: &str, role: &str) -> String {
    admin
        .create_token(name, role, None)
        .await
        .expect("create token")
        .secret
}

/// The revision and state digest of the node: a denied call must leave both alone.
async fn fingerprint(admin: &Client) -> (u64, String) {
    let s = admin.status().await.expect("status");
    let m = &s.members[0];
    (m.revision, m.digest.clone())
}

fn instance(id: &str, service: &str) -> pb::Instance {
    pb::Instance {
        id: id.into(),
        service: service.into(),
        version: "1.0.0".into(),
        ..Default::default()
    }
}

/// An operation: run by a client, with a number making its names unique and a lease the
/// client holds (where its role may hold one).
type Op = for<'a> fn(&'a Client, usize, u64) -> BoxFuture<'a, Result<(), Error>>;

fn ok<T>(r: Result<T, Error>) -> Result<(), Error> {
    r.map(|_| ())
}

/// Every operation, and the roles that may do it.
fn operations() -> Vec<(&'static str, &'static [&'static str], Op)> {
    const ALL: &[&str] = &["admin", "release", "read", "service:cart", "service:other"];
    const READERS: &[&str] = &["admin", "release", "read"];
    const RELEASE: &[&str] = &["admin", "release"];
    const ADMIN: &[&str] = &["admin"];
    vec![
        ("feature put", RELEASE, |c, i, _| {
            Box::pin(async move { ok(c.put_feature(feature(&format!("p{i}")), None, "").await) })
        }),
        ("feature get", ALL, |c, _, _| {
            Box::pin(async move { ok(c.get_feature("f", false).await) })
        }),
        ("feature list", ALL, |c, _, _| {
            Box::pin(async move { ok(c.list_features(false).await) })
        }),
        ("feature delete", RELEASE, |c, i, _| {
            Box::pin(async move {
                // Made by whoever may, so there is something to delete.
                let _ = c.put_feature(feature(&format!("d{i}")), None, "").await;
                ok(c.delete_feature(&format!("d{i}"), None, "").await)
            })
        }),
        ("toggle set", RELEASE, |c, _, _| {
            Box::pin(async move { ok(c.set_toggle("f", &boolean_flag(false), None, "").await) })
        }),
        ("toggle on", RELEASE, |c, _, _| {
            Box::pin(async move { ok(c.set_toggle_state("f", true, None, "").await) })
        }),
        ("toggle off", RELEASE, |c, _, _| {
            Box::pin(async move { ok(c.set_toggle_state("f", false, None, "").await) })
        }),
        ("rollback", RELEASE, |c, _, _| {
            Box::pin(async move { ok(c.rollback("f", None, None, "").await) })
        }),
        ("cancel", RELEASE, |c, _, _| {
            Box::pin(async move { ok(c.cancel_activation("f", "").await) })
        }),
        ("toggle get", ALL, |c, _, _| {
            Box::pin(async move { ok(c.get_toggle("f", false).await) })
        }),
        ("toggle list", ALL, |c, _, _| {
            Box::pin(async move { ok(c.list_toggles(false).await) })
        }),
        ("history", READERS, |c, _, _| {
            Box::pin(async move { ok(c.history("f").await) })
        }),
        ("readiness", READERS, |c, _, _| {
            Box::pin(async move { ok(c.readiness("f", true).await) })
        }),
        ("pending", READERS, |c, _, _| {
            Box::pin(async move { ok(c.list_pending(false).await) })
        }),
        ("rollout status", READERS, |c, _, _| {
            Box::pin(async move { ok(c.rollout_status("f").await) })
        }),
        ("instances", READERS, |c, _, _| {
            Box::pin(async move { ok(c.list_instances("", HashMap::new()).await) })
        }),
        (
            "lease grant",
            &["admin", "service:cart", "service:other"],
            |c, _, _| Box::pin(async move { ok(c.grant_lease(Duration::from_secs(30)).await) }),
        ),
        ("register cart", &["admin", "service:cart"], |c, i, lease| {
            Box::pin(async move { ok(c.register(instance(&format!("cart-{i}"), "cart"), lease).await) })
        }),
        ("watch", ALL, |c, _, _| {
            Box::pin(async move {
                let mut s = c.watch(pb::WatchRequest::default()).await?;
                match tokio::time::timeout(Duration::from_secs(5), s.message()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(status)) => Err(Error::from_status(&status)),
                    Err(_) => Err(Error::Timeout("no first watch message".into())),
                }
            })
        }),
        ("status", ALL, |c, _, _| {
            Box::pin(async move { ok(c.status().await) })
        }),
        ("members", ALL, |c, _, _| {
            Box::pin(async move { ok(c.members().await) })
        }),
        ("member remove", ADMIN, |c, _, _| {
            Box::pin(async move { ok(c.remove_member(99).await) })
        }),
        ("token create", ADMIN, |c, i, _| {
            Box::pin(async move { ok(c.create_token(&format!("t{i}"), "read", None).await) })
        }),
        ("token list", ADMIN, |c, _, _| {
            Box::pin(async move { ok(c.list_tokens().await) })
        }),
        ("certificate map", ADMIN, |c, i, _| {
            Box::pin(async move { ok(c.map_certificate(&format!("c{i}"), "read").await) })
        }),
        ("auth disable", ADMIN, |c, _, _| {
            Box::pin(async move {
                // Turned straight back on, so the table goes on under enforcement.
                c.set_auth_enabled(false).await?;
                ok(c.set_auth_enabled(true).await)
            })
        }),
        ("whoami", ALL, |c, _, _| {
            Box::pin(async move { ok(c.who_am_i().await) })
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_operation() {
    let node = single_node(|_| {}).await;
    let open = as_token(&node, None);
    let admin_secret = token(&open, "root", "admin").await;
    let admin = as_token(&node, Some(&admin_secret));
    let mut clients = vec![("admin", admin_secret)];
    for role in ["release", "read", "service:cart", "service:other"] {
        clients.push((role, token(&admin, &format!("as-{role}"), role).await));
    }
    admin.put_feature(feature("f"), None, "").await.expect("feature");
    admin
        .set_toggle("f", &boolean_flag(true), None, "")
        .await
        .expect("toggle");
    admin
        .set_toggle("f", &boolean_flag(false), None, "")
        .await
        .expect("toggle");
    admin.set_auth_enabled(true).await.expect("auth on");

    // A lease of each client's own, where its role may hold one.
    let mut leases = Vec::new();
    let admin_lease = admin
        .grant_lease(Duration::from_secs(600))
        .await
        .unwrap()
        .lease_id;
    for (_, secret) in &clients {
        let own = as_token(&node, Some(secret))
            .grant_lease(Duration::from_secs(600))
            .await;
        leases.push(own.map_or(admin_lease, |l| l.lease_id));
    }

    let mut checked = 0;
    for (i, (name, allowed, op)) in operations().into_iter().enumerate() {
        // Without a credential: refused as unauthenticated, whatever the operation.
        let before = fingerprint(&admin).await;
        let e = op(&open, i, admin_lease).await.expect_err(name);
        assert!(
            matches!(e, Error::Unauthenticated(_)),
            "{name} without a token: {e:?}"
        );
        assert_eq!(
            fingerprint(&admin).await,
            before,
            "{name} without a token changed the state"
        );
        for (j, (role, secret)) in clients.iter().enumerate() {
            let client = as_token(&node, Some(secret));
            let before = fingerprint(&admin).await;
            let result = op(&client, i * 10 + j, leases[j]).await;
            if allowed.contains(role) {
                if let Err(e) = &result {
                    assert!(
                        !matches!(e, Error::PermissionDenied(_) | Error::Unauthenticated(_)),
                        "{role} may {name}, yet: {e}"
                    );
                }
            } else {
                let e = result.expect_err(&format!("{role} may not {name}"));
                assert!(matches!(e, Error::PermissionDenied(_)), "{role} {name}: {e:?}");
                assert_eq!(
                    fingerprint(&admin).await,
                    before,
                    "{role} was refused {name}, yet the state changed"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 25 * 5, "{checked} checks");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_unauthenticated_and_say_why() {
    let node = single_node(|_| {}).await;
    let open = as_token(&node, None);
    let admin_secret = token(&open, "root", "admin").await;
    let admin = as_token(&node, Some(&admin_secret));
    let revoked = admin.create_token("gone", "read", None).await.unwrap();
    admin.revoke_token(&revoked.token.unwrap().id).await.unwrap();
    let expiring = token(&admin, "brief", "read").await;
    let short = admin
        .create_token("short", "read", Some(Duration::from_secs(1)))
        .await
        .unwrap()
        .secret;
    admin.set_auth_enabled(true).await.unwrap();
    let mut wrong_secret = expiring.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == '0' { '1' } else { '0' });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let unknown = "syt_000000000000_".to_string() + &"0".repeat(64);
    for (token, says) in [
        (None, "requires authentication"),
        (Some("not-a-token"), "malformed"),
        (Some(unknown.as_str()), "not known"),
        (Some(revoked.secret.as_str()), "revoked"),
        (Some(wrong_secret.as_str()), "wrong secret"),
        (Some(short.as_str()), "expired"),
    ] {
        let before = fingerprint(&admin).await;
        let e = as_token(&node, token)
            .put_feature(feature("x"), None, "")
            .await
            .expect_err("refused");
        match &e {
            Error::Unauthenticated(m) => assert!(m.contains(says), "{token:?}: {m}"),
            other => panic!("{token:?}: {other:?}"),
        }
        if let Some(t) = token {
            assert!(!e.to_string().contains(t), "the error echoes the token");
        }
        assert_eq!(fingerprint(&admin).await, before);
    }
    // The good one still works, and the last admin cannot be revoked while auth is on.
    as_token(&node, Some(&expiring))
        .list_features(false)
        .await
        .unwrap();
    let me = admin.list_tokens().await.unwrap();
    let root = me.tokens.iter().find(|t| t.name == "root").unwrap();
    assert!(matches!(
        admin.revoke_token(&root.id).await,
        Err(Error::FailedPrecondition(_))
    ));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_records_the_token_holder_whatever_the_actor_says() {
    let node = single_node(|_| {}).await;
    let open = as_token(&node, None);
    let admin = as_token(&node, Some(&token(&open, "root", "admin").await));
    let release = token(&admin, "deploy-bot", "release").await;
    admin.set_auth_enabled(true).await.unwrap();
    let c = as_token(&node, Some(&release)).with_actor("the-ceo");
    c.put_feature(feature("h"), None, "because").await.unwrap();
    c.set_toggle("h", &boolean_flag(true), None, "go").await.unwrap();
    let h = admin.history("h").await.unwrap();
    assert!(!h.entries.is_empty());
    for e in &h.entries {
        assert_eq!(e.actor, "token:deploy-bot (as the-ceo)");
        assert!(!e.actor.contains("syt_"));
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_instances_belong_to_the_identity_that_granted_them() {
    let node = single_node(|_| {}).await;
    let open = as_token(&node, None);
    let admin = as_token(&node, Some(&token(&open, "root", "admin").await));
    let a = as_token(&node, Some(&token(&admin, "cart-a", "service:cart").await));
    let b = as_token(&node, Some(&token(&admin, "cart-b", "service:cart").await));
    admin.set_auth_enabled(true).await.unwrap();

    let lease = a.grant_lease(Duration::from_secs(30)).await.unwrap().lease_id;
    let other = a.grant_lease(Duration::from_secs(30)).await.unwrap().lease_id;
    // Not sequential: nobody guesses the next one.
    assert!(lease.abs_diff(other) > 1_000, "{lease} and {other}");
    a.register(instance("cart-1", "cart"), lease).await.unwrap();

    let before = fingerprint(&admin).await;
    let denied = |r: Result<(), Error>, what: &str| match r {
        Err(Error::PermissionDenied(_)) => {}
        other => panic!("{what}: {other:?}"),
    };
    denied(ok(b.revoke_lease(lease).await), "revoke another's lease");
    denied(
        ok(b.register(instance("cart-2", "cart"), lease).await),
        "register under another's lease",
    );
    denied(ok(b.deregister("cart-1").await), "deregister another's instance");
    denied(ok(b.keep_alive_once(lease).await), "keep another's lease alive");
    denied(
        ok(a.register(instance("pay-1", "payment"), lease).await),
        "register another service",
    );
    assert_eq!(fingerprint(&admin).await, before);

    a.keep_alive_once(lease).await.unwrap();
    a.deregister("cart-1").await.unwrap();
    // An admin may act on anyone's.
    admin.revoke_lease(lease).await.unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_replay_or_shadow_another_session() {
    let node = single_node(|_| {}).await;
    let open = as_token(&node, None);
    let admin = as_token(&node, Some(&token(&open, "root", "admin").await));
    let a = token(&admin, "a", "release").await;
    let b = token(&admin, "b", "release").await;
    admin.set_auth_enabled(true).await.unwrap();
    let addr = node.addr();
    let put = |secret: String, name: &'static str| {
        let addr = addr.clone();
        async move {
            let channel = switchyard::client::Conn::new(
                &addr,
                &ConnectOptions {
                    token: Some(secret),
                    ..Default::default()
                },
            )
            .unwrap();
            pb::catalog_client::CatalogClient::new(channel)
                .put_feature(pb::PutFeatureRequest {
                    feature: Some(feature(name)),
                    expected_revision: None,
                    write: Some(pb::WriteOptions {
                        client_id: "shared-session".into(),
                        request_id: 1,
                        ..Default::default()
                    }),
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = put(a.clone(), "from-a").await.unwrap();
    // The same (client id, request id) from b is b's own first write, not a's stored answer.
    let second = put(b, "from-b").await.unwrap();
    assert_eq!(second.feature.unwrap().name, "from-b");
    assert!(second.revision > first.revision);
    assert!(admin.get_feature("from-b", false).await.is_ok());
    // While a's own retry gets its stored answer.
    let again = put(a, "from-a").await.unwrap();
    assert_eq!(again.revision, first.revision);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_limits_gets_resource_exhausted_and_others_go_on() {
    let node = single_node(|c| {
        c.limits.requests_per_second = 20;
        c.limits.open_watches = 2;
    })
    .await;
    let open = as_token(&node, None);
    let admin = as_token(&node, Some(&token(&open, "root", "admin").await));
    let noisy = as_token(&node, Some(&token(&admin, "noisy", "read").await));
    let calm = as_token(&node, Some(&token(&admin, "calm", "read").await));
    admin.set_auth_enabled(true).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut refused = None;
    for _ in 0..100 {
        if let Err(e) = noisy.list_features(false).await {
            refused = Some(e);
            break;
        }
    }
    match refused {
        Some(Error::ResourceExhausted(m)) => assert!(m.contains("retry in"), "{m}"),
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    calm.list_features(false)
        .await
        .expect("another caller is not affected");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let w1 = noisy
        .watch(pb::WatchRequest::default())
        .await
        .expect("first watch");
    let w2 = noisy
        .watch(pb::WatchRequest::default())
        .await
        .expect("second watch");
    match noisy.watch(pb::WatchRequest::default()).await {
        Err(Error::ResourceExhausted(m)) => assert!(m.contains("open watches"), "{m}"),
        other => panic!("a third watch: {:?}", other.map(|_| ())),
    }
    let _calm_watch = calm
        .watch(pb::WatchRequest::default())
        .await
        .expect("another caller watches");
    // Closing one frees its place.
    drop(w1);
    support::eventually_some(
        Duration::from_secs(5),
        "a watch closed frees its place",
        || async { noisy.watch(pb::WatchRequest::default()).await.ok() },
    )
    .await;
    drop(w2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_reader_once_auth_is_on_and_never_show_secrets() {
    let node = single_node(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics = node.node.metrics_addr.unwrap().to_string();
    let open = as_token(&node, None);
    let admin_secret = token(&open, "root", "admin").await;
    let admin = as_token(&node, Some(&admin_secret));
    let reader = token(&admin, "prometheus", "read").await;
    let service = token(&admin, "svc", "service:cart").await;
    admin.set_auth_enabled(true).await.unwrap();
    // A refused call, so the refusal counter has something to show.
    let _ = open.list_features(false).await;
    let get = |token: Option<String>| {
        let addr = metrics.clone();
        async move { support::http_get(&addr, "/metrics", token.as_deref()).await }
    };
    assert_eq!(get(None).await.0, 401);
    assert_eq!(get(Some(service)).await.0, 403);
    let (code, text) = get(Some(reader.clone())).await;
    assert_eq!(code, 200);
    assert!(text.contains("switchyard_calls_refused"), "{text}");
    for secret in [&admin_secret, &reader] {
        let (_, hex_part) = secret.rsplit_once('_').unwrap();
        assert!(!text.contains(hex_part));
    }
    node.shutdown().await;
}
