//! Long polls through metaguard-proxy (root), end to end: pods attached by Debian's bridge and the
//! real metaguard plugin, the proxy in the node namespace, and fake-metadata in a "cloud" namespace
//! holding GCE-style long polls (`wait_for_change`, `last_etag`, `timeout_sec`) like GCE does; the
//! test changes a value through the fake's control path.
//!
//! Timeouts are short so the suite stays fast: the response timeout and the header-read timeout
//! are 1 s, and every long poll here outlives both.
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test proxy_longpoll`.

use metaguard_tests::cni::Node;
use metaguard_tests::netns::{wait_for, wait_for_value};
use metaguard_tests::proxy::{request, request_within, Cloud, Proxy, ProxyOptions};
use metaguard_tests::raw::Exchange;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const V: &str = "1.0.0";

/// GCE-shaped: attributes are cached (so a long poll that used the cache would show), the rest of
/// v1 is not; the fault paths are open for the timeout controls.
const POLICY: &str = r#"
default = "gcp-like"

[[policy]]
name = "gcp-like"

[[policy.rule]]
id = "attributes"
glob = "/computeMetadata/v1/instance/attributes/**"
query = ["wait_for_change", "timeout_sec", "last_etag"]
headers = { "Metadata-Flavor" = "Google" }
action = "allow"
cache_ttl_ms = 600000

[[policy.rule]]
id = "v1"
glob = "/computeMetadata/v1/**"
query = ["alt", "wait_for_change", "timeout_sec", "last_etag"]
headers = { "Metadata-Flavor" = "Google" }
action = "allow"

[[policy.rule]]
id = "faults"
glob = "/fault/**"
query = ["*"]
action = "allow"
"#;

/// One worker (the answer cache is per worker: "a hit" is deterministic). The response and
/// header-read timeouts are 1 s; long polls wait at most 20 s plus 1 s; a pod may hold 2, all pods
/// together 3.
const CONFIG: &str = "worker_threads = 1
[upstream]
response_timeout_ms = 1000
[limits]
header_read_timeout_ms = 1000
[long_poll]
max_wait_ms = 20000
slack_ms = 1000
max_per_source = 2
max_total = 3
[shutdown]
grace_ms = 4000
";

const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
const FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");
const ATTRS: &str = "/computeMetadata/v1/instance/attributes";

fn start(node: &Node) -> Proxy {
    let p = Proxy::start(
        ProxyOptions::new(node.ns.name(), &node.state_dir())
            .policy(POLICY)
            .config(CONFIG),
    );
    p.wait_ready();
    p
}

fn imds() -> SocketAddr {
    metaguard_tests::proxy::imds(false)
}

fn status(ex: &Exchange) -> u16 {
    ex.responses.first().map(|r| r.status).unwrap_or(0)
}

fn body(ex: &Exchange) -> String {
    ex.responses
        .first()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default()
}

fn header<'a>(ex: &'a Exchange, name: &str) -> Option<&'a str> {
    ex.responses.first().and_then(|r| r.header(name))
}

/// A GCP GET with the flavor header, answered within 5 s.
fn get(ns: &Path, target: &str) -> Exchange {
    request(ns, imds(), "GET", target, &[FLAVOR])
}

/// A GCP GET from a thread of its own, waiting up to 30 s for its answer.
fn long_poll(ns: &Path, target: &str) -> JoinHandle<Exchange> {
    let (ns, target) = (ns.to_path_buf(), target.to_string());
    std::thread::spawn(move || {
        request_within(
            &ns,
            imds(),
            "GET",
            &target,
            &[FLAVOR],
            Duration::from_secs(30),
        )
    })
}

/// Requests with `wait_for_change=true` the fake has received.
fn waits_upstream(cloud: &Cloud) -> usize {
    cloud
        .fake
        .count_matching(|r| r.target.contains("wait_for_change=true"))
}

fn open_long_polls(proxy: &Proxy) -> Option<f64> {
    proxy.metric("metaguard_proxy_long_polls_open")
}

/// Waits until the proxy holds `n` long polls and the fake has received `upstream` of them.
fn wait_held(proxy: &Proxy, cloud: &Cloud, n: usize, upstream: usize) {
    wait_for(
        &format!("{n} long polls held, {upstream} upstream"),
        Duration::from_secs(10),
        || open_long_polls(proxy) == Some(n as f64) && waits_upstream(cloud) == upstream,
    );
}

fn join(h: JoinHandle<Exchange>) -> Exchange {
    h.join().expect("request thread")
}

#[test]
fn a_long_poll_outlives_the_response_timeout_and_answers_at_its_timeout_or_a_change() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node);
    let pod = node.pod(V);
    let ns = pod.ns.path();

    // At its timeout: nothing changes, so after timeout_sec (2 s, past the 1 s response and
    // header-read timeouts) the value comes back as it is, 200 with its ETag.
    let ex = request_within(
        ns,
        imds(),
        "GET",
        "/computeMetadata/v1/instance/hostname?wait_for_change=true&timeout_sec=2",
        &[FLAVOR],
        Duration::from_secs(10),
    );
    assert_eq!(status(&ex), 200, "{}", ex.summary());
    assert_eq!(body(&ex), "metaguard-lab.c.metaguard-lab.internal");
    let etag = header(&ex, "etag").expect("ETag relayed");
    assert_eq!(etag.len(), 16, "{etag}");
    assert!(
        ex.elapsed >= Duration::from_secs(2) && ex.elapsed < Duration::from_secs(5),
        "answered after {:?}",
        ex.elapsed
    );
    let d = proxy.wait_decision("the long poll that timed out", |d| {
        d["path"] == "/computeMetadata/v1/instance/hostname"
    });
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(d["rule"], "v1");
    assert_eq!(
        (d["status"].clone(), d["upstream_status"].clone()),
        (200.into(), 200.into())
    );
    assert!(d["latency_ms"].as_f64().is_some_and(|l| l >= 2000.0), "{d}");

    // At a change: the pod holds the value's ETag and waits (timeout_sec 15) until it changes.
    cloud.set_gcp("instance/attributes/flag", "one");
    let first = get(ns, &format!("{ATTRS}/flag"));
    assert_eq!(body(&first), "one", "{}", first.summary());
    let etag_one = header(&first, "etag").expect("ETag").to_string();
    let held = long_poll(
        ns,
        &format!("{ATTRS}/flag?wait_for_change=true&timeout_sec=15&last_etag={etag_one}"),
    );
    let t0 = Instant::now();
    wait_held(&proxy, &cloud, 1, 2);
    // Still held once the response timeout is well past: the measured property itself.
    wait_for(
        "time past the response timeout",
        Duration::from_secs(5),
        || t0.elapsed() > RESPONSE_TIMEOUT + Duration::from_millis(500),
    );
    assert!(!held.is_finished(), "the long poll ended early");
    assert_eq!(open_long_polls(&proxy), Some(1.0));
    cloud.set_gcp("instance/attributes/flag", "two");
    let ex = join(held);
    assert_eq!(status(&ex), 200, "{}", ex.summary());
    assert_eq!(body(&ex), "two");
    let etag_two = header(&ex, "etag").expect("ETag");
    assert_ne!(etag_two, etag_one);
    assert!(ex.elapsed < Duration::from_secs(15), "{:?}", ex.elapsed);
    wait_for("no long poll held", Duration::from_secs(5), || {
        open_long_polls(&proxy) == Some(0.0)
    });
}

#[test]
fn long_polls_never_use_the_answer_cache() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node);
    let pod = node.pod(V);
    let ns = pod.ns.path();
    cloud.set_gcp("instance/attributes/mode", "a");
    let upstream = |q: &str| {
        let want = format!("{ATTRS}/mode{q}");
        cloud.fake.count_matching(|r| r.target == want)
    };
    // Control: the rule caches, so a plain GET is asked once and then answered from the cache.
    for _ in 0..2 {
        assert_eq!(body(&get(ns, &format!("{ATTRS}/mode"))), "a");
    }
    assert_eq!(
        upstream(""),
        1,
        "the control's second GET was not a cache hit"
    );
    // The same long poll twice in a row: each reaches the fake and waits for its own change.
    let q = "?wait_for_change=true&timeout_sec=15";
    for (round, value) in ["b", "c"].into_iter().enumerate() {
        let held = long_poll(ns, &format!("{ATTRS}/mode{q}"));
        wait_for("the long poll upstream", Duration::from_secs(10), || {
            upstream(q) == round + 1 && open_long_polls(&proxy) == Some(1.0)
        });
        assert!(
            !held.is_finished(),
            "round {round}: answered without waiting"
        );
        cloud.set_gcp("instance/attributes/mode", value);
        let ex = join(held);
        assert_eq!(status(&ex), 200, "round {round}: {}", ex.summary());
        assert_eq!(body(&ex), value, "round {round}");
    }
    // The decision lines say so (written in the background: wait for all four).
    let path = format!("{ATTRS}/mode");
    let lines = wait_for_value("four decision lines", Duration::from_secs(5), || {
        let l: Vec<Value> = proxy
            .decisions()
            .into_iter()
            .filter(|d| d["path"] == path.as_str())
            .collect();
        (l.len() == 4).then_some(l)
    });
    let caches: Vec<&str> = lines.iter().filter_map(|d| d["cache"].as_str()).collect();
    assert_eq!(caches, ["miss", "hit", "off", "off"], "{lines:?}");
    assert!(lines.iter().all(|d| d["rule"] == "attributes"), "{lines:?}");
    // Nothing a long poll brought back was stored: the plain GET still gets the cached "a".
    assert_eq!(body(&get(ns, &format!("{ATTRS}/mode"))), "a");
}

#[test]
fn over_the_long_poll_caps_a_pod_gets_429_and_nothing_reaches_upstream() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = start(&node);
    let a = node.pod(V);
    let b = node.pod(V);
    cloud.set_gcp("instance/attributes/gate", "closed");
    let poll = format!("{ATTRS}/gate?wait_for_change=true&timeout_sec=15");
    let mut held: Vec<JoinHandle<Exchange>> = Vec::new();

    // Pod a holds its two.
    for n in 1..=2 {
        held.push(long_poll(a.ns.path(), &poll));
        wait_held(&proxy, &cloud, n, n);
    }
    // A third from a: refused at once, before anything is forwarded.
    let ex = get(a.ns.path(), &poll);
    assert_eq!(status(&ex), 429, "{}", ex.summary());
    assert_eq!(header(&ex, "retry-after"), Some("5"));
    assert!(
        body(&ex).contains("too many long polls from this address"),
        "{:?}",
        body(&ex)
    );
    assert!(ex.elapsed < RESPONSE_TIMEOUT, "{:?}", ex.elapsed);
    // Its ordinary requests still go through: only hanging requests are capped.
    assert_eq!(
        status(&get(a.ns.path(), "/computeMetadata/v1/instance/id")),
        200
    );
    // Pod b has its own share: one fits in the total (3), the next does not.
    held.push(long_poll(b.ns.path(), &poll));
    wait_held(&proxy, &cloud, 3, 3);
    let ex = get(b.ns.path(), &poll);
    assert_eq!(status(&ex), 429, "{}", ex.summary());
    assert_eq!(header(&ex, "retry-after"), Some("5"));
    assert!(
        body(&ex).contains("too many long polls in progress"),
        "{:?}",
        body(&ex)
    );
    // The fake never got either refused request.
    assert_eq!(waits_upstream(&cloud), 3);

    let refused = |why: &str| {
        proxy.metric(&format!(
            "metaguard_proxy_long_polls_refused_total{{reason=\"{why}\"}}"
        ))
    };
    assert_eq!(refused("per_source"), Some(1.0));
    assert_eq!(refused("total"), Some(1.0));
    for (pod, reason) in [(&a, "from this address"), (&b, "in progress")] {
        let ip = pod.ip(false).to_string();
        let d = proxy.wait_decision("a refused long poll", |d| {
            d["src"] == ip.as_str() && d["status"] == 429
        });
        assert_eq!(d["decision"], "long-poll-limited", "{d}");
        assert_eq!(
            (d["policy"].as_str(), d["rule"].as_str()),
            (Some("gcp-like"), Some("attributes"))
        );
        assert!(
            d["reason"].as_str().is_some_and(|r| r.contains(reason)),
            "{d}"
        );
        assert!(d["upstream_status"].is_null(), "{d}");
    }
    assert_eq!(
        proxy.metric(
            "metaguard_proxy_requests_total{decision=\"long-poll-limited\",policy=\"gcp-like\",rule=\"attributes\"}"
        ),
        Some(2.0)
    );

    // The change answers every long poll held; their slots come back.
    cloud.set_gcp("instance/attributes/gate", "open");
    for h in held {
        let ex = join(h);
        assert_eq!(
            (status(&ex), body(&ex)),
            (200, "open".to_string()),
            "{}",
            ex.summary()
        );
    }
    wait_for("every slot back", Duration::from_secs(5), || {
        open_long_polls(&proxy) == Some(0.0)
    });
    let ex = long_poll(a.ns.path(), &poll);
    wait_held(&proxy, &cloud, 1, 4);
    cloud.set_gcp("instance/attributes/gate", "closed");
    assert_eq!(status(&join(ex)), 200);
}

#[test]
fn sighup_leaves_a_long_poll_alone_and_sigterm_ends_it_within_the_grace_period() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let mut proxy = start(&node);
    let pod = node.pod(V);
    let ns: PathBuf = pod.ns.path().to_path_buf();
    cloud.set_gcp("instance/attributes/flag", "one");
    let poll = format!("{ATTRS}/flag?wait_for_change=true&timeout_sec=15");

    // SIGHUP with a new policy file: the reload is counted, the long poll goes on and gets the
    // change.
    let held = long_poll(&ns, &poll);
    wait_held(&proxy, &cloud, 1, 1);
    proxy.write_policy(&format!("{POLICY}\n# reloaded\n"));
    proxy.reload();
    assert_eq!(
        proxy.metric("metaguard_proxy_policy_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    assert!(!held.is_finished(), "the reload cut the long poll");
    assert_eq!(open_long_polls(&proxy), Some(1.0));
    cloud.set_gcp("instance/attributes/flag", "two");
    let ex = join(held);
    assert_eq!(
        (status(&ex), body(&ex)),
        (200, "two".to_string()),
        "{}",
        ex.summary()
    );

    // SIGTERM: the long poll in flight is answered (503, retry) at once, not cut and not held
    // for the grace period (4 s); the daemon exits 0 with its decision line written.
    let held = long_poll(&ns, &poll);
    wait_held(&proxy, &cloud, 1, 2);
    let t0 = Instant::now();
    let st = proxy.stop().expect("exited after SIGTERM");
    let took = t0.elapsed();
    assert!(st.success(), "{st}");
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    let ex = join(held);
    assert_eq!(status(&ex), 503, "{}", ex.summary());
    assert_eq!(header(&ex, "retry-after"), Some("1"));
    assert_eq!(header(&ex, "connection"), Some("close"));
    assert!(body(&ex).contains("shutting down"), "{:?}", body(&ex));
    let ended: Vec<Value> = proxy
        .decisions()
        .into_iter()
        .filter(|d| d["status"] == 503)
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["decision"], "error");
    assert!(ended[0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("shutting down")));
}

#[test]
fn only_a_request_that_asks_to_wait_gets_the_long_deadline() {
    let node = Node::new();
    let _cloud = Cloud::attach(&node.ns);
    let proxy = start(&node);
    let pod = node.pod(V);
    let ns = pod.ns.path();
    // The same slow path (2.5 s): plain, or saying it does not wait, it times out at the response
    // timeout (1 s); asking to wait, it gets its answer.
    for (query, want) in [
        ("", 504),
        ("&wait_for_change=false&timeout_sec=5", 504),
        ("&timeout_sec=5", 504),
        ("&wait_for_change=true&timeout_sec=5", 200),
    ] {
        let target = format!("/fault/slow?ms=2500{query}");
        let ex = request_within(ns, imds(), "GET", &target, &[], Duration::from_secs(10));
        assert_eq!(status(&ex), want, "{target}: {}", ex.summary());
        if want == 504 {
            assert!(body(&ex).contains("timed out"), "{target}: {:?}", body(&ex));
            assert!(
                ex.elapsed >= RESPONSE_TIMEOUT && ex.elapsed < Duration::from_millis(2400),
                "{target}: {:?}",
                ex.elapsed
            );
        } else {
            assert_eq!(body(&ex), "slow\n");
            assert!(
                ex.elapsed >= Duration::from_millis(2500),
                "{:?}",
                ex.elapsed
            );
        }
    }
    assert_eq!(
        proxy.metric(
            "metaguard_proxy_upstream_failures_total{endpoint=\"imds-v4\",kind=\"timeout\"}"
        ),
        Some(3.0)
    );
}
