//! The rules metaguard installs, as plain data.
//!
//! This module says *what* is enforced; `nft` says *how* it reaches the kernel. Keeping the model
//! pure makes it testable without root and gives CHECK something exact to compare against.

use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv6Addr};

/// Prefix of every nftables table metaguard owns. Anything else is never touched.
pub const TABLE_PREFIX: &str = "metaguard-";

/// One DNAT inside the pod: TCP to `dest:dest_port` goes to `to:to_port` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub dest: IpAddr,
    pub dest_port: u16,
    pub to: IpAddr,
    pub to_port: u16,
}

/// The ruleset inside the pod's network namespace (one `inet` table, both families, one batch).
///
/// Semantics, in order:
/// - nat output (and prerouting, for pods that route for nested containers): each `Redirect`;
/// - filter output and forward: IPv4 packets carrying a loose or strict source-route option and
///   IPv6 packets carrying a routing header are dropped (their real destination is inside the
///   packet, so the address checks below would see only the first hop, e.g. the gateway);
/// - filter output and forward: any packet whose destination is in `blocked` is rejected
///   (TCP with a reset, everything else with ICMP/ICMPv6 port-unreachable, so a UDP sender's
///   `send` fails with EPERM and its next receive with "connection refused").
///   Redirected traffic is not caught, because nat output has already rewritten its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRuleset {
    /// nftables table name: `metaguard-<hash of attachment key>`.
    pub table: String,
    /// Attachment key `network:container:ifname`, stored as the table's user data so GC and
    /// DEL can find what belongs to whom without saved state.
    pub tag: String,
    pub redirects: Vec<Redirect>,
    /// Every metadata address (endpoints and opt-in addresses) plus configured extra networks.
    pub blocked: Vec<IpNetwork>,
}

/// UDP ports of the encapsulations a Linux node commonly terminates: VXLAN (IANA 4789 and the
/// Linux/flannel default 8472) and Geneve (6081). FOU/GUE have no standard port: operators add
/// theirs with `tunnelPorts`.
pub const DEFAULT_TUNNEL_PORTS: [u16; 3] = [4789, 8472, 6081];

/// The guard on the host side of the pod's link: a `netdev` table whose ingress chain is bound to
/// the host-side interface. The pod cannot reach it, even with CAP_NET_ADMIN, and AF_PACKET
/// sockets in the pod do not skip it, because it runs on the host when the frame arrives.
///
/// Semantics (chain policy drop), first match wins:
/// 1. frames whose Ethernet source is not `pod_mac` (when known): dropped, whatever they carry
///    (a forged source MAC would teach the bridge to send a neighbour's frames to this port);
/// 2. IPv4/IPv6 packets whose destination is in `blocked` or is loopback (127.0.0.0/8, ::1,
///    ::ffff:127.0.0.0/104): dropped;
/// 3. IPv4 with an LSRR/SSRR option, IPv6 with a routing header: dropped;
/// 4. when `block_tunnels`: IPv4/IPv6 carrying IPIP, IPv6-in-IP, GRE, L2TPv3 or MPLS-in-IP, and
///    UDP to `tunnel_ports`, to any destination: dropped (a node decapsulates what arrives for
///    any of its addresses and routes the inner packet, which this chain never sees);
/// 5. IPv6 neighbour advertisements whose target is neither one of `pod_ips` nor one of
///    `pod_link_locals`: dropped, whatever their source (they would take over another pod's or
///    the gateway's address in a neighbour cache);
/// 6. IPv4/IPv6 with a source in `pod_ips`: accepted;
/// 7. from each of `pod_link_locals`, the ICMPv6 of neighbour and router solicitation,
///    neighbour advertisement and MLD reports/done; from `::`, router and neighbour solicitation
///    (DAD) and MLD reports: accepted;
/// 8. ARP (Ethernet/IPv4 layout) whose sender address is one of `pod_ips` or 0.0.0.0 (probe)
///    and, when `pod_mac` is known, whose sender hardware address is `pod_mac`: accepted;
/// 9. everything else, any other ethertype and VLAN-tagged frames included (the ethertype is
///    read from the frame, where the kernel restores an offloaded tag): dropped by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGuard {
    pub table: String,
    pub tag: String,
    pub host_ifname: String,
    pub pod_ips: Vec<IpAddr>,
    pub blocked: Vec<IpNetwork>,
    /// The MAC of the pod's interface; `None` when it could not be known (layer 2 unguarded).
    pub pod_mac: Option<[u8; 6]>,
    /// The pod interface's IPv6 link-local addresses, read from the pod's namespace at ADD.
    pub pod_link_locals: Vec<Ipv6Addr>,
    pub block_tunnels: bool,
    /// UDP ports treated as tunnel ports: [`DEFAULT_TUNNEL_PORTS`] plus `tunnelPorts`.
    pub tunnel_ports: Vec<u16>,
}

/// Table name for an attachment: short, stable, derived from the key alone so DEL needs no state.
pub fn table_name(key: &str) -> String {
    format!("{TABLE_PREFIX}{}", metaguard_common::ids::short_hash(key))
}
