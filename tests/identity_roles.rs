//! Each pod its own AWS role, end to end with real parts (root; issue 15 items 2-6): pods attached
//! by Debian's bridge and the real metaguard plugin; metaguard-proxy with `[aws]` enabled; moto's
//! server as STS and IAM with request authentication on (a wrongly signed AssumeRole fails these
//! tests: `identity_harness` shows moto refusing one); fake-metadata serving the moto node user's
//! key as the node's credentials; botocore's default credential chain as the pod's client.
//!
//! Run: `bash scripts/lib/identity-venv.sh && cargo build --workspace --bins &&
//! cargo test -p metaguard-tests --test identity_roles`.

use metaguard_tests::cni::{Node, Pod};
use metaguard_tests::moto::{
    pod_client, IdentityCloud, IdentityOptions, ImdsMode, PodClientOptions, PodClientResult,
};
use metaguard_tests::netns::wait_for;
use metaguard_tests::proxy::{imds, request, Proxy, ProxyOptions};
use serde_json::Value;
use std::time::Duration;

const V: &str = "1.0.0";

/// One test at a time: each runs moto, fake-metadata, a proxy and Python clients, and the
/// prefetch figures mean something only when tests do not fight over the 2 CPUs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
const TOKEN: &str = "X-aws-ec2-metadata-token";
const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

/// The proxy's configuration: `[aws]` on, moto as STS; `extra` is more TOML: keys of `[aws]`
/// first (before any table header), then tables.
fn config(ic: &IdentityCloud, extra: &str) -> String {
    let (aws_keys, tables) = match extra.find('[') {
        Some(i) => extra.split_at(i),
        None => (extra, ""),
    };
    format!(
        "[aws]\nenabled = true\n{aws_keys}\n[aws.sts]\nendpoint = \"{}\"\nnode_name = \"node-1\"\n{tables}",
        ic.moto.endpoint()
    )
}

/// team-a -> pod-role-a, team-b -> pod-role-b (with an ExternalId the trust policy does not
/// ask for: STS ignores it), strict -> pod-role-a under require_imdsv2; team-c: no role.
fn policy(ic: &IdentityCloud) -> String {
    let a = ic.moto.role_arn("pod-role-a").expect("role a");
    let b = ic.moto.role_arn("pod-role-b").expect("role b");
    let account = &ic.moto.setup.account_id;
    format!(
        r#"
default = "aws"
role_base_arn = "arn:aws:iam::{account}:role/"

[[selector]]
namespace = "strict"
policy = "strict"

[[policy]]
name = "strict"
fallback = "aws"
require_imdsv2 = true

[[role]]
namespace = "team-a"
role_arn = "{a}"

[[role]]
namespace = "strict"
role_arn = "{a}"

[[role]]
namespace = "team-b"
role_arn = "{b}"
external_id = "ext-team-b"
session_policy = '{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}}]}}'

# kube2iam's annotation, honoured in team-d for role b only (by name, through role_base_arn).
[[role_annotation]]
namespace = "team-d"
allow = ["{b}"]
"#
    )
}

fn start(node: &Node, ic: &IdentityCloud, extra: &str) -> Proxy {
    let p = Proxy::start(
        ProxyOptions::new(node.ns.name(), &node.state_dir())
            .policy(&policy(ic))
            .config(&config(ic, extra)),
    );
    p.wait_ready();
    p
}

fn client(pod: &Pod<'_>, imds_mode: ImdsMode) -> PodClientResult {
    let opts = PodClientOptions {
        imds: imds_mode,
        ..PodClientOptions::default()
    };
    pod_client(&pod.ns, &opts).expect("pod client")
}

/// `aws sts get-caller-identity` run in the pod with nothing but IMDS to get credentials from
/// (no configuration files, no AWS_* variables, IMDSv1 fallback off); the ARN it prints.
fn aws_cli_caller_arn(pod: &Pod<'_>) -> String {
    let aws = metaguard_tests::moto::venv_bin("aws").expect("the AWS CLI in the identity venv");
    let mut cmd = pod.ns.command(&aws);
    cmd.args([
        "sts",
        "get-caller-identity",
        "--output",
        "json",
        "--region",
        "us-east-1",
    ])
    .args(["--endpoint-url", &metaguard_tests::moto::sts_endpoint()])
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("HOME", "/nonexistent")
    .env("AWS_CONFIG_FILE", "/nonexistent/config")
    .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    .env("AWS_EC2_METADATA_V1_DISABLED", "true");
    let out = cmd.output().expect("run aws");
    assert!(
        out.status.success(),
        "aws sts get-caller-identity: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("aws CLI JSON");
    v["Arn"].as_str().expect("Arn").to_string()
}

fn assumed(ic: &IdentityCloud, role: &str, session: &str) -> String {
    format!(
        "arn:aws:sts::{}:assumed-role/{role}/{session}",
        ic.moto.setup.account_id
    )
}

#[test]
fn each_pod_gets_its_own_role_and_a_pod_without_one_gets_none() {
    let _serial = serial();
    let node = Node::new();
    let ic = IdentityCloud::attach(&node, &IdentityOptions::default()).expect("cloud");
    let proxy = start(&node, &ic, "");
    let a = node.k8s_pod(V, "team-a", "web-a", &[]);
    let b = node.k8s_pod(V, "team-b", "web-b", &[]);
    let c = node.k8s_pod(V, "team-c", "web-c", &[]);

    let ra = client(&a, ImdsMode::V2Only);
    assert_eq!(ra.method.as_deref(), Some("iam-role"), "{ra:?}");
    assert!(ra.imds_token, "botocore used IMDSv2: {ra:?}");
    assert_eq!(
        ra.arn.as_deref(),
        Some(assumed(&ic, "pod-role-a", "team-a.web-a").as_str()),
        "{ra:?}"
    );
    // The same over IPv6 ([fd00:ec2::254]): the same role and session.
    let ra6 = pod_client(
        &a.ns,
        &PodClientOptions {
            imds: ImdsMode::V2Only,
            ipv6: true,
            ..PodClientOptions::default()
        },
    )
    .expect("pod client");
    assert_eq!(ra6.arn, ra.arn, "{ra6:?}");
    // Role b's mapping has an ExternalId and a session policy: both go to STS (signed).
    let rb = client(&b, ImdsMode::V2Only);
    assert_eq!(
        rb.arn.as_deref(),
        Some(assumed(&ic, "pod-role-b", "team-b.web-b").as_str()),
        "{rb:?}"
    );
    assert_ne!(ra.access_key_id, rb.access_key_id);
    // The AWS CLI (v1, its own copy of botocore) in pod B: the same role and session.
    assert_eq!(
        aws_cli_caller_arn(&b),
        assumed(&ic, "pod-role-b", "team-b.web-b")
    );
    assert_ne!(
        ra.access_key_id.as_deref(),
        Some(ic.moto.setup.node.access_key_id.as_str()),
        "never the node's own key"
    );
    let rc = client(&c, ImdsMode::V2Only);
    assert!(rc.access_key_id.is_none() && rc.arn.is_none(), "{rc:?}");
    assert_eq!(
        rc.error.as_ref().map(|e| e.stage.as_str()),
        Some("credentials")
    );
    // The kube2iam annotation: honoured where the operator allows that role, nowhere else.
    let key = "iam.amazonaws.com/role";
    let d = node.k8s_pod(V, "team-d", "web-d", &[(key, "pod-role-b")]);
    let rd = client(&d, ImdsMode::V2Only);
    assert_eq!(
        rd.arn.as_deref(),
        Some(assumed(&ic, "pod-role-b", "team-d.web-d").as_str()),
        "{rd:?}"
    );
    for (ns, asked) in [("team-d", "pod-role-a"), ("team-e", "pod-role-b")] {
        let e = node.k8s_pod(V, ns, "web-e", &[(key, asked)]);
        let re = client(&e, ImdsMode::V2Only);
        assert!(
            re.access_key_id.is_none(),
            "{ns} asking for {asked}: {re:?}"
        );
    }
    assert!(proxy
        .stderr()
        .contains("no [[role_annotation]] allows this role"));

    // The pod's role in its own iam/ tree; another name is 404, and iam/info is built here.
    let (st, token) = token_of(&a);
    assert_eq!(st, 200);
    assert_eq!(get(&a, CREDS, &token), (200, "pod-role-a\n".to_string()));
    assert_eq!(get(&a, &format!("{CREDS}pod-role-b"), &token).0, 404);
    let (st, info) = get(&a, "/latest/meta-data/iam/info", &token);
    assert_eq!(st, 200);
    let info: Value = serde_json::from_str(&info).expect("info JSON");
    assert!(info["InstanceProfileArn"]
        .as_str()
        .is_some_and(|s| s.ends_with(":instance-profile/pod-role-a")));
    // Nothing under iam/ ever reached the metadata service from a pod.
    assert!(!ic
        .cloud
        .fake
        .requests()
        .iter()
        .any(|r| r.target.contains("/iam/") && !r.peer.starts_with("169.254.169.1:")));
    // Decision lines name the role and the IMDS version.
    let line = proxy.wait_decision("pod A's credentials", |d| {
        d["path"] == format!("{CREDS}pod-role-a") && d["status"] == 200
    });
    assert_eq!(line["role"], ic.moto.role_arn("pod-role-a").unwrap());
    assert_eq!(line["imds_version"], "v2");
    assert_eq!(line["rule"], "pod-role");
    // One STS call per identity, all signed well enough for moto's authentication.
    let ok = proxy
        .metric("metaguard_sts_calls_total{result=\"ok\"}")
        .unwrap_or(0.0);
    assert_eq!(ok, 3.0, "three identities, one call each (prefetched)");
}

#[test]
fn imdsv1_is_refused_under_require_imdsv2() {
    let _serial = serial();
    let node = Node::new();
    let ic = IdentityCloud::attach(&node, &IdentityOptions::default()).expect("cloud");
    let _proxy = start(&node, &ic, "");
    let strict = node.k8s_pod(V, "strict", "s", &[]);
    let plain = node.k8s_pod(V, "team-a", "p", &[]);
    let v1 = client(&strict, ImdsMode::V1Only);
    assert!(v1.access_key_id.is_none(), "{v1:?}");
    // Control: the same role over IMDSv1 where the policy allows it.
    let control = client(&plain, ImdsMode::V1Only);
    assert_eq!(control.method.as_deref(), Some("iam-role"), "{control:?}");
    // And the strict pod over IMDSv2.
    let v2 = client(&strict, ImdsMode::V2Only);
    assert_eq!(
        v2.arn.as_deref(),
        Some(assumed(&ic, "pod-role-a", "strict.s").as_str()),
        "{v2:?}"
    );
}

fn token_of(pod: &Pod<'_>) -> (u16, String) {
    let ex = request(
        pod.ns.path(),
        imds(false),
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "300")],
    );
    let r = ex.responses.first().expect("token answer");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn get(pod: &Pod<'_>, path: &str, token: &str) -> (u16, String) {
    let ex = request(pod.ns.path(), imds(false), "GET", path, &[(TOKEN, token)]);
    match ex.responses.first() {
        Some(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        None => (0, ex.summary()),
    }
}

/// The credential JSON a pod gets, parsed.
fn credentials(pod: &Pod<'_>, role: &str) -> Value {
    let (_, token) = token_of(pod);
    let (st, body) = get(pod, &format!("{CREDS}{role}"), &token);
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).expect("credential JSON")
}

#[test]
fn sts_stopped_cached_credentials_are_still_served() {
    let _serial = serial();
    let node = Node::new();
    let mut ic = IdentityCloud::attach(&node, &IdentityOptions::default()).expect("cloud");
    let proxy = start(&node, &ic, "");
    let a = node.k8s_pod(V, "team-a", "web-a", &[]);
    let before = credentials(&a, "pod-role-a");
    ic.moto.stop();
    // A second identity asks while STS is down: an error answer, not someone else's credentials.
    let b = node.k8s_pod(V, "team-b", "web-b", &[]);
    let (_, token) = token_of(&b);
    let (st, body) = get(&b, &format!("{CREDS}pod-role-b"), &token);
    assert!(st == 503 || st == 500, "{st} {body}");
    assert!(!body.contains("AccessKeyId"), "{body}");
    wait_for("a failed STS call counted", Duration::from_secs(10), || {
        proxy
            .metric("metaguard_sts_calls_total{result=\"transport\"}")
            .unwrap_or(0.0)
            + proxy
                .metric("metaguard_sts_calls_total{result=\"timeout\"}")
                .unwrap_or(0.0)
            >= 1.0
    });
    // Readiness does not depend on STS.
    assert_eq!(proxy.admin_get("/readyz").map(|(st, _)| st), Some(200));
    // Pod A still gets the credentials it had, until they expire.
    let after = credentials(&a, "pod-role-a");
    assert_eq!(before["AccessKeyId"], after["AccessKeyId"]);
    assert_eq!(before["Expiration"], after["Expiration"]);
}

/// What the address-reuse rounds saw.
#[derive(Debug, Default)]
struct Reuse {
    rounds: usize,
    /// Rounds in which pod B was handed anything of pod A's: its token accepted, credentials of its
    /// role, its role listed.
    leaked: usize,
}

/// `n` rounds on one network namespace (so the address is reused, as in `address_reuse`): pod A
/// (team-a, role a) is added, gets its token and credentials, and is deleted; pod B (team-b,
/// role b) is added on the same address and asks at once, with A's token and then its own.
fn reuse_rounds(node: &Node, n: usize) -> Reuse {
    let mut pod = node.bridge_pod(V);
    let base = pod.container_id.clone();
    let mut seen = Reuse::default();
    for r in 0..n {
        pod.become_k8s(&format!("{base}-a{r}"), "team-a", &format!("a{r}"));
        pod.metaguard("ADD").expect_ok();
        let (_, token_a) = token_of(&pod);
        let (st, body) = get(&pod, &format!("{CREDS}pod-role-a"), &token_a);
        assert_eq!(st, 200, "round {r}: A's credentials: {body}");
        let ca: Value = serde_json::from_str(&body).expect("A's credential JSON");
        let key_a = ca["AccessKeyId"].as_str().expect("key").to_string();
        pod.metaguard("DEL").expect_ok();
        pod.become_k8s(&format!("{base}-b{r}"), "team-b", &format!("b{r}"));
        pod.metaguard("ADD").expect_ok();
        // B at once: A's token, then A's role with a token of its own, then whatever it lists.
        let with_a_token = get(&pod, &format!("{CREDS}pod-role-a"), &token_a);
        let (_, token_b) = token_of(&pod);
        let a_role = get(&pod, &format!("{CREDS}pod-role-a"), &token_b);
        let (_, listed) = get(&pod, CREDS, &token_b);
        let own = get(&pod, &format!("{CREDS}{}", listed.trim()), &token_b);
        pod.metaguard("DEL").expect_ok();
        seen.rounds += 1;
        // Anything of A's: its token accepted, its role's credentials (the same ones, or new
        // ones fetched for A's session because B was taken for A), its role listed.
        let leaked = with_a_token.0 == 200
            || a_role.0 == 200
            || listed.trim() == "pod-role-a"
            || [&with_a_token, &a_role, &own]
                .iter()
                .any(|(_, body)| body.contains(&key_a));
        seen.leaked += usize::from(leaked);
        if !leaked {
            // Under protection: 401 for A's token, 404 for A's role, B's own role answered.
            assert_eq!(with_a_token.0, 401, "round {r}: {with_a_token:?}");
            assert_eq!(a_role.0, 404, "round {r}: {a_role:?}");
            assert_eq!(listed.trim(), "pod-role-b", "round {r}");
            assert_eq!(own.0, 200, "round {r}: {own:?}");
        }
    }
    seen
}

#[test]
fn a_reused_address_never_gets_the_previous_pods_credentials() {
    let _serial = serial();
    let node = Node::new();
    let ic = IdentityCloud::attach(&node, &IdentityOptions::default()).expect("cloud");
    let _proxy = start(&node, &ic, "");
    let seen = reuse_rounds(&node, 200);
    println!("address reuse with the watch: {seen:?}");
    assert_eq!(seen.rounds, 200);
    assert_eq!(seen.leaked, 0);
}

#[test]
fn control_without_the_watch_a_reused_address_gets_the_previous_pods_credentials() {
    let _serial = serial();
    let node = Node::new();
    let ic = IdentityCloud::attach(&node, &IdentityOptions::default()).expect("cloud");
    // The same rounds with the record watch off: B is taken for A until the entry is revalidated.
    let _proxy = start(
        &node,
        &ic,
        "[records]\nwatch = false\nrevalidate_ms = 60000\n",
    );
    let seen = reuse_rounds(&node, 10);
    println!("address reuse without the watch (control): {seen:?}");
    assert_eq!(
        seen.leaked, seen.rounds,
        "the attack works when the watch is off"
    );
}

/// Starts `n` pods one after the other, each followed by what its container would do first:
/// botocore's default credential chain in a new process in the pod. Returns how many first
/// credential requests were answered from memory (decision line `cache: hit`), and the waits of
/// the others (ms).
fn first_requests(proxy: &Proxy, node: &Node, n: usize) -> (usize, Vec<f64>) {
    let mut waited = Vec::new();
    let mut hits = 0;
    for i in 0..n {
        let pod = node.k8s_pod(V, "team-a", &format!("p{i}"), &[]);
        let r = client(&pod, ImdsMode::V2Only);
        assert_eq!(r.method.as_deref(), Some("iam-role"), "pod {i}: {r:?}");
        let ip = pod.ip(false).to_string();
        let line = proxy.wait_decision("the first credential request", |d| {
            d["src"] == ip.as_str() && d["path"] == format!("{CREDS}pod-role-a")
        });
        if line["cache"] == "hit" {
            hits += 1;
        } else {
            eprintln!("pod {i} waited: {line}");
            waited.push(line["latency_ms"].as_f64().unwrap_or(-1.0));
        }
    }
    (hits, waited)
}

/// In 100 pod starts, the first credential request is answered from the prefetch: the STS call
/// was made when the plugin wrote the record, and the request found the credentials in memory.
/// One call per pod in all: the request never made one of its own.
#[test]
fn the_first_credential_request_of_a_new_pod_is_answered_from_the_prefetch() {
    let _serial = serial();
    let node = Node::new();
    let ic = IdentityCloud::attach(&node, &IdentityOptions::default()).expect("cloud");
    let proxy = start(&node, &ic, "");
    // moto loads its STS backend at its first STS request (tens of milliseconds, once per
    // process): one pod before the measured ones, so that cost is not counted as a pod start's.
    let warm = node.k8s_pod(V, "team-a", "warm-up", &[]);
    credentials(&warm, "pod-role-a");
    let (hits, waited) = first_requests(&proxy, &node, 100);
    println!("first credential requests: {hits} of 100 from memory; waited (ms): {waited:?}");
    if hits != 100 {
        // When and for whom the prefetch saw records and called STS (the proxy's debug log).
        let log = proxy.stderr();
        let relevant = log
            .lines()
            .filter(|l| l.contains("prefetch") || l.contains("sts"));
        for l in relevant.take(60) {
            eprintln!("{l}");
        }
    }
    assert_eq!(hits, 100, "waited: {waited:?}");
    let ok = proxy
        .metric("metaguard_sts_calls_total{result=\"ok\"}")
        .unwrap_or(0.0);
    assert_eq!(ok, 101.0, "one STS call per pod: the prefetch's");
}

/// The control: without the prefetch, the same pod starts wait for STS on their first request.
#[test]
fn control_without_the_prefetch_the_first_request_waits_for_sts() {
    let _serial = serial();
    let node = Node::new();
    let ic = IdentityCloud::attach(&node, &IdentityOptions::default()).expect("cloud");
    let proxy = start(&node, &ic, "prefetch = false\n");
    let (hits, waited) = first_requests(&proxy, &node, 10);
    println!("without prefetch: {hits} of 10 from memory; waited (ms): {waited:?}");
    assert_eq!(hits, 0);
}

/// A pod that asks the instant ADD returns (on the test's own connections: sooner than any
/// container can) finds the prefetch's call in flight and shares it: still one STS call per pod,
/// and every first request answered.
#[test]
fn a_pod_asking_before_the_prefetch_finished_shares_its_call() {
    let _serial = serial();
    let node = Node::new();
    let ic = IdentityCloud::attach(&node, &IdentityOptions::default()).expect("cloud");
    let proxy = start(&node, &ic, "");
    let mut waits = Vec::new();
    for i in 0..100 {
        let pod = node.k8s_pod(V, "team-a", &format!("q{i}"), &[]);
        let c = credentials(&pod, "pod-role-a");
        assert!(c["AccessKeyId"].is_string());
        let ip = pod.ip(false).to_string();
        let line = proxy.wait_decision("the credential request", |d| {
            d["src"] == ip.as_str() && d["path"] == format!("{CREDS}pod-role-a")
        });
        waits.push(line["latency_ms"].as_f64().unwrap_or(-1.0));
    }
    waits.sort_by(f64::total_cmp);
    println!(
        "asked at once: latency ms p50 {:.3} p99 {:.3} max {:.3}",
        waits[49], waits[98], waits[99]
    );
    let ok = proxy
        .metric("metaguard_sts_calls_total{result=\"ok\"}")
        .unwrap_or(0.0);
    assert_eq!(ok, 100.0, "one STS call per pod, shared with the request");
}
