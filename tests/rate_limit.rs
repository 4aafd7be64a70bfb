//! Per-pod rate limits end to end (root): pods attached by Debian's bridge and the real metaguard
//! plugin, metaguard-proxy in the node namespace, fake-metadata in a "cloud" namespace recording
//! every request it receives.
//!
//! The attack: a pod sends more than its policy's burst, over two connections held open at once
//! (the proxy hands the second to the other worker thread, so the bucket must be shared), then asks
//! for a locally answered path. Everything past the burst gets 429 with `Retry-After`, the fake never
//! sees it, and each refusal is a `rate-limited` decision line and a count in the metrics; a second
//! pod under the same policy gets its full burst. The control: the same requests under the same
//! policy without its small limit are all answered.
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test rate_limit`.

use metaguard_proxy::pipeline::MAX_REFUSAL_HOLD as HOLD;
use metaguard_tests::cni::{Node, Pod};
use metaguard_tests::fake::INSTANCE_ID;
use metaguard_tests::netns::wait_for;
use metaguard_tests::proxy::{imds, request, Cloud, Proxy, ProxyOptions};
use metaguard_tests::raw::{self, ReadOpts, Response, Step};
use serde_json::Value;
use std::time::Duration;

const V: &str = "1.0.0";
/// The pod's burst under the small limit; the rate (one token per 100 s) gives nothing back
/// while the test runs, however slow the machine.
const BURST: usize = 5;

/// The policy every pod gets; `limit` is spliced in (empty: the built-in default).
fn policy(limit: &str) -> String {
    format!(
        r#"
default = "small"

[[policy]]
name = "small"
{limit}
response_headers = {{ "X-Policy" = "small" }}

[[policy.rule]]
id = "instance-id"
path = "/latest/meta-data/instance-id"
query = ["n"]
action = "allow"

[[policy.rule]]
id = "fixed"
path = "/fixed"
action = "respond"
body = "fixed body"
"#
    )
}

const SMALL: &str = "rate = 0.01\nburst = 5";

fn target(tag: &str, i: usize) -> String {
    format!("/latest/meta-data/instance-id?n={tag}{i}")
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n").into_bytes()
}

/// `targets` pipelined on one kept-alive connection; the answers in order.
fn pipelined(conn: std::net::TcpStream, targets: &[String]) -> Vec<Response> {
    let steps: Vec<Step> = targets.iter().map(|t| Step::Write(get(t))).collect();
    let opts = ReadOpts {
        deadline: Duration::from_secs(5),
        max_responses: targets.len(),
        head_request: false,
    };
    let ex = raw::exchange(conn, &steps, opts);
    assert_eq!(ex.responses.len(), targets.len(), "{}", ex.summary());
    ex.responses
}

/// The attacker's requests: `2 * BURST` GETs of the allowed path (tagged `a0`, `a1`, ...), the first
/// three on one connection, the rest on a second one opened while the first was still open (so the
/// proxy gave it to the other worker); then the locally answered `/fixed`. Returns the answers.
fn burst_from(pod: &Pod<'_>) -> Vec<Response> {
    let addr = imds(false);
    let first = raw::connect(pod.ns.path(), addr, Duration::from_secs(5)).expect("connect");
    let second = raw::connect(pod.ns.path(), addr, Duration::from_secs(5)).expect("connect");
    let targets: Vec<String> = (0..2 * BURST).map(|i| target("a", i)).collect();
    let mut out = pipelined(first, &targets[..3]);
    out.extend(pipelined(second, &targets[3..]));
    let fixed = request(pod.ns.path(), addr, "GET", "/fixed", &[]);
    if fixed.statuses() == vec![429] {
        // A refusal is held until the next token is due, at most 100 ms (here the token is 100 s
        // away): a client looping on refusals is paced, not served as fast as the proxy can.
        assert!(
            fixed.elapsed >= HOLD,
            "refusal not held: {:?}",
            fixed.elapsed
        );
    }
    out.extend(fixed.responses);
    assert_eq!(out.len(), 2 * BURST + 1, "every request answered");
    out
}

fn start(node: &Node, limit: &str) -> Proxy {
    let p =
        Proxy::start(ProxyOptions::new(node.ns.name(), &node.state_dir()).policy(&policy(limit)));
    p.wait_ready();
    p
}

fn lines_of<'a>(lines: &'a [Value], pod: &Pod<'_>) -> Vec<&'a Value> {
    let ip = pod.ip(false).to_string();
    lines.iter().filter(|d| d["src"] == ip.as_str()).collect()
}

fn forwarded(cloud: &Cloud, tag: &str) -> Vec<String> {
    let prefix = target(tag, 0);
    let prefix = &prefix[..prefix.len() - 1];
    let mut v: Vec<String> = cloud
        .fake
        .requests()
        .into_iter()
        .map(|r| r.target)
        .filter(|t| t.starts_with(prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn a_pod_over_its_limit_gets_429_and_another_pod_keeps_its_share() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, SMALL);
    let attacker = node.pod(V);
    let other = node.pod(V);

    let answers = burst_from(&attacker);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    let mut want = vec![200; BURST];
    want.resize(2 * BURST + 1, 429);
    assert_eq!(
        statuses, want,
        "the burst, then refusals (the local answer too)"
    );
    for r in &answers[..BURST] {
        assert_eq!(String::from_utf8_lossy(&r.body), INSTANCE_ID);
    }
    for r in &answers[BURST..] {
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric Retry-After: {}", r.head));
        // One token per 100 s: the wait is 100 s less the time since the burst began.
        assert!((60..=100).contains(&retry), "Retry-After {retry}");
        assert_eq!(r.header("x-policy"), Some("small"), "the policy's headers");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "rate limit exceeded: this pod address may make 0.01 requests/s (bursts of 5)\n"
        );
    }

    // Another pod under the same policy: its own full burst, forwarded and answered locally.
    let mut theirs = Vec::new();
    for i in 0..BURST - 1 {
        let ex = request(other.ns.path(), imds(false), "GET", &target("b", i), &[]);
        theirs.push(ex.responses.first().map_or(0, |r| r.status));
    }
    let fixed = request(other.ns.path(), imds(false), "GET", "/fixed", &[]);
    assert_eq!(fixed.statuses(), vec![200], "{}", fixed.summary());
    assert_eq!(fixed.responses[0].body, b"fixed body");
    assert_eq!(theirs, vec![200; BURST - 1]);

    // The upstream saw exactly the allowed requests: none past the attacker's burst.
    wait_for(
        "the allowed requests at the fake",
        Duration::from_secs(10),
        || forwarded(&cloud, "a").len() == BURST && forwarded(&cloud, "b").len() == BURST - 1,
    );
    let want_a: Vec<String> = (0..BURST).map(|i| target("a", i)).collect();
    assert_eq!(forwarded(&cloud, "a"), want_a);

    // One decision line per request; each refusal its own decision, under the pod's policy.
    wait_for("every decision line", Duration::from_secs(10), || {
        let all = proxy.decisions();
        lines_of(&all, &attacker).len() == 2 * BURST + 1 && lines_of(&all, &other).len() == BURST
    });
    let all = proxy.decisions();
    let refused: Vec<&Value> = lines_of(&all, &attacker)
        .into_iter()
        .filter(|d| d["decision"] == "rate-limited")
        .collect();
    assert_eq!(refused.len(), BURST + 1, "{refused:?}");
    for d in &refused {
        assert_eq!(d["status"], 429);
        assert_eq!(d["policy"], "small");
        assert_eq!(d["rule"], Value::Null);
        assert_eq!(d["upstream_status"], Value::Null);
        assert_eq!(d["container_id"], attacker.container_id.as_str());
        assert!(
            d["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("rate limit exceeded")),
            "{d}"
        );
    }
    assert_eq!(refused.last().unwrap()["path"], "/fixed");
    // The hold is in the line's latency too.
    assert!(
        refused
            .iter()
            .all(|d| d["latency_ms"].as_f64() >= Some(99.0)),
        "{refused:?}"
    );
    assert!(
        lines_of(&all, &other)
            .iter()
            .all(|d| d["decision"] != "rate-limited"),
        "the other pod was never limited"
    );
    assert_eq!(
        proxy.metric(
            "metaguard_proxy_requests_total{decision=\"rate-limited\",policy=\"small\",rule=\"\"}"
        ),
        Some((BURST + 1) as f64)
    );
}

/// The control: the same requests under the same policy without the small limit (the built-in
/// default, 100/s with a burst of 1000) are all answered, and all reach the fake.
#[test]
fn the_same_burst_without_the_small_limit_is_all_answered() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node, "");
    let pod = node.pod(V);

    let statuses: Vec<u16> = burst_from(&pod).iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200; 2 * BURST + 1]);
    wait_for(
        "the allowed requests at the fake",
        Duration::from_secs(10),
        || forwarded(&cloud, "a").len() == 2 * BURST,
    );
    assert_eq!(
        proxy.metric(
            "metaguard_proxy_requests_total{decision=\"rate-limited\",policy=\"small\",rule=\"\"}"
        ),
        None
    );
}
