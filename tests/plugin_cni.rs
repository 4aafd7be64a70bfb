//! The `metaguard` CNI plugin driven like a runtime drives it, chained after Debian's real
//! `bridge` and `host-local`, in throwaway node and pod namespaces (run as root, after
//! `cargo build --workspace --bins`).

use metaguard_common::ids::short_hash;
use metaguard_tests::cni::{exec_plugin, nft_tables, with_env, Node, Pod};
use metaguard_tests::netns::{accept_within, recv_within};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const IMDS4: &str = "169.254.169.254";
const IMDS6: &str = "fd00:ec2::254";
const ALIBABA: &str = "100.100.100.200";
/// How long "does not arrive" is watched for. Rejected connections fail at once; dropped ones
/// are given this long to show up.
const QUIET: Duration = Duration::from_millis(700);

fn table_of(key: &str) -> String {
    format!("metaguard-{}", short_hash(key))
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn read_record(pod: &Pod) -> Value {
    let data = std::fs::read(pod.record_path()).expect("pod record exists");
    serde_json::from_slice(&data).unwrap()
}

/// Everything metaguard owns for `pod` is gone: pod table, guard table, record, address entries.
fn assert_nothing_left(node: &Node, pod: &Pod) {
    let table = table_of(&pod.key());
    if !pod.ns.is_deleted() {
        assert!(
            !nft_tables(&pod.ns).iter().any(|t| t.contains(&table)),
            "pod table left behind: {:?}",
            nft_tables(&pod.ns)
        );
    }
    assert!(
        !nft_tables(&node.ns).iter().any(|t| t.contains(&table)),
        "guard left behind: {:?}",
        nft_tables(&node.ns)
    );
    assert!(!pod.record_path().exists(), "record left behind");
    for e in node.ip_entries() {
        let owner =
            std::fs::read_to_string(node.state_dir().join("ips").join(&e)).unwrap_or_default();
        assert_ne!(owner, pod.key(), "address entry {e} left behind");
    }
}

/// The node namespace holds no metaguard object but the netdev guard tables, and no iptables
/// rule at all (bridge runs with ipMasq false; metaguard never uses iptables).
fn assert_node_clean_except_guards(node: &Node, guards: &[String]) {
    let mut expected: Vec<String> = guards.iter().map(|t| format!("netdev {t}")).collect();
    expected.sort();
    let mut tables = nft_tables(&node.ns);
    tables.sort();
    assert_eq!(tables, expected, "node nftables tables");
    for tool in [
        "iptables-save",
        "ip6tables-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        let out = node.ns.run(tool, &[]);
        if !out.status.success() {
            continue; // tool not installed
        }
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.to_lowercase().contains("metaguard"),
            "{tool} in node: {text}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("-A ")),
            "{tool} in node has rules: {text}"
        );
    }
}

/// Listeners in the node: the proxy ports on the gateways, and "real" metadata services on
/// 169.254.169.254, [fd00:ec2::254] (on the node's loopback).
struct NodeListeners {
    proxy4: TcpListener,
    proxy6: TcpListener,
    proxy_alibaba: TcpListener,
    imds4_80: TcpListener,
    imds4_81: TcpListener,
    imds4_udp: std::net::UdpSocket,
    imds6_80: TcpListener,
    imds6_81: TcpListener,
}

fn node_listeners(node: &Node) -> NodeListeners {
    node.ns
        .ok("ip", &["addr", "add", &format!("{IMDS4}/32"), "dev", "lo"]);
    node.ns
        .ok("ip", &["addr", "add", &format!("{IMDS6}/128"), "dev", "lo"]);
    NodeListeners {
        proxy4: node.ns.tcp_listen(sa(node.gateway4, 8169)),
        proxy6: node.ns.tcp_listen(sa(node.gateway6, 8170)),
        proxy_alibaba: node.ns.tcp_listen(sa(node.gateway4, 8171)),
        imds4_80: node.ns.tcp_listen(sa(ip(IMDS4), 80)),
        imds4_81: node.ns.tcp_listen(sa(ip(IMDS4), 81)),
        imds4_udp: node.ns.udp_bind(sa(ip(IMDS4), 80)),
        imds6_80: node.ns.tcp_listen(sa(ip(IMDS6), 80)),
        imds6_81: node.ns.tcp_listen(sa(ip(IMDS6), 81)),
    }
}

/// A TCP connection from the pod to `to` arrives at `listener`, from the pod's own address.
fn assert_arrives(pod: &Pod, to: SocketAddr, listener: &TcpListener) {
    let conn = pod.ns.tcp_connect(None, to, Duration::from_secs(3));
    assert!(conn.is_ok(), "connect from pod to {to}: {conn:?}");
    let (_, peer) = accept_within(listener, Duration::from_secs(3)).unwrap_or_else(|| {
        panic!(
            "connection to {to} did not arrive at {:?}",
            listener.local_addr()
        )
    });
    assert_eq!(
        peer.ip(),
        pod.ip(to.is_ipv6()),
        "source address seen at the listener"
    );
}

/// Nothing from the pod reaches `listener` (the connect itself fails: rejected or dropped).
fn assert_never_arrives(pod: &Pod, from: Option<IpAddr>, to: SocketAddr, listener: &TcpListener) {
    let conn = pod.ns.tcp_connect(from, to, QUIET);
    assert!(
        conn.is_err(),
        "connect from pod ({from:?}) to {to} succeeded"
    );
    assert!(
        accept_within(listener, QUIET).is_none(),
        "a connection to {to} reached {:?}",
        listener.local_addr()
    );
}

fn assert_udp_never_arrives(pod: &Pod, to: SocketAddr, sock: &std::net::UdpSocket) {
    // The send itself may succeed (the reject comes back as ICMP) or fail; either way nothing
    // may arrive.
    let _ = pod.ns.udp_send(to, b"hello");
    assert!(
        recv_within(sock, QUIET).is_none(),
        "a UDP datagram to {to} arrived"
    );
}

/// Everything issue 2 asks of one cniVersion.
fn full_scenario(version: &str) {
    let node = Node::new();
    let pod = node.pod(version);
    let key = pod.key();
    let table = table_of(&key);

    // ADD prints the bridge result unchanged (for 1.1.0: the result metaguard was given).
    let printed = pod.mg_result.clone().unwrap();
    assert_eq!(
        printed, pod.prev_result,
        "ADD must print prevResult unchanged"
    );
    if version != "1.1.0" {
        assert_eq!(printed, pod.bridge_result);
    } else {
        assert_eq!(
            printed["routes"][0]["table"], 254,
            "1.1.0 route fields survive"
        );
    }
    assert_eq!(printed["cniVersion"], version);

    // Rules in the pod, only the guard in the node, nothing in the node's iptables.
    assert_eq!(nft_tables(&pod.ns), vec![format!("inet {table}")]);
    assert_node_clean_except_guards(&node, std::slice::from_ref(&table));
    let guard_text = node.ns.ok("nft", &["list", "table", "netdev", &table]);
    assert!(
        guard_text.contains(&pod.host_veth()),
        "guard bound to the host veth: {guard_text}"
    );

    // The record.
    let rec = read_record(&pod);
    assert_eq!(rec["containerId"], pod.container_id.as_str());
    assert_eq!(rec["network"], node.network.as_str());
    assert_eq!(rec["ifname"], "eth0");
    assert_eq!(rec["netns"], pod.ns.path_str());
    assert_eq!(
        rec["ips"],
        json!([pod.ip(false).to_string(), pod.ip(true).to_string()])
    );
    assert_eq!(rec["namespace"], "team-a");
    assert_eq!(rec["podName"], "web-0");
    assert_eq!(rec["podUid"], "6f1e2a3b-0000-4000-8000-000000000001");
    assert_eq!(rec["hostInterface"], pod.host_veth().as_str());
    assert_eq!(rec["hostGuard"], true);
    let mut ips = vec![pod.ip(false).to_string(), pod.ip(true).to_string()];
    ips.sort();
    assert_eq!(node.ip_entries(), ips);

    // Traffic.
    let l = node_listeners(&node);
    assert_arrives(&pod, sa(ip(IMDS4), 80), &l.proxy4);
    assert_arrives(&pod, sa(ip(IMDS6), 80), &l.proxy6);
    assert_arrives(&pod, sa(ip(ALIBABA), 80), &l.proxy_alibaba);
    assert!(
        accept_within(&l.imds4_80, QUIET).is_none(),
        "the real 169.254.169.254:80 was reached"
    );
    assert!(
        accept_within(&l.imds6_80, Duration::ZERO).is_none(),
        "the real [fd00:ec2::254]:80 was reached"
    );
    assert_never_arrives(&pod, None, sa(ip(IMDS4), 81), &l.imds4_81);
    assert_never_arrives(&pod, None, sa(ip(IMDS6), 81), &l.imds6_81);
    assert_udp_never_arrives(&pod, sa(ip(IMDS4), 80), &l.imds4_udp);

    // Forged source addresses do not get past the pod's veth; the real ones do.
    let probe4 = node.ns.tcp_listen(sa(node.gateway4, 9000));
    let probe6 = node.ns.tcp_listen(sa(node.gateway6, 9000));
    assert_arrives(&pod, sa(node.gateway4, 9000), &probe4);
    assert_arrives(&pod, sa(node.gateway6, 9000), &probe6);
    let forged4 = match pod.ip(false) {
        IpAddr::V4(a) => IpAddr::from([a.octets()[0], a.octets()[1], a.octets()[2], 200]),
        _ => unreachable!(),
    };
    let forged6 = match pod.ip(true) {
        IpAddr::V6(a) => {
            let mut s = a.segments();
            s[7] = 0x77;
            IpAddr::from(s)
        }
        _ => unreachable!(),
    };
    pod.ns.ok(
        "ip",
        &["addr", "add", &format!("{forged4}/32"), "dev", "eth0"],
    );
    pod.ns.ok(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{forged6}/128"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    assert_never_arrives(&pod, Some(forged4), sa(node.gateway4, 9000), &probe4);
    assert_never_arrives(&pod, Some(forged6), sa(node.gateway6, 9000), &probe6);
    pod.ns.ok(
        "ip",
        &["addr", "del", &format!("{forged4}/32"), "dev", "eth0"],
    );
    pod.ns.ok(
        "ip",
        &[
            "-6",
            "addr",
            "del",
            &format!("{forged6}/128"),
            "dev",
            "eth0",
        ],
    );

    // Repeat ADD: same output, same rules, same record (creation time included).
    let pod_rules = pod.ns.ok("nft", &["list", "ruleset"]);
    let node_rules = node.ns.ok("nft", &["list", "ruleset"]);
    let rec_bytes = std::fs::read(pod.record_path()).unwrap();
    assert_eq!(pod.metaguard("ADD").expect_ok(), printed);
    assert_eq!(pod.ns.ok("nft", &["list", "ruleset"]), pod_rules);
    assert_eq!(node.ns.ok("nft", &["list", "ruleset"]), node_rules);
    assert_eq!(std::fs::read(pod.record_path()).unwrap(), rec_bytes);
    assert_arrives(&pod, sa(ip(IMDS4), 80), &l.proxy4);

    // CHECK passes (it exists from 0.4.0; before that it is an incompatible-version error).
    if version == "0.3.0" || version == "0.3.1" {
        pod.metaguard("CHECK").expect_error(1);
    } else {
        pod.metaguard("CHECK").expect_ok();
    }

    // With the pod's own rules flushed (a container with CAP_NET_ADMIN can), the host guard
    // still keeps the pod away from 169.254.169.254 and [fd00:ec2::254].
    pod.ns.ok("nft", &["flush", "ruleset"]);
    assert!(nft_tables(&pod.ns).is_empty());
    assert_never_arrives(&pod, None, sa(ip(IMDS4), 80), &l.imds4_80);
    assert_never_arrives(&pod, None, sa(ip(IMDS6), 80), &l.imds6_80);
    assert_udp_never_arrives(&pod, sa(ip(IMDS4), 80), &l.imds4_udp);
    assert!(accept_within(&l.proxy4, Duration::ZERO).is_none());
    // Control: without the guard the same connection does arrive, so the guard is what stopped it.
    node.ns.ok("nft", &["delete", "table", "netdev", &table]);
    assert_arrives(&pod, sa(ip(IMDS4), 80), &l.imds4_80);

    // DEL removes everything (on a second, intact pod), and DEL twice is fine.
    let pod2 = node.pod(version);
    assert_eq!(nft_tables(&pod2.ns).len(), 1);
    pod2.metaguard("DEL").expect_ok();
    assert_nothing_left(&node, &pod2);
    pod2.metaguard("DEL").expect_ok();
    assert_nothing_left(&node, &pod2);
    // And the first pod's DEL cleans up what the flush left.
    pod.metaguard("DEL").expect_ok();
    assert_nothing_left(&node, &pod);
    assert!(node.record_keys().is_empty());
    assert_node_clean_except_guards(&node, &[]);
}

#[test]
fn cni_0_3_1() {
    full_scenario("0.3.1");
}

#[test]
fn cni_0_4_0() {
    full_scenario("0.4.0");
}

#[test]
fn cni_1_0_0() {
    full_scenario("1.0.0");
}

#[test]
fn cni_1_1_0_with_recorded_bridge_result() {
    full_scenario("1.1.0");
}

#[test]
fn cni_0_3_0_add_del() {
    let node = Node::new();
    let pod = node.pod("0.3.0");
    assert_eq!(pod.mg_result.clone().unwrap(), pod.bridge_result);
    assert_eq!(
        nft_tables(&pod.ns),
        vec![format!("inet {}", table_of(&pod.key()))]
    );
    pod.metaguard("DEL").expect_ok();
    assert_nothing_left(&node, &pod);
}

#[test]
fn version_and_status() {
    let node = Node::new();
    let out = exec_plugin(
        &metaguard_tests::bins::bin("metaguard"),
        None,
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion":"1.0.0"}"#,
    );
    let v = out.expect_ok();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    let conf = node.metaguard_conf("1.1.0", &json!({}));
    let out = node.run_metaguard_global("STATUS", &conf);
    assert_eq!(
        out.expect_ok(),
        Value::Null,
        "STATUS prints nothing when ready"
    );
    assert!(out.stdout.trim().is_empty());

    // A state directory that cannot be created: not ready, code 50.
    let file = node.dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let conf = node.metaguard_conf("1.1.0", &json!({"stateDir": file.join("state")}));
    let e = node.run_metaguard_global("STATUS", &conf).expect_error(50);
    assert!(
        e["details"].as_str().unwrap().contains("state directory"),
        "{e}"
    );

    // STATUS before 1.1.0 is an incompatible version.
    node.run_metaguard_global("STATUS", &node.metaguard_conf("1.0.0", &json!({})))
        .expect_error(1);
}

#[test]
fn del_is_idempotent_and_needs_nothing() {
    let node = Node::new();
    // ADD never ran.
    let bare = node.bridge_pod("1.0.0");
    bare.metaguard("DEL").expect_ok();
    // No prevResult.
    let conf = node.metaguard_conf("1.0.0", &json!({}));
    bare.metaguard_with(&bare.call("DEL"), &conf).expect_ok();

    // The netns is gone (deleted by the runtime before DEL): the veth went with it, the guard
    // table stays in the node until DEL removes it.
    let mut pod = node.pod("1.0.0");
    let table = table_of(&pod.key());
    pod.delete_netns();
    assert_eq!(nft_tables(&node.ns), vec![format!("netdev {table}")]);
    pod.metaguard("DEL").expect_ok();
    assert_nothing_left(&node, &pod);
    pod.metaguard("DEL").expect_ok();
    // Without CNI_NETNS at all.
    let mut call = pod.call("DEL");
    call.netns = None;
    pod.metaguard_with(&call, &pod.metaguard_conf()).expect_ok();
    assert_node_clean_except_guards(&node, &[]);
}

/// Deletes the first rule of the pod's table, as `nft -a` numbers it.
fn delete_one_pod_rule(pod: &Pod, table: &str) {
    let listing = pod.ns.ok("nft", &["-a", "list", "table", "inet", table]);
    let mut chain = None;
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.split_whitespace().next().map(str::to_string);
            continue;
        }
        if line.starts_with("type ") || line.starts_with("policy ") {
            continue;
        }
        if let (Some(c), Some(h)) = (&chain, line.rsplit_once("# handle ").map(|(_, h)| h.trim())) {
            pod.ns
                .ok("nft", &["delete", "rule", "inet", table, c, "handle", h]);
            return;
        }
    }
    panic!("no rule found in {listing}");
}

#[test]
fn check_fails_when_anything_is_missing_or_different() {
    let node = Node::new();
    let pod = node.pod("1.0.0");
    let table = table_of(&pod.key());
    pod.metaguard("CHECK").expect_ok();

    // One rule removed from the pod's table.
    delete_one_pod_rule(&pod, &table);
    pod.metaguard("CHECK").expect_error(101);
    pod.metaguard("ADD").expect_ok(); // repeat ADD repairs
    pod.metaguard("CHECK").expect_ok();

    // The pod's table gone.
    pod.ns.ok("nft", &["delete", "table", "inet", &table]);
    pod.metaguard("CHECK").expect_error(101);
    pod.metaguard("ADD").expect_ok();

    // The host guard gone.
    node.ns.ok("nft", &["delete", "table", "netdev", &table]);
    let e = pod.metaguard("CHECK").expect_error(101);
    assert!(e.to_string().contains("guard"), "{e}");
    pod.metaguard("ADD").expect_ok();
    pod.metaguard("CHECK").expect_ok();

    // The record gone, then different.
    std::fs::remove_file(pod.record_path()).unwrap();
    let e = pod.metaguard("CHECK").expect_error(101);
    assert!(e.to_string().contains("record"), "{e}");
    pod.metaguard("ADD").expect_ok();
    let mut rec = read_record(&pod);
    rec["podName"] = json!("someone-else");
    std::fs::write(pod.record_path(), serde_json::to_vec(&rec).unwrap()).unwrap();
    pod.metaguard("CHECK").expect_error(101);
    pod.metaguard("ADD").expect_ok();
    pod.metaguard("CHECK").expect_ok();
}

#[test]
fn gc_removes_stale_attachments_and_keeps_valid_ones() {
    let node = Node::new();
    let a = node.pod("1.1.0"); // valid per cni.dev/attachments
    let b = node.pod("1.1.0"); // valid per cni.dev/valid-attachments
    let c = node.pod("1.1.0"); // stale, netns alive
    let mut d = node.pod("1.1.0"); // stale, netns deleted
    let e = node.pod("1.1.0"); // stale, record lost: only its guard table is left to find
    d.delete_netns();
    std::fs::remove_file(e.record_path()).unwrap();
    // A record of another network must survive.
    let other_key = format!("othernet:{}:eth0", a.container_id);
    let mut other = read_record(&a);
    other["network"] = json!("othernet");
    std::fs::write(
        node.record_path(&other_key),
        serde_json::to_vec(&other).unwrap(),
    )
    .unwrap();

    let mut conf = node.metaguard_conf("1.1.0", &json!({}));
    conf["cni.dev/attachments"] = json!([{"containerID": a.container_id, "ifname": "eth0"}]);
    conf["cni.dev/valid-attachments"] = json!([{"containerID": b.container_id, "ifname": "eth0"}]);
    node.run_metaguard_global("GC", &conf).expect_ok();

    let mut keys = vec![a.key(), b.key(), other_key.clone()];
    keys.sort();
    assert_eq!(node.record_keys(), keys);
    assert_nothing_left(&node, &c);
    assert_nothing_left(&node, &d);
    assert!(!nft_tables(&node.ns).contains(&format!("netdev {}", table_of(&e.key()))));
    assert_node_clean_except_guards(&node, &[table_of(&a.key()), table_of(&b.key())]);
    a.metaguard("CHECK").expect_ok();
    b.metaguard("CHECK").expect_ok();

    // GC without any valid list is refused (it would otherwise remove everything).
    let conf = node.metaguard_conf("1.1.0", &json!({}));
    node.run_metaguard_global("GC", &conf).expect_error(7);
    a.metaguard("CHECK").expect_ok();
    std::fs::remove_file(node.record_path(&other_key)).unwrap();
}

/// Holds /run/xtables.lock (as kube-proxy does on a busy node) until dropped.
struct XtablesLockHolder {
    pgid: i32,
}

impl XtablesLockHolder {
    fn take() -> XtablesLockHolder {
        let mut child = Command::new("flock")
            .args(["/run/xtables.lock", "-c", "echo locked; exec sleep 5"])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn flock");
        let holder = XtablesLockHolder {
            pgid: child.id() as i32,
        };
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        // flock prints nothing until it holds the lock: the line is the signal.
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked");
        // Reaped by the killer below; keep the handle from becoming a zombie in the meantime.
        std::thread::spawn(move || child.wait());
        holder
    }
}

impl Drop for XtablesLockHolder {
    fn drop(&mut self) {
        // The process group we started (flock and its sleep), nothing else.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn add_and_del_do_not_wait_for_the_xtables_lock() {
    let node = Node::new();
    let pod = node.bridge_pod("1.0.0");
    let lock = XtablesLockHolder::take();
    let add = pod.metaguard("ADD");
    let check = pod.metaguard("CHECK");
    let del = pod.metaguard("DEL");
    drop(lock);
    add.expect_ok();
    check.expect_ok();
    del.expect_ok();
    assert!(
        add.elapsed < Duration::from_secs(1),
        "ADD took {:?}",
        add.elapsed
    );
    assert!(
        del.elapsed < Duration::from_secs(1),
        "DEL took {:?}",
        del.elapsed
    );
    assert_nothing_left(&node, &pod);
}

/// What, environment, stdin, expected code, text the error must contain.
type BadCase<'a> = (&'a str, Vec<(String, String)>, Vec<u8>, u64, &'a str);

#[test]
fn bad_inputs_get_the_right_code_and_leave_nothing_behind() {
    let node = Node::new();
    let pod = node.bridge_pod("1.0.0");
    let good_conf = pod.metaguard_conf();
    let good = serde_json::to_vec(&good_conf).unwrap();
    let mg = metaguard_tests::bins::bin("metaguard");
    let regular_file = node.dir.path().join("not-a-netns");
    std::fs::write(&regular_file, b"").unwrap();
    let base = pod.call("ADD");
    let base_env = base.owned_env();
    let env_with = |k: &str, v: Option<&str>| with_env(base_env.clone(), k, v);
    let conf_with = |k: &str, v: Option<Value>| -> Vec<u8> {
        let mut c = good_conf.clone();
        match v {
            Some(v) => c[k] = v,
            None => {
                c.as_object_mut().unwrap().remove(k);
            }
        }
        serde_json::to_vec(&c).unwrap()
    };
    let missing_netns = format!("/run/netns/{}-missing", pod.ns.name());
    let cases: Vec<BadCase> = vec![
        (
            "missing CNI_COMMAND",
            env_with("CNI_COMMAND", None),
            good.clone(),
            4,
            "CNI_COMMAND",
        ),
        (
            "unknown CNI_COMMAND",
            env_with("CNI_COMMAND", Some("FROB")),
            good.clone(),
            4,
            "CNI_COMMAND",
        ),
        (
            "missing CNI_CONTAINERID",
            env_with("CNI_CONTAINERID", None),
            good.clone(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "bad container ID",
            env_with("CNI_CONTAINERID", Some("../../etc")),
            good.clone(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "missing CNI_IFNAME",
            env_with("CNI_IFNAME", None),
            good.clone(),
            4,
            "CNI_IFNAME",
        ),
        (
            "missing CNI_NETNS",
            env_with("CNI_NETNS", None),
            good.clone(),
            4,
            "CNI_NETNS",
        ),
        (
            "nonexistent netns",
            env_with("CNI_NETNS", Some(&missing_netns)),
            good.clone(),
            4,
            "CNI_NETNS",
        ),
        (
            "netns is a regular file",
            env_with("CNI_NETNS", Some(regular_file.to_str().unwrap())),
            good.clone(),
            4,
            "CNI_NETNS",
        ),
        (
            "bad JSON",
            base_env.clone(),
            b"{\"cniVersion\": \"1.0.0\",".to_vec(),
            6,
            "decode",
        ),
        ("empty stdin", base_env.clone(), Vec::new(), 6, "decode"),
        (
            "unknown cniVersion",
            base_env.clone(),
            conf_with("cniVersion", Some(json!("0.2.0"))),
            1,
            "version",
        ),
        (
            "no prevResult",
            base_env.clone(),
            conf_with("prevResult", None),
            7,
            "prevResult",
        ),
        (
            "unknown config key",
            base_env.clone(),
            conf_with("hostguard", Some(json!(false))),
            7,
            "hostguard",
        ),
        (
            "bad config value",
            base_env.clone(),
            conf_with("block", Some(json!(["nope"]))),
            7,
            "block[0]",
        ),
    ];
    for (what, env, stdin, code, needle) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = exec_plugin(&mg, Some(&node.ns), &env, &stdin);
        let e = out.expect_error(code);
        let text = e.to_string();
        assert!(
            text.contains(needle),
            "{what}: error does not name {needle:?}: {text}"
        );
        assert!(
            out.stderr.contains("ERROR"),
            "{what}: the error is logged on stderr: {}",
            out.stderr
        );
        assert!(
            node.record_keys().is_empty(),
            "{what}: a record was written"
        );
        assert!(
            nft_tables(&pod.ns).is_empty(),
            "{what}: pod tables {:?}",
            nft_tables(&pod.ns)
        );
        assert!(
            nft_tables(&node.ns).is_empty(),
            "{what}: node tables {:?}",
            nft_tables(&node.ns)
        );
    }
    // Errors carry the input's cniVersion.
    let env: Vec<(&str, &str)> = base_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut c = good_conf.clone();
    c["cniVersion"] = json!("0.4.0");
    c["bogus"] = json!(1);
    let e =
        exec_plugin(&mg, Some(&node.ns), &env, &serde_json::to_vec(&c).unwrap()).expect_error(7);
    assert_eq!(e["cniVersion"], "0.4.0");
}

#[test]
fn no_host_interface_or_host_guard_off_means_no_guard_recorded() {
    let node = Node::new();
    // A result that names no host-side interface (as macvlan or many overlays produce).
    let mut pod = node.bridge_pod("1.0.0");
    let sandbox_only: Vec<Value> = vec![pod.bridge_result["interfaces"][2].clone()];
    pod.prev_result["interfaces"] = Value::Array(sandbox_only);
    for ip in pod.prev_result["ips"].as_array_mut().unwrap() {
        ip["interface"] = json!(0);
    }
    let out = pod.metaguard("ADD");
    assert_eq!(out.expect_ok(), pod.prev_result);
    assert!(
        out.stderr.contains("no host guard"),
        "the missing guard is logged: {}",
        out.stderr
    );
    let rec = read_record(&pod);
    assert_eq!(rec["hostGuard"], false);
    assert_eq!(rec["hostInterface"], Value::Null);
    assert_eq!(nft_tables(&pod.ns).len(), 1);
    assert!(nft_tables(&node.ns).is_empty());
    pod.metaguard("CHECK").expect_ok();
    pod.metaguard("DEL").expect_ok();
    assert_nothing_left(&node, &pod);

    // hostGuard: false, and a log file.
    let log = node.dir.path().join("mg.log");
    let pod = node.pod_with(
        "1.0.0",
        json!({"hostGuard": false, "logFile": log, "logLevel": "info"}),
    );
    let rec = read_record(&pod);
    assert_eq!(rec["hostGuard"], false);
    assert_eq!(rec["hostInterface"], pod.host_veth().as_str());
    assert!(nft_tables(&node.ns).is_empty());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("ADD {}:eth0", pod.container_id)),
        "log file: {text}"
    );
}

#[test]
fn annotations_from_runtime_config_reach_the_record() {
    let node = Node::new();
    let pod = node.pod_with(
        "1.0.0",
        json!({
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"metaguard.io/policy": "aws"}}
        }),
    );
    let rec = read_record(&pod);
    assert_eq!(rec["annotations"], json!({"metaguard.io/policy": "aws"}));
}

// --- overlapping addresses (issue 14 item 5) ---

/// The key `ips/<addr>` names ("" when there is no entry).
fn entry_owner(node: &Node, addr: IpAddr) -> String {
    std::fs::read_to_string(node.state_dir().join("ips").join(addr.to_string())).unwrap_or_default()
}

/// Nothing of metaguard's for `pod`: no table in its namespace, no guard, no record.
fn assert_not_set_up(node: &Node, pod: &Pod) {
    assert_eq!(nft_tables(&pod.ns), Vec::<String>::new(), "pod tables");
    let guard = format!("netdev {}", table_of(&pod.key()));
    assert!(!nft_tables(&node.ns).contains(&guard), "{guard} installed");
    assert!(!pod.record_path().exists(), "record of {}", pod.key());
}

#[test]
fn an_address_another_live_attachment_holds_is_refused() {
    let node = Node::new();
    let (conf_a, conf_b, addr) = node.overlapping_networks("1.0.0");
    let mut a = node.bridge_pod_on("1.0.0", conf_a);
    a.metaguard("ADD").expect_ok();
    let b = node.bridge_pod_on("1.0.0", conf_b);
    assert_eq!((a.ip(false), b.ip(false)), (addr, addr), "ranges overlap");

    let e = b.metaguard("ADD").expect_error(103);
    let msg = e["msg"].as_str().unwrap_or_default();
    assert_eq!(
        msg,
        format!(
            "address {addr} is in use by container {} on network neta (interface eth0)",
            a.container_id
        )
    );
    assert!(
        e["details"]
            .as_str()
            .is_some_and(|d| d.contains(a.ns.path_str()) && d.contains("team-a/web-0")),
        "{e}"
    );
    assert_not_set_up(&node, &b);
    // The first pod is still identified, and still guarded.
    assert_eq!(entry_owner(&node, addr), a.key());
    a.metaguard("CHECK").expect_ok();
    // Its repeat ADD stays idempotent.
    a.metaguard("ADD").expect_ok();
    assert_eq!(entry_owner(&node, addr), a.key());
    a.metaguard("CHECK").expect_ok();

    // Control: the first pod goes away without a DEL (its namespace deleted): the second ADD
    // takes the address over, and says so.
    a.delete_netns();
    let out = b.metaguard("ADD");
    out.expect_ok();
    assert!(
        out.stderr
            .contains(&format!("address {addr} taken over from {}", a.key())),
        "{}",
        out.stderr
    );
    assert_eq!(entry_owner(&node, addr), b.key());
    b.metaguard("CHECK").expect_ok();
    // The first pod's DEL, late, removes its own record and never the second's entry.
    a.metaguard("DEL").expect_ok();
    assert!(!a.record_path().exists());
    assert_eq!(entry_owner(&node, addr), b.key());
    b.metaguard("CHECK").expect_ok();
}

#[test]
fn two_adds_racing_for_one_address_never_both_succeed() {
    const ROUNDS: usize = 25;
    let node = Node::new();
    let (conf_a, conf_b, addr) = node.overlapping_networks("1.0.0");
    let a = node.bridge_pod_on("1.0.0", conf_a);
    let b = node.bridge_pod_on("1.0.0", conf_b);
    let mut wins = [0usize; 2];
    // Losers that had installed their tables already: refused by the check under the lock.
    let mut undone = 0usize;
    for round in 0..ROUNDS {
        let start = std::sync::Barrier::new(2);
        let (out_a, out_b) = std::thread::scope(|s| {
            let ta = s.spawn(|| {
                start.wait();
                a.metaguard("ADD")
            });
            let tb = s.spawn(|| {
                start.wait();
                b.metaguard("ADD")
            });
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let (winner, loser, lost) = match (out_a.success(), out_b.success()) {
            (true, false) => (&a, &b, &out_b),
            (false, true) => (&b, &a, &out_a),
            both => panic!("round {round}: successes {both:?}\nA: {out_a:?}\nB: {out_b:?}"),
        };
        wins[usize::from(std::ptr::eq(winner, &b))] += 1;
        lost.expect_error(103);
        undone += usize::from(lost.stderr.contains("installed inet"));
        assert_not_set_up(&node, loser);
        assert_eq!(entry_owner(&node, addr), winner.key(), "round {round}");
        winner.metaguard("CHECK").expect_ok();
        winner.metaguard("DEL").expect_ok();
        assert_eq!(entry_owner(&node, addr), "", "round {round}");
    }
    println!(
        "{ROUNDS} rounds: a won {}, b won {}; {undone} losers refused after installing (and undone)",
        wins[0], wins[1]
    );
}
