//! The rules metaguard installs, as plain data.
//!
//! This module says *what* is enforced; `nft` says *how* it reaches the kernel. Keeping the model
//! pure makes it testable without root and gives CHECK something exact to compare against.

use ipnetwork::IpNetwork;
use std::net::IpAddr;

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

/// The guard on the host side of the pod's link: a `netdev` table whose ingress chain is bound to
/// the host-side interface. The pod cannot reach it, even with CAP_NET_ADMIN, and AF_PACKET
/// sockets in the pod do not skip it, because it runs on the host when the frame arrives.
///
/// Semantics (chain policy drop):
/// - IPv4/IPv6 packets whose destination is in `blocked`: dropped;
/// - IPv6 neighbour advertisements whose target is neither one of `pod_ips` nor link-local:
///   dropped, whatever their source (they would take over another pod's address on the host);
/// - IPv4 with a source in `pod_ips`: accepted; other IPv4: dropped;
/// - IPv6 with a source in `pod_ips`: accepted; from `fe80::/10`, the ICMPv6 of neighbour and
///   router solicitation, neighbour advertisement and MLD reports/done, and from `::` router and
///   neighbour solicitation (DAD) and MLD reports: accepted; other IPv6: dropped;
/// - ARP (Ethernet/IPv4 layout) whose sender address is one of `pod_ips` or 0.0.0.0 (probe):
///   accepted; other ARP dropped;
/// - any other ethertype, VLAN-tagged frames included (the ethertype is read from the frame,
///   where the kernel restores an offloaded tag): dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGuard {
    pub table: String,
    pub tag: String,
    pub host_ifname: String,
    pub pod_ips: Vec<IpAddr>,
    pub blocked: Vec<IpNetwork>,
}

/// Table name for an attachment: short, stable, derived from the key alone so DEL needs no state.
pub fn table_name(key: &str) -> String {
    format!("{TABLE_PREFIX}{}", metaguard_common::ids::short_hash(key))
}
