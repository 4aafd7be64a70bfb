//! The path Kubernetes takes: containerd's CRI driven over gRPC the way the kubelet drives it
//! (RunPodSandbox, PodSandboxStatus, StopPodSandbox, RemovePodSandbox), on a node built by
//! `metaguard_tests::cri::CriNode` (containerd in a node namespace, metaguard-proxy on the node,
//! fake-metadata in a cloud namespace), with a pause image built locally
//! (scripts/build-pause-image.sh) and the policy conf/cri/policy.toml. containerd then calls the conflist (bridge + host-local +
//! metaguard) exactly as in a cluster: K8S_POD_* in CNI_ARGS, the pod's annotations through the
//! `io.kubernetes.cri.pod-annotations` capability.
//!
//! Needs root, containerd + runc, busybox-static, Debian's CNI plugins, and the built binaries
//! (`cargo build --workspace --bins`). One node is expensive, so one test function runs every step
//! against it; each step says what it checks. The node (and any pod a failed step left) is torn
//! down by `Drop`. See docs/cri.md.

use metaguard_common::ids::attachment_key;
use metaguard_common::record::PodRecord;
use metaguard_common::state::StateDir;
use metaguard_plugin::rules::table_name;
use metaguard_tests::cri::{CriClient, CriNode, PodSpec, SandboxStatus};
use metaguard_tests::fake::INSTANCE_ID;
use metaguard_tests::proxy::{imds, request};
use metaguard_tests::raw::Exchange;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const POLICY: &str = include_str!("../conf/cri/policy.toml");
const POLICY_ANNOTATION: &str = "metaguard.io/policy";
const NAMESPACE: &str = "mgcri-team";
const WAIT: Duration = Duration::from_secs(20);

fn step(started: Instant, s: &str) {
    eprintln!("\n=== cri_e2e [{:>5.1?}]: {s}", started.elapsed());
}

/// A pod UID in the kubelet's format, unique to this run.
fn uid(n: u32) -> String {
    format!(
        "6d1c0f5e-{n:04x}-4a7b-9c3d-{:012x}",
        u64::from(std::process::id())
    )
}

/// A sandbox started through the CRI, with what the test learnt about it.
struct Pod {
    spec: PodSpec,
    id: String,
    status: SandboxStatus,
    key: String,
}

impl Pod {
    fn start(node: &CriNode, cri: &mut CriClient, spec: PodSpec) -> Pod {
        let t = Instant::now();
        let id = cri
            .run_pod_sandbox(node.sandbox_config(&spec))
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\nplugin log:\n{}\n{}",
                    node.plugin_log(),
                    node.containerd_log_tail()
                )
            });
        let status = cri
            .pod_sandbox_status(&id)
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "pod {}/{}: sandbox {id} ready={} pid={} netns={:?} ips={:?} in {:.1?}",
            spec.namespace,
            spec.name,
            status.ready(),
            status.pid,
            status.netns,
            status.ips(),
            t.elapsed()
        );
        assert!(
            status.ready(),
            "sandbox {id} is not ready: {:?}",
            status.status
        );
        assert!(
            status.pid > 0,
            "no pid in the verbose status: {}",
            status.info
        );
        let key = attachment_key(node.network(), &id, "eth0");
        Pod {
            spec,
            id,
            status,
            key,
        }
    }

    /// The pod's network namespace as the test process can enter it.
    fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.status.pid))
    }

    fn netns_in_node(&self) -> &str {
        self.status
            .netns
            .as_deref()
            .unwrap_or_else(|| panic!("no network namespace path in {}", self.status.info))
    }

    fn ips(&self) -> BTreeSet<IpAddr> {
        self.status
            .ips()
            .iter()
            .map(|ip| {
                ip.parse()
                    .unwrap_or_else(|e| panic!("CRI pod IP {ip}: {e}"))
            })
            .collect()
    }

    fn ipv4(&self) -> IpAddr {
        *self
            .ips()
            .iter()
            .find(|ip| ip.is_ipv4())
            .unwrap_or_else(|| panic!("pod {} has no IPv4 address", self.id))
    }

    fn table(&self) -> String {
        table_name(&self.key)
    }

    /// GET `path` on 169.254.169.254 from inside the pod.
    fn get(&self, path: &str) -> Exchange {
        request(&self.netns(), imds(false), "GET", path, &[])
    }
}

fn status_body(ex: &Exchange) -> (u16, String) {
    let r = ex
        .responses
        .first()
        .unwrap_or_else(|| panic!("no HTTP response: {}", ex.summary()));
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn record(node: &CriNode, pod: &Pod) -> Option<PodRecord> {
    StateDir::new(node.state_dir())
        .read_record(&pod.key)
        .unwrap_or_else(|e| panic!("reading the record of {}: {e}", pod.key))
}

fn node_tables(node: &CriNode) -> String {
    node.node().ok("nft", &["list", "tables"])
}

/// Checks what ADD must have left for `pod`: a record with its identity and annotations, its
/// addresses indexed, the pod table inside its netns, the host guard on its host interface.
fn assert_guarded(node: &CriNode, pod: &Pod) -> PodRecord {
    let rec = record(node, pod).unwrap_or_else(|| {
        panic!(
            "no pod record {} in {}\nplugin log:\n{}",
            pod.key,
            node.state_dir().display(),
            node.plugin_log()
        )
    });
    eprintln!(
        "record {}: {}",
        pod.key,
        serde_json::to_string(&rec).unwrap_or_default()
    );
    assert_eq!(rec.container_id, pod.id, "container ID = sandbox ID");
    assert_eq!(rec.network, node.network());
    assert_eq!(rec.ifname, "eth0");
    assert_eq!(
        rec.namespace.as_deref(),
        Some(pod.spec.namespace.as_str()),
        "K8S_POD_NAMESPACE"
    );
    assert_eq!(
        rec.pod_name.as_deref(),
        Some(pod.spec.name.as_str()),
        "K8S_POD_NAME"
    );
    assert_eq!(
        rec.pod_uid.as_deref(),
        Some(pod.spec.uid.as_str()),
        "K8S_POD_UID"
    );
    assert_eq!(
        rec.annotations, pod.spec.annotations,
        "pod annotations via the CRI capability"
    );
    assert_eq!(
        rec.netns,
        pod.netns_in_node(),
        "CNI_NETNS is the netns containerd made"
    );
    let rec_ips: BTreeSet<IpAddr> = rec.ips.iter().copied().collect();
    assert_eq!(
        rec_ips,
        pod.ips(),
        "record addresses = the CRI's pod addresses"
    );
    assert!(
        rec.ips.iter().any(IpAddr::is_ipv4) && rec.ips.iter().any(IpAddr::is_ipv6),
        "v4 and v6"
    );
    let state = StateDir::new(node.state_dir());
    for ip in &rec.ips {
        assert_eq!(
            state
                .owner_of(ip)
                .unwrap_or_else(|e| panic!("ips/{ip}: {e}"))
                .as_deref(),
            Some(pod.key.as_str()),
            "ips/{ip} points at the pod's record"
        );
    }

    // Inside the pod: metaguard's table, entered through the netns path containerd created.
    let ruleset = node.pod_ruleset(pod.netns_in_node());
    assert!(
        ruleset.contains(&format!("table inet {}", pod.table())),
        "pod netns {} has no table inet {}:\n{ruleset}",
        pod.netns_in_node(),
        pod.table()
    );
    // On the node: the netdev guard bound to the pod's host-side veth.
    assert!(rec.host_guard, "record says no host guard");
    let host_if = rec
        .host_interface
        .clone()
        .expect("record names the host interface");
    let guard = node
        .node()
        .ok("nft", &["list", "table", "netdev", &pod.table()]);
    assert!(
        guard.contains(&host_if),
        "host guard table not bound to {host_if}:\n{guard}"
    );
    rec
}

/// StopPodSandbox + RemovePodSandbox, then checks nothing of the pod is left.
fn stop_and_remove(node: &CriNode, cri: &mut CriClient, pod: &Pod, rec: &PodRecord) {
    let t = Instant::now();
    cri.stop_pod_sandbox(&pod.id)
        .unwrap_or_else(|e| panic!("{e}"));
    let stopped = cri
        .pod_sandbox_status(&pod.id)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !stopped.ready(),
        "sandbox {} still ready after StopPodSandbox",
        pod.id
    );
    cri.remove_pod_sandbox(&pod.id)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "pod {}: stopped and removed in {:.1?}",
        pod.key,
        t.elapsed()
    );

    assert!(
        record(node, pod).is_none(),
        "record {} left behind",
        pod.key
    );
    let state = StateDir::new(node.state_dir());
    for ip in &rec.ips {
        assert_eq!(
            state.owner_of(ip).unwrap_or_else(|e| panic!("{e}")),
            None,
            "ips/{ip} left behind"
        );
    }
    let tables = node_tables(node);
    assert!(
        !tables.contains(&pod.table()),
        "host guard {} left on the node:\n{tables}",
        pod.table()
    );
    if let Some(host_if) = &rec.host_interface {
        assert!(
            !node
                .node()
                .run("ip", &["link", "show", host_if])
                .status
                .success(),
            "host interface {host_if} left on the node"
        );
    }
    assert!(
        !node.node_path_exists(pod.netns_in_node()),
        "netns {} left behind",
        pod.netns_in_node()
    );
    assert!(
        !PathBuf::from(format!("/proc/{}", pod.status.pid)).exists(),
        "sandbox process {} still running",
        pod.status.pid
    );
    let listed = cri.list_pod_sandboxes().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        listed.iter().all(|s| s.id != pod.id),
        "ListPodSandbox still has {}",
        pod.id
    );
}

#[test]
fn pod_sandboxes_through_the_cri_are_guarded_and_cleaned_up() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "cri_e2e needs root (namespaces, containerd)"
    );
    let started = Instant::now();

    step(
        started,
        "node up (containerd with CRI, metaguard-proxy, fake-metadata), pause image imported",
    );
    let node = CriNode::up(POLICY);
    let mut cri = node.client();
    let v = cri.version().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "CRI: {} {} (API {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");

    step(
        started,
        "RunPodSandbox: a pod whose annotation picks the allowed policy `cri-tenant`",
    );
    let tenant = Pod::start(
        &node,
        &mut cri,
        PodSpec::new(NAMESPACE, "web-0", &uid(1))
            .annotation(POLICY_ANNOTATION, "cri-tenant")
            .annotation("example.com/owner", "team-a"),
    );
    step(
        started,
        "RunPodSandbox: a pod whose annotation names a policy it may not pick (`aws`)",
    );
    let intruder = Pod::start(
        &node,
        &mut cri,
        PodSpec::new(NAMESPACE, "intruder-0", &uid(2)).annotation(POLICY_ANNOTATION, "aws"),
    );

    step(
        started,
        "both are guarded; records carry namespace, name, UID and annotations",
    );
    let tenant_rec = assert_guarded(&node, &tenant);
    let intruder_rec = assert_guarded(&node, &intruder);

    step(
        started,
        "the annotation selects the policy: fixed answer of `cri-tenant`, decision logged",
    );
    let (status, body) = status_body(&tenant.get("/metaguard/whoami"));
    assert_eq!((status, body.as_str()), (200, "policy=cri-tenant\n"));
    let pod_name = format!("{NAMESPACE}/web-0");
    let d = node.proxy().wait_decision("whoami of the tenant pod", |d| {
        d["path"] == "/metaguard/whoami" && d["pod"] == pod_name.as_str()
    });
    assert_eq!(d["policy"], "cri-tenant", "{d}");
    assert_eq!(d["rule"], "whoami", "{d}");
    assert_eq!(d["decision"], "respond", "{d}");
    assert_eq!(d["container_id"], tenant.id.as_str(), "{d}");
    assert_eq!(d["src"], tenant.ipv4().to_string().as_str(), "{d}");
    // The same over IPv6 (the pod's IPv6 address has its own ips/ entry and redirect).
    let (status, body) = status_body(&request(
        &tenant.netns(),
        imds(true),
        "GET",
        "/metaguard/whoami",
        &[],
    ));
    assert_eq!(
        (status, body.as_str()),
        (200, "policy=cri-tenant\n"),
        "over IPv6"
    );
    let d = node
        .proxy()
        .wait_decision("whoami of the tenant pod over IPv6", |d| {
            d["path"] == "/metaguard/whoami" && d["endpoint"] == "imds-v6"
        });
    assert_eq!(
        (d["pod"].as_str(), d["policy"].as_str()),
        (Some(pod_name.as_str()), Some("cri-tenant")),
        "{d}"
    );

    step(
        started,
        "`cri-tenant` forwards the instance ID to the metadata service",
    );
    let fake = node.cloud().fake.record();
    let (status, body) = status_body(&tenant.get("/latest/meta-data/instance-id"));
    assert_eq!((status, body.trim()), (200, INSTANCE_ID));
    assert!(
        fake.wait_for(|r| r.path() == "/latest/meta-data/instance-id", WAIT)
            .is_some(),
        "the allowed request never reached fake-metadata"
    );
    let d = node
        .proxy()
        .wait_decision("instance-id of the tenant pod", |d| {
            d["path"] == "/latest/meta-data/instance-id" && d["pod"] == pod_name.as_str()
        });
    assert_eq!(
        (d["policy"].as_str(), d["decision"].as_str()),
        (Some("cri-tenant"), Some("allow")),
        "{d}"
    );

    step(
        started,
        "an annotation naming an unlisted policy gets deny-all; nothing reaches upstream",
    );
    fake.clear();
    let (status, _) = status_body(&intruder.get("/latest/meta-data/instance-id"));
    assert_eq!(status, 403);
    let (status, _) = status_body(&intruder.get("/metaguard/whoami"));
    assert_eq!(status, 403);
    let intruder_name = format!("{NAMESPACE}/intruder-0");
    let d = node
        .proxy()
        .wait_decision("instance-id of the intruder pod", |d| {
            d["path"] == "/latest/meta-data/instance-id" && d["pod"] == intruder_name.as_str()
        });
    assert_eq!(d["policy"], "deny-all", "{d}");
    assert_eq!(d["decision"], "deny", "{d}");
    assert!(
        fake.requests().is_empty(),
        "denied requests reached fake-metadata: {:?}",
        fake.requests()
    );

    step(
        started,
        "StopPodSandbox + RemovePodSandbox remove record, pod table, guard, netns",
    );
    stop_and_remove(&node, &mut cri, &tenant, &tenant_rec);
    stop_and_remove(&node, &mut cri, &intruder, &intruder_rec);
    let state = StateDir::new(node.state_dir());
    assert_eq!(
        state.list_keys().unwrap_or_else(|e| panic!("{e}")),
        Vec::<String>::new()
    );
    let tables = node_tables(&node);
    assert!(
        !tables.contains("metaguard-"),
        "metaguard tables left on the node:\n{tables}"
    );
    assert!(
        node.pod_pids().is_empty(),
        "processes left in the pods' cgroups: {:?}",
        node.pod_pids()
    );
    // The plugin logged no failure on the way.
    let log = node.plugin_log();
    assert!(!log.contains(" ERROR "), "plugin log has errors:\n{log}");

    for d in node.proxy().decisions() {
        eprintln!("decision: {d}");
    }
    step(started, "done");
}
