//! metaguard-proxy with upstreams other than the real metadata service (root), the set-ups
//! docs/install.md ("Running beside other metadata components") describes:
//!
//! - a metadata component on the node at another address and port, like GKE's metadata server
//!   (169.254.169.252:988 with Workload Identity) or kube2iam/kiam: the `imds-v4` endpoint's
//!   upstream is moved there with `--upstream imds-v4=ADDR:PORT`, while `imds-v6` keeps the real
//!   service;
//! - an extra endpoint for the EKS Pod Identity agent (169.254.170.23:80), configured in both the
//!   plugin (`endpoints`) and the proxy (`[[endpoints]]`), so the policy decides which pods may ask
//!   it, and the agent still sees the pod's own token.
//!
//! Pods are attached by Debian's bridge and the real plugin in a node namespace; the "real" service
//! is fake-metadata in a cloud namespace ([`Cloud`]), the node-local component another
//! fake-metadata inside the node namespace. Every packet stays in these namespaces.
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test proxy_upstream`.

use metaguard_tests::cni::Node;
use metaguard_tests::fake::{FakeMetadata, INSTANCE_ID};
use metaguard_tests::netns::IP;
use metaguard_tests::proxy::{imds, request, Cloud, Proxy, ProxyOptions};
use metaguard_tests::raw::{End, Exchange};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const V: &str = "1.0.0";

/// Instance identity allowed, credentials denied; `/v1/credentials` (the Pod Identity agent's
/// path) allowed only with an Authorization header, which the agent checks.
const POLICY: &str = r#"
default = "node"

[[policy]]
name = "node"

[[policy.rule]]
id = "instance-id"
path = "/latest/meta-data/instance-id"
action = "allow"

[[policy.rule]]
id = "no-creds"
prefix = "/latest/meta-data/iam/"
action = "deny"
reason = "credentials are not for pods"

[[policy.rule]]
id = "pod-identity"
path = "/v1/credentials"
headers = { "Authorization" = "*" }
action = "allow"
"#;

fn status(ex: &Exchange) -> u16 {
    ex.responses.first().map(|r| r.status).unwrap_or(0)
}

fn body(ex: &Exchange) -> String {
    ex.responses
        .first()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default()
}

/// An address on the node's loopback, where a host-network component would listen.
fn node_local_address(node: &Node, cidr: &str) {
    node.ns.ok(IP, &["addr", "add", cidr, "dev", "lo"]);
}

#[test]
fn imds_v4_goes_to_a_node_local_component_on_another_address_and_port() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    // GKE's metadata server listens on 169.254.169.252:988 on the node.
    node_local_address(&node, "169.254.169.252/32");
    let gke: SocketAddr = "169.254.169.252:988".parse().unwrap();
    let component = FakeMetadata::start_in_netns(node.ns.name(), &[gke]).expect("component");
    let mut opts = ProxyOptions::new(node.ns.name(), &node.state_dir()).policy(POLICY);
    opts.upstream = vec![("imds-v4".to_string(), gke)];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    let pod = node.pod(V);

    // The pod calls 169.254.169.254:80 as always; the answer comes from the component.
    let ex = request(
        pod.ns.path(),
        imds(false),
        "GET",
        "/latest/meta-data/instance-id",
        &[],
    );
    assert_eq!(status(&ex), 200, "{}", ex.summary());
    assert_eq!(body(&ex), INSTANCE_ID);
    let rec = component
        .wait_for(
            |r| r.target == "/latest/meta-data/instance-id",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("the component saw nothing: {:?}", component.requests()));
    assert_eq!(rec.local, "169.254.169.252:988");
    // It is called from the node (the proxy), never from the pod's address, and the Host header
    // is the address the pod used.
    assert_ne!(rec.peer_ip(), Some(pod.ip(false)));
    assert_eq!(rec.header("host"), Some("169.254.169.254"));
    assert!(!rec.has_header("x-forwarded-for") && !rec.has_header("forwarded"));
    let d = proxy.wait_decision("allowed through the component", |d| {
        d["path"] == "/latest/meta-data/instance-id" && d["decision"] == "allow"
    });
    assert_eq!(d["endpoint"], "imds-v4");
    assert_eq!(d["upstream_status"], 200);

    // Denied requests reach neither the component nor the real service.
    let ex = request(
        pod.ns.path(),
        imds(false),
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &[],
    );
    assert_eq!(status(&ex), 403, "{}", ex.summary());
    assert_eq!(
        component.count_matching(|r| r.target.contains("security-credentials")),
        0
    );

    // imds-v6 keeps its default upstream, the real service.
    let ex = request(
        pod.ns.path(),
        imds(true),
        "GET",
        "/latest/meta-data/instance-id",
        &[],
    );
    assert_eq!(status(&ex), 200, "{}", ex.summary());
    cloud
        .fake
        .wait_for(|r| r.local == "[fd00:ec2::254]:80", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("v6 not at the real service: {:?}", cloud.fake.requests()));
    // Nothing for imds-v4 ever reached the real service.
    assert_eq!(
        cloud
            .fake
            .count_matching(|r| r.local == "169.254.169.254:80"),
        0,
        "{:?}",
        cloud.fake.requests()
    );
    assert_eq!(component.requests().len(), 1, "{:?}", component.requests());
}

#[test]
fn an_extra_endpoint_sends_pod_identity_requests_to_the_agent_with_the_pods_token() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    // The EKS Pod Identity agent listens on 169.254.170.23:80 on the node.
    node_local_address(&node, "169.254.170.23/32");
    let agent_addr: SocketAddr = "169.254.170.23:80".parse().unwrap();
    let agent = FakeMetadata::start_in_netns(node.ns.name(), &[agent_addr]).expect("agent");
    // The proxy's endpoint list (it replaces the defaults: these are the defaults plus one) ...
    let config = r#"
[[endpoints]]
name = "imds-v4"
address = "169.254.169.254"
proxy_port = 8169

[[endpoints]]
name = "imds-v6"
address = "fd00:ec2::254"
proxy_port = 8170

[[endpoints]]
name = "alibaba"
address = "100.100.100.200"
proxy_port = 8171

[[endpoints]]
name = "eks-pod-identity"
address = "169.254.170.23"
port = 80
proxy_port = 8172
upstream = "169.254.170.23:80"
"#;
    let proxy = Proxy::start(
        ProxyOptions::new(node.ns.name(), &node.state_dir())
            .policy(POLICY)
            .config(config),
    );
    proxy.wait_ready();
    // ... and the plugin's, which must agree on the proxy ports.
    let pod = node.pod_with(
        V,
        json!({"endpoints": [
            {"name": "imds-v4", "address": "169.254.169.254", "proxyPort": 8169},
            {"name": "imds-v6", "address": "fd00:ec2::254", "proxyPort": 8170},
            {"name": "alibaba", "address": "100.100.100.200", "proxyPort": 8171},
            {"name": "eks-pod-identity", "address": "169.254.170.23", "port": 80, "proxyPort": 8172}
        ]}),
    );

    let token = "eyJhbGciOiJSUzI1NiJ9.pod-token.sig";
    let ex = request(
        pod.ns.path(),
        agent_addr,
        "GET",
        "/v1/credentials",
        &[("Host", "169.254.170.23"), ("Authorization", token)],
    );
    // fake-metadata does not serve this path: its 404 comes back through the proxy unchanged.
    assert_eq!(status(&ex), 404, "{}", ex.summary());
    let rec = agent
        .wait_for(|r| r.target == "/v1/credentials", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the agent saw nothing: {:?}", agent.requests()));
    assert_eq!(
        rec.header("authorization"),
        Some(token),
        "the pod's token is forwarded"
    );
    assert_ne!(rec.peer_ip(), Some(pod.ip(false)));
    let d = proxy.wait_decision("pod identity allowed", |d| {
        d["endpoint"] == "eks-pod-identity" && d["decision"] == "allow"
    });
    assert_eq!(d["rule"], "pod-identity");
    assert_eq!(d["upstream_status"], 404);

    // Without a token the policy refuses, and the agent never sees it.
    let ex = request(
        pod.ns.path(),
        agent_addr,
        "GET",
        "/v1/credentials",
        &[("Host", "169.254.170.23")],
    );
    assert_eq!(status(&ex), 403, "{}", ex.summary());
    assert_eq!(agent.requests().len(), 1, "{:?}", agent.requests());
    // Another port on the agent's address is rejected in the pod, like any endpoint's.
    let ex = request(
        pod.ns.path(),
        "169.254.170.23:8080".parse().unwrap(),
        "GET",
        "/",
        &[],
    );
    assert!(
        ex.responses.is_empty() && ex.end == End::Reset,
        "{}",
        ex.summary()
    );
    // The metadata service itself still works through its own endpoint.
    let ex = request(
        pod.ns.path(),
        imds(false),
        "GET",
        "/latest/meta-data/instance-id",
        &[],
    );
    assert_eq!(status(&ex), 200, "{}", ex.summary());
    assert_eq!(
        cloud
            .fake
            .count_matching(|r| r.target.contains("/v1/credentials")),
        0
    );
}
