//! From metaguard's rule model (`crate::rules`) to nftables objects: one table, its base chains,
//! and rules written as a list of matches and one action. Everything here is pure data; `objects`
//! encodes it, `check` compares it with what the kernel holds.

use super::expr::{Data, Expr};
use super::sys::*;
use super::{Family, NftError};
use crate::rules::{HostGuard, PodRuleset};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Prefix of the table comment; what follows is the attachment tag.
pub const TAG_PREFIX: &str = "metaguard:v1:";
/// Prefix of every rule comment.
pub const RULE_PREFIX: &str = "metaguard:";
/// nftables names (tables, chains) are at most 255 bytes plus the NUL.
const NAME_MAX: usize = 255;

/// An address or network, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    pub fn host(addr: IpAddr) -> Net {
        Net {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn is_host(&self) -> bool {
        self.prefix == if self.is_v4() { 32 } else { 128 }
    }
}

impl From<IpNetwork> for Net {
    fn from(n: IpNetwork) -> Net {
        Net {
            addr: n.network(),
            prefix: n.prefix(),
        }
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// One condition of a rule. Header fields are read at fixed offsets, so each rule states the
/// protocol it depends on first (`NfProto`, `EtherType`, `L4Proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// `meta nfproto ipv4|ipv6` (inet tables).
    NfProto {
        v4: bool,
    },
    /// `ether type`: read from the link-layer header, where the kernel re-inserts an offloaded
    /// VLAN tag, so a tagged frame shows 0x8100 here rather than its inner protocol.
    EtherType(u16),
    /// `meta l4proto`: the transport protocol after IPv6 extension headers.
    L4Proto(u8),
    Saddr(Net),
    Daddr(Net),
    /// The transport destination port, after `L4Proto` (TCP and UDP keep it at the same offset).
    Dport(u16),
    /// `ether saddr != mac`
    EtherSaddrNot([u8; 6]),
    /// `ip option <ty> exists` (after an IPv4 protocol match).
    Ipv4Option(u8),
    /// `exthdr <ty> exists` (after an IPv6 protocol match).
    Ipv6ExtHdr(u8),
    /// `arp htype 1 ptype ip hlen 6 plen 4`: the layout the sender-address offset assumes.
    ArpEthIpv4,
    /// `arp saddr ip`
    ArpSpa(Ipv4Addr),
    /// `arp saddr ether`: the sender hardware address.
    ArpSha([u8; 6]),
    /// `icmpv6 type` (after `L4Proto(IPPROTO_ICMPV6)`).
    Icmp6Type(u8),
    /// `icmpv6 taddr != net`: the target address of a neighbour solicitation/advertisement.
    NdTargetNot(Net),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Dnat {
        to: IpAddr,
        port: u16,
    },
    RejectTcpReset,
    /// ICMP/ICMPv6 port unreachable, so UDP senders see "connection refused".
    RejectPortUnreachable,
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    pub name: &'static str,
    /// Chain type: "nat" or "filter".
    pub kind: &'static str,
    pub hook: u32,
    pub prio: i32,
    pub policy: u32,
    /// netdev chains are bound to one device.
    pub device: Option<String>,
}

impl ChainSpec {
    pub fn hook_name(&self, family: Family) -> &'static str {
        match (family, self.hook) {
            (Family::Netdev, _) => "ingress",
            (_, NF_INET_PRE_ROUTING) => "prerouting",
            (_, NF_INET_LOCAL_IN) => "input",
            (_, NF_INET_FORWARD) => "forward",
            (_, NF_INET_LOCAL_OUT) => "output",
            _ => "postrouting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Index into [`TableSpec::chains`].
    pub chain: usize,
    pub matches: Vec<Match>,
    pub action: Action,
}

impl RuleSpec {
    /// The expressions, in order.
    pub fn exprs(&self) -> Vec<Expr> {
        let mut out = Vec::with_capacity(12);
        for m in &self.matches {
            match_exprs(&mut out, *m);
        }
        action_exprs(&mut out, self.action);
        out
    }
}

/// A whole table as metaguard wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub family: Family,
    pub name: String,
    /// `TAG_PREFIX` + tag: stored as the table's comment user data.
    pub comment: String,
    pub chains: Vec<ChainSpec>,
    pub rules: Vec<RuleSpec>,
}

impl TableSpec {
    /// The user-data comment of rule `i`: its chain, its position in the chain and a hash of its
    /// encoded expressions. Equal comments in the same order mean the same rules.
    pub fn rule_comment(&self, i: usize, expr_bytes: &[u8]) -> String {
        let r = &self.rules[i];
        let pos = self.rules[..i]
            .iter()
            .filter(|o| o.chain == r.chain)
            .count();
        format!(
            "{RULE_PREFIX}{}/{pos}:{:016x}",
            self.chains[r.chain].name,
            fnv1a(expr_bytes)
        )
    }
}

pub fn family_proto(f: Family) -> u8 {
    match f {
        Family::Inet => NFPROTO_INET,
        Family::Netdev => NFPROTO_NETDEV,
    }
}

pub fn family_name(f: Family) -> &'static str {
    match f {
        Family::Inet => "inet",
        Family::Netdev => "netdev",
    }
}

/// FNV-1a, 64 bit: stable across builds, unlike `DefaultHasher`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn check_name(what: &str, name: &str) -> Result<(), NftError> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains('\0') {
        return Err(NftError::Invalid(format!(
            "{what} name {name:?}: must be 1..=255 bytes without NUL"
        )));
    }
    Ok(())
}

fn table_comment(tag: &str) -> Result<String, NftError> {
    let c = format!("{TAG_PREFIX}{tag}");
    // Validate now (length and NUL) so the error names the tag, not a kernel EINVAL.
    if tag.contains('\0') {
        return Err(NftError::Invalid(format!("tag {tag:?} contains NUL")));
    }
    super::msg::comment_udata(&c).map_err(|_| {
        NftError::Invalid(format!(
            "tag {tag:?} is too long for nftables user data (max 240 bytes)"
        ))
    })?;
    Ok(c)
}

/// The `inet` table inside the pod (see [`PodRuleset`] for the semantics).
pub fn pod_spec(rs: &PodRuleset) -> Result<TableSpec, NftError> {
    check_name("table", &rs.table)?;
    let comment = table_comment(&rs.tag)?;
    let chain = |name, kind, hook, prio| ChainSpec {
        name,
        kind,
        hook,
        prio,
        policy: NF_ACCEPT,
        device: None,
    };
    let chains = vec![
        chain("nat-output", "nat", NF_INET_LOCAL_OUT, -100),
        chain("nat-prerouting", "nat", NF_INET_PRE_ROUTING, -100),
        chain("filter-output", "filter", NF_INET_LOCAL_OUT, 0),
        chain("filter-forward", "filter", NF_INET_FORWARD, 0),
    ];
    let mut rules = Vec::with_capacity(2 * rs.redirects.len() + 4 * rs.blocked.len());
    for c in [0, 1] {
        for r in &rs.redirects {
            if r.dest.is_ipv4() != r.to.is_ipv4() {
                return Err(NftError::Invalid(format!(
                    "redirect {}:{} -> {}:{} mixes IPv4 and IPv6",
                    r.dest, r.dest_port, r.to, r.to_port
                )));
            }
            let v4 = r.dest.is_ipv4();
            rules.push(RuleSpec {
                chain: c,
                matches: vec![
                    Match::NfProto { v4 },
                    Match::L4Proto(IPPROTO_TCP),
                    Match::Daddr(Net::host(r.dest)),
                    Match::Dport(r.dest_port),
                ],
                action: Action::Dnat {
                    to: r.to,
                    port: r.to_port,
                },
            });
        }
    }
    for c in [2, 3] {
        rules.extend(source_route_drops(c, |v4| Match::NfProto { v4 }));
        for n in &rs.blocked {
            let net = Net::from(*n);
            let v4 = net.is_v4();
            rules.push(RuleSpec {
                chain: c,
                matches: vec![
                    Match::NfProto { v4 },
                    Match::Daddr(net),
                    Match::L4Proto(IPPROTO_TCP),
                ],
                action: Action::RejectTcpReset,
            });
            rules.push(RuleSpec {
                chain: c,
                matches: vec![Match::NfProto { v4 }, Match::Daddr(net)],
                action: Action::RejectPortUnreachable,
            });
        }
    }
    Ok(TableSpec {
        family: Family::Inet,
        name: rs.table.clone(),
        comment,
        chains,
        rules,
    })
}

/// IP protocols a node may decapsulate and route on: IPIP (4), IPv6-in-IP (41, SIT and ip6tnl),
/// GRE (47, also ERSPAN and gretap), L2TPv3 over IP (115) and MPLS-in-IP (137, ipip/ip6tnl in
/// `mplsip` mode). `meta l4proto` sees them after IPv6 extension headers too.
pub const TUNNEL_PROTOCOLS: [u8; 5] = [
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_GRE,
    IPPROTO_L2TP,
    IPPROTO_MPLS,
];

/// The `netdev` table on the host side of the pod's link (see [`HostGuard`] for the semantics,
/// in the same order as the rules below: drops first, then accepts, then the chain's drop policy).
pub fn host_spec(g: &HostGuard) -> Result<TableSpec, NftError> {
    check_name("table", &g.table)?;
    if !metaguard_common::ids::valid_ifname(&g.host_ifname) {
        return Err(NftError::Invalid(format!(
            "host interface name {:?} is not valid",
            g.host_ifname
        )));
    }
    let comment = table_comment(&g.tag)?;
    let chains = vec![ChainSpec {
        name: "ingress",
        kind: "filter",
        hook: NF_NETDEV_INGRESS,
        prio: -500,
        policy: NF_DROP,
        device: Some(g.host_ifname.clone()),
    }];
    let mut rules = Vec::new();
    // 1. Layer 2: one MAC per port, for every ethertype.
    if let Some(mac) = g.pod_mac {
        rules.push(guard_rule(vec![Match::EtherSaddrNot(mac)], Action::Drop));
    }
    rules.extend(destination_drops(g));
    // 3. Source routes.
    rules.extend(source_route_drops(0, ether));
    if g.block_tunnels {
        rules.extend(tunnel_drops(g));
    }
    rules.push(foreign_advert_drop(g));
    // 6. The pod's own addresses.
    for ip in &g.pod_ips {
        rules.push(guard_rule(
            vec![ether(ip.is_ipv4()), Match::Saddr(Net::host(*ip))],
            Action::Accept,
        ));
    }
    rules.extend(link_local_accepts(g));
    rules.extend(arp_accepts(g));
    Ok(TableSpec {
        family: Family::Netdev,
        name: g.table.clone(),
        comment,
        chains,
        rules,
    })
}

/// A rule of the host guard's one chain.
fn guard_rule(matches: Vec<Match>, action: Action) -> RuleSpec {
    RuleSpec {
        chain: 0,
        matches,
        action,
    }
}

/// The family match of a netdev table: the frame's ethertype.
fn ether(v4: bool) -> Match {
    Match::EtherType(if v4 { ETH_P_IP } else { ETH_P_IPV6 })
}

/// Rule 2 of [`HostGuard`], metadata and loopback destinations. Loopback: with route_localnet=1
/// (kube-proxy sets it) the node accepts 127.0.0.0/8 from a pod and answers from its own loopback
/// listeners.
fn destination_drops(g: &HostGuard) -> Vec<RuleSpec> {
    let loopback = [
        Net {
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
        },
        Net::host(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        Net {
            addr: IpAddr::V6(Ipv4Addr::new(127, 0, 0, 0).to_ipv6_mapped()),
            prefix: 104,
        },
    ];
    g.blocked
        .iter()
        .map(|n| Net::from(*n))
        .chain(loopback)
        .map(|net| guard_rule(vec![ether(net.is_v4()), Match::Daddr(net)], Action::Drop))
        .collect()
}

/// Rule 4 of [`HostGuard`], tunnels: to any destination, see docs/plugin.md for why not only the
/// node's addresses.
fn tunnel_drops(g: &HostGuard) -> Vec<RuleSpec> {
    let protocols = TUNNEL_PROTOCOLS
        .iter()
        .map(|p| guard_rule(vec![Match::L4Proto(*p)], Action::Drop));
    let ports = g.tunnel_ports.iter().map(|port| {
        guard_rule(
            vec![Match::L4Proto(IPPROTO_UDP), Match::Dport(*port)],
            Action::Drop,
        )
    });
    protocols.chain(ports).collect()
}

/// Rule 5 of [`HostGuard`]: a neighbour advertisement claims its target address, whatever its
/// source: one for an address that is not the pod's would redirect traffic for that address
/// (another pod's, or the gateway's in a neighbour pod's cache) to this pod.
fn foreign_advert_drop(g: &HostGuard) -> RuleSpec {
    let mut na = vec![
        ether(false),
        Match::L4Proto(IPPROTO_ICMPV6),
        Match::Icmp6Type(ICMPV6_NEIGHBOR_ADVERT),
    ];
    let own_v6 = g
        .pod_ips
        .iter()
        .copied()
        .filter(IpAddr::is_ipv6)
        .chain(g.pod_link_locals.iter().map(|a| IpAddr::V6(*a)));
    na.extend(own_v6.map(|ip| Match::NdTargetNot(Net::host(ip))));
    guard_rule(na, Action::Drop)
}

/// Rule 7 of [`HostGuard`]: neighbour and router solicitation, DAD and MLD reports use link-local
/// or unspecified sources; nothing else a pod sends needs them (router advertisements and redirects
/// are for routers, and the pod is not one). Only the pod's own link-local sources: a solicitation
/// from another's would plant that address in the node's neighbour cache.
fn link_local_accepts(g: &HostGuard) -> Vec<RuleSpec> {
    let unspecified = Net::host(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let icmp6 = |src, ty| {
        let m = vec![
            ether(false),
            Match::Saddr(src),
            Match::L4Proto(IPPROTO_ICMPV6),
            Match::Icmp6Type(ty),
        ];
        guard_rule(m, Action::Accept)
    };
    let from_link_local = [
        ICMPV6_ROUTER_SOLICIT,
        ICMPV6_NEIGHBOR_SOLICIT,
        ICMPV6_NEIGHBOR_ADVERT,
        ICMPV6_MLD_REPORT,
        ICMPV6_MLD_DONE,
        ICMPV6_MLD2_REPORT,
    ];
    let from_unspecified = [
        ICMPV6_ROUTER_SOLICIT,
        ICMPV6_NEIGHBOR_SOLICIT,
        ICMPV6_MLD_REPORT,
        ICMPV6_MLD2_REPORT,
    ];
    let mut rules = Vec::new();
    for ll in &g.pod_link_locals {
        for ty in from_link_local {
            rules.push(icmp6(Net::host(IpAddr::V6(*ll)), ty));
        }
    }
    for ty in from_unspecified {
        rules.push(icmp6(unspecified, ty));
    }
    rules
}

/// Rule 8 of [`HostGuard`]: ARP from the pod's own addresses (and probes), with its own hardware
/// address.
fn arp_accepts(g: &HostGuard) -> Vec<RuleSpec> {
    let arp_senders = g
        .pod_ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .chain([Ipv4Addr::UNSPECIFIED]);
    arp_senders
        .map(|spa| {
            let mut m = vec![
                Match::EtherType(ETH_P_ARP),
                Match::ArpEthIpv4,
                Match::ArpSpa(spa),
            ];
            m.extend(g.pod_mac.map(Match::ArpSha));
            guard_rule(m, Action::Accept)
        })
        .collect()
}

fn load_cmp(out: &mut Vec<Expr>, load: Expr, value: &[u8]) {
    out.push(load);
    out.push(Expr::CmpEq {
        sreg: NFT_REG_1,
        data: Data::new(value),
    });
}

fn match_exprs(out: &mut Vec<Expr>, m: Match) {
    let payload = |base, offset, len| Expr::Payload {
        base,
        offset,
        len,
        dreg: NFT_REG_1,
    };
    match m {
        Match::NfProto { v4 } => load_cmp(
            out,
            Expr::Meta {
                key: NFT_META_NFPROTO,
                dreg: NFT_REG_1,
            },
            &[if v4 { NFPROTO_IPV4 } else { NFPROTO_IPV6 }],
        ),
        Match::EtherType(t) => {
            load_cmp(out, payload(NFT_PAYLOAD_LL_HEADER, 12, 2), &t.to_be_bytes())
        }
        Match::L4Proto(p) => load_cmp(
            out,
            Expr::Meta {
                key: NFT_META_L4PROTO,
                dreg: NFT_REG_1,
            },
            &[p],
        ),
        Match::Saddr(n) => addr_exprs(
            out,
            n,
            NFT_PAYLOAD_NETWORK_HEADER,
            if n.is_v4() { 12 } else { 8 },
            true,
        ),
        Match::Daddr(n) => addr_exprs(
            out,
            n,
            NFT_PAYLOAD_NETWORK_HEADER,
            if n.is_v4() { 16 } else { 24 },
            true,
        ),
        Match::Icmp6Type(t) => load_cmp(out, payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1), &[t]),
        // The target follows type, code, checksum and 4 bytes of flags/reserved.
        Match::NdTargetNot(n) => addr_exprs(out, n, NFT_PAYLOAD_TRANSPORT_HEADER, 8, false),
        Match::Dport(p) => load_cmp(
            out,
            payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
            &p.to_be_bytes(),
        ),
        Match::EtherSaddrNot(mac) => {
            out.push(payload(NFT_PAYLOAD_LL_HEADER, 6, 6));
            out.push(Expr::CmpNeq {
                sreg: NFT_REG_1,
                data: Data::new(&mac),
            });
        }
        Match::Ipv4Option(ty) => exthdr_present(out, NFT_EXTHDR_OP_IPV4, ty),
        Match::Ipv6ExtHdr(ty) => exthdr_present(out, NFT_EXTHDR_OP_IPV6, ty),
        Match::ArpSha(mac) => load_cmp(out, payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 6), &mac),
        Match::ArpEthIpv4 => load_cmp(
            out,
            payload(NFT_PAYLOAD_NETWORK_HEADER, 0, 6),
            &[0, 1, 8, 0, 6, 4],
        ),
        Match::ArpSpa(a) => load_cmp(out, payload(NFT_PAYLOAD_NETWORK_HEADER, 14, 4), &a.octets()),
    }
}

fn exthdr_present(out: &mut Vec<Expr>, op: u32, ty: u8) {
    out.push(Expr::ExthdrPresent {
        op,
        ty,
        dreg: NFT_REG_1,
    });
    out.push(Expr::CmpEq {
        sreg: NFT_REG_1,
        data: Data::new(&[1]),
    });
}

/// Drops for packets that name their real destination inside themselves: IPv4 loose/strict
/// source routes and any IPv6 routing header (type 0, 2 or SRv6). `proto` states the family
/// the way the table's family needs it (`meta nfproto` in inet, `ether type` in netdev).
fn source_route_drops(chain: usize, proto: impl Fn(bool) -> Match) -> Vec<RuleSpec> {
    let rule = |matches| RuleSpec {
        chain,
        matches,
        action: Action::Drop,
    };
    vec![
        rule(vec![proto(true), Match::Ipv4Option(IPOPT_LSRR)]),
        rule(vec![proto(true), Match::Ipv4Option(IPOPT_SSRR)]),
        rule(vec![proto(false), Match::Ipv6ExtHdr(NEXTHDR_ROUTING)]),
    ]
}

/// Compares the address at `base + offset` with `net` (`eq`: must be in it; else: must not be):
/// only the bytes the prefix covers are loaded, and a partial last byte is masked.
fn addr_exprs(out: &mut Vec<Expr>, net: Net, base: u32, offset: u32, eq: bool) {
    let bytes: Vec<u8> = match net.addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let prefix = usize::from(net.prefix).min(bytes.len() * 8);
    if prefix == 0 {
        return; // matches every address of the family
    }
    let n = prefix.div_ceil(8);
    out.push(Expr::Payload {
        base,
        offset,
        len: n as u32,
        dreg: NFT_REG_1,
    });
    let mut value = [0u8; 16];
    value[..n].copy_from_slice(&bytes[..n]);
    if prefix % 8 != 0 {
        let mut mask = [0xffu8; 16];
        mask[n - 1] = 0xff << (8 - prefix % 8);
        value[n - 1] &= mask[n - 1];
        out.push(Expr::Mask {
            sreg: NFT_REG_1,
            dreg: NFT_REG_1,
            mask: Data::new(&mask[..n]),
        });
    }
    let data = Data::new(&value[..n]);
    out.push(if eq {
        Expr::CmpEq {
            sreg: NFT_REG_1,
            data,
        }
    } else {
        Expr::CmpNeq {
            sreg: NFT_REG_1,
            data,
        }
    });
}

fn action_exprs(out: &mut Vec<Expr>, a: Action) {
    match a {
        Action::Dnat { to, port } => {
            let (family, addr) = match to {
                IpAddr::V4(a) => (NFPROTO_IPV4, Data::new(&a.octets())),
                IpAddr::V6(a) => (NFPROTO_IPV6, Data::new(&a.octets())),
            };
            out.push(Expr::Immediate {
                dreg: NFT_REG_1,
                data: addr,
            });
            out.push(Expr::Immediate {
                dreg: NFT_REG_2,
                data: Data::new(&port.to_be_bytes()),
            });
            out.push(Expr::Dnat {
                family,
                reg_addr: NFT_REG_1,
                reg_proto: NFT_REG_2,
            });
        }
        Action::RejectTcpReset => out.push(Expr::Reject {
            kind: NFT_REJECT_TCP_RST,
            icmp_code: None,
        }),
        Action::RejectPortUnreachable => out.push(Expr::Reject {
            kind: NFT_REJECT_ICMPX_UNREACH,
            icmp_code: Some(NFT_REJECT_ICMPX_PORT_UNREACH),
        }),
        Action::Accept => out.push(Expr::Verdict(NF_ACCEPT)),
        Action::Drop => out.push(Expr::Verdict(NF_DROP)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rules::Redirect;

    pub(crate) fn pod() -> PodRuleset {
        PodRuleset {
            table: "metaguard-0123456789abcdef".into(),
            tag: "net:abc:eth0".into(),
            redirects: vec![
                Redirect {
                    dest: "169.254.169.254".parse().unwrap(),
                    dest_port: 80,
                    to: "10.0.0.1".parse().unwrap(),
                    to_port: 8169,
                },
                Redirect {
                    dest: "fd00:ec2::254".parse().unwrap(),
                    dest_port: 80,
                    to: "fd00::1".parse().unwrap(),
                    to_port: 8170,
                },
            ],
            blocked: vec![
                "169.254.169.254/32".parse().unwrap(),
                "fd00:ec2::254/128".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn pod_table_layout() {
        let s = pod_spec(&pod()).unwrap();
        assert_eq!(s.comment, "metaguard:v1:net:abc:eth0");
        assert_eq!(s.chains.len(), 4);
        // 2 redirects in each nat chain; in each filter chain 3 source-route drops and 2
        // rejects per blocked net.
        assert_eq!(s.rules.iter().filter(|r| r.chain == 0).count(), 2);
        assert_eq!(s.rules.iter().filter(|r| r.chain == 3).count(), 3 + 4);
        let srcroute: Vec<_> = s
            .rules
            .iter()
            .filter(|r| r.chain == 2 && r.action == Action::Drop)
            .map(|r| r.matches.clone())
            .collect();
        assert_eq!(
            srcroute,
            vec![
                vec![Match::NfProto { v4: true }, Match::Ipv4Option(IPOPT_LSRR)],
                vec![Match::NfProto { v4: true }, Match::Ipv4Option(IPOPT_SSRR)],
                vec![
                    Match::NfProto { v4: false },
                    Match::Ipv6ExtHdr(NEXTHDR_ROUTING)
                ],
            ]
        );
        let dnat = s.rules[0].exprs();
        assert!(matches!(
            dnat.last(),
            Some(Expr::Dnat {
                family: NFPROTO_IPV4,
                ..
            })
        ));
        let dnat6 = s.rules[1].exprs();
        assert!(matches!(
            dnat6.last(),
            Some(Expr::Dnat {
                family: NFPROTO_IPV6,
                ..
            })
        ));
    }

    #[test]
    fn mixed_family_redirect_is_refused() {
        let mut p = pod();
        p.redirects[0].to = "fd00::1".parse().unwrap();
        assert!(matches!(pod_spec(&p), Err(NftError::Invalid(_))));
    }

    #[test]
    fn long_tags_are_refused() {
        let mut p = pod();
        p.tag = "x".repeat(241);
        assert!(matches!(pod_spec(&p), Err(NftError::Invalid(_))));
        p.tag = "x".repeat(240);
        assert!(pod_spec(&p).is_ok());
    }

    #[test]
    fn prefixes_load_only_covered_bytes() {
        let mut out = Vec::new();
        addr_exprs(
            &mut out,
            Net::from("10.1.2.3/12".parse::<IpNetwork>().unwrap()),
            NFT_PAYLOAD_NETWORK_HEADER,
            16,
            true,
        );
        assert_eq!(
            out,
            vec![
                Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset: 16,
                    len: 2,
                    dreg: NFT_REG_1
                },
                Expr::Mask {
                    sreg: NFT_REG_1,
                    dreg: NFT_REG_1,
                    mask: Data::new(&[0xff, 0xf0])
                },
                Expr::CmpEq {
                    sreg: NFT_REG_1,
                    data: Data::new(&[10, 0])
                },
            ]
        );
        out.clear();
        addr_exprs(
            &mut out,
            Net::from("fe80::/10".parse::<IpNetwork>().unwrap()),
            NFT_PAYLOAD_TRANSPORT_HEADER,
            8,
            false,
        );
        assert_eq!(
            out[0],
            Expr::Payload {
                base: NFT_PAYLOAD_TRANSPORT_HEADER,
                offset: 8,
                len: 2,
                dreg: NFT_REG_1
            }
        );
        assert_eq!(
            out[2],
            Expr::CmpNeq {
                sreg: NFT_REG_1,
                data: Data::new(&[0xfe, 0x80])
            }
        );
        out.clear();
        addr_exprs(
            &mut out,
            Net::from("0.0.0.0/0".parse::<IpNetwork>().unwrap()),
            NFT_PAYLOAD_NETWORK_HEADER,
            16,
            true,
        );
        assert!(out.is_empty());
        addr_exprs(
            &mut out,
            Net::host("1.2.3.4".parse().unwrap()),
            NFT_PAYLOAD_NETWORK_HEADER,
            12,
            true,
        );
        assert_eq!(out.len(), 2);
    }

    pub(crate) fn guard() -> HostGuard {
        HostGuard {
            table: "metaguard-0123456789abcdef".into(),
            tag: "net:abc:eth0".into(),
            host_ifname: "veth1234".into(),
            pod_ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            blocked: vec!["169.254.169.254/32".parse().unwrap()],
            pod_mac: Some([0x02, 0, 0, 0, 0, 5]),
            pod_link_locals: vec!["fe80::5".parse().unwrap()],
            block_tunnels: true,
            tunnel_ports: vec![4789, 8472, 6081],
        }
    }

    fn drops(s: &TableSpec) -> Vec<Vec<Match>> {
        s.rules
            .iter()
            .filter(|r| r.action == Action::Drop)
            .map(|r| r.matches.clone())
            .collect()
    }

    #[test]
    fn host_guard_layout() {
        let g = guard();
        let s = host_spec(&g).unwrap();
        assert_eq!(s.chains[0].device.as_deref(), Some("veth1234"));
        assert_eq!(s.chains[0].policy, NF_DROP);
        let mac = [0x02, 0, 0, 0, 0, 5];
        let d = drops(&s);
        // The MAC pin comes first, so nothing after it sees a forged source.
        assert_eq!(d[0], vec![Match::EtherSaddrNot(mac)]);
        for want in [
            vec![
                Match::EtherType(ETH_P_IP),
                Match::Daddr(Net::host("169.254.169.254".parse().unwrap())),
            ],
            vec![
                Match::EtherType(ETH_P_IP),
                Match::Daddr(Net {
                    addr: "127.0.0.0".parse().unwrap(),
                    prefix: 8,
                }),
            ],
            vec![
                Match::EtherType(ETH_P_IPV6),
                Match::Daddr(Net::host("::1".parse().unwrap())),
            ],
            vec![
                Match::EtherType(ETH_P_IPV6),
                Match::Daddr(Net {
                    addr: "::ffff:127.0.0.0".parse().unwrap(),
                    prefix: 104,
                }),
            ],
            vec![Match::EtherType(ETH_P_IP), Match::Ipv4Option(IPOPT_LSRR)],
            vec![Match::EtherType(ETH_P_IP), Match::Ipv4Option(IPOPT_SSRR)],
            vec![
                Match::EtherType(ETH_P_IPV6),
                Match::Ipv6ExtHdr(NEXTHDR_ROUTING),
            ],
            vec![Match::L4Proto(IPPROTO_IPIP)],
            vec![Match::L4Proto(IPPROTO_IPV6)],
            vec![Match::L4Proto(IPPROTO_GRE)],
            vec![Match::L4Proto(IPPROTO_UDP), Match::Dport(8472)],
            vec![
                Match::EtherType(ETH_P_IPV6),
                Match::L4Proto(IPPROTO_ICMPV6),
                Match::Icmp6Type(ICMPV6_NEIGHBOR_ADVERT),
                Match::NdTargetNot(Net::host("fd00::5".parse().unwrap())),
                Match::NdTargetNot(Net::host("fe80::5".parse().unwrap())),
            ],
        ] {
            assert!(d.contains(&want), "missing drop {want:?} in {d:#?}");
        }
        // Every drop precedes every accept: an accept by source address must not let a tunnel,
        // a source route or a loopback destination through.
        let first_accept = s
            .rules
            .iter()
            .position(|r| r.action == Action::Accept)
            .unwrap();
        assert!(s.rules[first_accept..]
            .iter()
            .all(|r| r.action == Action::Accept));
        // Link-local ICMPv6 only from the pod's own link-local; ARP only with its own MAC.
        let accepts: Vec<_> = s.rules[first_accept..].iter().map(|r| &r.matches).collect();
        assert!(accepts
            .iter()
            .filter(|m| m.contains(&Match::L4Proto(IPPROTO_ICMPV6)))
            .all(
                |m| m[1] == Match::Saddr(Net::host("fe80::5".parse().unwrap()))
                    || m[1] == Match::Saddr(Net::host("::".parse().unwrap()))
            ));
        let arp: Vec<_> = accepts
            .iter()
            .filter(|m| m[0] == Match::EtherType(ETH_P_ARP))
            .collect();
        assert_eq!(arp.len(), 2);
        assert!(arp.iter().all(|m| m.last() == Some(&Match::ArpSha(mac))));

        let mut bad = g.clone();
        bad.host_ifname = "a/b".into();
        assert!(matches!(host_spec(&bad), Err(NftError::Invalid(_))));
    }

    #[test]
    fn host_guard_options_change_only_their_rules() {
        let full = host_spec(&guard()).unwrap();
        let mut g = guard();
        g.pod_mac = None;
        let no_mac = host_spec(&g).unwrap();
        assert!(!drops(&no_mac)
            .iter()
            .flatten()
            .any(|m| matches!(m, Match::EtherSaddrNot(_))));
        assert!(!no_mac
            .rules
            .iter()
            .flat_map(|r| &r.matches)
            .any(|m| matches!(m, Match::ArpSha(_))));
        assert_eq!(no_mac.rules.len(), full.rules.len() - 1);

        let mut g = guard();
        g.block_tunnels = false;
        let open = host_spec(&g).unwrap();
        assert_eq!(
            open.rules.len(),
            full.rules.len() - TUNNEL_PROTOCOLS.len() - 3
        );
        assert!(!open
            .rules
            .iter()
            .flat_map(|r| &r.matches)
            .any(|m| matches!(m, Match::Dport(_))));

        let mut g = guard();
        g.tunnel_ports.push(5555);
        let fou = host_spec(&g).unwrap();
        assert!(drops(&fou).contains(&vec![Match::L4Proto(IPPROTO_UDP), Match::Dport(5555)]));

        // No link-local known: no link-local source is accepted at all.
        let mut g = guard();
        g.pod_link_locals.clear();
        let s = host_spec(&g).unwrap();
        assert!(!s.rules.iter().flat_map(|r| &r.matches).any(|m| matches!(
            m,
            Match::Saddr(n) if matches!(n.addr, IpAddr::V6(a) if a.segments()[0] == 0xfe80)
        )));
    }

    #[test]
    fn rule_comments_depend_on_position_and_content() {
        let s = pod_spec(&pod()).unwrap();
        let a = s.rule_comment(0, b"abc");
        assert_eq!(a, format!("metaguard:nat-output/0:{:016x}", fnv1a(b"abc")));
        assert_ne!(a, s.rule_comment(0, b"abd"));
        assert!(s
            .rule_comment(1, b"abc")
            .starts_with("metaguard:nat-output/1:"));
        assert!(s
            .rule_comment(2, b"abc")
            .starts_with("metaguard:nat-prerouting/0:"));
    }
}
