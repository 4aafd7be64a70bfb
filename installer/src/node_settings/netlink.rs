//! Two read-only netlink dumps for `status`: every link with its kind and, for tunnels, the UDP
//! port it receives on (rtnetlink), and the FOU/GUE receive ports (the `fou` generic-netlink
//! family). sysfs has neither: a vxlan device's port and a FOU listener exist only as netlink
//! attributes.
//!
//! Hand-rolled rather than a netlink crate: two dump requests and a dozen attributes, and the
//! installer keeps its short dependency list. Parsing is separate from the socket so the unit
//! tests feed it built messages.

use super::{Encap, EncapKind, FouPort, LinkInfo};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
/// NLM_F_ROOT | NLM_F_MATCH.
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
/// struct ifinfomsg: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
const IFF_UP: u32 = 0x1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_GENEVE_PORT: u16 = 5;
const IFLA_BAREUDP_PORT: u16 = 1;
const IFLA_IPTUN_ENCAP_TYPE: u16 = 15;
const IFLA_IPTUN_ENCAP_DPORT: u16 = 18;
const IFLA_GRE_ENCAP_TYPE: u16 = 14;
const IFLA_GRE_ENCAP_DPORT: u16 = 17;

/// struct genlmsghdr: cmd, version, reserved.
const GENL_HDRLEN: usize = 4;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const FOU_GENL_NAME: &str = "fou";
const FOU_GENL_VERSION: u8 = 1;
const FOU_CMD_GET: u8 = 3;
const FOU_ATTR_PORT: u16 = 1;
const FOU_ATTR_AF: u16 = 2;
const FOU_ATTR_IPPROTO: u16 = 3;
const FOU_ATTR_TYPE: u16 = 4;
const FOU_ENCAP_GUE: u8 = 2;

/// Attribute type without NLA_F_NESTED and NLA_F_NET_BYTEORDER.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// How long one dump may take in all. The kernel answers a dump in milliseconds; the bound only
/// keeps `status` from hanging on a kernel that never sends NLMSG_DONE.
const DUMP_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("{what}: malformed reply ({detail})")]
    Malformed {
        what: &'static str,
        detail: &'static str,
    },
    #[error("{what}: no complete answer within {} s", DUMP_DEADLINE.as_secs())]
    Timeout { what: &'static str },
}

/// Every link in this process's network namespace.
pub fn dump_links() -> Result<Vec<LinkInfo>, NetlinkError> {
    const WHAT: &str = "rtnetlink link dump";
    // ifinfomsg with every field zero: all families, all links.
    let bodies = dump(
        WHAT,
        libc::NETLINK_ROUTE,
        RTM_GETLINK,
        &[0u8; IFINFOMSG_LEN],
        RTM_NEWLINK,
    )?;
    Ok(bodies.iter().filter_map(|b| parse_link(b)).collect())
}

/// The FOU/GUE receive ports in this network namespace; empty when the kernel has no `fou`
/// family (not built, or the module not loaded: then there are no such ports either).
pub fn dump_fou() -> Result<Vec<FouPort>, NetlinkError> {
    // The family is found in the controller's dump rather than asked for by name: a lookup by
    // name makes the kernel load the fou module, and status must not change the node.
    let families = dump(
        "generic netlink family dump",
        libc::NETLINK_GENERIC,
        GENL_ID_CTRL,
        &[CTRL_CMD_GETFAMILY, 1, 0, 0],
        GENL_ID_CTRL,
    )?;
    let Some(id) = families.iter().find_map(|b| family_id(b, FOU_GENL_NAME)) else {
        return Ok(Vec::new());
    };
    let bodies = dump(
        "fou port dump",
        libc::NETLINK_GENERIC,
        id,
        &[FOU_CMD_GET, FOU_GENL_VERSION, 0, 0],
        id,
    )?;
    Ok(bodies.iter().filter_map(|b| parse_fou(b)).collect())
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Io { what, source }
}

/// Sends a dump request and returns the bodies (after the netlink header) of the replies of
/// type `reply_type`.
fn dump(
    what: &'static str,
    protocol: libc::c_int,
    msg_type: u16,
    payload: &[u8],
    reply_type: u16,
) -> Result<Vec<Vec<u8>>, NetlinkError> {
    let sock = Socket::open(protocol).map_err(io_err(what))?;
    let seq = 1;
    sock.send(&message(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, payload))
        .map_err(io_err(what))?;
    // Dump replies come in datagrams of at most 32 KiB; a larger buffer never truncates one.
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let deadline = Instant::now() + DUMP_DEADLINE;
    loop {
        if Instant::now() > deadline {
            return Err(NetlinkError::Timeout { what });
        }
        let n = sock.recv(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                NetlinkError::Timeout { what }
            } else {
                io_err(what)(e)
            }
        })?;
        if n > buf.len() {
            return Err(NetlinkError::Malformed {
                what,
                detail: "datagram larger than the receive buffer",
            });
        }
        if parse_batch(what, &buf[..n], seq, reply_type, &mut out)? {
            return Ok(out);
        }
    }
}

/// A request: netlink header, then `payload`.
pub(crate) fn message(msg_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let mut m = Vec::with_capacity(align4(len));
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    // Port id 0: the kernel fills in ours.
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(align4(len), 0);
    m
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ne_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks one datagram of replies. Collects the bodies of our sequence's `reply_type` messages;
/// true once the answer is complete (NLMSG_DONE, or an acknowledgement).
pub(crate) fn parse_batch(
    what: &'static str,
    buf: &[u8],
    seq: u32,
    reply_type: u16,
    out: &mut Vec<Vec<u8>>,
) -> Result<bool, NetlinkError> {
    let malformed = |detail| NetlinkError::Malformed { what, detail };
    let mut b = buf;
    while b.len() >= NLMSG_HDRLEN {
        let len = ne_u32(b, 0).ok_or(malformed("header"))? as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(malformed("message length"));
        }
        let ty = ne_u16(b, 4).ok_or(malformed("header"))?;
        let mseq = ne_u32(b, 8).ok_or(malformed("header"))?;
        let body = &b[NLMSG_HDRLEN..len];
        // Messages of another sequence cannot be ours (the socket is private and new), but
        // skipping them costs nothing.
        if mseq == seq {
            match ty {
                // A dump that failed half-way ends with NLMSG_DONE carrying a negative errno.
                NLMSG_DONE => {
                    return match ne_i32(body, 0) {
                        Some(code) if code < 0 => Err(NetlinkError::Io {
                            what,
                            source: io::Error::from_raw_os_error(-code),
                        }),
                        _ => Ok(true),
                    }
                }
                NLMSG_ERROR => {
                    let code = ne_i32(body, 0).ok_or(malformed("error message"))?;
                    if code == 0 {
                        return Ok(true);
                    }
                    return Err(NetlinkError::Io {
                        what,
                        source: io::Error::from_raw_os_error(code.saturating_neg()),
                    });
                }
                t if t == reply_type => out.push(body.to_vec()),
                _ => {}
            }
        }
        b = b.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(false)
}

/// Netlink attributes (type without flags, value), in order; stops at the first malformed one.
pub(crate) struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let len = usize::from(ne_u16(self.0, 0)?);
        let ty = ne_u16(self.0, 2)?;
        if len < 4 || len > self.0.len() {
            self.0 = &[];
            return None;
        }
        let value = &self.0[4..len];
        self.0 = self.0.get(align4(len)..).unwrap_or(&[]);
        Some((ty & NLA_TYPE_MASK, value))
    }
}

/// A NUL-terminated (or not) string attribute.
fn attr_str(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn find(attrs: &[u8], ty: u16) -> Option<&[u8]> {
    Attrs(attrs).find(|&(t, _)| t == ty).map(|(_, v)| v)
}

/// One RTM_NEWLINK body.
pub(crate) fn parse_link(body: &[u8]) -> Option<LinkInfo> {
    let flags = ne_u32(body, 8)?;
    let attrs = body.get(IFINFOMSG_LEN..)?;
    let name = attr_str(find(attrs, IFLA_IFNAME)?);
    let info = find(attrs, IFLA_LINKINFO);
    let kind = info.and_then(|i| find(i, IFLA_INFO_KIND)).map(attr_str);
    let data = info.and_then(|i| find(i, IFLA_INFO_DATA));
    let mut link = LinkInfo {
        name,
        up: flags & IFF_UP != 0,
        kind: kind.clone(),
        udp_port: None,
        encap: None,
    };
    let (Some(kind), Some(data)) = (kind, data) else {
        return Some(link);
    };
    // Ports are network byte order (__be16); the encapsulation type is host order (u16).
    let encap = |type_attr, dport_attr| {
        let ty = find(data, type_attr).and_then(|v| ne_u16(v, 0))?;
        let kind = match ty {
            0 => return None,
            1 => EncapKind::Fou,
            2 => EncapKind::Gue,
            3 => EncapKind::Mpls,
            other => EncapKind::Other(other),
        };
        Some(Encap {
            kind,
            port: find(data, dport_attr).and_then(|v| be_u16(v, 0)),
        })
    };
    match kind.as_str() {
        "vxlan" => link.udp_port = find(data, IFLA_VXLAN_PORT).and_then(|v| be_u16(v, 0)),
        "geneve" => link.udp_port = find(data, IFLA_GENEVE_PORT).and_then(|v| be_u16(v, 0)),
        "bareudp" => link.udp_port = find(data, IFLA_BAREUDP_PORT).and_then(|v| be_u16(v, 0)),
        "ipip" | "sit" | "ip6tnl" => {
            link.encap = encap(IFLA_IPTUN_ENCAP_TYPE, IFLA_IPTUN_ENCAP_DPORT)
        }
        "gre" | "gretap" | "erspan" | "ip6gre" | "ip6gretap" | "ip6erspan" => {
            link.encap = encap(IFLA_GRE_ENCAP_TYPE, IFLA_GRE_ENCAP_DPORT)
        }
        _ => {}
    }
    Some(link)
}

/// The family id of `name` in one CTRL_CMD_NEWFAMILY body, when it is that family.
pub(crate) fn family_id(body: &[u8], name: &str) -> Option<u16> {
    let attrs = body.get(GENL_HDRLEN..)?;
    if attr_str(find(attrs, CTRL_ATTR_FAMILY_NAME)?) != name {
        return None;
    }
    find(attrs, CTRL_ATTR_FAMILY_ID).and_then(|v| ne_u16(v, 0))
}

/// One FOU_CMD_GET reply body.
pub(crate) fn parse_fou(body: &[u8]) -> Option<FouPort> {
    let attrs = body.get(GENL_HDRLEN..)?;
    let port = find(attrs, FOU_ATTR_PORT).and_then(|v| be_u16(v, 0))?;
    let af = find(attrs, FOU_ATTR_AF).and_then(|v| v.first().copied());
    Some(FouPort {
        port,
        ipv6: af == Some(libc::AF_INET6 as u8),
        ipproto: find(attrs, FOU_ATTR_IPPROTO).and_then(|v| v.first().copied()),
        gue: find(attrs, FOU_ATTR_TYPE).and_then(|v| v.first().copied()) == Some(FOU_ENCAP_GUE),
    })
}

/// A netlink socket of our own, closed on drop.
struct Socket(OwnedFd);

impl Socket {
    fn open(protocol: libc::c_int) -> io::Result<Socket> {
        // SAFETY: a plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let sock = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
        // A receive timeout so a kernel that never answers cannot hang `status`.
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: `tv` lives across the call and the length is its size.
        let rc = unsafe {
            libc::setsockopt(
                sock.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    /// Sends to the kernel: an unconnected netlink socket's default destination is port 0,
    /// which is the kernel, so no address is needed.
    fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: the pointer and length describe `msg`, which lives across the call.
            let n = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
            if n >= 0 {
                return if n as usize == msg.len() {
                    Ok(())
                } else {
                    Err(io::Error::new(io::ErrorKind::WriteZero, "short send"))
                };
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receives one datagram. MSG_TRUNC makes the kernel return the datagram's full length, so a
    /// truncated one is seen (a length larger than `buf`) rather than parsed half.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: the pointer and length describe `buf`, which lives across the call.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut a = Vec::new();
        a.extend_from_slice(&(len as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(len), 0);
        a
    }

    fn nested(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        // NLA_F_NESTED set, as the kernel does for IFLA_LINKINFO's children.
        attr(ty | 0x8000, &parts.concat())
    }

    fn link_body(flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&attrs.concat());
        b
    }

    fn reply(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        message(ty, 0x2, seq, body)
    }

    #[test]
    fn vxlan_link_gives_kind_state_and_port() {
        let body = link_body(
            IFF_UP,
            &[
                attr(IFLA_IFNAME, b"flannel.1\0"),
                nested(
                    IFLA_LINKINFO,
                    &[
                        attr(IFLA_INFO_KIND, b"vxlan\0"),
                        nested(
                            IFLA_INFO_DATA,
                            &[
                                attr(1, &1u32.to_ne_bytes()),
                                attr(IFLA_VXLAN_PORT, &8472u16.to_be_bytes()),
                            ],
                        ),
                    ],
                ),
            ],
        );
        let l = parse_link(&body).unwrap();
        assert_eq!(l.name, "flannel.1");
        assert!(l.up);
        assert_eq!(l.kind.as_deref(), Some("vxlan"));
        assert_eq!(l.udp_port, Some(8472));
        assert_eq!(l.encap, None);
    }

    #[test]
    fn ipip_over_gue_gives_the_encap_port() {
        let body = link_body(
            0,
            &[
                attr(IFLA_IFNAME, b"gue1\0"),
                nested(
                    IFLA_LINKINFO,
                    &[
                        attr(IFLA_INFO_KIND, b"ipip\0"),
                        nested(
                            IFLA_INFO_DATA,
                            &[
                                attr(IFLA_IPTUN_ENCAP_TYPE, &2u16.to_ne_bytes()),
                                attr(IFLA_IPTUN_ENCAP_DPORT, &5555u16.to_be_bytes()),
                            ],
                        ),
                    ],
                ),
            ],
        );
        let l = parse_link(&body).unwrap();
        assert!(!l.up);
        assert_eq!(
            l.encap,
            Some(Encap {
                kind: EncapKind::Gue,
                port: Some(5555)
            })
        );
        // GRE's attribute numbers differ from IPIP's.
        let gre = link_body(
            1,
            &[
                attr(IFLA_IFNAME, b"gre1\0"),
                nested(
                    IFLA_LINKINFO,
                    &[
                        attr(IFLA_INFO_KIND, b"gretap\0"),
                        nested(
                            IFLA_INFO_DATA,
                            &[
                                attr(IFLA_GRE_ENCAP_TYPE, &1u16.to_ne_bytes()),
                                attr(IFLA_GRE_ENCAP_DPORT, &7777u16.to_be_bytes()),
                            ],
                        ),
                    ],
                ),
            ],
        );
        let l = parse_link(&gre).unwrap();
        assert_eq!(
            l.encap,
            Some(Encap {
                kind: EncapKind::Fou,
                port: Some(7777)
            })
        );
        // No encapsulation: type 0.
        let plain = link_body(
            1,
            &[
                attr(IFLA_IFNAME, b"tunl0\0"),
                nested(
                    IFLA_LINKINFO,
                    &[
                        attr(IFLA_INFO_KIND, b"ipip\0"),
                        nested(
                            IFLA_INFO_DATA,
                            &[attr(IFLA_IPTUN_ENCAP_TYPE, &0u16.to_ne_bytes())],
                        ),
                    ],
                ),
            ],
        );
        assert_eq!(parse_link(&plain).unwrap().encap, None);
    }

    #[test]
    fn links_without_linkinfo_or_name() {
        let lo = link_body(1, &[attr(IFLA_IFNAME, b"lo\0")]);
        let l = parse_link(&lo).unwrap();
        assert_eq!((l.name.as_str(), l.kind), ("lo", None));
        assert_eq!(parse_link(&link_body(1, &[])), None);
        assert_eq!(parse_link(&[0u8; 5]), None);
    }

    #[test]
    fn truncated_attributes_end_the_walk() {
        let mut a = attr(IFLA_IFNAME, b"eth0\0");
        a.extend_from_slice(&[200, 0, 3, 0, b'x']);
        let v: Vec<_> = Attrs(&a).collect();
        assert_eq!(v.len(), 1);
        assert_eq!(Attrs(&[1, 0]).count(), 0);
        assert_eq!(Attrs(&[2, 0, 1, 0]).count(), 0);
    }

    #[test]
    fn batches_collect_ours_and_stop_at_done_or_error() {
        let mut buf = reply(RTM_NEWLINK, 7, b"first");
        buf.extend(reply(RTM_NEWLINK, 8, b"other sequence"));
        buf.extend(reply(99, 7, b"other type"));
        buf.extend(reply(RTM_NEWLINK, 7, b"second"));
        let mut out = Vec::new();
        assert!(!parse_batch("t", &buf, 7, RTM_NEWLINK, &mut out).unwrap());
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0][..5], b"first");
        assert_eq!(&out[1][..6], b"second");

        let done = reply(NLMSG_DONE, 7, &0i32.to_ne_bytes());
        assert!(parse_batch("t", &done, 7, RTM_NEWLINK, &mut out).unwrap());

        let failed = reply(NLMSG_DONE, 7, &(-libc::EBUSY).to_ne_bytes());
        let e = parse_batch("t", &failed, 7, RTM_NEWLINK, &mut out).unwrap_err();
        assert!(
            matches!(e, NetlinkError::Io { ref source, .. } if source.raw_os_error() == Some(libc::EBUSY))
        );

        let eperm = reply(NLMSG_ERROR, 7, &(-libc::EPERM).to_ne_bytes());
        let e = parse_batch("t", &eperm, 7, RTM_NEWLINK, &mut out).unwrap_err();
        assert!(e.to_string().starts_with("t: "), "{e}");

        let mut bad = reply(RTM_NEWLINK, 7, b"x");
        bad[0] = 200;
        assert!(matches!(
            parse_batch("t", &bad, 7, RTM_NEWLINK, &mut out),
            Err(NetlinkError::Malformed { .. })
        ));
    }

    #[test]
    fn fou_family_and_ports() {
        let mut fam = vec![1, 2, 0, 0];
        fam.extend(attr(CTRL_ATTR_FAMILY_ID, &0x1cu16.to_ne_bytes()));
        fam.extend(attr(CTRL_ATTR_FAMILY_NAME, b"fou\0"));
        assert_eq!(family_id(&fam, "fou"), Some(0x1c));
        assert_eq!(family_id(&fam, "nlctrl"), None);

        let mut p = vec![FOU_CMD_GET, 1, 0, 0];
        p.extend(attr(FOU_ATTR_PORT, &5555u16.to_be_bytes()));
        p.extend(attr(FOU_ATTR_AF, &[libc::AF_INET as u8]));
        p.extend(attr(FOU_ATTR_IPPROTO, &[4]));
        p.extend(attr(FOU_ATTR_TYPE, &[1]));
        assert_eq!(
            parse_fou(&p),
            Some(FouPort {
                port: 5555,
                ipv6: false,
                ipproto: Some(4),
                gue: false
            })
        );
        let mut g = vec![FOU_CMD_GET, 1, 0, 0];
        g.extend(attr(FOU_ATTR_PORT, &6080u16.to_be_bytes()));
        g.extend(attr(FOU_ATTR_AF, &[libc::AF_INET6 as u8]));
        g.extend(attr(FOU_ATTR_TYPE, &[2]));
        assert_eq!(
            parse_fou(&g),
            Some(FouPort {
                port: 6080,
                ipv6: true,
                ipproto: None,
                gue: true
            })
        );
    }

    #[test]
    fn request_layout() {
        let m = message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, &[0u8; 16]);
        assert_eq!(m.len(), 32);
        assert_eq!(ne_u32(&m, 0), Some(32));
        assert_eq!(ne_u16(&m, 4), Some(RTM_GETLINK));
        assert_eq!(ne_u16(&m, 6), Some(0x301));
    }
}
