//! Attacks on the host guard below and beside IP (issue 11): each one run against a node with
//! Debian's bridge + host-local chained with metaguard, as root inside a pod (CAP_NET_ADMIN and
//! CAP_NET_RAW), and each with a control that runs the same attack with the protection removed
//! (the guard table deleted, the one rule deleted, or the config key turned off) and shows it
//! works there. Node-side sysctls that make an attack possible are set inside the test's node
//! namespace only.
//!
//! - layer 2: a neighbour's MAC as Ethernet source steals its answers from the bridge;
//! - tunnels: VXLAN to the node's flannel-like VTEP carries a packet to the metadata service;
//!   IPIP/GRE/IPv6-in-IP and the other tunnel UDP ports reach the node at all;
//! - source routing: IPv4 LSRR through the gateway (IP_OPTIONS on a socket, the pod's rules
//!   intact) and an IPv6 segment routing header;
//! - neighbour discovery: link-local NA targets and NS sources of another;
//! - loopback: the proxy's admin listener on 127.0.0.1 with `route_localnet=1`;
//! - tags: a table of our name but another attachment's tag survives DEL and refuses ADD.
//!
//! The judge for "reached the metadata side" is `metaguard_tests::observer` on the cloud's link.
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test guard_attacks`.

use metaguard_plugin::rules::table_name;
use metaguard_tests::cni::{nft_tables, Node, Pod};
use metaguard_tests::netns::{wait_for, Netns};
use metaguard_tests::observer;
use metaguard_tests::packets::{self, Capture, FrameSender};
use metaguard_tests::proxy::{imds, Cloud, Proxy, ProxyOptions, IMDS_V4, IMDS_V6};
use metaguard_tests::raw::{self, ReadOpts, Step};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const V: &str = "1.0.0";
/// The proxy's IPv4 port (the redirect's target).
const PROXY_PORT_V4: u16 = 8169;

struct Lab {
    node: Node,
    cloud: Cloud,
    proxy: Proxy,
}

fn lab() -> Lab {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    observer::install(&cloud.ns);
    let proxy = Proxy::start(
        ProxyOptions::new(node.ns.name(), &node.state_dir()).policy("default = \"aws\"\n"),
    );
    proxy.wait_ready();
    Lab { node, cloud, proxy }
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("{ip} is not IPv4"),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => panic!("{ip} is not IPv6"),
    }
}

fn mac(ns: &Netns, ifname: &str) -> [u8; 6] {
    packets::parse_mac(&ns.ok("cat", &[&format!("/sys/class/net/{ifname}/address")])).expect("mac")
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The first link-local address of `ifname` in `ns`.
fn link_local(ns: &Netns, ifname: &str) -> Ipv6Addr {
    let out = ns.ok(
        "ip",
        &["-6", "-o", "addr", "show", "dev", ifname, "scope", "link"],
    );
    out.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no link-local address on {ifname}: {out:?}"))
}

fn sysctl(ns: &Netns, kv: &[&str]) {
    for s in kv {
        ns.ok("sysctl", &["-qw", s]);
    }
}

/// The pod's host guard table (the plugin names it from the attachment key).
fn guard_table(pod: &Pod<'_>) -> String {
    table_name(&pod.key())
}

/// Removes the pod's host guard: the "protection off" of most controls below (only root on the
/// node can do this).
fn delete_guard(node: &Node, pod: &Pod<'_>) {
    node.ns
        .ok("nft", &["delete", "table", "netdev", &guard_table(pod)]);
}

/// Deletes the rules of `family table` whose listing contains `needle`; returns how many.
fn delete_rules(ns: &Netns, family: &str, table: &str, needle: &str) -> usize {
    let listing = ns.ok("nft", &["-a", "list", "table", family, table]);
    let mut chain = String::new();
    let mut n = 0;
    for line in listing.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix("chain ") {
            chain = c.split_whitespace().next().unwrap_or_default().to_string();
        } else if t.contains(needle) {
            let handle = t.rsplit("# handle ").next().expect("handle").trim();
            ns.ok(
                "nft",
                &["delete", "rule", family, table, &chain, "handle", handle],
            );
            n += 1;
        }
    }
    n
}

/// A plain IPv4 frame from the pod's own address (so the address checks pass) to the gateway,
/// with `src_mac` as Ethernet source.
fn frame_from(pod: &Pod<'_>, gw_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    packets::ethernet(
        gw_mac,
        src_mac,
        0x0800,
        &packets::ipv4_icmp_echo(v4(pod.ip(false)), v4(pod.node.gateway4)),
    )
}

/// IPv4 TCP segments in `frames` from `src:sport` to `dst`.
fn tcp_segments(frames: &[Vec<u8>], src: Ipv4Addr, sport: u16, dst: Ipv4Addr) -> usize {
    frames
        .iter()
        .filter(|f| f.len() >= 14 + 24 && f[12..14] == [0x08, 0x00])
        .map(|f| &f[14..])
        .filter(|ip| ip[9] == 6 && ip[12..16] == src.octets() && ip[16..20] == dst.octets())
        .filter(|ip| {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            ip.len() >= ihl + 4 && ip[ihl..ihl + 2] == sport.to_be_bytes()
        })
        .count()
}

/// One allowed request from `pod`; true when it was answered 200 within `deadline`.
fn allowed_request(pod: &Pod<'_>, deadline: Duration) -> bool {
    let req = "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n";
    let ex = raw::send(
        pod.ns.path(),
        imds(false),
        &[Step::Write(req.as_bytes().to_vec())],
        ReadOpts {
            deadline,
            max_responses: 1,
            head_request: false,
        },
    );
    ex.statuses() == vec![200]
}

/// The layer-2 attack: `attacker` floods frames carrying `victim`'s MAC as source (and its own IP)
/// while `victim` makes up to `rounds` allowed requests; returns the proxy's answer segments to
/// the victim that the attacker captured, and how many of the victim's requests were answered.
/// With `stop_on_capture` the victim stops once something was captured (the control).
fn mac_spoof_attack(
    attacker: &Pod<'_>,
    victim: &Pod<'_>,
    rounds: usize,
    stop_on_capture: bool,
) -> (usize, usize) {
    let node = attacker.node;
    let gw_mac = mac(&node.ns, &node.bridge);
    let victim_mac = mac(&victim.ns, &victim.ifname);
    let capture = Capture::open(attacker.ns.path(), &attacker.ifname).expect("capture");
    let sender = FrameSender::open(attacker.ns.path(), &attacker.ifname).expect("sender");
    let poison = frame_from(attacker, gw_mac, victim_mac);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            // Bounded by the victim's loop below, which ends in at most `rounds` deadlines.
            while !stop.load(Ordering::Relaxed) {
                if sender.send(&poison).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // The victim starts once the flood is running (a busy machine can start the thread late; the
    // control stops at its first capture, which must not come before the flood proper).
    let started = Instant::now();
    while sent.load(Ordering::Relaxed) <= 100 && started.elapsed() < Duration::from_secs(10) {
        std::thread::yield_now();
    }
    let (gw, victim_ip) = (v4(node.gateway4), v4(victim.ip(false)));
    let mut captured = 0;
    let mut answered = 0;
    for _ in 0..rounds {
        if allowed_request(victim, Duration::from_secs(2)) {
            answered += 1;
        }
        captured += tcp_segments(&capture.drain(), gw, PROXY_PORT_V4, victim_ip);
        if stop_on_capture && captured > 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    captured += tcp_segments(&capture.drain(), gw, PROXY_PORT_V4, victim_ip);
    eprintln!(
        "layer 2: {} spoofed frames sent, {captured} answer segments captured, {answered} answers received",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "the flood did not run: {} frames",
        sent.load(Ordering::Relaxed)
    );
    (captured, answered)
}

#[test]
fn a_neighbours_mac_steals_none_of_its_answers() {
    let lab = lab();
    let victim = lab.node.pod(V);
    let attacker = lab.node.pod(V);
    // The record says layer 2 is guarded, with the pod's real MAC.
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(attacker.record_path()).unwrap()).unwrap();
    assert_eq!(rec["layer2Guard"], true, "{rec}");
    assert_eq!(
        rec["mac"],
        mac_text(mac(&attacker.ns, &attacker.ifname)),
        "{rec}"
    );

    let (captured, answered) = mac_spoof_attack(&attacker, &victim, 30, false);
    assert_eq!(
        captured, 0,
        "the attacker captured {captured} segments of the victim's answers"
    );
    assert_eq!(answered, 30, "the victim lost answers");
    // The bridge still has the victim's MAC on the victim's port.
    let fdb = lab.node.ns.ok(
        "bridge",
        &[
            "fdb",
            "show",
            "br",
            &lab.node.bridge,
            "brport",
            &attacker.host_veth(),
        ],
    );
    let vm = mac_text(mac(&victim.ns, &victim.ifname));
    assert!(
        !fdb.contains(&vm),
        "the bridge learnt the victim's MAC on the attacker's port:\n{fdb}"
    );
    drop(lab.proxy);
}

#[test]
fn control_without_the_guard_a_neighbours_mac_steals_its_answers() {
    let lab = lab();
    let victim = lab.node.pod(V);
    let attacker = lab.node.pod(V);
    delete_guard(&lab.node, &attacker);
    let (captured, _) = mac_spoof_attack(&attacker, &victim, 20, true);
    assert!(
        captured > 0,
        "control: the attack captured nothing even without the guard"
    );
}

/// A flannel-like VXLAN device in the node (VNI 1, UDP 8472, no learning) with a loose node:
/// forwarding on, rp_filter off. Returns the VTEP's MAC.
fn flannel_vtep(node: &Node) -> [u8; 6] {
    let gw = node.gateway4.to_string();
    node.ns.ok(
        "ip",
        &[
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &gw,
            "dstport",
            "8472",
            "nolearning",
        ],
    );
    node.ns
        .ok("ip", &["addr", "add", "10.244.0.0/32", "dev", "flannel.1"]);
    node.ns.ok("ip", &["link", "set", "flannel.1", "up"]);
    sysctl(
        &node.ns,
        &[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.flannel/1.rp_filter=0",
        ],
    );
    mac(&node.ns, "flannel.1")
}

/// Counts, in the node, tunnel packets from `src` that got past the guard: IP protocols 4, 41,
/// 47, 115, 137 and UDP to 4789, 6081, 8472.
fn install_tunnel_counter(node: &Node, src: Ipv4Addr) {
    node.ns.sh(&format!(
        "nft -f - <<'EOF'
table inet mgtun {{
  chain pre {{
    type filter hook prerouting priority -400; policy accept;
    ip saddr {src} meta l4proto {{ 4, 41, 47, 115, 137 }} counter
    ip saddr {src} udp dport {{ 4789, 6081, 8472 }} counter
  }}
}}
EOF"
    ));
}

fn tunnel_count(node: &Node) -> u64 {
    node.ns
        .ok("nft", &["list", "table", "inet", "mgtun"])
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

/// The tunnel attack from `pod`: a VXLAN-wrapped SYN for the metadata service to the node's
/// VTEP port, and bare IPIP/GRE/IPv6-in-IP/L2TP/MPLS-in-IP packets and UDP to the other tunnel
/// ports, all addressed to the node.
fn tunnel_attack(pod: &Pod<'_>, vtep_mac: [u8; 6]) {
    let gw = pod.node.gateway4;
    let inner = packets::ethernet(
        vtep_mac,
        [0x02, 0x4d, 0x47, 0, 0, 9],
        0x0800,
        &packets::ipv4_tcp_syn(
            Ipv4Addr::new(10, 244, 9, 9),
            IMDS_V4.parse().unwrap(),
            40001,
            80,
        ),
    );
    for _ in 0..3 {
        pod.ns
            .udp_send(SocketAddr::new(gw, 8472), &packets::vxlan(1, &inner))
            .expect("send VXLAN");
    }
    for port in [4789u16, 6081] {
        let _ = pod
            .ns
            .udp_send(SocketAddr::new(gw, port), &packets::vxlan(1, &inner));
    }
    let inner_ip = packets::ipv4_tcp_syn(v4(pod.ip(false)), IMDS_V4.parse().unwrap(), 40002, 80);
    for proto in [4, 41, 47, 115, 137] {
        packets::send_raw_proto_v4(pod.ns.path(), proto, v4(gw), inner_ip.clone())
            .expect("send raw tunnel packet");
    }
}

#[test]
fn tunnels_to_the_node_carry_nothing() {
    let lab = lab();
    let pod = lab.node.pod(V);
    let vtep = flannel_vtep(&lab.node);
    install_tunnel_counter(&lab.node, v4(pod.ip(false)));
    tunnel_attack(&pod, vtep);
    observer::assert_nothing_escaped(&lab.cloud.ns, "VXLAN through the node's VTEP");
    assert_eq!(
        tunnel_count(&lab.node),
        0,
        "tunnel packets got past the guard:\n{}",
        lab.node.ns.ok("nft", &["list", "table", "inet", "mgtun"])
    );
    // The pod itself still works.
    assert!(allowed_request(&pod, Duration::from_secs(5)));
}

/// Control: the same attack from a pod whose network sets `blockTunnels: false` reaches the
/// metadata service through the node's VTEP, and every tunnel packet reaches the node.
#[test]
fn control_with_block_tunnels_off_vxlan_reaches_the_metadata_service() {
    let lab = lab();
    let pod = lab.node.pod_with(V, json!({"blockTunnels": false}));
    let vtep = flannel_vtep(&lab.node);
    install_tunnel_counter(&lab.node, v4(pod.ip(false)));
    tunnel_attack(&pod, vtep);
    observer::wait_escaped(&lab.cloud.ns, "control: VXLAN to reach the cloud");
    wait_for(
        "control: all 10 tunnel packets to reach the node",
        Duration::from_secs(5),
        || tunnel_count(&lab.node) >= 10,
    );
}

/// Turns on what a source-routing node does: IPv4 source routes and SRv6 accepted, forwarding.
fn source_routing_node(node: &Node) {
    let br = &node.bridge;
    sysctl(
        &node.ns,
        &[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.accept_source_route=1",
            &format!("net.ipv4.conf.{br}.accept_source_route=1"),
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.conf.all.seg6_enabled=1",
            &format!("net.ipv6.conf.{br}.seg6_enabled=1"),
        ],
    );
}

/// A TCP connect to the metadata service with an LSRR option through the gateway set on the
/// socket (`IP_OPTIONS`, CAP_NET_RAW): the packet's destination is the gateway, the metadata
/// address is in the option.
fn lsrr_connect(pod: &Pod<'_>) -> std::io::Result<()> {
    let gw = v4(pod.node.gateway4).octets();
    let dst: SocketAddr = format!("{IMDS_V4}:80").parse().unwrap();
    pod.ns.enter(|| -> std::io::Result<()> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        // NOP, then LSRR: length 7, pointer 4, first hop; the kernel appends the destination.
        let opt = [1u8, 131, 7, 4, gw[0], gw[1], gw[2], gw[3]];
        // SAFETY: setsockopt with a valid buffer and length.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_OPTIONS,
                opt.as_ptr().cast(),
                opt.len() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        s.connect_timeout(&dst.into(), Duration::from_millis(700))
    })
}

/// An IPv6 SYN for the metadata service source-routed through the gateway (SRH), as a whole
/// frame (no netfilter in the pod) and through an IPPROTO_RAW socket (the pod's netfilter).
fn srh_probes(pod: &Pod<'_>) {
    let node = pod.node;
    let pkt = packets::ipv6_srh_tcp_syn(
        v6(pod.ip(true)),
        v6(node.gateway6),
        IMDS_V6.parse().unwrap(),
        40003,
        80,
    );
    let frame = packets::ethernet(
        mac(&node.ns, &node.bridge),
        mac(&pod.ns, &pod.ifname),
        0x86dd,
        &pkt,
    );
    packets::send_frame(pod.ns.path(), &pod.ifname, frame).expect("send SRH frame");
    // Refused (EPERM) when the pod's own rules drop it: that is the point.
    let _ = packets::send_raw_proto_v6(pod.ns.path(), libc::IPPROTO_RAW, v6(node.gateway6), pkt);
}

#[test]
fn source_routes_are_dropped_by_the_guard_and_by_the_pods_rules() {
    let lab = lab();
    let pod = lab.node.pod(V);
    // After the first pod: the bridge exists then.
    source_routing_node(&lab.node);
    // Both layers in place.
    assert!(lsrr_connect(&pod).is_err(), "LSRR connect succeeded");
    srh_probes(&pod);
    observer::assert_nothing_escaped(&lab.cloud.ns, "source routes, both layers");

    // The pod's rules alone: the guard's source-route rules removed.
    let g = guard_table(&pod);
    assert_eq!(
        delete_rules(&lab.node.ns, "netdev", &g, "ip option lsrr"),
        1
    );
    assert_eq!(
        delete_rules(&lab.node.ns, "netdev", &g, "exthdr rt exists"),
        1
    );
    assert!(
        lsrr_connect(&pod).is_err(),
        "LSRR connect succeeded past the pod's rules"
    );
    let _ = packets::send_raw_proto_v6(
        pod.ns.path(),
        libc::IPPROTO_RAW,
        v6(lab.node.gateway6),
        packets::ipv6_srh_tcp_syn(
            v6(pod.ip(true)),
            v6(lab.node.gateway6),
            IMDS_V6.parse().unwrap(),
            40004,
            80,
        ),
    );
    observer::assert_nothing_escaped(&lab.cloud.ns, "source routes, the pod's rules alone");
    assert!(lab.cloud.fake.requests().is_empty());
}

#[test]
fn source_routes_are_dropped_by_the_guard_alone() {
    let lab = lab();
    let pod = lab.node.pod(V);
    // After the first pod: the bridge exists then.
    source_routing_node(&lab.node);
    pod.ns.ok("nft", &["flush", "ruleset"]);
    assert!(lsrr_connect(&pod).is_err(), "LSRR connect succeeded");
    srh_probes(&pod);
    observer::assert_nothing_escaped(&lab.cloud.ns, "source routes, the guard alone");
}

/// Control: with the source-route rules removed from both the guard and the pod's table (the
/// rest of both intact), the same probes reach the metadata service.
#[test]
fn control_without_the_source_route_rules_they_reach_the_metadata_service() {
    let lab = lab();
    let pod = lab.node.pod(V);
    // After the first pod: the bridge exists then.
    source_routing_node(&lab.node);
    let t = guard_table(&pod);
    assert_eq!(
        delete_rules(&lab.node.ns, "netdev", &t, "ip option lsrr"),
        1
    );
    assert_eq!(
        delete_rules(&lab.node.ns, "netdev", &t, "exthdr rt exists"),
        1
    );
    assert_eq!(delete_rules(&pod.ns, "inet", &t, "ip option lsrr"), 2);
    assert_eq!(delete_rules(&pod.ns, "inet", &t, "exthdr rt exists"), 2);
    // Whether the handshake completes depends on the answer's way back; the SYN's arrival is
    // what counts.
    let _ = lsrr_connect(&pod);
    observer::wait_escaped(&lab.cloud.ns, "control: the LSRR SYN to reach the cloud");
    let before = observer::escaped(&lab.cloud.ns);
    srh_probes(&pod);
    wait_for(
        "control: the SRH SYN to reach the cloud",
        Duration::from_secs(5),
        || observer::escaped(&lab.cloud.ns) > before,
    );
}

/// `ip -6 neigh` entry of `ip` on `dev` in `ns`: its MAC, if any.
fn neigh_mac(ns: &Netns, ip: Ipv6Addr, dev: &str) -> Option<String> {
    let out = ns.ok("ip", &["-6", "neigh", "show", &ip.to_string(), "dev", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string)
}

fn neigh_set(ns: &Netns, ip: Ipv6Addr, m: [u8; 6], dev: &str) {
    ns.ok(
        "ip",
        &[
            "-6",
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            &mac_text(m),
            "dev",
            dev,
            "nud",
            "stale",
        ],
    );
}

/// Link-local neighbour spoofing by `attacker`: an NA whose target is `victim`'s link-local, an
/// NS whose source is `victim`'s link-local (both claiming the attacker's MAC), sent to the node;
/// and an NA for the gateway's link-local to all nodes (so to `victim` too). Then a marker the
/// guard lets through (the attacker's NA for its own link-local) on the same paths: once the
/// node and the victim have taken the marker, they have handled the spoofs before it.
fn nd_spoof(attacker: &Pod<'_>, victim: &Pod<'_>) {
    let node = attacker.node;
    let br = &node.bridge;
    let gw_mac = mac(&node.ns, br);
    let a_mac = mac(&attacker.ns, &attacker.ifname);
    let a_ll = link_local(&attacker.ns, &attacker.ifname);
    let v_ll = link_local(&victim.ns, &victim.ifname);
    let gw_ll = link_local(&node.ns, br);
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let all_nodes_mac = [0x33, 0x33, 0, 0, 0, 1];
    let send = |dst_mac, pkt: Vec<u8>| {
        packets::send_frame(
            attacker.ns.path(),
            &attacker.ifname,
            packets::ethernet(dst_mac, a_mac, 0x86dd, &pkt),
        )
        .expect("send ND frame")
    };
    send(gw_mac, packets::nd_advert(a_ll, gw_ll, v_ll, a_mac));
    send(
        gw_mac,
        packets::nd_solicit(v_ll, gw_ll, v6(node.gateway6), a_mac),
    );
    send(
        all_nodes_mac,
        packets::nd_advert(a_ll, all_nodes, gw_ll, a_mac),
    );
    send(
        all_nodes_mac,
        packets::nd_advert(a_ll, all_nodes, a_ll, a_mac),
    );
}

/// Neighbour entries the spoofs target, set to their true values, plus an entry for the
/// attacker's link-local set to a wrong MAC (the marker corrects it).
fn nd_prepare(attacker: &Pod<'_>, victim: &Pod<'_>) {
    let node = attacker.node;
    let br = &node.bridge;
    let a_ll = link_local(&attacker.ns, &attacker.ifname);
    let v_ll = link_local(&victim.ns, &victim.ifname);
    let gw_ll = link_local(&node.ns, br);
    let wrong = [0x02, 0, 0, 0, 0, 0x77];
    neigh_set(&node.ns, v_ll, mac(&victim.ns, &victim.ifname), br);
    neigh_set(&node.ns, a_ll, wrong, br);
    neigh_set(&victim.ns, gw_ll, mac(&node.ns, br), &victim.ifname);
    neigh_set(&victim.ns, a_ll, wrong, &victim.ifname);
}

#[test]
fn link_local_neighbour_spoofing_takes_over_nothing() {
    let lab = lab();
    let victim = lab.node.pod(V);
    let attacker = lab.node.pod(V);
    let node = &lab.node;
    let br = &node.bridge;
    let a_mac = mac_text(mac(&attacker.ns, &attacker.ifname));
    let a_ll = link_local(&attacker.ns, &attacker.ifname);
    let v_ll = link_local(&victim.ns, &victim.ifname);
    let gw_ll = link_local(&node.ns, br);
    nd_prepare(&attacker, &victim);
    nd_spoof(&attacker, &victim);
    wait_for(
        "the marker NA to reach the node and the victim",
        Duration::from_secs(5),
        || {
            neigh_mac(&node.ns, a_ll, br).as_deref() == Some(a_mac.as_str())
                && neigh_mac(&victim.ns, a_ll, &victim.ifname).as_deref() == Some(a_mac.as_str())
        },
    );
    assert_eq!(
        neigh_mac(&node.ns, v_ll, br),
        Some(mac_text(mac(&victim.ns, &victim.ifname))),
        "the node's entry for the victim's link-local was taken over"
    );
    assert_eq!(
        neigh_mac(&victim.ns, gw_ll, &victim.ifname),
        Some(mac_text(mac(&node.ns, br))),
        "the victim's entry for the gateway's link-local was taken over"
    );
}

/// Control: with the attacker's guard deleted, the same NA and NS take the victim's link-local
/// over in the node's cache and the gateway's in the victim's.
#[test]
fn control_without_the_guard_link_local_spoofing_takes_over() {
    let lab = lab();
    let victim = lab.node.pod(V);
    let attacker = lab.node.pod(V);
    let node = &lab.node;
    let br = &node.bridge;
    let a_mac = mac_text(mac(&attacker.ns, &attacker.ifname));
    let v_ll = link_local(&victim.ns, &victim.ifname);
    let gw_ll = link_local(&node.ns, br);
    delete_guard(node, &attacker);
    // The NA for the victim's address: the node's entry moves to the attacker.
    nd_prepare(&attacker, &victim);
    nd_spoof(&attacker, &victim);
    wait_for(
        "control: the node's entry for the victim's link-local to move to the attacker",
        Duration::from_secs(5),
        || neigh_mac(&node.ns, v_ll, br).as_deref() == Some(a_mac.as_str()),
    );
    wait_for(
        "control: the victim's entry for the gateway to move to the attacker",
        Duration::from_secs(5),
        || neigh_mac(&victim.ns, gw_ll, &victim.ifname).as_deref() == Some(a_mac.as_str()),
    );
}

/// The loopback attack: a SYN to the proxy's admin listener (127.0.0.1:9169 in the node) as a
/// frame to the gateway, on a node with `route_localnet=1`. Returns whether the admin listener
/// answered (a SYN-ACK from 127.0.0.1:9169 reached the pod).
fn admin_syn_answered(pod: &Pod<'_>, wait: Duration) -> bool {
    let node = pod.node;
    // An ordinary request first, as any pod makes: the node then has the pod in its neighbour
    // cache. (Resolving it afresh for an answer from 127.0.0.1 would fail: the ARP request would
    // carry 127.0.0.1 as sender, which the pod ignores.)
    assert!(allowed_request(pod, Duration::from_secs(5)));
    let capture = Capture::open(pod.ns.path(), &pod.ifname).expect("capture");
    let frame = packets::ethernet(
        mac(&node.ns, &node.bridge),
        mac(&pod.ns, &pod.ifname),
        0x0800,
        &packets::ipv4_tcp_syn(v4(pod.ip(false)), Ipv4Addr::LOCALHOST, 45000, 9169),
    );
    let deadline = Instant::now() + wait;
    let mut got = 0;
    loop {
        packets::send_frame(pod.ns.path(), &pod.ifname, frame.clone()).expect("send SYN");
        std::thread::sleep(Duration::from_millis(100));
        got += tcp_segments(
            &capture.drain(),
            Ipv4Addr::LOCALHOST,
            9169,
            v4(pod.ip(false)),
        );
        if got > 0 || Instant::now() >= deadline {
            return got > 0;
        }
    }
}

fn route_localnet_node(node: &Node) {
    sysctl(
        &node.ns,
        &[
            "net.ipv4.conf.all.route_localnet=1",
            &format!("net.ipv4.conf.{}.route_localnet=1", node.bridge),
        ],
    );
}

#[test]
fn the_admin_listener_on_loopback_is_out_of_reach() {
    let lab = lab();
    let pod = lab.node.pod(V);
    // After the first pod: the bridge exists then.
    route_localnet_node(&lab.node);
    assert!(
        !admin_syn_answered(&pod, observer::QUIET),
        "the admin listener answered a pod"
    );
    // It is up, for the node itself.
    assert_eq!(lab.proxy.admin_get("/healthz").map(|(s, _)| s), Some(200));
}

#[test]
fn control_without_the_guard_the_admin_listener_answers_a_pod() {
    let lab = lab();
    let pod = lab.node.pod(V);
    // After the first pod: the bridge exists then.
    route_localnet_node(&lab.node);
    delete_guard(&lab.node, &pod);
    assert!(
        admin_syn_answered(&pod, Duration::from_secs(5)),
        "control: the admin listener did not answer even without the guard"
    );
}

/// A table with the name metaguard derives for an attacker's attachment but the tag of a
/// victim's (what a 64-bit name collision would give): the attacker's DEL leaves it, the
/// attacker's ADD is refused and leaves it. Control: the DEL whose key is the tag removes it.
#[test]
fn a_table_with_our_name_but_another_tag_is_left_alone() {
    let node = Node::new();
    let victim = node.pod(V);
    let mut attacker = node.bridge_pod(V);
    attacker.container_id = "attacker-collides".into();
    let collided = table_name(&attacker.key());
    // The victim's guard, as it would be if its key hashed to the attacker's table name.
    let listing = node
        .ns
        .ok("nft", &["list", "table", "netdev", &guard_table(&victim)]);
    let copy = listing.replacen(&guard_table(&victim), &collided, 1);
    node.ns.sh(&format!("nft -f - <<'EOF'\n{copy}\nEOF"));
    let victims = |n: &Node| {
        nft_tables(&n.ns)
            .into_iter()
            .filter(|t| t == &format!("netdev {collided}"))
            .count()
    };
    assert_eq!(victims(&node), 1);

    let del = attacker.metaguard("DEL");
    del.expect_ok();
    assert_eq!(
        victims(&node),
        1,
        "the attacker's DEL removed the victim's guard"
    );
    assert!(
        del.stderr.contains("left alone"),
        "DEL did not report the foreign table: {}",
        del.stderr
    );

    let add = attacker.metaguard("ADD");
    let e = add.expect_error(100);
    assert!(
        e["details"]
            .as_str()
            .unwrap_or_default()
            .contains("left alone"),
        "{e}"
    );
    assert_eq!(
        victims(&node),
        1,
        "the attacker's ADD replaced the victim's guard"
    );
    assert!(
        !nft_tables(&attacker.ns)
            .iter()
            .any(|t| t.contains("metaguard")),
        "the refused ADD left the attacker's pod rules behind"
    );
    assert!(!attacker.record_path().exists());

    // Control: the DEL whose key is the tag deletes the table of its name.
    victim.metaguard("DEL").expect_ok();
    assert!(
        !nft_tables(&node.ns).contains(&format!("netdev {}", guard_table(&victim))),
        "control: the victim's own DEL did not remove its guard"
    );
    node.ns.ok("nft", &["delete", "table", "netdev", &collided]);
}
