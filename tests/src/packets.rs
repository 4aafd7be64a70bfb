//! Hand-built packets and frames for the network-level bypass tests: what a container with
//! CAP_NET_RAW can put on the wire without going through the kernel's TCP stack (raw IP sockets)
//! or without going through netfilter at all (AF_PACKET).
//!
//! Sockets are opened on a thread that entered the pod's namespace (see [`crate::raw::in_netns`]).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Internet checksum (RFC 1071) over `data`, starting from `initial`.
fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_sum_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(proto)
        + len as u32
}

/// A TCP SYN segment (no options) with a correct checksum for the given pseudo-header sum.
fn tcp_syn(sport: u16, dport: u16, pseudo: u32) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    t[12] = 5 << 4; // data offset
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let c = checksum(pseudo, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// An IPv4 packet carrying `payload` as protocol `proto`, with a correct header checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x4d47u16.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(0, &h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// IPv4 + TCP SYN from `src:sport` to `dst:dport`.
pub fn ipv4_tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let tcp = tcp_syn(sport, dport, pseudo_sum_v4(src, dst, 6, 20));
    ipv4(src, dst, 6, &tcp)
}

/// IPv4 ICMP echo request.
pub fn ipv4_icmp_echo(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    ipv4(src, dst, 1, &icmp_echo())
}

/// An ICMP echo request body (type 8), checksummed.
pub fn icmp_echo() -> Vec<u8> {
    let mut m = vec![8u8, 0, 0, 0, 0x4d, 0x47, 0, 1];
    m.extend_from_slice(b"metaguard-probe");
    let c = checksum(0, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An IPv6 packet with a TCP SYN.
pub fn ipv6_tcp_syn(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut pseudo: u32 = 0;
    for a in [src.octets(), dst.octets()] {
        for w in a.chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
    }
    pseudo += 20 + 6;
    let tcp = tcp_syn(sport, dport, pseudo);
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(tcp.len() as u16).to_be_bytes());
    h[6] = 6;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(&tcp);
    h
}

/// An Ethernet frame.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP reply claiming `sender_ip` is at `sender_mac` (what a neighbour-spoofing pod sends).
pub fn arp_reply(
    sender_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 2];
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender_ip.octets());
    a.extend_from_slice(&target_mac);
    a.extend_from_slice(&target_ip.octets());
    ethernet(target_mac, sender_mac, 0x0806, &a)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    v.try_into().ok()
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Sends a complete IPv4 packet (header included) through an `IPPROTO_RAW` socket in `netns`.
pub fn send_raw_ipv4(netns: &Path, packet: Vec<u8>) -> io::Result<()> {
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    send_raw_v4(netns, libc::IPPROTO_RAW, dst, packet)
}

/// Sends an IPv4 payload of protocol `proto` through a raw socket of that protocol (the kernel
/// builds the IP header): for ICMP, SCTP, GRE and the like.
pub fn send_raw_proto_v4(
    netns: &Path,
    proto: i32,
    dst: Ipv4Addr,
    payload: Vec<u8>,
) -> io::Result<()> {
    send_raw_v4(netns, proto, dst, payload)
}

/// One `sendto` of `bytes` on an `AF_INET` raw socket of protocol `proto` inside `netns`
/// (`IPPROTO_RAW`: `bytes` carries its own IP header).
fn send_raw_v4(netns: &Path, proto: i32, dst: Ipv4Addr, bytes: Vec<u8>) -> io::Result<()> {
    crate::raw::in_netns(netns, move || -> io::Result<()> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, proto) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: buffer and address are valid for the call.
        check(unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) as libc::c_int
        })?;
        Ok(())
    })?
}

/// Sends an IPv6 payload of protocol `proto` through a raw IPv6 socket (kernel builds the header).
pub fn send_raw_proto_v6(
    netns: &Path,
    proto: i32,
    dst: Ipv6Addr,
    payload: Vec<u8>,
) -> io::Result<()> {
    crate::raw::in_netns(netns, move || -> io::Result<()> {
        let fd = check(unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, proto) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_in6 is valid; fields set below.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_addr = libc::in6_addr {
            s6_addr: dst.octets(),
        };
        check(unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&sa as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ) as libc::c_int
        })?;
        Ok(())
    })?
}

/// Sends a whole Ethernet frame out of interface `ifname` of `netns` through an AF_PACKET socket:
/// no routing, no netfilter in the sender's namespace.
pub fn send_frame(netns: &Path, ifname: &str, frame: Vec<u8>) -> io::Result<()> {
    let ifname = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    crate::raw::in_netns(netns, move || -> io::Result<()> {
        // SAFETY: if_nametoindex reads a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = check(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        check(unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            ) as libc::c_int
        })?;
        Ok(())
    })?
}

fn pseudo_sum_v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: usize) -> u32 {
    let mut sum: u32 = 0;
    for a in [src.octets(), dst.octets()] {
        for w in a.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
    }
    sum + u32::from(next) + len as u32
}

/// An IPv6 header (hop limit 255, as neighbour discovery requires) followed by `payload`, whose
/// first header is `next`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = 255;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// An ICMPv6 message (type, code, body after the checksum), checksummed, in an IPv6 packet.
pub fn ipv6_icmp(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(body);
    let c = checksum(pseudo_sum_v6(src, dst, 58, m.len()), &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, 58, &m)
}

/// A neighbour advertisement (solicited=0, override=1) claiming `target` is at `lladdr`.
pub fn nd_advert(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, lladdr: [u8; 6]) -> Vec<u8> {
    let mut body = vec![0x20, 0, 0, 0]; // flags: override
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    body.extend_from_slice(&lladdr);
    ipv6_icmp(src, dst, 136, &body)
}

/// A neighbour solicitation for `target` from `src`, whose source link-layer option says `src`
/// is at `lladdr` (the receiver learns that mapping).
pub fn nd_solicit(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, lladdr: [u8; 6]) -> Vec<u8> {
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[1, 1]); // option: source link-layer address, 8 bytes
    body.extend_from_slice(&lladdr);
    ipv6_icmp(src, dst, 135, &body)
}

/// An IPv6 TCP SYN to `final_dst` source-routed through `via` with a segment routing header
/// (RFC 8754): the IPv6 destination is `via`, the real one sits in the routing header.
pub fn ipv6_srh_tcp_syn(
    src: Ipv6Addr,
    via: Ipv6Addr,
    final_dst: Ipv6Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    // The transport checksum uses the final destination (RFC 8200 8.1).
    let tcp = tcp_syn(sport, dport, pseudo_sum_v6(src, final_dst, 6, 20));
    let mut srh = vec![6, 4, 4, 1, 1, 0, 0, 0]; // next TCP, len 4*8, type 4, left 1, last 1
    srh.extend_from_slice(&final_dst.octets()); // segment 0: the last to visit
    srh.extend_from_slice(&via.octets()); // segment 1: the current one
    srh.extend_from_slice(&tcp);
    ipv6(src, via, 43, &srh)
}

/// A VXLAN payload (RFC 7348: flags with the VNI bit, 24-bit VNI) carrying `inner` (a frame).
pub fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(inner);
    v
}

/// An AF_PACKET socket on one interface of a namespace that sees every frame the interface
/// receives, those addressed to other hosts included (what a pod's CAP_NET_RAW process sees).
pub struct Capture {
    fd: OwnedFd,
}

impl Capture {
    pub fn open(netns: &Path, ifname: &str) -> io::Result<Capture> {
        let ifname = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
        let fd = crate::raw::in_netns(netns, move || -> io::Result<OwnedFd> {
            // SAFETY: if_nametoindex reads a valid C string.
            let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let fd = check(unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                    i32::from(proto),
                )
            })?;
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            check(unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            })?;
            Ok(fd)
        })??;
        Ok(Capture { fd })
    }

    /// Every frame received since the last call (incoming only, not what this side sent).
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buffer and address are valid for the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                return out;
            }
            if sll.sll_pkttype != libc::PACKET_OUTGOING {
                out.push(buf[..n as usize].to_vec());
            }
        }
    }
}

/// A sender of whole frames on one interface, opened once (for floods).
pub struct FrameSender {
    fd: OwnedFd,
    sll: libc::sockaddr_ll,
}

impl FrameSender {
    pub fn open(netns: &Path, ifname: &str) -> io::Result<FrameSender> {
        let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
        crate::raw::in_netns(netns, move || -> io::Result<FrameSender> {
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let fd = check(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) })?;
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            Ok(FrameSender { fd, sll })
        })?
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: buffer and address are valid for the call.
        check(unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&self.sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            ) as libc::c_int
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify() {
        let p = ipv4_tcp_syn(
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(169, 254, 169, 254),
            40000,
            80,
        );
        assert_eq!(checksum(0, &p[..20]), 0, "IP header checksum");
        let pseudo = pseudo_sum_v4(
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(169, 254, 169, 254),
            6,
            20,
        );
        assert_eq!(checksum(pseudo, &p[20..]), 0, "TCP checksum");
        assert_eq!(checksum(0, &icmp_echo()), 0);
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fe80::1".parse().unwrap(), "ff02::1".parse().unwrap());
        let na = nd_advert(a, b, a, [2, 0, 0, 0, 0, 1]);
        assert_eq!(
            checksum(pseudo_sum_v6(a, b, 58, na.len() - 40), &na[40..]),
            0
        );
        let fin: Ipv6Addr = "fd00:ec2::254".parse().unwrap();
        let sr = ipv6_srh_tcp_syn(a, b, fin, 1, 80);
        assert_eq!(sr[6], 43);
        assert_eq!(usize::from(sr[41]) * 8 + 8, 40, "SRH length");
        assert_eq!(checksum(pseudo_sum_v6(a, fin, 6, 20), &sr[80..]), 0);
        assert_eq!(
            parse_mac("0a:1b:2c:3d:4e:5f"),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
    }
}
