//! Network-level bypass attempts (issue 5, item 2). A pod attached by Debian's bridge + host-local
//! and metaguard tries to reach the metadata addresses any way but through the proxy: other TCP
//! ports, UDP, ICMP, other IP protocols, IPv6 and IPv4-mapped forms, after flushing its own rules
//! (as a CAP_NET_ADMIN container can), with raw IP sockets and AF_PACKET frames (CAP_NET_RAW, in
//! the default capability set), and with a neighbour's source address.
//!
//! The judge is on the cloud side: `metaguard_tests::observer` counts every packet that arrives
//! from anywhere but the node's own addresses, listeners on other ports must accept
//! nothing, UDP sockets must receive nothing, and fake-metadata must record no request from a pod
//! address. Absence is checked by polling for a bounded time after the last probe.
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test netbypass`.

use metaguard_tests::cni::{Node, Pod};
use metaguard_tests::netns::{accept_within, recv_within, Netns};
use metaguard_tests::observer;
use metaguard_tests::packets;
use metaguard_tests::proxy::{request, Cloud, Proxy, ProxyOptions, IMDS_V4, IMDS_V6};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

const V: &str = "1.0.0";
const TCP_PORTS: &[u16] = &[1, 22, 81, 443, 8080, 8169, 8170, 9169];
const UDP_PORTS: &[u16] = &[53, 80, 123, 161];

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

/// Requests fake-metadata recorded from anything but the node (the proxy).
fn pod_requests_recorded(cloud: &Cloud) -> Vec<String> {
    let node_addrs: [IpAddr; 2] = [
        "169.254.169.1".parse().unwrap(),
        "fd00:ec2::1".parse().unwrap(),
    ];
    cloud
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.peer_ip().is_none_or(|ip| !node_addrs.contains(&ip)))
        .map(|r| format!("{} {} from {}", r.method, r.target, r.peer))
        .collect()
}

fn v4() -> Ipv4Addr {
    IMDS_V4.parse().unwrap()
}

fn v6() -> Ipv6Addr {
    IMDS_V6.parse().unwrap()
}

fn pod_v4(pod: &Pod<'_>) -> Ipv4Addr {
    match pod.ip(false) {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    }
}

fn pod_v6(pod: &Pod<'_>) -> Ipv6Addr {
    match pod.ip(true) {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => unreachable!(),
    }
}

/// MAC of `ifname` in `ns`.
fn mac(ns: &Netns, ifname: &str) -> [u8; 6] {
    packets::parse_mac(&ns.ok("cat", &[&format!("/sys/class/net/{ifname}/address")])).expect("mac")
}

/// TCP connections from the pod to every other port, both families: none may succeed.
fn probe_tcp_ports(pod: &Pod<'_>) -> Vec<String> {
    let mut got = Vec::new();
    for ip in [
        IpAddr::V4(v4()),
        IpAddr::V6(v6()),
        IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    ] {
        for &port in TCP_PORTS {
            let to = SocketAddr::new(ip, port);
            if pod
                .ns
                .tcp_connect(None, to, Duration::from_millis(300))
                .is_ok()
            {
                got.push(format!("TCP connect to {to} succeeded"));
            }
        }
    }
    got
}

fn probe_udp(pod: &Pod<'_>) {
    for ip in [IpAddr::V4(v4()), IpAddr::V6(v6())] {
        for &port in UDP_PORTS {
            // Errors (unreachable) are fine: the point is that nothing arrives.
            let _ = pod
                .ns
                .udp_send(SocketAddr::new(ip, port), b"metaguard-udp-probe");
        }
    }
}

/// ICMP echo (v4, v6) and other IP protocols (SCTP 132, GRE 47, 253 experimental) via raw sockets.
fn probe_raw_protocols(pod: &Pod<'_>) {
    let p = pod.ns.path();
    let _ = packets::send_raw_proto_v4(p, libc::IPPROTO_ICMP, v4(), packets::icmp_echo());
    let mut echo6 = packets::icmp_echo();
    echo6[0] = 128; // ICMPv6 echo request; the kernel fills the checksum for ICMPv6 raw sockets
    echo6[2] = 0;
    echo6[3] = 0;
    let _ = packets::send_raw_proto_v6(p, libc::IPPROTO_ICMPV6, v6(), echo6);
    for proto in [132, 47, 253] {
        let _ = packets::send_raw_proto_v4(p, proto, v4(), b"metaguard-proto-probe".to_vec());
        let _ = packets::send_raw_proto_v6(p, proto, v6(), b"metaguard-proto-probe".to_vec());
    }
}

/// Hand-built SYNs to 169.254.169.254:80 and :443 through an IPPROTO_RAW socket, and the same as
/// whole Ethernet frames through AF_PACKET (addressed to the gateway's MAC, skipping the pod's
/// netfilter entirely), IPv4 and IPv6, from the pod's own address and from `forged`.
fn probe_raw_syns(node: &Node, pod: &Pod<'_>, forged: Option<(Ipv4Addr, Ipv6Addr)>) {
    let p = pod.ns.path();
    let (src4, src6) = forged.unwrap_or((pod_v4(pod), pod_v6(pod)));
    let gw_mac = mac(&node.ns, &node.bridge);
    let my_mac = mac(&pod.ns, &pod.ifname);
    for dport in [80u16, 443, 8169] {
        let dst4 = if dport == 8169 {
            match node.gateway4 {
                IpAddr::V4(g) => g,
                IpAddr::V6(_) => unreachable!(),
            }
        } else {
            v4()
        };
        let _ = packets::send_raw_ipv4(p, packets::ipv4_tcp_syn(src4, dst4, 40000 + dport, dport));
        let frame4 = packets::ethernet(
            gw_mac,
            my_mac,
            0x0800,
            &packets::ipv4_tcp_syn(src4, dst4, 41000 + dport, dport),
        );
        packets::send_frame(p, &pod.ifname, frame4).expect("AF_PACKET send");
        let frame6 = packets::ethernet(
            gw_mac,
            my_mac,
            0x86dd,
            &packets::ipv6_tcp_syn(src6, v6(), 42000 + dport, dport),
        );
        packets::send_frame(p, &pod.ifname, frame6).expect("AF_PACKET send v6");
        let icmp = packets::ethernet(gw_mac, my_mac, 0x0800, &packets::ipv4_icmp_echo(src4, v4()));
        packets::send_frame(p, &pod.ifname, icmp).expect("AF_PACKET send icmp");
    }
}

struct Listeners {
    tcp: Vec<(SocketAddr, TcpListener)>,
    udp: Vec<(SocketAddr, UdpSocket)>,
}

fn cloud_listeners(cloud: &Cloud) -> Listeners {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for ip in [IpAddr::V4(v4()), IpAddr::V6(v6())] {
        for &port in TCP_PORTS {
            let a = SocketAddr::new(ip, port);
            tcp.push((a, cloud.ns.tcp_listen(a)));
        }
        for &port in UDP_PORTS {
            let a = SocketAddr::new(ip, port);
            udp.push((a, cloud.ns.udp_bind(a)));
        }
    }
    Listeners { tcp, udp }
}

fn listeners_got(l: &Listeners) -> Vec<String> {
    let mut v = Vec::new();
    for (a, t) in &l.tcp {
        if let Some((_, from)) = accept_within(t, Duration::from_millis(20)) {
            v.push(format!("cloud TCP {a} accepted a connection from {from}"));
        }
    }
    for (a, u) in &l.udp {
        if let Some((_, from)) = recv_within(u, Duration::from_millis(20)) {
            v.push(format!("cloud UDP {a} received a datagram from {from}"));
        }
    }
    v
}

#[test]
fn other_ports_protocols_and_address_forms_get_nothing_out() {
    let lab = lab();
    let listeners = cloud_listeners(&lab.cloud);
    let pod = lab.node.pod(V);

    let mut problems = probe_tcp_ports(&pod);
    probe_udp(&pod);
    probe_raw_protocols(&pod);

    // Port 80 in every address form goes to the proxy (which answers by policy), never directly.
    let mapped: SocketAddr = format!("[::ffff:{IMDS_V4}]:80").parse().unwrap();
    for (what, addr) in [
        ("IPv4", SocketAddr::new(IpAddr::V4(v4()), 80)),
        ("IPv6", SocketAddr::new(IpAddr::V6(v6()), 80)),
        ("IPv4-mapped from a dual-stack socket", mapped),
    ] {
        let ex = request(
            pod.ns.path(),
            addr,
            "GET",
            "/latest/meta-data/instance-id",
            &[],
        );
        assert_eq!(ex.statuses(), vec![200], "{what}: {}", ex.summary());
        let ex = request(pod.ns.path(), addr, "GET", "/latest/user-data", &[]);
        assert_eq!(ex.statuses(), vec![403], "{what}: {}", ex.summary());
    }
    let mapped_other: SocketAddr = format!("[::ffff:{IMDS_V4}]:443").parse().unwrap();
    if pod
        .ns
        .tcp_connect(None, mapped_other, Duration::from_millis(300))
        .is_ok()
    {
        problems.push("IPv4-mapped connect to :443 succeeded".into());
    }
    // NAT64 and other spellings of the address are simply not routed anywhere useful.
    for a in [
        "[64:ff9b::a9fe:a9fe]:80",
        "[::a9fe:a9fe]:80",
        "[fd00:ec2:0:0:0:0:0:254]:443",
    ] {
        let addr: SocketAddr = a.parse().unwrap();
        if pod
            .ns
            .tcp_connect(None, addr, Duration::from_millis(300))
            .is_ok()
            && !a.ends_with(":80")
        {
            problems.push(format!("connect to {a} succeeded"));
        }
    }

    observer::assert_nothing_escaped(&lab.cloud.ns, "other ports and protocols");
    problems.extend(listeners_got(&listeners));
    problems.extend(pod_requests_recorded(&lab.cloud));
    assert!(problems.is_empty(), "{problems:#?}");
    // The proxy did forward the allowed requests: the observer is not blind to port 80 from the node.
    assert!(lab
        .cloud
        .fake
        .requests()
        .iter()
        .any(|r| r.target == "/latest/meta-data/instance-id"));
    drop(lab.proxy);
}

#[test]
fn a_pod_that_flushed_its_own_rules_still_reaches_nothing() {
    let lab = lab();
    let listeners = cloud_listeners(&lab.cloud);
    let pod = lab.node.pod(V);
    // What a container with CAP_NET_ADMIN can do in its own namespace.
    pod.ns.ok("nft", &["flush", "ruleset"]);
    assert!(
        pod.ns.ok("nft", &["list", "ruleset"]).trim().is_empty(),
        "flush left rules"
    );

    let mut problems = probe_tcp_ports(&pod);
    for ip in [IpAddr::V4(v4()), IpAddr::V6(v6())] {
        let to = SocketAddr::new(ip, 80);
        if pod
            .ns
            .tcp_connect(None, to, Duration::from_millis(500))
            .is_ok()
        {
            problems.push(format!(
                "TCP connect to {to} succeeded without the pod's rules"
            ));
        }
    }
    probe_udp(&pod);
    probe_raw_protocols(&pod);
    probe_raw_syns(&lab.node, &pod, None);

    observer::assert_nothing_escaped(&lab.cloud.ns, "flushed pod rules");
    problems.extend(listeners_got(&listeners));
    problems.extend(pod_requests_recorded(&lab.cloud));
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        lab.cloud.fake.requests().is_empty(),
        "the metadata service was reached: {:?}",
        lab.cloud.fake.requests()
    );
}

#[test]
fn raw_and_packet_sockets_do_not_reach_the_cloud() {
    let lab = lab();
    let pod = lab.node.pod(V);
    probe_raw_syns(&lab.node, &pod, None);
    observer::assert_nothing_escaped(
        &lab.cloud.ns,
        "raw IP and AF_PACKET from a pod with its rules",
    );
    assert!(pod_requests_recorded(&lab.cloud).is_empty());
}

#[test]
fn a_forged_source_is_dropped_and_never_takes_another_pods_identity() {
    let lab = lab();
    let a = lab.node.pod(V);
    let b = lab.node.pod(V);
    let (a4, a6) = (pod_v4(&a), pod_v6(&a));

    // B claims A's addresses on its own interface (CAP_NET_ADMIN) and calls from them, through
    // the redirect and straight at the proxy port.
    b.ns.ok(
        "ip",
        &["addr", "add", &format!("{a4}/32"), "dev", &b.ifname],
    );
    b.ns.ok(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{a6}/128"),
            "dev",
            &b.ifname,
            "nodad",
        ],
    );
    let gw4 = SocketAddr::new(lab.node.gateway4, 8169);
    let mut problems = Vec::new();
    for to in [SocketAddr::new(IpAddr::V4(v4()), 80), gw4] {
        if b.ns
            .tcp_connect(Some(IpAddr::V4(a4)), to, Duration::from_millis(700))
            .is_ok()
        {
            problems.push(format!("B connected to {to} from A's address {a4}"));
        }
    }
    for to in [
        SocketAddr::new(IpAddr::V6(v6()), 80),
        SocketAddr::new(lab.node.gateway6, 8170),
    ] {
        if b.ns
            .tcp_connect(Some(IpAddr::V6(a6)), to, Duration::from_millis(700))
            .is_ok()
        {
            problems.push(format!("B connected to {to} from A's address {a6}"));
        }
    }
    // The same with hand-built packets (raw IP and AF_PACKET), with B's rules flushed.
    b.ns.ok("nft", &["flush", "ruleset"]);
    probe_raw_syns(&lab.node, &b, Some((a4, a6)));
    // And an ARP reply from B claiming A's IPv4 address, to steal A's traffic at the gateway.
    let gw_mac = mac(&lab.node.ns, &lab.node.bridge);
    let b_mac = mac(&b.ns, &b.ifname);
    let gw4_ip = match lab.node.gateway4 {
        IpAddr::V4(g) => g,
        IpAddr::V6(_) => unreachable!(),
    };
    packets::send_frame(
        b.ns.path(),
        &b.ifname,
        packets::arp_reply(b_mac, a4, gw_mac, gw4_ip),
    )
    .expect("send ARP");

    observer::assert_nothing_escaped(&lab.cloud.ns, "forged source");
    // The proxy never saw a request from A's address (A has sent none yet).
    let from_a: Vec<_> = lab
        .proxy
        .decisions()
        .into_iter()
        .filter(|d| {
            d["src"]
                .as_str()
                .is_some_and(|s| s == a4.to_string() || s == a6.to_string())
        })
        .collect();
    if !from_a.is_empty() {
        problems.push(format!(
            "the proxy logged requests from A's address although only B sent: {from_a:?}"
        ));
    }
    let neigh = lab.node.ns.ok("ip", &["neigh", "show", &a4.to_string()]);
    let b_mac_s = b_mac
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    if neigh.contains(&b_mac_s) {
        problems.push(format!("the node now sends A's traffic to B: {neigh}"));
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // Control: A itself is served, and is the only one logged with A's address.
    let ex = request(
        a.ns.path(),
        SocketAddr::new(IpAddr::V4(v4()), 80),
        "GET",
        "/latest/meta-data/instance-id",
        &[],
    );
    assert_eq!(ex.statuses(), vec![200], "{}", ex.summary());
    let d = lab
        .proxy
        .wait_decision("A's request", |d| d["src"] == a4.to_string());
    assert_eq!(d["container_id"], a.container_id.as_str(), "{d}");
}

/// Control: the observer is not blind. Without the host guard (deleted here, as only someone with
/// root on the node could) and without the pod's rules, the same probes do reach the cloud.
#[test]
fn control_without_the_host_guard_the_probes_do_escape() {
    let lab = lab();
    let pod = lab.node.pod(V);
    pod.ns.ok("nft", &["flush", "ruleset"]);
    let guards: Vec<String> = metaguard_tests::cni::nft_tables(&lab.node.ns)
        .into_iter()
        .filter(|t| t.starts_with("netdev metaguard-"))
        .collect();
    assert_eq!(guards.len(), 1, "expected one host guard, found {guards:?}");
    let name = guards[0].trim_start_matches("netdev ").to_string();
    lab.node.ns.ok("nft", &["delete", "table", "netdev", &name]);
    let _ = pod.ns.tcp_connect(
        None,
        SocketAddr::new(IpAddr::V4(v4()), 80),
        Duration::from_millis(300),
    );
    probe_raw_syns(&lab.node, &pod, None);
    metaguard_tests::netns::wait_for(
        "probes to reach the cloud observer",
        Duration::from_secs(5),
        || observer::escaped(&lab.cloud.ns) > 0,
    );
}
