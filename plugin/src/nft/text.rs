//! nft-syntax rendering of a [`TableSpec`], for logs and documentation. It is what `nft list
//! table` would print, give or take the dependencies nft hides (`meta nfproto`, `ether type`).

use super::objects::rule_comments;
use super::ruleset::{family_name, Action, Match, TableSpec};
use super::sys::*;
use std::fmt::Write;
use std::net::IpAddr;

pub fn render(spec: &TableSpec) -> String {
    let comments = rule_comments(spec);
    let mut s = String::with_capacity(256 + 128 * spec.rules.len());
    let _ = writeln!(s, "table {} {} {{", family_name(spec.family), spec.name);
    let _ = writeln!(s, "\tcomment \"{}\"", spec.comment);
    for (ci, c) in spec.chains.iter().enumerate() {
        let _ = writeln!(s, "\n\tchain {} {{", c.name);
        let device = c
            .device
            .as_ref()
            .map(|d| format!(" device \"{d}\""))
            .unwrap_or_default();
        let policy = if c.policy == NF_ACCEPT {
            "accept"
        } else {
            "drop"
        };
        let _ = writeln!(
            s,
            "\t\ttype {} hook {}{device} priority {}; policy {policy};",
            c.kind,
            c.hook_name(spec.family),
            c.prio
        );
        for (r, comment) in spec
            .rules
            .iter()
            .zip(&comments)
            .filter(|(r, _)| r.chain == ci)
        {
            s.push_str("\t\t");
            for m in &r.matches {
                s.push_str(&match_text(m));
                s.push(' ');
            }
            s.push_str(&action_text(&r.action));
            let _ = writeln!(s, " comment \"{comment}\"");
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

fn match_text(m: &Match) -> String {
    let ip = |n: &super::ruleset::Net| if n.is_v4() { "ip" } else { "ip6" };
    match m {
        Match::NfProto { v4 } => format!("meta nfproto {}", if *v4 { "ipv4" } else { "ipv6" }),
        Match::EtherType(ETH_P_IP) => "ether type ip".into(),
        Match::EtherType(ETH_P_IPV6) => "ether type ip6".into(),
        Match::EtherType(ETH_P_ARP) => "ether type arp".into(),
        Match::EtherType(t) => format!("ether type 0x{t:04x}"),
        Match::L4Proto(IPPROTO_TCP) => "meta l4proto tcp".into(),
        Match::L4Proto(IPPROTO_ICMPV6) => "meta l4proto ipv6-icmp".into(),
        Match::L4Proto(p) => format!("meta l4proto {p}"),
        Match::Saddr(n) => format!("{} saddr {n}", ip(n)),
        Match::Daddr(n) => format!("{} daddr {n}", ip(n)),
        Match::TcpDport(p) => format!("tcp dport {p}"),
        Match::ArpEthIpv4 => "arp htype 1 arp ptype ip arp hlen 6 arp plen 4".into(),
        Match::ArpSpa(a) => format!("arp saddr ip {a}"),
        Match::Icmp6Type(t) => format!("icmpv6 type {}", icmp6_name(*t)),
        Match::NdTargetNot(n) => format!("icmpv6 taddr != {n}"),
    }
}

fn icmp6_name(t: u8) -> String {
    match t {
        ICMPV6_MLD_QUERY => "mld-listener-query".into(),
        ICMPV6_MLD_REPORT => "mld-listener-report".into(),
        ICMPV6_MLD_DONE => "mld-listener-done".into(),
        ICMPV6_ROUTER_SOLICIT => "nd-router-solicit".into(),
        ICMPV6_NEIGHBOR_SOLICIT => "nd-neighbor-solicit".into(),
        ICMPV6_NEIGHBOR_ADVERT => "nd-neighbor-advert".into(),
        ICMPV6_MLD2_REPORT => "mld2-listener-report".into(),
        t => t.to_string(),
    }
}

fn action_text(a: &Action) -> String {
    match a {
        Action::Dnat {
            to: IpAddr::V4(a),
            port,
        } => format!("dnat ip to {a}:{port}"),
        Action::Dnat {
            to: IpAddr::V6(a),
            port,
        } => format!("dnat ip6 to [{a}]:{port}"),
        Action::RejectTcpReset => "reject with tcp reset".into(),
        Action::RejectPortUnreachable => "reject with icmpx port-unreachable".into(),
        Action::Accept => "accept".into(),
        Action::Drop => "drop".into(),
    }
}

#[cfg(test)]
mod tests {
    use crate::nft::ruleset::{pod_spec, tests::pod};

    #[test]
    fn pod_rendering() {
        let t = super::render(&pod_spec(&pod()).unwrap());
        assert!(t.starts_with(
            "table inet metaguard-0123456789abcdef {\n\tcomment \"metaguard:v1:net:abc:eth0\"\n"
        ));
        assert!(t.contains("\t\ttype nat hook output priority -100; policy accept;\n"));
        assert!(t.contains("\t\ttype filter hook forward priority 0; policy accept;\n"));
        assert!(t.contains(
            "meta nfproto ipv4 meta l4proto tcp ip daddr 169.254.169.254 tcp dport 80 dnat ip to 10.0.0.1:8169 comment \"metaguard:nat-output/0:"
        ));
        assert!(t.contains("dnat ip6 to [fd00::1]:8170"));
        assert!(t.contains(
            "meta nfproto ipv6 ip6 daddr fd00:ec2::254 reject with icmpx port-unreachable"
        ));
    }

    #[test]
    fn host_rendering() {
        let g = crate::rules::HostGuard {
            table: "metaguard-0123456789abcdef".into(),
            tag: "net:abc:eth0".into(),
            host_ifname: "veth1234".into(),
            pod_ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            blocked: vec!["169.254.169.254/32".parse().unwrap()],
        };
        let t = super::render(&crate::nft::ruleset::host_spec(&g).unwrap());
        for want in [
            "table netdev metaguard-0123456789abcdef {",
            "type filter hook ingress device \"veth1234\" priority -500; policy drop;",
            "ether type ip ip daddr 169.254.169.254 drop",
            "icmpv6 type nd-neighbor-advert icmpv6 taddr != fe80::/10 icmpv6 taddr != fd00::5 drop",
            "ether type ip ip saddr 10.0.0.5 accept",
            "ether type ip6 ip6 saddr :: meta l4proto ipv6-icmp icmpv6 type nd-neighbor-solicit accept",
            "ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ip 0.0.0.0 accept",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
