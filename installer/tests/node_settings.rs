//! `metaguard-install status` reports the node settings that weaken metaguard's guard
//! (route_localnet, source routing, tunnel devices), run inside a throwaway network namespace.
//! Needs root and iproute2. Sysctls are changed in that namespace only, never in the root one.

mod common;

use common::*;
use std::fs;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A network namespace of its own, deleted on drop (also when an assertion fails).
struct Netns(String);

static NS_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Netns {
    fn new() -> Netns {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "mgtest-{}-{}-{nanos:x}",
            std::process::id(),
            NS_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip (iproute2 is needed)");
        ok(&out);
        Netns(name)
    }

    /// Runs `args` inside the namespace. `ip netns exec` also remounts /sys for it, so
    /// /sys/class/net shows this namespace's devices.
    fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    fn must(&self, args: &[&str]) {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    fn status(&self, host: &Host) -> Output {
        let mut a = vec![BIN.to_string(), "status".to_string()];
        a.extend(host.dirs_args());
        let args: Vec<&str> = a.iter().map(String::as_str).collect();
        self.exec(&args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The root namespace's values of the sysctls the test sets in its own namespace: they must not
/// change.
fn root_sysctls() -> Vec<(String, String)> {
    [
        "/proc/sys/net/ipv4/conf/all/route_localnet",
        "/proc/sys/net/ipv4/conf/all/accept_source_route",
        "/proc/sys/net/ipv6/conf/all/accept_source_route",
        "/proc/sys/net/ipv6/conf/all/seg6_enabled",
    ]
    .iter()
    .map(|p| (p.to_string(), fs::read_to_string(p).unwrap_or_default()))
    .collect()
}

fn assert_has(out: &str, want: &str) {
    assert!(out.contains(want), "missing {want:?} in:\n{out}");
}

#[test]
fn weak_settings_in_the_namespace_are_reported_and_leave_the_exit_code_alone() {
    let before = root_sysctls();
    let host = Host::new(Some("flannel"));
    ok(&host.install(&[]));
    let ns = Netns::new();
    ns.must(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.conf.all.route_localnet=1",
        "net.ipv4.conf.all.accept_source_route=1",
        "net.ipv6.conf.all.accept_source_route=1",
        "net.ipv6.conf.all.seg6_enabled=1",
        "net.ipv6.conf.lo.seg6_enabled=1",
    ]);
    // flannel's VXLAN device, and one on a port the guard does not know (VXLAN-GPE's).
    ns.must(&[
        "ip",
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "8472",
        "nolearning",
    ]);
    ns.must(&["ip", "link", "set", "flannel.1", "up"]);
    ns.must(&["sysctl", "-q", "-w", "net.ipv4.conf.flannel/1.rp_filter=2"]);
    ns.must(&[
        "ip", "link", "add", "vxgpe", "type", "vxlan", "id", "2", "dstport", "4790",
    ]);

    let out = ns.status(&host);
    let s = text(&out.stdout);
    // Installed: ready, whatever the node settings say.
    assert_eq!(out.status.code(), Some(0), "{s}{}", text(&out.stderr));
    assert_has(&s, "metaguard in chain: yes");
    assert_has(&s, "node settings that weaken the guard");
    assert_has(
        &s,
        "warning: net.ipv4.conf.all.route_localnet=1: in effect on every interface (3: flannel.1, lo, vxgpe)",
    );
    // IPv4: `all` and the interface (1 by default) => every interface.
    assert_has(
        &s,
        "warning: net.ipv4.conf.all.accept_source_route=1, net.ipv4.conf.default.accept_source_route=1: in effect on every interface",
    );
    // IPv6: only `all` says 1, interfaces keep 0 => in effect nowhere, still reported.
    assert_has(
        &s,
        "note: net.ipv6.conf.all.accept_source_route=1: in effect on no interface now",
    );
    assert_has(
        &s,
        "warning: net.ipv6.conf.all.seg6_enabled=1: in effect on: lo",
    );
    assert_has(
        &s,
        "warning: tunnel device flannel.1: vxlan, UDP port 8472, up; rp_filter 2 (loose)",
    );
    assert_has(&s, "unless a network sets \"blockTunnels\": false");
    assert_has(&s, "rp_filter is loose on flannel.1");
    assert_has(
        &s,
        "warning: tunnel device vxgpe: vxlan, UDP port 4790, down (decapsulates nothing until brought up)",
    );
    assert_has(
        &s,
        "UDP port 4790 is not among those: add it to the plugin config key \"tunnelPorts\"",
    );
    assert!(
        !s.contains("UDP port 8472 is not among those"),
        "8472 is a standard port:\n{s}"
    );
    assert!(!s.contains("note: could not read"), "{s}");

    // Not installed: still exit 3, with the same warnings.
    let bare = Host::new(Some("flannel"));
    let out = ns.status(&bare);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert_has(&text(&out.stdout), "warning: tunnel device flannel.1");

    assert_eq!(root_sysctls(), before, "the root namespace was changed");
}

#[test]
fn a_fresh_namespace_reports_nothing() {
    let host = Host::new(Some("flannel"));
    ok(&host.install(&[]));
    let ns = Netns::new();
    let out = ns.status(&host);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}{}", text(&out.stderr));
    assert_has(&s, "node settings: none found that weaken the guard");
    for word in [
        "warning:",
        "note:",
        "route_localnet=",
        "accept_source_route=",
        "seg6_enabled=",
        "tunnel device ",
    ] {
        assert!(
            !s.contains(word),
            "{word:?} reported in a fresh namespace:\n{s}"
        );
    }
}
