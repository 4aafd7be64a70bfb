//! The pod's end of the link, seen from inside its namespace: the interface's MAC and its IPv6
//! link-local addresses. The host guard pins frames to that MAC and link-local neighbour
//! discovery to those addresses; neither is in prevResult reliably (the MAC usually is, the
//! link-locals never are), so ADD reads them where they live.
//!
//! One `getifaddrs(3)` call inside the pod's namespace answers both: it is a netlink dump of
//! links and addresses, a few tens of microseconds for a pod's one or two interfaces.

use crate::netns::{Netns, NetnsError};
use std::net::Ipv6Addr;

/// What the guard needs to know about the pod's interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodLink {
    pub mac: Option<[u8; 6]>,
    pub link_locals: Vec<Ipv6Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum PodLinkError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("listing the pod's interfaces: {0}")]
    List(#[source] nix::Error),
    #[error("the pod's namespace has no interface {0:?}")]
    NoInterface(String),
}

/// fe80::/10
pub fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Reads `ifname`'s MAC and link-local addresses inside `ns`.
pub fn read(ns: &Netns, ifname: &str) -> Result<PodLink, PodLinkError> {
    let addrs = ns
        .run(nix::ifaddrs::getifaddrs)?
        .map_err(PodLinkError::List)?;
    let mut found = false;
    let mut link = PodLink::default();
    for ifa in addrs.filter(|a| a.interface_name == ifname) {
        found = true;
        let Some(addr) = ifa.address else { continue };
        if let Some(ll) = addr.as_link_addr() {
            // Only a 6-byte (Ethernet) hardware address can be pinned by `ether saddr`.
            if ll.halen() == 6 {
                link.mac = ll.addr();
            }
        } else if let Some(a6) = addr.as_sockaddr_in6() {
            let ip = a6.ip();
            if is_link_local(&ip) && !link.link_locals.contains(&ip) {
                link.link_locals.push(ip);
            }
        }
    }
    if !found {
        return Err(PodLinkError::NoInterface(ifname.to_string()));
    }
    Ok(link)
}

/// `aa:bb:cc:dd:ee:ff`, as in `ip link` and the pod record.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_range() {
        for (a, want) in [
            ("fe80::1", true),
            ("febf:ffff::1", true),
            ("fec0::1", false),
            ("fe7f::1", false),
            ("fd00::1", false),
        ] {
            assert_eq!(is_link_local(&a.parse().unwrap()), want, "{a}");
        }
    }

    #[test]
    fn mac_text() {
        assert_eq!(
            format_mac(&[0xde, 0xad, 0, 1, 0x0a, 0xff]),
            "de:ad:00:01:0a:ff"
        );
    }

    #[test]
    fn reads_loopback_of_the_current_namespace() {
        // `lo` always exists; it has no Ethernet MAC worth pinning (all zeros, halen 6) and no
        // link-local address. A missing name is an error, not an empty answer.
        let ns = Netns::current().unwrap();
        let lo = read(&ns, "lo").unwrap();
        assert!(lo.link_locals.is_empty());
        assert!(matches!(
            read(&ns, "mg-no-such-if"),
            Err(PodLinkError::NoInterface(_))
        ));
    }
}
