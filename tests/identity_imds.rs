//! Per-pod IMDSv2 end to end (root; issue 15 item 1): pods attached by Debian's bridge and the
//! real metaguard plugin, metaguard-proxy with `[aws]` enabled in the node namespace,
//! fake-metadata in a "cloud" namespace recording every request.
//!
//! Each attack with its control (the same attack with `[aws]` off, where the proxy forwards the
//! token request and the real service's instance-wide token comes back):
//! - pod B presents pod A's token: 401 (control: 200, the token is good for every pod);
//! - a container nested behind the pod (routed and masqueraded by it) asks for a token under
//!   `token_hop_limit = 1`: no answer reaches it, while the pod itself gets one (control: without
//!   the hop limit the nested container gets a token);
//! - IMDSv1 under `require_imdsv2`: 401 (control: the same policy without it answers).
//!
//! Plus what the real service does with TTLs, forwarding headers and expired tokens, and that the
//! pod's token never goes upstream: the node's own does.
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test identity_imds`.

use metaguard_tests::cni::{Node, Pod};
use metaguard_tests::fake::INSTANCE_ID;
use metaguard_tests::netns::{wait_for_value, Netns, IP};
use metaguard_tests::proxy::{imds, request, request_within, Cloud, Proxy, ProxyOptions};
use serde_json::Value;
use std::time::Duration;

const V: &str = "1.0.0";
const TOKEN: &str = "X-aws-ec2-metadata-token";
const TTL: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const INSTANCE_PATH: &str = "/latest/meta-data/instance-id";

const AWS_ON: &str = "[aws]\nenabled = true\n";

/// Every pod gets the aws preset, except `strict` pods (require_imdsv2, token_hop_limit 1) and
/// `hop` pods (token_hop_limit 1).
const POLICY: &str = r#"
default = "aws"

[[selector]]
namespace = "strict"
policy = "strict"

[[selector]]
namespace = "hop"
policy = "hop"

[[policy]]
name = "strict"
fallback = "aws"
require_imdsv2 = true

[[policy]]
name = "hop"
fallback = "aws"
token_hop_limit = 1
"#;

fn start(node: &Node, config: &str) -> Proxy {
    let p = Proxy::start(
        ProxyOptions::new(node.ns.name(), &node.state_dir())
            .policy(POLICY)
            .config(config),
    );
    p.wait_ready();
    p
}

/// `PUT /latest/api/token` from the pod; (status, body).
fn put_token(pod: &Netns, v6: bool, ttl: Option<&str>, extra: &[(&str, &str)]) -> (u16, String) {
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(t) = ttl {
        headers.push((TTL, t));
    }
    let ex = request(pod.path(), imds(v6), "PUT", "/latest/api/token", &headers);
    match ex.responses.first() {
        Some(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        None => (0, ex.summary()),
    }
}

fn get(pod: &Netns, v6: bool, path: &str, token: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = token.map(|t| vec![(TOKEN, t)]).unwrap_or_default();
    let ex = request(pod.path(), imds(v6), "GET", path, &headers);
    match ex.responses.first() {
        Some(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        None => (0, ex.summary()),
    }
}

/// Whether a request the service recorded came from the node (the proxy), by its source.
fn from_node(peer: &str) -> bool {
    peer.starts_with("169.254.169.1:") || peer.starts_with("[fd00:ec2::1]:")
}

fn lines_from(proxy: &Proxy, pod: &Pod<'_>, v6: bool) -> Vec<Value> {
    let ip = pod.ip(v6).to_string();
    proxy
        .decisions()
        .into_iter()
        .filter(|d| d["src"] == ip.as_str())
        .collect()
}

#[test]
fn a_token_is_bound_to_its_pod_and_the_node_token_goes_upstream() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, AWS_ON);
    let a = node.k8s_pod(V, "team-a", "a", &[]);
    let b = node.k8s_pod(V, "team-b", "b", &[]);

    let mut a_tokens = Vec::new();
    for v6 in [false, true] {
        let (st, token_a) = put_token(&a.ns, v6, Some("60"), &[]);
        a_tokens.push(token_a.clone());
        assert_eq!(st, 200, "{token_a}");
        assert!(!token_a.is_empty() && !token_a.contains('\n'));
        assert_eq!(
            get(&a.ns, v6, INSTANCE_PATH, Some(&token_a)),
            (200, INSTANCE_ID.to_string())
        );
        // The attack: pod B replays pod A's token.
        let (st, body) = get(&b.ns, v6, INSTANCE_PATH, Some(&token_a));
        assert_eq!(st, 401, "{body}");
        assert!(body.contains("another pod"), "{body}");
    }
    let b_src = b.ip(false).to_string();
    let recorded = cloud.fake.requests();
    // Token requests were answered by the proxy: the only PUTs the service saw are the proxy's
    // own (from the node's address), never a pod's.
    let puts: Vec<_> = recorded.iter().filter(|r| r.method == "PUT").collect();
    assert!(puts.iter().all(|r| from_node(&r.peer)), "{puts:?}");
    let gets: Vec<_> = recorded
        .iter()
        .filter(|r| r.target == INSTANCE_PATH)
        .collect();
    assert_eq!(
        gets.len(),
        2,
        "pod A's two GETs, nothing of pod B's: {gets:?}"
    );
    for g in &gets {
        let sent: Vec<&str> = g
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(TOKEN))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(sent.len(), 1, "the node's token, once: {g:?}");
        // One the service itself issued (to the proxy), never one of the pod's.
        assert!(sent[0].starts_with("AQAEAFAKEIMDSTOKEN"), "{g:?}");
        assert!(
            !a_tokens.iter().any(|t| t == sent[0]),
            "never a pod's token"
        );
    }
    assert!(!recorded.iter().any(|r| r.peer.starts_with(&b_src)));
    let lines = lines_from(&proxy, &b, false);
    let refused = lines
        .iter()
        .find(|d| d["status"] == 401)
        .expect("B's refusal logged");
    assert_eq!(refused["rule"], "imdsv2-token-refused");
    assert_eq!(refused["imds_version"], "v2");
    let a_lines = lines_from(&proxy, &a, false);
    assert!(a_lines
        .iter()
        .any(|d| d["path"] == INSTANCE_PATH && d["imds_version"] == "v2" && d["status"] == 200));
}

#[test]
fn control_without_aws_a_token_works_for_every_pod() {
    let node = Node::new();
    let _cloud = Cloud::attach(&node.ns);
    let _proxy = start(&node, "");
    let a = node.k8s_pod(V, "team-a", "a", &[]);
    let b = node.k8s_pod(V, "team-b", "b", &[]);
    let (st, token_a) = put_token(&a.ns, false, Some("60"), &[]);
    assert_eq!(st, 200);
    // The instance-wide token from the real service: pod B can use pod A's.
    assert_eq!(
        get(&b.ns, false, INSTANCE_PATH, Some(&token_a)),
        (200, INSTANCE_ID.to_string())
    );
}

#[test]
fn ttls_forwarding_headers_expiry_and_imdsv1_as_the_real_service() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, AWS_ON);
    let strict = node.k8s_pod(V, "strict", "s", &[]);
    let plain = node.k8s_pod(V, "team-a", "p", &[]);

    for bad in ["0", "21601", "abc", "-5", "1.5"] {
        let (st, body) = put_token(&plain.ns, false, Some(bad), &[]);
        assert_eq!(st, 400, "ttl {bad}: {body}");
    }
    assert_eq!(put_token(&plain.ns, false, Some("21600"), &[]).0, 200);
    // Without a TTL the aws preset's own rule refuses it (403), as before.
    assert_eq!(put_token(&plain.ns, false, None, &[]).0, 403);
    let (st, body) = put_token(
        &plain.ns,
        false,
        Some("60"),
        &[("X-Forwarded-For", "10.0.0.1")],
    );
    assert_eq!(st, 403, "{body}");

    // require_imdsv2: IMDSv1 refused, IMDSv2 answered. Control: the plain pod's IMDSv1 works.
    let (st, body) = get(&strict.ns, false, INSTANCE_PATH, None);
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("IMDSv2 is required"), "{body}");
    let (_, token) = put_token(&strict.ns, false, Some("1"), &[]);
    assert_eq!(
        get(&strict.ns, false, INSTANCE_PATH, Some(&token)).0,
        200,
        "v2 answered"
    );
    assert_eq!(
        get(&plain.ns, false, INSTANCE_PATH, None).0,
        200,
        "control: v1"
    );
    // A garbled token is refused even where v1 is allowed (as the real service does).
    assert_eq!(get(&plain.ns, false, INSTANCE_PATH, Some("garbage")).0, 401);

    // The 1-second token expires: within a few seconds it is refused.
    let expired = wait_for_value("the token to expire", Duration::from_secs(10), || {
        let (st, body) = get(&strict.ns, false, INSTANCE_PATH, Some(&token));
        (st == 401).then_some(body)
    });
    assert!(expired.contains("expired"), "{expired}");

    let strict_ip = strict.ip(false).to_string();
    let from_pods = cloud
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.peer.starts_with(&strict_ip) || !from_node(&r.peer))
        .count();
    assert_eq!(from_pods, 0, "the service only ever sees the proxy");
    let v1 = lines_from(&proxy, &strict, false)
        .into_iter()
        .find(|d| d["rule"] == "imdsv2-required")
        .expect("the v1 refusal logged");
    assert_eq!(v1["imds_version"], "v1");
    assert_eq!(v1["policy"], "strict");
}

/// A container nested behind the pod: its own namespace, linked to the pod by a veth, routed and
/// masqueraded by the pod (what Docker-in-a-pod or a CI runner's job container looks like).
fn nest(pod: &Netns) -> Netns {
    let nested = Netns::new("nested");
    pod.ok(
        IP,
        &[
            "link",
            "add",
            "n0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            nested.name(),
        ],
    );
    pod.ok(IP, &["addr", "add", "10.99.0.1/24", "dev", "n0"]);
    pod.ok(IP, &["link", "set", "n0", "up"]);
    nested.ok(IP, &["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    nested.ok(IP, &["link", "set", "eth0", "up"]);
    nested.ok(IP, &["link", "set", "lo", "up"]);
    nested.ok(IP, &["route", "add", "default", "via", "10.99.0.1"]);
    pod.ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    pod.sh("nft add table ip nest && \
         nft 'add chain ip nest post { type nat hook postrouting priority 100; }' && \
         nft add rule ip nest post ip saddr 10.99.0.0/24 oifname eth0 masquerade");
    nested
}

#[test]
fn token_hop_limit_keeps_tokens_from_containers_nested_behind_the_pod() {
    let node = Node::new();
    let _cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, AWS_ON);
    let hop = node.k8s_pod(V, "hop", "h", &[]);
    let open = node.k8s_pod(V, "team-a", "o", &[]);
    let hop_nested = nest(&hop.ns);
    let open_nested = nest(&open.ns);

    // Control: without a hop limit the nested container gets a token through its pod.
    let (st, body) = put_token(&open_nested, false, Some("60"), &[]);
    assert_eq!(st, 200, "control: {body}");
    // With token_hop_limit = 1 the pod itself gets its token...
    assert_eq!(put_token(&hop.ns, false, Some("60"), &[]).0, 200);
    // ...and the nested container gets nothing: the answer dies at the pod's forward.
    let ex = request_within(
        hop_nested.path(),
        imds(false),
        "PUT",
        "/latest/api/token",
        &[(TTL, "60")],
        Duration::from_secs(2),
    );
    assert!(ex.responses.is_empty(), "{}", ex.summary());
    // The proxy did answer it (under the pod's address): the hop limit, not a refusal, stopped it.
    let issued = lines_from(&proxy, &hop, false)
        .into_iter()
        .filter(|d| d["rule"] == "imdsv2-token" && d["status"] == 200)
        .count();
    assert_eq!(issued, 2, "two tokens issued for the hop pod");
}
