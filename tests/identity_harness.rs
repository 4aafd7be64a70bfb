//! The identity tests' harness, tested before the proxy is put in front of it (issue 15 item 6):
//! moto's server checks signatures after its set-up, botocore's default credential chain gets the
//! node user's key from fake-metadata, and STS on 192.0.2.10 is reachable from the node and from a
//! pod through the node. Root; needs the identity venv (`bash scripts/lib/identity-venv.sh`).
//!
//! Also prints the figures the benchmark goal needs: moto's start time and AssumeRole's latency.

use metaguard_tests::cni::Node;
use metaguard_tests::moto::{
    pod_client, sts_addr, IdentityCloud, IdentityOptions, ImdsMode, Moto, MotoOptions,
    NodeCredentials, PodClientOptions, StsAnswer, StsOp,
};
use metaguard_tests::netns::Netns;
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

const V: &str = "1.0.0";

fn identity(node: &Node, require_imdsv2: bool) -> IdentityCloud {
    IdentityCloud::attach(
        node,
        &IdentityOptions {
            require_imdsv2,
            ..IdentityOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn assume(id: &IdentityCloud, role: &str, session: &str, repeat: u32) -> StsOp {
    StsOp::AssumeRole {
        role_arn: id.moto.role_arn(role).expect("role set up").to_string(),
        session_name: session.into(),
        tags: vec![("namespace".into(), "team-a".into())],
        repeat,
    }
}

fn refused(a: &StsAnswer, code: &str) {
    assert!(!a.ok, "expected {code}, got success: {a:?}");
    assert_eq!(a.code.as_deref(), Some(code), "{a:?}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn moto_checks_signatures_after_setup_and_the_node_user_may_assume_the_roles() {
    let node = Node::new();
    let id = identity(&node, false);
    let moto = &id.moto;
    let good = moto.setup.node.clone();
    println!(
        "moto: started (spawn to accepting) in {:?}; set-up ({} calls) took {:?}",
        moto.started_in,
        3 + moto.setup.roles.len(),
        moto.setup_took
    );
    assert_eq!(good.access_key_id.len(), 20, "{good:?}");
    assert!(moto.setup.user_arn.ends_with(":user/metaguard-node"));

    // The attack on the harness: a wrong signature (right key, wrong secret) and an unknown key.
    // The wrong signature is moto's first request after set-up: had INITIAL_NO_AUTH_ACTION_COUNT
    // been one too high, it would pass unchecked here.
    let wrong_secret = NodeCredentials {
        secret_access_key: format!("{}x", good.secret_access_key),
        ..good.clone()
    };
    let unknown_key = NodeCredentials {
        access_key_id: "AKIAUNKNOWNKEY000000".into(),
        ..good.clone()
    };
    refused(
        &moto
            .sts_call(&node.ns, &wrong_secret, &StsOp::CallerIdentity)
            .unwrap(),
        "SignatureDoesNotMatch",
    );
    refused(
        &moto
            .sts_call(
                &node.ns,
                &wrong_secret,
                &assume(&id, "pod-role-a", "probe", 1),
            )
            .unwrap(),
        "SignatureDoesNotMatch",
    );
    refused(
        &moto
            .sts_call(
                &node.ns,
                &unknown_key,
                &assume(&id, "pod-role-a", "probe", 1),
            )
            .unwrap(),
        "InvalidClientTokenId",
    );
    // Control: the node user's own signature passes, from the node (where the proxy runs).
    let me = moto
        .sts_call(&node.ns, &good, &StsOp::CallerIdentity)
        .unwrap();
    assert!(me.ok, "{me:?}\n{}", moto.log());
    assert_eq!(me.arn.as_deref(), Some(moto.setup.user_arn.as_str()));
    assert_eq!(me.account.as_deref(), Some(moto.setup.account_id.as_str()));

    // A user key sent with an X-Amz-Security-Token (a client that forwards IMDS's empty or a
    // stale token as a header) is refused: the node user's key has no session token.
    let with_token = NodeCredentials {
        token: Some("bogus".into()),
        ..good.clone()
    };
    refused(
        &moto
            .sts_call(&node.ns, &with_token, &StsOp::CallerIdentity)
            .unwrap(),
        "InvalidClientTokenId",
    );

    // The node user assumes each role, with a session tag; 100 calls on one client for the figure.
    let a = moto
        .sts_call(
            &node.ns,
            &good,
            &assume(&id, "pod-role-a", "team-a.web-0", 100),
        )
        .unwrap();
    assert!(a.ok, "{a:?}\n{}", moto.log());
    let arn = format!(
        "arn:aws:sts::{}:assumed-role/pod-role-a/team-a.web-0",
        moto.setup.account_id
    );
    assert_eq!(a.arn.as_deref(), Some(arn.as_str()));
    let mut lat = a.latencies_ms.clone();
    assert_eq!(lat.len(), 100);
    let first = lat[0];
    lat.sort_by(f64::total_cmp);
    println!(
        "AssumeRole from the node ns (botocore, one client, 100 calls): first {first:.1} ms, \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    let b = moto
        .sts_call(
            &node.ns,
            &good,
            &assume(&id, "pod-role-b", "team-b.api-0", 1),
        )
        .unwrap();
    assert!(
        b.ok && b
            .arn
            .as_deref()
            .is_some_and(|a| a.contains(":assumed-role/pod-role-b/")),
        "{b:?}"
    );

    // The role's credentials are checked too: with their token they are the assumed role...
    let role_creds = NodeCredentials {
        access_key_id: a.access_key_id.clone().expect("key"),
        secret_access_key: a.secret_access_key.clone().expect("secret"),
        token: a.session_token.clone(),
        expiration: a.expiration.clone().unwrap_or_default(),
    };
    let who = moto
        .sts_call(&node.ns, &role_creds, &StsOp::CallerIdentity)
        .unwrap();
    assert_eq!(who.arn.as_deref(), Some(arn.as_str()), "{who:?}");
    // ...and with another token, or a wrong secret, they are refused.
    for (bad, code) in [
        (
            NodeCredentials {
                token: Some("not-the-session-token".into()),
                ..role_creds.clone()
            },
            "InvalidClientTokenId",
        ),
        (
            NodeCredentials {
                secret_access_key: "wrong".into(),
                ..role_creds.clone()
            },
            "SignatureDoesNotMatch",
        ),
    ] {
        let r = moto
            .sts_call(&node.ns, &bad, &StsOp::CallerIdentity)
            .unwrap();
        refused(&r, code);
    }
    // A pod role's credentials cannot assume a role: the trust policies name the node user only.
    let chained = moto
        .sts_call(
            &node.ns,
            &role_creds,
            &assume(&id, "pod-role-b", "chained", 1),
        )
        .unwrap();
    refused(&chained, "AccessDenied");
}

#[test]
fn botocore_default_chain_gets_the_node_user_from_fake_metadata() {
    let node = Node::new();
    let id = identity(&node, false);
    let cloud_ns = &id.cloud.ns;
    let node_key = &id.moto.setup.node.access_key_id;
    // In the cloud namespace 169.254.169.254 is fake-metadata itself: no proxy involved.
    for (ipv6, imds) in [
        (false, ImdsMode::V2),
        (false, ImdsMode::V2Only),
        (true, ImdsMode::V2),
        (false, ImdsMode::V1Only),
    ] {
        let r = pod_client(
            cloud_ns,
            &PodClientOptions {
                ipv6,
                imds,
                ..PodClientOptions::default()
            },
        )
        .unwrap();
        let what = format!("ipv6={ipv6} {imds:?}: {r:?}");
        assert!(r.error.is_none(), "{what}\n{}", id.moto.log());
        assert_eq!(r.method.as_deref(), Some("iam-role"), "{what}");
        assert_eq!(r.access_key_id.as_ref(), Some(node_key), "{what}");
        assert!(!r.token_present, "{what}");
        assert_eq!(r.imds_token, imds != ImdsMode::V1Only, "{what}");
        assert_eq!(
            r.arn.as_deref(),
            Some(id.moto.setup.user_arn.as_str()),
            "{what}"
        );
        println!(
            "pod_client in the cloud ns ({}, {imds:?}): credentials {:.1} ms, get_caller_identity {:.1} ms",
            if ipv6 { "IPv6" } else { "IPv4" },
            r.credentials_ms,
            r.sts_ms.unwrap_or(f64::NAN)
        );
    }
    // fake-metadata saw the token PUTs and the credential GETs, over both families.
    let reqs = id.cloud.fake.requests();
    assert!(reqs
        .iter()
        .any(|r| r.method == "PUT" && r.path() == "/latest/api/token"));
    assert!(reqs
        .iter()
        .any(|r| r.local.starts_with("[fd00:ec2::254]")
            && r.path().contains("security-credentials/")));

    // Rotation: the file is read per request, so the next client gets the new key, which moto
    // refuses (a wrong secret for the node user: the harness shows a bad key, never hides it).
    id.set_node_credentials(&NodeCredentials {
        secret_access_key: "rotated-to-a-wrong-secret".into(),
        ..id.moto.setup.node.clone()
    })
    .unwrap();
    let r = pod_client(cloud_ns, &PodClientOptions::default()).unwrap();
    assert_eq!(r.access_key_id.as_ref(), Some(node_key), "{r:?}");
    let e = r.error.expect("refused");
    assert_eq!(
        (e.stage.as_str(), e.code.as_deref()),
        ("sts", Some("SignatureDoesNotMatch"))
    );
}

#[test]
fn require_imdsv2_refuses_v1_clients_and_serves_v2_ones() {
    let node = Node::new();
    let id = identity(&node, true);
    let v2 = pod_client(&id.cloud.ns, &PodClientOptions::default()).unwrap();
    assert!(v2.imds_token && v2.error.is_none(), "{v2:?}");
    assert_eq!(v2.arn.as_deref(), Some(id.moto.setup.user_arn.as_str()));
    // An IMDSv1-only client gets no credentials, and says so on its line (exit 0).
    let v1 = pod_client(
        &id.cloud.ns,
        &PodClientOptions {
            imds: ImdsMode::V1Only,
            ..PodClientOptions::default()
        },
    )
    .unwrap();
    assert!(v1.access_key_id.is_none() && v1.method.is_none(), "{v1:?}");
    assert_eq!(
        v1.error.as_ref().map(|e| e.stage.as_str()),
        Some("credentials"),
        "{v1:?}"
    );
    assert!(id
        .cloud
        .fake
        .requests()
        .iter()
        .any(|r| !r.has_header("X-aws-ec2-metadata-token")
            && r.method == "GET"
            && r.path().starts_with("/latest/meta-data/iam/")));
}

#[test]
fn pods_reach_sts_through_the_node() {
    let node = Node::new();
    let id = identity(&node, false);
    // A pod attached by bridge only: no metaguard, so its metadata requests go straight to the
    // fake (the control every guarantee is measured against) and it gets the node user's key,
    // which moto, reached through the node, accepts.
    let bare = node.bridge_pod(V);
    let r = pod_client(&bare.ns, &PodClientOptions::default()).unwrap();
    assert!(r.error.is_none(), "{r:?}\n{}", id.moto.log());
    assert_eq!(r.arn.as_deref(), Some(id.moto.setup.user_arn.as_str()));
    let peer = bare.ip(false).to_string();
    assert!(
        id.cloud
            .fake
            .requests()
            .iter()
            .any(|q| q.peer_ip().map(|i| i.to_string()) == Some(peer.clone())),
        "fake-metadata saw the pod's own address (no NAT on the way)"
    );
    // A pod with metaguard (no proxy running): STS is still reachable, only the metadata
    // addresses are redirected.
    let guarded = node.pod(V);
    guarded
        .ns
        .tcp_connect(None, sts_addr(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("guarded pod cannot reach moto at {}: {e}", sts_addr()));
}

/// The control for the signature checks above: the same wrong signature passes when moto runs
/// without INITIAL_NO_AUTH_ACTION_COUNT (its default), so those checks can fail.
#[test]
fn control_without_the_auth_count_moto_accepts_a_wrong_signature() {
    let ns = Netns::new("motoctl");
    let opts = MotoOptions {
        roles: vec!["pod-role-a".into()],
        node_ttl: Duration::from_secs(3600),
        auth: false,
        ..MotoOptions::default()
    };
    let moto = Moto::start(&ns, "127.0.0.1:5000".parse().unwrap(), &opts)
        .unwrap_or_else(|e| panic!("{e}"));
    let wrong = NodeCredentials {
        secret_access_key: "wrong".into(),
        ..moto.setup.node.clone()
    };
    let a = moto.sts_call(&ns, &wrong, &StsOp::CallerIdentity).unwrap();
    assert!(a.ok, "{a:?}");
}

/// The EC2-like variant: the node's credentials are a session of the node role, with a token.
/// botocore gets them from fake-metadata; the session assumes a pod role; the same call with the
/// token left out, or another token, is refused (a proxy must sign with the node's token).
#[test]
fn node_role_session_with_a_token_is_served_and_may_assume_the_pod_roles() {
    let node = Node::new();
    let id = IdentityCloud::attach(
        &node,
        &IdentityOptions {
            moto: MotoOptions {
                node_session: true,
                ..MotoOptions::default()
            },
            ..IdentityOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let setup = &id.moto.setup;
    let session = setup.node_session.as_ref().expect("node session");
    assert!(
        session
            .arn
            .ends_with(":assumed-role/metaguard-node-role/i-0fa4e5c0ffee00001"),
        "{session:?}"
    );
    let served = setup.served();
    assert!(served.token.as_deref().is_some_and(|t| !t.is_empty()));

    let r = pod_client(&id.cloud.ns, &PodClientOptions::default()).unwrap();
    assert!(r.error.is_none(), "{r:?}\n{}", id.moto.log());
    assert!(r.token_present, "{r:?}");
    assert_eq!(r.access_key_id.as_ref(), Some(&served.access_key_id));
    assert_eq!(r.arn.as_deref(), Some(setup.served_arn()));

    // The session may assume a pod role (from the node namespace, where the proxy runs)...
    let a = id
        .moto
        .sts_call(
            &node.ns,
            served,
            &assume(&id, "pod-role-a", "team-a.web-0", 1),
        )
        .unwrap();
    assert!(
        a.ok && a
            .arn
            .as_deref()
            .is_some_and(|x| x.ends_with(":assumed-role/pod-role-a/team-a.web-0")),
        "{a:?}"
    );
    // ...only with its own token.
    for token in [None, Some("another-token".to_string())] {
        let bad = NodeCredentials {
            token,
            ..served.clone()
        };
        let r = id
            .moto
            .sts_call(
                &node.ns,
                &bad,
                &assume(&id, "pod-role-a", "team-a.web-0", 1),
            )
            .unwrap();
        refused(&r, "InvalidClientTokenId");
    }
}

/// What the "STS slow" and "STS stopped" tests need: a paused moto accepts but does not answer
/// until resumed; a stopped one refuses connections.
#[test]
fn moto_can_be_paused_resumed_and_stopped() {
    let node = Node::new();
    let mut id = identity(&node, false);
    let creds = id.moto.setup.served().clone();
    id.moto.pause().unwrap();
    let mut conn = node
        .ns
        .tcp_connect(None, sts_addr(), Duration::from_secs(2))
        .expect("the kernel still accepts");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: sts\r\nConnection: close\r\n\r\n")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    let e = conn.read(&mut buf).expect_err("no answer while paused");
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
    id.moto.resume().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = conn.read(&mut buf).expect("answered once resumed");
    assert!(buf[..n].starts_with(b"HTTP/1."), "{:?}", &buf[..n]);
    let a = id
        .moto
        .sts_call(&node.ns, &creds, &StsOp::CallerIdentity)
        .unwrap();
    assert!(a.ok, "{a:?}");

    id.moto.stop();
    let e = node
        .ns
        .tcp_connect(None, sts_addr(), Duration::from_secs(2))
        .expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
}
