//! `metaguard_plugin::nft` against the real kernel, in throwaway network namespaces (needs root).
//!
//! Every test builds its own namespaces (`mg-nft-<pid>-<n>`): a "pod" and a "host" joined by a
//! veth pair, 10.99.0.2/fd99::2 in the pod, 10.99.0.1/fd99::1 on the host side, and routes for
//! the metadata addresses via the host so the tests exercise the rules, not routing. The root
//! namespace's ruleset is never touched. The `nft` CLI is used only to look at the result.
//!
//! Run: `cargo test -p metaguard-plugin --test nft_netlink -- --test-threads=2`

use metaguard_plugin::netns::Netns;
use metaguard_plugin::nft::{self, Family, NftError, TableInfo, Where};
use metaguard_plugin::rules::{table_name, HostGuard, PodRuleset, Redirect};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

const POD_V4: &str = "10.99.0.2";
const POD_V6: &str = "fd99::2";
const HOST_V4: &str = "10.99.0.1";
const HOST_V6: &str = "fd99::1";
const HOST_IF: &str = "vh0";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes the named netns when dropped (even when the test panics).
struct NameGuard(String);

impl Drop for NameGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Ns {
    ns: Netns,
    // Dropped after `ns`, so the namespace file is closed before it is deleted.
    name: NameGuard,
}

impl Ns {
    fn new() -> Ns {
        let name = format!(
            "mg-nft-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name]);
        let name = NameGuard(name);
        let ns = Netns::open(Path::new(&format!("/var/run/netns/{}", name.0))).unwrap();
        let ns = Ns { ns, name };
        ns.ip("link set lo up");
        ns
    }

    fn name(&self) -> &str {
        &self.name.0
    }

    fn at(&self) -> Where<'_> {
        Where::In(&self.ns)
    }

    fn ip(&self, args: &str) -> String {
        let mut a = vec!["-n", self.name()];
        a.extend(args.split_whitespace());
        run("ip", &a)
    }

    fn nft(&self, args: &str) -> String {
        let mut a = vec!["netns", "exec", self.name(), "nft"];
        a.extend(args.split_whitespace());
        run("ip", &a)
    }

    fn listen(&self, addr: &str) -> TcpListener {
        let l = self.ns.run(|| TcpListener::bind(addr)).unwrap().unwrap();
        l.set_nonblocking(true).unwrap();
        l
    }

    /// A TCP connection from this namespace, optionally from a chosen source address.
    fn connect(
        &self,
        src: Option<&str>,
        dst: &str,
        timeout: Duration,
    ) -> std::io::Result<TcpStream> {
        self.connect_to(src, dst.parse().unwrap(), timeout)
    }

    fn connect_to(
        &self,
        src: Option<&str>,
        dst: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<TcpStream> {
        let sock = self
            .ns
            .run(|| Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP)))
            .unwrap()?;
        if let Some(src) = src {
            let ip: IpAddr = src.parse().unwrap();
            sock.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        sock.connect_timeout(&SockAddr::from(dst), timeout)?;
        Ok(sock.into())
    }

    /// Sends one UDP datagram on a connected socket and returns what the receive says. A packet
    /// rejected in the output hook makes `send` itself fail with EPERM (the packet was dropped
    /// locally, as with iptables REJECT); the ICMP error still arrives and `recv` reports it.
    fn udp_probe(&self, dst: &str) -> std::io::Result<usize> {
        let dst: SocketAddr = dst.parse().unwrap();
        let any = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = self.ns.run(|| UdpSocket::bind(any)).unwrap()?;
        s.connect(dst)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        if let Err(e) = s.send(b"probe") {
            if e.kind() != ErrorKind::PermissionDenied {
                return Err(e);
            }
        }
        let mut buf = [0u8; 64];
        s.recv(&mut buf)
    }

    /// Waits until no address on `dev` is still doing duplicate address detection.
    fn wait_dad(&self, dev: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .ip(&format!("-6 addr show dev {dev}"))
            .contains("tentative")
        {
            assert!(
                Instant::now() < deadline,
                "IPv6 DAD on {dev} in {} did not finish",
                self.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// First connection accepted by a non-blocking listener within `d`.
fn accepted(l: &TcpListener, d: Duration) -> Option<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + d;
    loop {
        match l.accept() {
            Ok(c) => return Some(c),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A pod namespace and a host namespace joined by a veth pair.
struct Lab {
    pod: Ns,
    host: Ns,
}

fn lab() -> Lab {
    let pod = Ns::new();
    let host = Ns::new();
    pod.ip(&format!(
        "link add eth0 type veth peer name {HOST_IF} netns {}",
        host.name()
    ));
    pod.ip(&format!("addr add {POD_V4}/24 dev eth0"));
    pod.ip(&format!("addr add {POD_V6}/64 dev eth0 nodad"));
    pod.ip("link set eth0 up");
    host.ip(&format!("addr add {HOST_V4}/24 dev {HOST_IF}"));
    host.ip(&format!("addr add {HOST_V6}/64 dev {HOST_IF} nodad"));
    host.ip(&format!("link set {HOST_IF} up"));
    pod.ip(&format!("route add 169.254.169.254/32 via {HOST_V4}"));
    pod.ip(&format!("route add 100.100.100.200/32 via {HOST_V4}"));
    pod.ip(&format!("-6 route add fd00:ec2::254/128 via {HOST_V6}"));
    Lab { pod, host }
}

fn ruleset(tag: &str) -> PodRuleset {
    PodRuleset {
        table: table_name(tag),
        tag: tag.into(),
        redirects: vec![
            Redirect {
                dest: "169.254.169.254".parse().unwrap(),
                dest_port: 80,
                to: HOST_V4.parse().unwrap(),
                to_port: 8169,
            },
            Redirect {
                dest: "fd00:ec2::254".parse().unwrap(),
                dest_port: 80,
                to: HOST_V6.parse().unwrap(),
                to_port: 8170,
            },
        ],
        blocked: vec![
            "169.254.169.254/32".parse().unwrap(),
            "fd00:ec2::254/128".parse().unwrap(),
            "100.100.100.200/32".parse().unwrap(),
        ],
    }
}

fn guard(tag: &str) -> HostGuard {
    HostGuard {
        table: table_name(tag),
        tag: tag.into(),
        host_ifname: HOST_IF.into(),
        pod_ips: vec![POD_V4.parse().unwrap(), POD_V6.parse().unwrap()],
        blocked: vec![
            "169.254.169.254/32".parse().unwrap(),
            "fd00:ec2::254/128".parse().unwrap(),
        ],
        pod_mac: None,
        pod_link_locals: Vec::new(),
        block_tunnels: true,
        tunnel_ports: vec![4789, 8472, 6081],
    }
}

/// [`guard`] for the pod of a lab: its MAC and link-local addresses as ADD reads them.
fn guard_of(tag: &str, pod: &Ns) -> HostGuard {
    let link = metaguard_plugin::podlink::read(&pod.ns, "eth0").expect("read the pod's link");
    assert!(link.mac.is_some(), "the pod's eth0 has no MAC");
    HostGuard {
        pod_mac: link.mac,
        pod_link_locals: link.link_locals,
        ..guard(tag)
    }
}

/// `nft -a list table` line for the first rule in `chain`, and its handle.
fn first_rule_handle(ns: &Ns, family: &str, table: &str, chain: &str) -> String {
    let listing = ns.nft(&format!("-a list chain {family} {table} {chain}"));
    let line = listing
        .lines()
        .find(|l| l.contains("comment \"metaguard:") && l.contains("# handle "))
        .unwrap_or_else(|| panic!("no rule in {chain}:\n{listing}"));
    line.rsplit("# handle ").next().unwrap().trim().to_string()
}

#[test]
fn pod_rules_apply_idempotent_check_and_delete() {
    let pod = Ns::new();
    let rs = ruleset("testnet:pod-rules:eth0");
    nft::apply_pod_rules(pod.at(), &rs).unwrap();
    let listing = pod.nft(&format!("list table inet {}", rs.table));
    for want in [
        "comment \"metaguard:v1:testnet:pod-rules:eth0\"",
        "chain nat-output {",
        "chain nat-prerouting {",
        "chain filter-output {",
        "type filter hook output priority filter; policy accept;",
        "chain filter-forward {",
        "type filter hook forward priority filter; policy accept;",
        "ip daddr 169.254.169.254 tcp dport 80 dnat ip to 10.99.0.1:8169",
        "ip6 daddr fd00:ec2::254 tcp dport 80 dnat ip6 to [fd99::1]:8170",
        "ip daddr 169.254.169.254 meta l4proto tcp reject with tcp reset",
        // nft prints icmpx port-unreachable, the inet default, as a bare "reject".
        "ip daddr 169.254.169.254 reject comment",
        "ip6 daddr fd00:ec2::254 reject comment",
        "ip daddr 100.100.100.200 reject comment",
        "comment \"metaguard:filter-forward/5:",
    ] {
        assert!(listing.contains(want), "missing {want:?} in:\n{listing}");
    }
    // Both nat chains sit at priority -100. nft prints it as `dstnat` for the hooks where it knows
    // that name, and which hooks those are differs between nft versions (Debian 12's names only
    // prerouting's), so either spelling is the same chain.
    for hook in ["output", "prerouting"] {
        let forms = [
            format!("type nat hook {hook} priority -100; policy accept;"),
            format!("type nat hook {hook} priority dstnat; policy accept;"),
        ];
        assert!(
            forms.iter().any(|f| listing.contains(f.as_str())),
            "no nat {hook} chain at priority -100 in:\n{listing}"
        );
    }
    assert_eq!(listing.matches(" dnat ").count(), 4, "{listing}");
    assert_eq!(listing.matches(" reject ").count(), 12, "{listing}");

    let chain_handles = || {
        let l = pod.nft(&format!("-a list table inet {}", rs.table));
        l.lines()
            .filter(|l| l.contains("chain ") || l.starts_with("table"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let before = chain_handles();
    nft::apply_pod_rules(pod.at(), &rs).unwrap();
    assert_eq!(
        pod.nft(&format!("list table inet {}", rs.table)),
        listing,
        "second apply changed the table"
    );
    // Applied in place: same table and chains (handles), only the rules were swapped.
    assert_eq!(chain_handles(), before);
    nft::check_pod_rules(pod.at(), &rs).unwrap();

    // CHECK notices a different ruleset (one redirect fewer).
    let mut other = rs.clone();
    other.redirects.pop();
    assert!(matches!(
        nft::check_pod_rules(pod.at(), &other),
        Err(NftError::Mismatch(_))
    ));

    let handle = first_rule_handle(&pod, "inet", &rs.table, "filter-output");
    pod.nft(&format!(
        "delete rule inet {} filter-output handle {handle}",
        rs.table
    ));
    let err = nft::check_pod_rules(pod.at(), &rs).unwrap_err();
    assert!(
        matches!(err, NftError::Mismatch(ref m) if m.contains("filter-output")),
        "{err}"
    );

    // A rule added by someone else is noticed too; re-applying repairs both.
    nft::apply_pod_rules(pod.at(), &rs).unwrap();
    pod.nft(&format!("add rule inet {} nat-output accept", rs.table));
    let err = nft::check_pod_rules(pod.at(), &rs).unwrap_err();
    assert!(
        matches!(err, NftError::Mismatch(ref m) if m.contains("unexpected rule")),
        "{err}"
    );
    pod.nft(&format!("add chain inet {} extra", rs.table));
    nft::apply_pod_rules(pod.at(), &rs).unwrap();
    nft::check_pod_rules(pod.at(), &rs).unwrap();
    assert_eq!(pod.nft(&format!("list table inet {}", rs.table)), listing);

    // A table of that name with another tag is not ours: ADD refuses it, DEL leaves it.
    assert!(
        nft::delete_table(pod.at(), Family::Inet, &rs.table, &rs.tag)
            .unwrap()
            .removed()
    );
    pod.nft(&format!(
        "add table inet {} {{ comment \"metaguard:v1:othernet:victim:eth0\" ; }}",
        rs.table
    ));
    let err = nft::apply_pod_rules(pod.at(), &rs).unwrap_err();
    assert!(matches!(err, NftError::NotOurs { .. }), "{err}");
    assert!(matches!(
        nft::delete_table(pod.at(), Family::Inet, &rs.table, &rs.tag).unwrap(),
        nft::Deleted::NotOurs { comment: Some(ref c) } if c == "metaguard:v1:othernet:victim:eth0"
    ));
    let err = nft::check_pod_rules(pod.at(), &rs).unwrap_err();
    assert!(
        matches!(err, NftError::Mismatch(ref m) if m.contains("comment")),
        "{err}"
    );
    assert!(
        pod.nft("list tables").contains(&rs.table),
        "the foreign table was removed"
    );
    pod.nft(&format!("delete table inet {}", rs.table));

    // Our tag with chains of other hooks: replaced whole.
    pod.nft(&format!(
        "add table inet {} {{ comment \"metaguard:v1:{}\" ; }}",
        rs.table, rs.tag
    ));
    pod.nft(&format!(
        "add chain inet {} nat-output {{ type nat hook output priority 10 ; }}",
        rs.table
    ));
    nft::apply_pod_rules(pod.at(), &rs).unwrap();
    nft::check_pod_rules(pod.at(), &rs).unwrap();
    assert_eq!(pod.nft(&format!("list table inet {}", rs.table)), listing);

    assert!(
        nft::delete_table(pod.at(), Family::Inet, &rs.table, &rs.tag)
            .unwrap()
            .removed()
    );
    assert!(!pod.nft("list tables").contains(&rs.table));
    assert!(
        !nft::delete_table(pod.at(), Family::Inet, &rs.table, &rs.tag)
            .unwrap()
            .removed()
    );
    let err = nft::check_pod_rules(pod.at(), &rs).unwrap_err();
    assert!(
        matches!(err, NftError::Mismatch(ref m) if m.contains("missing")),
        "{err}"
    );
}

#[test]
fn pod_rules_redirect_and_reject_traffic() {
    let Lab { pod, host } = lab();
    let proxy4 = host.listen(&format!("{HOST_V4}:8169"));
    let proxy6 = host.listen(&format!("[{HOST_V6}]:8170"));
    let rs = ruleset("testnet:traffic:eth0");
    nft::apply_pod_rules(pod.at(), &rs).unwrap();

    let t = Duration::from_secs(2);
    let c = pod.connect(None, "169.254.169.254:80", t).unwrap();
    let (_s, peer) =
        accepted(&proxy4, t).expect("redirected IPv4 connection did not reach the proxy");
    assert_eq!(peer.ip().to_string(), POD_V4);
    assert_eq!(
        c.peer_addr().unwrap().to_string(),
        "169.254.169.254:80",
        "the pod still sees the metadata address"
    );

    let c6 = pod.connect(None, "[fd00:ec2::254]:80", t).unwrap();
    let (_s6, peer6) =
        accepted(&proxy6, t).expect("redirected IPv6 connection did not reach the proxy");
    assert_eq!(peer6.ip().to_string(), POD_V6);
    assert_eq!(c6.peer_addr().unwrap().to_string(), "[fd00:ec2::254]:80");

    for dst in [
        "169.254.169.254:81",
        "[fd00:ec2::254]:81",
        "100.100.100.200:80",
    ] {
        let e = pod.connect(None, dst, t).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "TCP {dst}: {e}");
    }
    for dst in [
        "169.254.169.254:53",
        "[fd00:ec2::254]:53",
        "169.254.169.254:80",
    ] {
        let e = pod.udp_probe(dst).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "UDP {dst}: {e}");
    }
    // Nothing but the two redirected connections arrived.
    assert!(accepted(&proxy4, Duration::from_millis(100)).is_none());
    assert!(accepted(&proxy6, Duration::from_millis(100)).is_none());
}

#[test]
fn host_guard_blocks_metadata_and_forged_sources() {
    let Lab { pod, host } = lab();
    // The host answers on the metadata addresses itself, so only the guard stands in the way.
    host.ip("addr add 169.254.169.254/32 dev lo");
    host.ip("addr add fd00:ec2::254/128 dev lo nodad");
    let meta4 = host.listen("169.254.169.254:80");
    let meta6 = host.listen("[fd00:ec2::254]:80");
    let svc4 = host.listen(&format!("{HOST_V4}:9000"));
    let svc6 = host.listen("[::]:9001");
    pod.ip("addr add 10.99.0.3/24 dev eth0");
    pod.ip("addr add fd99::3/64 dev eth0 nodad");
    pod.wait_dad("eth0");
    host.wait_dad(HOST_IF);

    let short = Duration::from_millis(700);
    let t = Duration::from_secs(2);
    // Without the guard, all of it gets through: the test can see the difference.
    pod.connect(None, "169.254.169.254:80", t).unwrap();
    assert!(accepted(&meta4, t).is_some());
    pod.connect(Some("10.99.0.3"), &format!("{HOST_V4}:9000"), t)
        .unwrap();
    assert!(accepted(&svc4, t).is_some());

    let rs = ruleset("testnet:guard:eth0");
    let g = guard_of("testnet:guard:eth0", &pod);
    nft::apply_pod_rules(pod.at(), &rs).unwrap();
    nft::apply_host_guard(host.at(), &g).unwrap();
    nft::check_host_guard(host.at(), &g).unwrap();
    let listing = host.nft(&format!("list table netdev {}", g.table));
    assert!(
        listing.contains(&format!(
            "type filter hook ingress device \"{HOST_IF}\" priority -500; policy drop;"
        )),
        "{listing}"
    );
    // The pod (with CAP_NET_ADMIN) removes its own rules.
    assert!(
        nft::delete_table(pod.at(), Family::Inet, &rs.table, &rs.tag)
            .unwrap()
            .removed()
    );
    pod.ip("neigh flush all");
    host.ip("neigh flush all");

    for dst in ["169.254.169.254:80", "[fd00:ec2::254]:80"] {
        let e = pod.connect(None, dst, short).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{dst}: {e}");
    }
    assert!(
        accepted(&meta4, Duration::from_millis(100)).is_none(),
        "IPv4 metadata reached the host"
    );
    assert!(
        accepted(&meta6, Duration::from_millis(100)).is_none(),
        "IPv6 metadata reached the host"
    );

    // Forged sources do not arrive; the pod's real addresses do.
    let e = pod
        .connect(Some("10.99.0.3"), &format!("{HOST_V4}:9000"), short)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "forged IPv4 source: {e}");
    let e = pod
        .connect(Some("fd99::3"), &format!("[{HOST_V6}]:9001"), short)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "forged IPv6 source: {e}");
    assert!(accepted(&svc4, Duration::from_millis(100)).is_none());
    assert!(accepted(&svc6, Duration::from_millis(100)).is_none());

    pod.connect(Some(POD_V4), &format!("{HOST_V4}:9000"), t)
        .unwrap();
    let (_s, peer) = accepted(&svc4, t).expect("the pod's own IPv4 address was blocked");
    assert_eq!(peer.ip().to_string(), POD_V4);
    // IPv6 with empty neighbour caches (the forged attempt above left a failed entry): neighbour
    // discovery has to pass the guard.
    pod.ip("neigh flush all");
    host.ip("neigh flush all");
    pod.connect(Some(POD_V6), &format!("[{HOST_V6}]:9001"), t)
        .unwrap();
    let (_s6, peer6) = accepted(&svc6, t).expect("the pod's own IPv6 address was blocked");
    assert_eq!(peer6.ip().to_string(), POD_V6);

    // From the pod's link-local address, neighbour discovery passes but TCP does not.
    let host_ll = link_local(&host, HOST_IF);
    let ll =
        std::net::SocketAddrV6::new(host_ll.parse().unwrap(), 9001, 0, pod.run_ifindex("eth0"));
    let e = pod.connect_to(None, SocketAddr::V6(ll), short);
    assert!(
        e.is_err(),
        "link-local TCP from the pod got through the guard"
    );
    assert!(accepted(&svc6, Duration::from_millis(100)).is_none());
    let neigh = pod.ip(&format!("-6 neigh show {host_ll} dev eth0"));
    assert!(
        neigh.contains("lladdr"),
        "the pod could not resolve the host's link-local address: {neigh:?}"
    );

    assert!(
        nft::delete_table(host.at(), Family::Netdev, &g.table, &g.tag)
            .unwrap()
            .removed()
    );
    assert!(
        !nft::delete_table(host.at(), Family::Netdev, &g.table, &g.tag)
            .unwrap()
            .removed()
    );
}

#[test]
fn host_guard_drops_neighbour_advertisements_for_other_addresses() {
    let Lab { pod, host } = lab();
    pod.wait_dad("eth0");
    host.wait_dad(HOST_IF);
    let pod_mac = mac(&pod, "eth0");
    let other_mac = "02:00:00:00:00:07";
    let lladdr_of = |ip: &str| {
        let out = host.ip(&format!("-6 neigh show {ip} dev {HOST_IF}"));
        out.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    // The host's view of `ip` becomes `mac` within a deadline (NDP is handled asynchronously).
    let becomes = |ip: &str, mac: &str| {
        let deadline = Instant::now() + Duration::from_secs(3);
        while lladdr_of(ip) != mac {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    // The host knows a neighbour fd99::7 (another pod); this pod claims that address.
    let reset = |ip: &str| {
        host.ip(&format!(
            "neigh replace {ip} lladdr {other_mac} dev {HOST_IF} nud stale"
        ))
    };
    reset("fd99::7");
    send_na(&pod, POD_V6, HOST_V6, "fd99::7", &pod_mac);
    assert!(
        becomes("fd99::7", &pod_mac),
        "without the guard the advertisement should take the address over"
    );

    reset("fd99::7");
    let g = guard_of("testnet:na:eth0", &pod);
    nft::apply_host_guard(host.at(), &g).unwrap();
    send_na(&pod, POD_V6, HOST_V6, "fd99::7", &pod_mac);
    let ll = link_local(&pod, "eth0");
    send_na(&pod, &ll, HOST_V6, "fd99::7", &pod_mac);
    // An advertisement for the pod's own address still passes; it travels behind the two above,
    // so once it has been handled they have been too.
    reset(POD_V6);
    send_na(&pod, POD_V6, HOST_V6, POD_V6, &pod_mac);
    assert!(
        becomes(POD_V6, &pod_mac),
        "the pod's advertisement for its own address was dropped"
    );
    assert_eq!(
        lladdr_of("fd99::7"),
        other_mac,
        "the guard let a foreign neighbour advertisement through"
    );
    assert!(
        nft::delete_table(host.at(), Family::Netdev, &g.table, &g.tag)
            .unwrap()
            .removed()
    );
}

fn mac(ns: &Ns, dev: &str) -> String {
    let out = ns.ip(&format!("link show dev {dev}"));
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("no MAC")
        .to_string()
}

/// Sends an unsolicited, overriding ICMPv6 neighbour advertisement for `target` (claiming
/// `lladdr`) from `src` in `ns` to `dst`, through the ordinary stack (a raw ICMPv6 socket; the
/// kernel fills in the checksum).
fn send_na(ns: &Ns, src: &str, dst: &str, target: &str, lladdr: &str) {
    let src: std::net::Ipv6Addr = src.parse().unwrap();
    let scope = if src.segments()[0] & 0xffc0 == 0xfe80 {
        ns.run_ifindex("eth0")
    } else {
        0
    };
    let sock = ns
        .ns
        .run(|| Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)))
        .unwrap()
        .unwrap();
    sock.bind(&SockAddr::from(std::net::SocketAddrV6::new(
        src, 0, 0, scope,
    )))
    .unwrap();
    sock.set_unicast_hops_v6(255).unwrap(); // RFC 4861: receivers ignore NDP with another hop limit
    let mut msg = vec![136u8, 0, 0, 0, 0x20, 0, 0, 0]; // NA, override flag
    msg.extend_from_slice(&target.parse::<std::net::Ipv6Addr>().unwrap().octets());
    msg.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    msg.extend(
        lladdr
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap()),
    );
    let dst: std::net::Ipv6Addr = dst.parse().unwrap();
    sock.send_to(
        &msg,
        &SockAddr::from(std::net::SocketAddrV6::new(dst, 0, 0, 0)),
    )
    .unwrap();
}

/// The link-local address of `dev` in `ns`.
fn link_local(ns: &Ns, dev: &str) -> String {
    let out = ns.ip(&format!("-6 addr show dev {dev} scope link"));
    let word = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .expect("no link-local address");
    word.split('/').next().unwrap().to_string()
}

impl Ns {
    fn run_ifindex(&self, dev: &str) -> u32 {
        let c = std::ffi::CString::new(dev).unwrap();
        // SAFETY: valid NUL-terminated string.
        self.ns
            .run(|| unsafe { libc::if_nametoindex(c.as_ptr()) })
            .unwrap()
    }
}

#[test]
fn host_guard_missing_device_and_check() {
    let Lab { pod: _pod, host } = lab();
    let mut g = guard("testnet:nodev:eth0");
    g.host_ifname = "nosuchdev0".into();
    let err = nft::apply_host_guard(host.at(), &g).unwrap_err();
    assert!(
        matches!(err, NftError::NoDevice(ref d) if d == "nosuchdev0"),
        "{err}"
    );
    assert!(err.to_string().contains("nosuchdev0"));
    assert!(
        !host.nft("list tables").contains(&g.table),
        "a failed apply left a table behind"
    );

    let g = guard("testnet:check:eth0");
    nft::apply_host_guard(host.at(), &g).unwrap();
    nft::apply_host_guard(host.at(), &g).unwrap();
    nft::check_host_guard(host.at(), &g).unwrap();
    let mut moved = g.clone();
    moved.pod_ips.pop();
    assert!(matches!(
        nft::check_host_guard(host.at(), &moved),
        Err(NftError::Mismatch(_))
    ));
    let handle = first_rule_handle(&host, "netdev", &g.table, "ingress");
    host.nft(&format!(
        "delete rule netdev {} ingress handle {handle}",
        g.table
    ));
    let err = nft::check_host_guard(host.at(), &g).unwrap_err();
    assert!(
        matches!(err, NftError::Mismatch(ref m) if m.contains("ingress")),
        "{err}"
    );
    nft::apply_host_guard(host.at(), &g).unwrap();
    nft::check_host_guard(host.at(), &g).unwrap();
    // The chain's policy is part of what CHECK compares.
    host.nft(&format!(
        "add chain netdev {} ingress {{ policy accept ; }}",
        g.table
    ));
    let err = nft::check_host_guard(host.at(), &g).unwrap_err();
    assert!(
        matches!(err, NftError::Mismatch(ref m) if m.contains("policy")),
        "{err}"
    );
    // The device goes away: the table stays (the kernel keeps it) but CHECK says so.
    host.ip(&format!("link del {HOST_IF}"));
    let err = nft::check_host_guard(host.at(), &g).unwrap_err();
    assert!(matches!(err, NftError::Mismatch(_)), "{err}");
    assert!(
        nft::delete_table(host.at(), Family::Netdev, &g.table, &g.tag)
            .unwrap()
            .removed()
    );
}

#[test]
fn list_tables_returns_tags() {
    let Lab { pod, host } = lab();
    let a = ruleset("testnet:list-a:eth0");
    let b = ruleset("testnet:list-b:net1");
    nft::apply_pod_rules(pod.at(), &a).unwrap();
    nft::apply_pod_rules(pod.at(), &b).unwrap();
    pod.nft("add table inet other");
    let mut tables = nft::list_tables(pod.at(), Family::Inet).unwrap();
    tables.sort_by(|x, y| x.name.cmp(&y.name));
    let mut want = vec![
        TableInfo {
            name: a.table.clone(),
            tag: Some(a.tag.clone()),
        },
        TableInfo {
            name: b.table.clone(),
            tag: Some(b.tag.clone()),
        },
        TableInfo {
            name: "other".into(),
            tag: None,
        },
    ];
    want.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(tables, want);
    assert!(nft::list_tables(pod.at(), Family::Netdev)
        .unwrap()
        .is_empty());

    let g = guard("testnet:list-g:eth0");
    nft::apply_host_guard(host.at(), &g).unwrap();
    assert_eq!(
        nft::list_tables(host.at(), Family::Netdev).unwrap(),
        vec![TableInfo {
            name: g.table.clone(),
            tag: Some(g.tag.clone())
        }]
    );
    assert!(nft::list_tables(host.at(), Family::Inet)
        .unwrap()
        .is_empty());
    assert!(
        nft::delete_table(host.at(), Family::Netdev, &g.table, &g.tag)
            .unwrap()
            .removed()
    );
}

/// Timing of apply / check / delete (run alone: `--test nft_netlink timing -- --ignored
/// --nocapture`), with the default background release of committed sockets and without it, and
/// with operations back to back or spaced out (the kernel's post-commit cleanup waits for an RCU
/// grace period, and a socket closed before it is done waits too, holding the namespace's commit
/// mutex: see `nft/release.rs`).
#[test]
#[ignore]
fn timing() {
    let Lab { pod, host } = lab();
    let rs = ruleset("testnet:timing:eth0");
    let g = guard("testnet:timing:eth0");
    let n = 30;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // `f` returns the time of the part it wants measured.
    let time = |label: &str, gap: Duration, f: &mut dyn FnMut() -> Duration| {
        let mut v: Vec<Duration> = (0..n)
            .map(|_| {
                // Spacing between operations, not synchronisation: nothing waits on it.
                std::thread::sleep(gap);
                f()
            })
            .collect();
        v.sort();
        println!(
            "  {label:28} gap {:>3} ms: median {:>7.3} ms  p90 {:>7.3} ms  max {:>7.3} ms",
            gap.as_millis(),
            ms(v[n / 2]),
            ms(v[n * 9 / 10]),
            ms(v[n - 1])
        );
    };
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    for background in [true, false] {
        nft::set_background_release(background);
        println!("background release {background}:");
        for gap in [0, 10, 50].map(Duration::from_millis) {
            time("apply pod rules (new table)", gap, &mut || {
                let _ = nft::delete_table(pod.at(), Family::Inet, &rs.table, &rs.tag);
                std::thread::sleep(gap);
                timed(&mut || nft::apply_pod_rules(pod.at(), &rs).unwrap())
            });
            time("apply pod rules (replace)", gap, &mut || {
                timed(&mut || nft::apply_pod_rules(pod.at(), &rs).unwrap())
            });
            time("delete pod table", gap, &mut || {
                nft::apply_pod_rules(pod.at(), &rs).unwrap();
                std::thread::sleep(gap);
                timed(&mut || {
                    assert!(
                        nft::delete_table(pod.at(), Family::Inet, &rs.table, &rs.tag)
                            .unwrap()
                            .removed()
                    )
                })
            });
            time("apply host guard (replace)", gap, &mut || {
                timed(&mut || nft::apply_host_guard(host.at(), &g).unwrap())
            });
        }
        nft::apply_pod_rules(pod.at(), &rs).unwrap();
        time("check pod rules", Duration::ZERO, &mut || {
            timed(&mut || nft::check_pod_rules(pod.at(), &rs).unwrap())
        });
        time("check host guard", Duration::ZERO, &mut || {
            timed(&mut || nft::check_host_guard(host.at(), &g).unwrap())
        });
        time("delete table, absent", Duration::ZERO, &mut || {
            timed(&mut || {
                assert!(
                    !nft::delete_table(pod.at(), Family::Inet, "metaguard-nope", "x:y:z")
                        .unwrap()
                        .removed()
                )
            })
        });
        time("list tables", Duration::ZERO, &mut || {
            timed(&mut || {
                nft::list_tables(pod.at(), Family::Inet).unwrap();
            })
        });
    }
    nft::set_background_release(true);
}
