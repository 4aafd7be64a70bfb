//! metaguard-proxy end to end (root): a node namespace with pods attached by Debian's bridge and
//! the real metaguard plugin (which redirects 169.254.169.254:80 to gateway:8169 and
//! [fd00:ec2::254]:80 to gateway:8170), the proxy running in the node, and a "cloud" namespace
//! holding 169.254.169.254 / fd00:ec2::254 with fake-metadata recording every request it receives.
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test proxy_e2e`.

use metaguard_common::state::StateDir;
use metaguard_tests::cni::{Node, Pod};
use metaguard_tests::fake::INSTANCE_ID;
use metaguard_tests::netns::wait_for;
use metaguard_tests::proxy::{
    get_status, imds, parse_metric, request, Cloud, Proxy, ProxyOptions, PORT_V4,
};
use metaguard_tests::raw::{self, End, ReadOpts, Step};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Pods in namespace team-a get `strict`; team-b gets `open`.
const POLICY: &str = r#"
default = "strict"

[[selector]]
namespace = "team-b"
policy = "open"

[[policy]]
name = "strict"

[[policy.rule]]
id = "instance-id"
methods = ["GET"]
path = "/latest/meta-data/instance-id"
action = "allow"

[[policy.rule]]
id = "no-creds"
prefix = "/latest/meta-data/iam/"
action = "deny"
reason = "credentials are not for pods"

[[policy.rule]]
id = "fixed"
path = "/fixed"
action = "respond"
status = 200
body = "fixed body"
response_headers = { "X-Fixed" = "yes" }

[[policy]]
name = "open"

[[policy.rule]]
id = "everything"
prefix = "/"
query = ["*"]
action = "allow"
"#;

/// Like POLICY, but team-a's default is `open` too.
const POLICY_ALL_OPEN: &str = r#"
default = "open"

[[policy]]
name = "open"

[[policy.rule]]
id = "everything-v2"
prefix = "/"
action = "allow"
"#;

const V: &str = "1.0.0";

fn body(ex: &raw::Exchange) -> String {
    ex.responses
        .first()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default()
}

fn status(ex: &raw::Exchange) -> u16 {
    ex.responses.first().map(|r| r.status).unwrap_or(0)
}

/// A pod in Kubernetes namespace `namespace` (the plugin records it from CNI_ARGS).
fn pod_in<'a>(node: &'a Node, namespace: &str, name: &str) -> Pod<'a> {
    let mut pod = node.bridge_pod(V);
    pod.args = Some(format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID=00000000-0000-4000-8000-{:012}",
        std::process::id()
    ));
    let out = pod.metaguard("ADD");
    pod.mg_result = Some(out.expect_ok());
    pod
}

fn start(node: &Node, policy: &str) -> Proxy {
    let p = Proxy::start(ProxyOptions::new(node.ns.name(), &node.state_dir()).policy(policy));
    p.wait_ready();
    p
}

fn gw(node: &Node) -> SocketAddr {
    SocketAddr::new(node.gateway4, PORT_V4)
}

#[test]
fn allowed_requests_reach_upstream_canonical_and_without_forwarding_headers() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, POLICY);
    let pod = node.pod(V);

    for v6 in [false, true] {
        let ex = request(
            pod.ns.path(),
            imds(v6),
            "GET",
            "/latest/meta-data/instance-id",
            &[
                ("User-Agent", "e2e"),
                ("Keep-Alive", "timeout=5"),
                ("X-Custom", "kept"),
            ],
        );
        assert_eq!(status(&ex), 200, "v6={v6}: {}", ex.summary());
        assert_eq!(body(&ex), INSTANCE_ID);
        let want_local = if v6 {
            "[fd00:ec2::254]:80"
        } else {
            "169.254.169.254:80"
        };
        let rec = cloud
            .fake
            .wait_for(|r| r.local == want_local, Duration::from_secs(5))
            .unwrap_or_else(|| {
                panic!(
                    "fake did not record the v6={v6} request: {:?}",
                    cloud.fake.requests()
                )
            });
        assert_eq!(rec.method, "GET");
        assert_eq!(
            rec.target, "/latest/meta-data/instance-id",
            "forwarded exactly the canonical target"
        );
        for h in [
            "x-forwarded-for",
            "forwarded",
            "via",
            "x-real-ip",
            "keep-alive",
        ] {
            assert!(!rec.has_header(h), "upstream got {h}: {:?}", rec.headers);
        }
        assert_eq!(
            rec.header("x-custom"),
            Some("kept"),
            "end-to-end headers pass"
        );
        let want_host = if v6 {
            "[fd00:ec2::254]"
        } else {
            "169.254.169.254"
        };
        assert_eq!(rec.header("host"), Some(want_host));
        // The upstream sees the node, never the pod.
        let peer = rec.peer_ip().expect("peer");
        assert!(
            peer.to_string() == "169.254.169.1" || peer.to_string() == "fd00:ec2::1",
            "{peer}"
        );

        let pod_ip = pod.ip(v6).to_string();
        let d = proxy.wait_decision("allowed request", |d| {
            d["src"] == pod_ip.as_str() && d["decision"] == "allow"
        });
        assert_eq!(d["pod"], "team-a/web-0");
        assert_eq!(d["container_id"], pod.container_id.as_str());
        assert_eq!(d["endpoint"], if v6 { "imds-v6" } else { "imds-v4" });
        assert_eq!(d["method"], "GET");
        assert_eq!(d["path"], "/latest/meta-data/instance-id");
        assert_eq!(d["policy"], "strict");
        assert_eq!(d["rule"], "instance-id");
        assert_eq!(d["status"], 200);
        assert_eq!(d["upstream_status"], 200);
        assert!(d["latency_ms"].as_f64().is_some_and(|l| l >= 0.0));
        assert!(
            d["ts"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
            "{d}"
        );
    }
    assert_eq!(cloud.fake.requests().len(), 2);
}

#[test]
fn denied_and_malformed_never_reach_upstream() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, POLICY);
    let pod = node.pod(V);
    let ns = pod.ns.path();
    let to = imds(false);

    // (request bytes, expected status, expected decision)
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("deny rule", b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 403, "deny"),
        ("default deny", b"GET /latest/user-data HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 403, "deny"),
        ("wrong method", b"PUT /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 403, "deny"),
        ("fixed response", b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 200, "respond"),
        ("dot segments", b"GET /latest/meta-data/instance-id/../iam/security-credentials/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "invalid"),
        ("empty segment", b"GET /latest//meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "invalid"),
        ("percent-encoding", b"GET /latest/meta-data/%69nstance-id HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "invalid"),
        ("absolute-form", b"GET http://169.254.169.254/latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "invalid"),
        ("forwarding header", b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n".to_vec(), 403, "invalid"),
        ("chunked body", b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400, "invalid"),
        ("upgrade", b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec(), 400, "invalid"),
        ("unparsable", b"GET /latest meta-data HTTP/1.1 x\r\n\r\n".to_vec(), 400, "invalid"),
    ];
    let pod_ip = pod.ip(false).to_string();
    let mine = |d: &Value| d["src"] == pod_ip.as_str();
    for (i, (what, bytes, want, decision)) in cases.iter().enumerate() {
        let ex = raw::send(
            ns,
            to,
            &[Step::Write(bytes.clone())],
            ReadOpts {
                max_responses: 1,
                ..ReadOpts::default()
            },
        );
        assert_eq!(status(&ex), *want, "{what}: {}", ex.summary());
        let resp = &ex.responses[0];
        match *what {
            "deny rule" => assert_eq!(body(&ex), "credentials are not for pods\n"),
            "fixed response" => {
                assert_eq!(body(&ex), "fixed body");
                assert_eq!(resp.header("x-fixed"), Some("yes"));
            }
            _ => {}
        }
        if !matches!(*what, "fixed response" | "unparsable") {
            // Local refusals are one line of text saying why.
            assert!(
                resp.header("content-type")
                    .is_some_and(|c| c.starts_with("text/plain")),
                "{what}: {}",
                resp.head
            );
            let b = body(&ex);
            assert!(
                b.len() > 1 && b.ends_with('\n') && b.matches('\n').count() == 1,
                "{what}: {b:?}"
            );
        }
        // One decision line per request (waiting for it keeps the lines in request order).
        wait_for(
            &format!("decision line for {what}"),
            Duration::from_secs(5),
            || proxy.decisions().iter().filter(|d| mine(d)).count() == i + 1,
        );
        let line = proxy
            .decisions()
            .into_iter()
            .filter(|d| mine(d))
            .nth(i)
            .unwrap();
        assert_eq!(line["decision"], *decision, "{what}: {line}");
        assert_eq!(line["status"], *want, "{what}: {line}");
        assert!(line["upstream_status"].is_null(), "{what}");
        assert_eq!(
            line["pod"], "team-a/web-0",
            "{what}: identity is logged even for refusals"
        );
        assert!(
            line["reason"].is_string() || *decision == "respond",
            "{what}: {line}"
        );
        match *what {
            "deny rule" => assert_eq!(line["rule"], "no-creds"),
            "default deny" => assert_eq!(line["rule"], "default-deny"),
            // A rejected target is logged raw (JSON-escaped).
            "dot segments" => assert_eq!(
                line["path"],
                "/latest/meta-data/instance-id/../iam/security-credentials/"
            ),
            _ => {}
        }
    }
    // The path works, and it is the only thing the fake ever saw: the record is written before
    // the answer, and every case above was answered before this request was sent.
    assert_eq!(get_status(ns, to, "/latest/meta-data/instance-id"), 200);
    let seen = cloud.fake.requests();
    assert_eq!(
        seen.len(),
        1,
        "only the allowed request reached upstream: {seen:?}"
    );
    assert_eq!(seen[0].target, "/latest/meta-data/instance-id");
    assert!(seen
        .iter()
        .all(|r| !r.target.contains("iam") && !r.target.contains("user-data")));
}

#[test]
fn unknown_callers_are_denied_and_removed_records_stop_counting_within_a_second() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, POLICY);
    // A pod attached by bridge only: no metaguard, no record. It calls the proxy port directly.
    let stranger = node.bridge_pod(V);
    let ex = request(
        stranger.ns.path(),
        gw(&node),
        "GET",
        "/latest/meta-data/instance-id",
        &[],
    );
    assert_eq!(status(&ex), 403, "{}", ex.summary());
    assert!(body(&ex).contains("no pod record"), "{}", body(&ex));
    let ip = stranger.ip(false).to_string();
    let d = proxy.wait_decision("unknown caller", |d| d["src"] == ip.as_str());
    assert_eq!(d["decision"], "unknown-caller");
    assert!(d["pod"].is_null() && d["policy"].is_null());

    // A guarded pod works; once its record is removed it is a stranger within about a second,
    // without restarting anything.
    let pod = node.pod(V);
    assert_eq!(
        get_status(pod.ns.path(), imds(false), "/latest/meta-data/instance-id"),
        200
    );
    let errors = StateDir::new(node.state_dir()).remove_record(&pod.key());
    assert!(errors.is_empty(), "{errors:?}");
    let removed = Instant::now();
    wait_for(
        "the removed record to stop counting",
        Duration::from_secs(3),
        || get_status(pod.ns.path(), imds(false), "/latest/meta-data/instance-id") == 403,
    );
    assert!(
        removed.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        removed.elapsed()
    );
    let ip = pod.ip(false).to_string();
    let d = proxy.wait_decision("former pod", |d| {
        d["src"] == ip.as_str() && d["decision"] == "unknown-caller"
    });
    assert!(d["pod"].is_null());
    // Until then its requests were allowed; from then on nothing more reaches upstream.
    let seen = cloud.fake.requests().len();
    assert_eq!(
        get_status(pod.ns.path(), imds(false), "/latest/meta-data/instance-id"),
        403
    );
    assert_eq!(cloud.fake.requests().len(), seen);
}

#[test]
fn per_pod_selection_picks_different_policies() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, POLICY);
    let a = pod_in(&node, "team-a", "web-0");
    let b = pod_in(&node, "team-b", "api-0");
    assert_eq!(
        get_status(
            a.ns.path(),
            imds(false),
            "/latest/meta-data/placement/region"
        ),
        403
    );
    assert_eq!(
        get_status(
            b.ns.path(),
            imds(false),
            "/latest/meta-data/placement/region"
        ),
        200
    );
    let ip_a = a.ip(false).to_string();
    let ip_b = b.ip(false).to_string();
    let da = proxy.wait_decision("pod a", |d| d["src"] == ip_a.as_str());
    let db = proxy.wait_decision("pod b", |d| d["src"] == ip_b.as_str());
    assert_eq!(
        (da["policy"].as_str(), da["decision"].as_str()),
        (Some("strict"), Some("deny"))
    );
    assert_eq!(
        (db["policy"].as_str(), db["decision"].as_str()),
        (Some("open"), Some("allow"))
    );
    assert_eq!(db["pod"], "team-b/api-0");
    let seen = cloud.fake.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[test]
fn sighup_reload_changes_decisions_and_a_bad_file_keeps_the_old_ones() {
    let node = Node::new();
    let _cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, POLICY);
    let pod = node.pod(V);
    let ns = pod.ns.path();
    assert_eq!(
        get_status(ns, imds(false), "/latest/meta-data/placement/region"),
        403
    );

    proxy.write_policy(POLICY_ALL_OPEN);
    proxy.reload();
    assert_eq!(
        proxy.metric("metaguard_proxy_policy_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        get_status(ns, imds(false), "/latest/meta-data/placement/region"),
        200
    );
    let ip = pod.ip(false).to_string();
    let d = proxy.wait_decision("allowed after reload", |d| {
        d["src"] == ip.as_str() && d["rule"] == "everything-v2"
    });
    assert_eq!(d["policy"], "open");

    // A broken file: the reload fails, is counted and logged with the line, and the old policy
    // stays in force.
    proxy.write_policy("default = \"open\"\n[[policy]]\nname = \"open\"\n[[policy.rule]]\nid = \"x\"\naction = \"maybe\"\n");
    proxy.reload();
    assert_eq!(
        proxy.metric("metaguard_proxy_policy_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        get_status(ns, imds(false), "/latest/meta-data/placement/region"),
        200
    );
    let err = proxy.stderr();
    assert!(
        err.lines()
            .any(|l| l.contains("policy reload failed") && l.contains("line 6")),
        "stderr does not explain the failed reload:\n{err}"
    );
    // A missing file is a failed reload too.
    std::fs::remove_file(proxy.policy_path()).unwrap();
    proxy.reload();
    assert_eq!(
        proxy.metric("metaguard_proxy_policy_reloads_total{result=\"failure\"}"),
        Some(2.0)
    );
    assert_eq!(
        get_status(ns, imds(false), "/latest/meta-data/placement/region"),
        200
    );
}

#[test]
fn restart_keeps_decisions_and_a_stopped_daemon_means_connection_refused() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let mut proxy = start(&node, POLICY);
    let pod = node.pod(V);
    let ns = pod.ns.path();
    let paths = [
        "/latest/meta-data/instance-id",
        "/latest/meta-data/iam/security-credentials/",
        "/latest/user-data",
    ];
    let before: Vec<u16> = paths
        .iter()
        .map(|p| get_status(ns, imds(false), p))
        .collect();
    assert_eq!(before, vec![200, 403, 403]);
    let seen_before = cloud.fake.requests().len();

    let st = proxy.stop().expect("proxy stopped on SIGTERM");
    assert!(st.success(), "exit status {st}");
    assert!(proxy.stderr().contains("shutting down"));
    // Daemon down: the pod's redirect still points at it, so the connection is refused; nothing
    // reaches the real service.
    for v6 in [false, true] {
        for p in paths {
            let ex = request(ns, imds(v6), "GET", p, &[]);
            assert!(
                ex.responses.is_empty() && ex.end == End::Reset,
                "v6={v6} {p}: {}",
                ex.summary()
            );
        }
    }
    assert_eq!(
        cloud.fake.requests().len(),
        seen_before,
        "the fake saw traffic while the proxy was down"
    );

    proxy.restart();
    proxy.wait_ready();
    let after: Vec<u16> = paths
        .iter()
        .map(|p| get_status(ns, imds(false), p))
        .collect();
    assert_eq!(
        after, before,
        "same decisions after a restart (records and policy are files)"
    );
    // The restarted daemon preloaded the pod's two addresses from the state directory.
    wait_for("preload after restart", Duration::from_secs(5), || {
        proxy.stderr().contains("pod records: 2 addresses loaded")
    });
}

#[test]
fn starts_before_the_listen_address_and_upstream_exist() {
    let node = Node::new();
    // Listen on the bridge gateway addresses, which do not exist until the first pod.
    let proxy = Proxy::start(
        ProxyOptions::new(node.ns.name(), &node.state_dir())
            .policy(POLICY)
            .listen(&[node.gateway4, node.gateway6]),
    );
    let (st, text) = proxy.admin_get("/readyz").expect("readyz answers");
    assert_eq!(st, 503, "no upstream yet: {text}");
    assert!(text.contains("unreachable"), "{text}");
    let cloud = Cloud::attach(&node.ns);
    proxy.wait_ready();
    let (st, text) = proxy.admin_get("/readyz").unwrap();
    assert_eq!(st, 200);
    assert!(
        text.contains("imds-v4") && text.contains("reachable"),
        "{text}"
    );
    let pod = node.pod(V);
    // The pod's very first request succeeds: its record is read on the miss.
    assert_eq!(
        get_status(pod.ns.path(), imds(false), "/latest/meta-data/instance-id"),
        200
    );
    assert_eq!(
        get_status(pod.ns.path(), imds(true), "/latest/meta-data/instance-id"),
        200
    );
    assert_eq!(cloud.fake.requests().len(), 2);
}

#[test]
fn metrics_and_health_answer() {
    let node = Node::new();
    let _cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, POLICY);
    let pod = node.pod(V);
    assert_eq!(
        get_status(pod.ns.path(), imds(false), "/latest/meta-data/instance-id"),
        200
    );
    assert_eq!(
        get_status(pod.ns.path(), imds(false), "/latest/user-data"),
        403
    );
    assert_eq!(proxy.admin_get("/healthz"), Some((200, "ok\n".into())));
    let (st, text) = proxy.admin_get("/metrics").unwrap();
    assert_eq!(st, 200);
    let m = |s: &str| parse_metric(&text, s);
    assert_eq!(m("metaguard_proxy_requests_total{decision=\"allow\",policy=\"strict\",rule=\"instance-id\"}"), Some(1.0));
    assert_eq!(m("metaguard_proxy_requests_total{decision=\"deny\",policy=\"strict\",rule=\"default-deny\"}"), Some(1.0));
    assert_eq!(
        m("metaguard_proxy_upstream_duration_seconds_count{endpoint=\"imds-v4\"}"),
        Some(1.0)
    );
    assert!(
        m("metaguard_proxy_records_loaded").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        m("metaguard_proxy_connections_accepted_total").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    // No pod names, addresses or paths in label values.
    assert!(
        !text.contains("web-0")
            && !text.contains("user-data")
            && !text.contains(&pod.ip(false).to_string())
    );
    // The admin listener is loopback only: the pod cannot reach it through the gateway.
    let ex = request(
        pod.ns.path(),
        SocketAddr::new(node.gateway4, 9169),
        "GET",
        "/metrics",
        &[],
    );
    assert!(
        ex.responses.is_empty(),
        "admin reachable from a pod: {}",
        ex.summary()
    );
}

#[test]
fn one_pod_cannot_take_every_connection() {
    let node = Node::new();
    let _cloud = Cloud::attach(&node.ns);
    let proxy = Proxy::start(
        ProxyOptions::new(node.ns.name(), &node.state_dir())
            .policy(POLICY)
            .config("[limits]\nmax_connections_per_source = 4\nheader_read_timeout_ms = 2000\n"),
    );
    proxy.wait_ready();
    let greedy = pod_in(&node, "team-a", "greedy");
    let other = pod_in(&node, "team-a", "other");
    // Slowloris: connections that never send a request.
    let held: Vec<_> = (0..4)
        .map(|_| {
            raw::connect(greedy.ns.path(), imds(false), Duration::from_secs(2)).expect("connect")
        })
        .collect();
    wait_for("4 open connections", Duration::from_secs(5), || {
        proxy.metric("metaguard_proxy_connections_open") == Some(4.0)
    });
    let ex = request(
        greedy.ns.path(),
        imds(false),
        "GET",
        "/latest/meta-data/instance-id",
        &[],
    );
    assert_eq!(status(&ex), 429, "{}", ex.summary());
    // Another pod is unaffected.
    assert_eq!(
        get_status(
            other.ns.path(),
            imds(false),
            "/latest/meta-data/instance-id"
        ),
        200
    );
    assert_eq!(
        proxy.metric("metaguard_proxy_connections_refused_total{reason=\"per_source\"}"),
        Some(1.0)
    );
    // The header-read timeout frees the held slots without the client doing anything.
    wait_for(
        "idle connections closed by the header timeout",
        Duration::from_secs(6),
        || proxy.metric("metaguard_proxy_connections_open") == Some(0.0),
    );
    assert!(proxy
        .metric("metaguard_proxy_header_timeouts_total")
        .is_some_and(|n| n >= 4.0));
    assert_eq!(
        get_status(
            greedy.ns.path(),
            imds(false),
            "/latest/meta-data/instance-id"
        ),
        200
    );
    drop(held);
}

#[test]
fn upstream_failures_become_502_or_504_and_sigterm_lets_requests_finish() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let mut proxy = Proxy::start(
        ProxyOptions::new(node.ns.name(), &node.state_dir())
            .policy(POLICY)
            .config("[upstream]\nresponse_timeout_ms = 1000\nmax_response_bytes = 1000\n"),
    );
    proxy.wait_ready();
    let pod = pod_in(&node, "team-b", "api-0");
    let ns = pod.ns.path();
    // (path, status to the pod, decision, reason contains)
    for (path, want, decision, why) in [
        ("/fault/500", 500, "allow", ""),
        ("/fault/hang", 504, "error", "timed out"),
        ("/fault/big?bytes=5000", 502, "error", "too large"),
        ("/fault/reset", 502, "error", "upstream"),
    ] {
        let ex = request(ns, imds(false), "GET", path, &[]);
        assert_eq!(status(&ex), want, "{path}: {}", ex.summary());
        let d = proxy.wait_decision(path, |d| {
            d["path"] == path.split('?').next().unwrap() && d["status"] == want
        });
        assert_eq!(d["decision"], decision, "{path}: {d}");
        if !why.is_empty() {
            assert!(body(&ex).contains(why), "{path}: {:?}", body(&ex));
            assert!(
                d["reason"].as_str().is_some_and(|r| r.contains(why)),
                "{path}: {d}"
            );
        }
    }
    let fails = |k: &str| {
        proxy.metric(&format!(
            "metaguard_proxy_upstream_failures_total{{endpoint=\"imds-v4\",kind=\"{k}\"}}"
        ))
    };
    assert_eq!(fails("timeout"), Some(1.0));
    assert_eq!(fails("oversize"), Some(1.0));
    assert_eq!(fails("reset"), Some(1.0));

    // Slow requests are in flight when SIGTERM arrives: they complete, then the daemon exits 0.
    // Two at once, so that both worker threads have one to drain (new connections go to the
    // worker with the fewest open).
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let ns_path = ns.to_path_buf();
            std::thread::spawn(move || {
                request(
                    &ns_path,
                    imds(false),
                    "GET",
                    &format!("/fault/slow?ms=700&n={i}"),
                    &[],
                )
            })
        })
        .collect();
    wait_for(
        "both slow requests upstream",
        Duration::from_secs(5),
        || {
            cloud
                .fake
                .count_matching(|r| r.target.starts_with("/fault/slow"))
                == 2
        },
    );
    let st = proxy.stop().expect("exited after SIGTERM");
    assert!(st.success(), "{st}");
    for t in slow {
        let ex = t.join().unwrap();
        assert_eq!(status(&ex), 200, "in-flight request cut: {}", ex.summary());
        assert_eq!(body(&ex), "slow\n");
    }
    let lines: Vec<Value> = proxy
        .decisions()
        .into_iter()
        .filter(|d| d["path"] == "/fault/slow")
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "the decision log was flushed at exit: {lines:?}"
    );
    assert!(lines.iter().all(|d| d["upstream_status"] == 200));
    assert!(
        request(ns, imds(false), "GET", "/latest/meta-data/instance-id", &[])
            .responses
            .is_empty()
    );
}

/// instance-id is cached (long TTL so the test never sees it expire); region is allowed uncached.
const POLICY_CACHED: &str = r#"
default = "cached"

[[policy]]
name = "cached"

[[policy.rule]]
id = "token"
methods = ["PUT"]
path = "/latest/api/token"
headers = { "X-aws-ec2-metadata-token-ttl-seconds" = "*" }
action = "allow"

[[policy.rule]]
id = "instance-id"
path = "/latest/meta-data/instance-id"
action = "allow"
cache_ttl_ms = 600000

[[policy.rule]]
id = "region"
path = "/latest/meta-data/placement/region"
action = "allow"
"#;

/// The same, after an operator decides instance-id is no longer for pods.
const POLICY_CACHED_PATH_DENIED: &str = r#"
default = "cached"

[[policy]]
name = "cached"

[[policy.rule]]
id = "no-instance-id"
path = "/latest/meta-data/instance-id"
action = "deny"
reason = "not any more"
"#;

#[test]
fn cached_answers_spare_the_upstream_but_never_cross_tokens_or_policy() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    // One worker: every connection uses the same per-worker cache, so "the second request is a
    // hit" is deterministic.
    let proxy = Proxy::start(
        ProxyOptions::new(node.ns.name(), &node.state_dir())
            .policy(POLICY_CACHED)
            .config("worker_threads = 1\n"),
    );
    proxy.wait_ready();
    let pod = node.pod(V);
    let ns = pod.ns.path();
    let id_path = "/latest/meta-data/instance-id";
    let upstream_ids = |token: Option<&str>| {
        cloud.fake.count_matching(|r| {
            r.method == "GET"
                && r.path() == id_path
                && r.header("x-aws-ec2-metadata-token") == token
        })
    };
    let get = |headers: &[(&str, &str)]| {
        let ex = request(ns, imds(false), "GET", id_path, headers);
        assert_eq!(status(&ex), 200, "{}", ex.summary());
        assert_eq!(body(&ex), INSTANCE_ID);
        ex
    };

    // First GET: a miss, forwarded and stored. Second: answered from the cache, upstream not asked.
    get(&[]);
    assert_eq!(upstream_ids(None), 1);
    let hit = get(&[]);
    assert_eq!(upstream_ids(None), 1, "the second GET reached the upstream");
    let r = hit.responses.first().unwrap();
    assert!(
        r.head.to_ascii_lowercase().contains("content-type:"),
        "a cached answer keeps the upstream's headers: {}",
        r.head
    );
    // A token-protected answer is replayed only to the same token; a tokenless answer is never
    // given to a request with a token (nor the other way round).
    let token = |n: usize| {
        let ex = request(
            ns,
            imds(false),
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "600")],
        );
        assert_eq!(status(&ex), 200, "token {n}: {}", ex.summary());
        body(&ex)
    };
    let (ta, tb) = (token(1), token(2));
    assert_ne!(ta, tb);
    get(&[("X-aws-ec2-metadata-token", &ta)]);
    assert_eq!(upstream_ids(Some(&ta)), 1);
    get(&[("X-aws-ec2-metadata-token", &ta)]);
    assert_eq!(upstream_ids(Some(&ta)), 1, "same token: from the cache");
    get(&[("X-aws-ec2-metadata-token", &tb)]);
    assert_eq!(upstream_ids(Some(&tb)), 1, "another token: asked upstream");
    assert_eq!(upstream_ids(None), 1);
    // Only 200 answers are stored: an invalid token's 401 is asked upstream every time.
    for _ in 0..2 {
        let ex = request(
            ns,
            imds(false),
            "GET",
            id_path,
            &[("X-aws-ec2-metadata-token", "not-a-token")],
        );
        assert_eq!(status(&ex), 401, "{}", ex.summary());
    }
    assert_eq!(upstream_ids(Some("not-a-token")), 2, "a 401 was cached");
    // HEAD is never answered from the cache, nor is a rule without cache_ttl_ms.
    let head = request(ns, imds(false), "HEAD", id_path, &[]);
    assert_eq!(status(&head), 200, "{}", head.summary());
    assert_eq!(
        cloud
            .fake
            .count_matching(|r| r.method == "HEAD" && r.path() == id_path),
        1
    );
    for _ in 0..2 {
        assert_eq!(
            get_status(ns, imds(false), "/latest/meta-data/placement/region"),
            200
        );
    }
    assert_eq!(
        cloud
            .fake
            .count_matching(|r| r.path() == "/latest/meta-data/placement/region"),
        2
    );
    // Decision log and metrics say where each answer came from.
    let ip = pod.ip(false).to_string();
    let d = proxy.wait_decision("a cache hit", |d| {
        d["src"] == ip.as_str() && d["cache"] == "hit"
    });
    assert_eq!(d["rule"], "instance-id");
    assert_eq!(d["status"], 200);
    assert!(d["upstream_status"].is_null(), "{d}");
    proxy.wait_decision("a cache miss", |d| d["cache"] == "miss");
    proxy.wait_decision("an uncached allow", |d| {
        d["cache"] == "off" && d["rule"] == "region"
    });
    assert_eq!(
        proxy.metric("metaguard_cache_total{result=\"hit\"}"),
        Some(2.0)
    );
    assert_eq!(
        proxy.metric("metaguard_cache_total{result=\"miss\"}"),
        Some(5.0)
    );

    // A reload that denies the cached path: the entry is still within its TTL, but the policy
    // decides first, so the pod gets 403 and nothing reaches the upstream.
    let seen = cloud.fake.requests().len();
    proxy.write_policy(POLICY_CACHED_PATH_DENIED);
    proxy.reload();
    for token in [None, Some(ta.as_str())] {
        let h: Vec<(&str, &str)> = token
            .map(|t| vec![("X-aws-ec2-metadata-token", t)])
            .unwrap_or_default();
        let ex = request(ns, imds(false), "GET", id_path, &h);
        assert_eq!(status(&ex), 403, "{}", ex.summary());
        assert_ne!(body(&ex), INSTANCE_ID);
    }
    assert_eq!(cloud.fake.requests().len(), seen);
    // Allowed again: the reload cleared the cache, so the first GET is asked upstream again.
    proxy.write_policy(POLICY_CACHED);
    proxy.reload();
    get(&[]);
    assert_eq!(upstream_ids(None), 2, "a reload clears the cache");
    get(&[]);
    assert_eq!(upstream_ids(None), 2);
}
