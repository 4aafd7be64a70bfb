//! Node settings that weaken metaguard's host guard, for `metaguard-install status`.
//!
//! The guard filters what a pod sends at the host side of its interface. Some node settings open
//! paths it cannot close by itself, and an operator should know about them:
//! - `route_localnet`: 127.0.0.0/8 becomes routable from outside the host;
//! - `accept_source_route` (IPv4 and IPv6), `seg6_enabled`, `rpl_seg_enabled`: the node forwards
//!   packets along a route the sender wrote into them;
//! - tunnel devices and FOU/GUE receive ports: the node decapsulates and routes an inner packet
//!   the guard never saw; `rp_filter` off or loose on such a device lets inner packets with any
//!   source through.
//!
//! Everything describes the network namespace this process runs in: `/proc/sys/net` is that of
//! the reading process, `/sys/class/net` that of whoever mounted sysfs (`ip netns exec` remounts
//! it), and the netlink dumps (only on the live system) that of the socket. Reading never fails
//! `status`: what cannot be read becomes a [`Gap`] in the report. The files are read under a root
//! directory (`/` on a node) so the unit tests use a fake tree.
//!
//! The kernel's rules for combining the `all` and per-interface values (include/linux/inetdevice.h
//! and net/ipv6/exthdrs.c) decide where a setting is in effect:
//! `route_localnet` when `all` OR the interface says 1; `accept_source_route` (IPv4) when `all` AND
//! the interface do; the IPv6 ones use the smaller of the two; `rp_filter` the larger.

mod netlink;

pub use netlink::NetlinkError;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// IP protocols of the pod packets the guard drops unless a network sets `"blockTunnels": false`:
/// IPIP, IPv6-in-IP (SIT), GRE, L2TPv3, MPLS-in-IP. Kept equal to the plugin's list (its
/// config.rs documents `blockTunnels`); the installer does not link the plugin crate.
pub const GUARDED_IP_PROTOCOLS: [u8; 5] = [4, 41, 47, 115, 137];
/// UDP ports the guard drops likewise: VXLAN (IANA and Linux's default), Geneve; the plugin's
/// `DEFAULT_TUNNEL_PORTS`. Other encapsulation ports go in the plugin config key `"tunnelPorts"`.
pub const GUARDED_UDP_PORTS: [u16; 3] = [4789, 8472, 6081];

/// A sysctl that lets packets past the guard, where it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Knob {
    RouteLocalnet,
    Ipv4AcceptSourceRoute,
    Ipv6AcceptSourceRoute,
    Seg6Enabled,
    RplSegEnabled,
}

/// How the kernel combines `all` with the interface's own value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    /// In effect when either says so (IN_DEV_ORCONF).
    Either,
    /// In effect only when both say so (IN_DEV_ANDCONF, or min() for the IPv6 ones).
    Both,
}

impl Knob {
    pub const ALL: [Knob; 5] = [
        Knob::RouteLocalnet,
        Knob::Ipv4AcceptSourceRoute,
        Knob::Ipv6AcceptSourceRoute,
        Knob::Seg6Enabled,
        Knob::RplSegEnabled,
    ];

    fn family(self) -> &'static str {
        match self {
            Knob::RouteLocalnet | Knob::Ipv4AcceptSourceRoute => "ipv4",
            _ => "ipv6",
        }
    }

    /// The file name under `/proc/sys/net/<family>/conf/<scope>/`.
    pub fn name(self) -> &'static str {
        match self {
            Knob::RouteLocalnet => "route_localnet",
            Knob::Ipv4AcceptSourceRoute | Knob::Ipv6AcceptSourceRoute => "accept_source_route",
            Knob::Seg6Enabled => "seg6_enabled",
            Knob::RplSegEnabled => "rpl_seg_enabled",
        }
    }

    fn combine(self) -> Combine {
        match self {
            Knob::RouteLocalnet => Combine::Either,
            _ => Combine::Both,
        }
    }

    /// The name `sysctl` uses for `scope` ("all", "default" or an interface). Dots in interface
    /// names become slashes, as `sysctl -a` prints them and `sysctl -w` takes them.
    pub fn key(self, scope: &str) -> String {
        format!(
            "net.{}.conf.{}.{}",
            self.family(),
            scope.replace('.', "/"),
            self.name()
        )
    }
}

/// A [`Knob`] set to a weakening value (1 or more) somewhere it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnobFinding {
    pub knob: Knob,
    /// Where it is set: `all`, `default` (what interfaces created later start with) and, for
    /// `route_localnet`, interfaces; with the value read.
    pub set: Vec<(String, i64)>,
    /// Interfaces on which the kernel applies it now, sorted.
    pub effective: Vec<String>,
    /// `effective` is every interface there is.
    pub every_interface: bool,
}

/// Tunnel device kinds that decapsulate and route what they receive (rtnetlink's kind names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TunnelKind {
    Vxlan,
    Geneve,
    Bareudp,
    Ipip,
    Sit,
    Ip6tnl,
    Gre,
    Gretap,
    Erspan,
    Ip6gre,
    Ip6gretap,
    Ip6erspan,
}

impl TunnelKind {
    pub fn from_kind(kind: &str) -> Option<TunnelKind> {
        Some(match kind {
            "vxlan" => TunnelKind::Vxlan,
            "geneve" => TunnelKind::Geneve,
            "bareudp" => TunnelKind::Bareudp,
            "ipip" => TunnelKind::Ipip,
            "sit" => TunnelKind::Sit,
            "ip6tnl" => TunnelKind::Ip6tnl,
            "gre" => TunnelKind::Gre,
            "gretap" => TunnelKind::Gretap,
            "erspan" => TunnelKind::Erspan,
            "ip6gre" => TunnelKind::Ip6gre,
            "ip6gretap" => TunnelKind::Ip6gretap,
            "ip6erspan" => TunnelKind::Ip6erspan,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Bareudp => "bareudp",
            TunnelKind::Ipip => "ipip",
            TunnelKind::Sit => "sit",
            TunnelKind::Ip6tnl => "ip6tnl",
            TunnelKind::Gre => "gre",
            TunnelKind::Gretap => "gretap",
            TunnelKind::Erspan => "erspan",
            TunnelKind::Ip6gre => "ip6gre",
            TunnelKind::Ip6gretap => "ip6gretap",
            TunnelKind::Ip6erspan => "ip6erspan",
        }
    }

    /// From sysfs alone: `DEVTYPE` in uevent where the driver sets one (vxlan, geneve, some GRE
    /// kinds), else the ARPHRD link type of the layer-3 tunnels. ARPHRD_TUNNEL and _TUNNEL6 are
    /// shared with vti/vti6 (IPsec, authenticated), which sysfs cannot tell apart; rtnetlink's
    /// kind does, and is preferred when it is available.
    fn from_sysfs(devtype: Option<&str>, arphrd: Option<u32>) -> Option<TunnelKind> {
        if let Some(k) = devtype.and_then(TunnelKind::from_kind) {
            return Some(k);
        }
        Some(match arphrd? {
            768 => TunnelKind::Ipip,
            769 => TunnelKind::Ip6tnl,
            776 => TunnelKind::Sit,
            778 => TunnelKind::Gre,
            823 => TunnelKind::Ip6gre,
            _ => return None,
        })
    }

    /// Carried in UDP (the port is the device's own setting) rather than directly in IP.
    pub fn is_udp(self) -> bool {
        matches!(
            self,
            TunnelKind::Vxlan | TunnelKind::Geneve | TunnelKind::Bareudp
        )
    }
}

/// UDP encapsulation of an IPIP/SIT/ip6tnl/GRE device (`ip link add ... encap fou|gue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    pub kind: EncapKind,
    /// The destination port (the port the peers receive on: normally this node's too).
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapKind {
    Fou,
    Gue,
    Mpls,
    Other(u16),
}

/// A link as rtnetlink describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub up: bool,
    /// IFLA_INFO_KIND ("vxlan", "veth", ...); none for physical devices.
    pub kind: Option<String>,
    /// vxlan/geneve/bareudp: the UDP port it receives on.
    pub udp_port: Option<u16>,
    pub encap: Option<Encap>,
}

/// A FOU or GUE receive port (`ip fou add port N ...`): the node decapsulates UDP to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FouPort {
    pub port: u16,
    pub ipv6: bool,
    /// The inner protocol (FOU only; GUE carries it in its header).
    pub ipproto: Option<u8>,
    pub gue: bool,
}

/// A tunnel device present in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub name: String,
    pub kind: TunnelKind,
    /// Administratively up; a device that is down decapsulates nothing. None when unknown.
    pub up: Option<bool>,
    /// vxlan/geneve/bareudp: the UDP port it receives on, when rtnetlink could tell.
    pub udp_port: Option<u16>,
    pub encap: Option<Encap>,
    /// Effective rp_filter on the device: the larger of `all` and its own (0 off, 1 strict,
    /// 2 loose).
    pub rp_filter: Option<i64>,
}

impl Tunnel {
    /// The UDP port the node receives this tunnel's packets on, if it is carried in UDP.
    pub fn receive_port(&self) -> Option<u16> {
        match self.encap {
            Some(e) => e.port,
            None => self.udp_port,
        }
    }

    /// Carried in UDP (natively, or by FOU/GUE encapsulation).
    pub fn is_udp(&self) -> bool {
        self.kind.is_udp() || self.encap.is_some()
    }
}

/// Something that could not be read; the report is incomplete there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gap {
    /// A file or directory under the root, with the error.
    Unreadable { path: PathBuf, error: String },
    /// A sysctl file whose content is not a number.
    NotInteger { path: PathBuf, text: String },
    /// A directory entry (an interface) whose name is not UTF-8; skipped.
    NonUtf8Name { path: PathBuf },
    /// The rtnetlink link dump failed: tunnel kinds come from sysfs alone, UDP ports are unknown.
    Links(String),
    /// The FOU/GUE port dump failed.
    Fou(String),
}

/// What `status` reports about the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSettings {
    pub knobs: Vec<KnobFinding>,
    pub tunnels: Vec<Tunnel>,
    pub fou_ports: Vec<FouPort>,
    pub gaps: Vec<Gap>,
}

impl NodeSettings {
    /// Nothing found that weakens the guard (gaps aside).
    pub fn is_clean(&self) -> bool {
        self.knobs.is_empty() && self.tunnels.is_empty() && self.fou_ports.is_empty()
    }
}

/// Reads the live node: files under `/`, plus rtnetlink (tunnel ports, kinds sysfs cannot tell)
/// and the FOU ports. A failed dump is a gap, never an error.
pub fn read_live() -> NodeSettings {
    let (links, link_gap) = match netlink::dump_links() {
        Ok(l) => (Some(l), None),
        Err(e) => (None, Some(e)),
    };
    let mut s = read(Path::new("/"), links.as_deref());
    if let Some(e) = link_gap {
        s.gaps.push(Gap::Links(e.to_string()));
    }
    match netlink::dump_fou() {
        Ok(p) => s.fou_ports = p,
        Err(e) => s.gaps.push(Gap::Fou(e.to_string())),
    }
    s
}

/// Reads `<root>/proc/sys/net` and `<root>/sys/class/net`; `links` is rtnetlink's view when the
/// caller has one (the live system), which wins over sysfs for a device's kind.
pub fn read(root: &Path, links: Option<&[LinkInfo]>) -> NodeSettings {
    let mut r = Reader {
        root,
        gaps: Vec::new(),
    };
    let mut s = NodeSettings::default();
    for knob in Knob::ALL {
        let Some(values) = r.conf_values(knob.family(), knob.name()) else {
            continue;
        };
        s.knobs.extend(evaluate(knob, &values));
    }
    s.tunnels = r.tunnels(links);
    // Several settings live in the same directory: one unreadable directory, one gap.
    let mut seen = BTreeSet::new();
    s.gaps = r
        .gaps
        .into_iter()
        .filter(|g| seen.insert(g.clone()))
        .collect();
    s
}

/// The values of one sysctl in every scope of a family.
#[derive(Debug, Clone, Default)]
struct ConfValues {
    all: Option<i64>,
    default: Option<i64>,
    /// Interface name and value, sorted by name; interfaces without the file are left out.
    ifaces: Vec<(String, i64)>,
}

fn evaluate(knob: Knob, v: &ConfValues) -> Option<KnobFinding> {
    let on = |x: Option<i64>| x.is_some_and(|x| x >= 1);
    let mut set = Vec::new();
    for (scope, val) in [("all", v.all), ("default", v.default)] {
        if let Some(val) = val.filter(|&x| x >= 1) {
            set.push((scope.to_string(), val));
        }
    }
    let own: Vec<String> = v
        .ifaces
        .iter()
        .filter(|(_, x)| *x >= 1)
        .map(|(n, _)| n.clone())
        .collect();
    let effective = match knob.combine() {
        Combine::Either => {
            // An interface's own 1 counts even without `all`: listed as set there.
            set.extend(
                v.ifaces
                    .iter()
                    .filter(|(_, x)| *x >= 1)
                    .map(|(n, x)| (n.clone(), *x)),
            );
            if set.is_empty() {
                return None;
            }
            if on(v.all) {
                v.ifaces.iter().map(|(n, _)| n.clone()).collect()
            } else {
                own
            }
        }
        Combine::Both => {
            // Inert without `all` (and IPv4's per-interface default is 1, so listing interfaces
            // as "set" would only repeat the kernel's default).
            if !on(v.all) {
                return None;
            }
            own
        }
    };
    let every_interface = !v.ifaces.is_empty() && effective.len() == v.ifaces.len();
    Some(KnobFinding {
        knob,
        set,
        effective,
        every_interface,
    })
}

/// A link as sysfs shows it.
#[derive(Debug, Clone, Default)]
struct SysLink {
    devtype: Option<String>,
    arphrd: Option<u32>,
    up: Option<bool>,
}

struct Reader<'a> {
    root: &'a Path,
    gaps: Vec<Gap>,
}

impl Reader<'_> {
    fn unreadable(&mut self, path: &Path, e: &io::Error) {
        self.gaps.push(Gap::Unreadable {
            path: path.to_path_buf(),
            error: e.to_string(),
        });
    }

    /// A file's text; None when it does not exist (an option this kernel lacks, an interface
    /// that just went away), a gap for any other error.
    fn text(&mut self, path: &Path) -> Option<String> {
        match fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.unreadable(path, &e);
                None
            }
        }
    }

    fn int(&mut self, path: &Path) -> Option<i64> {
        let t = self.text(path)?;
        match t.trim().parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.gaps.push(Gap::NotInteger {
                    path: path.to_path_buf(),
                    text: t.trim().to_string(),
                });
                None
            }
        }
    }

    /// Entry names of a directory, sorted; None (and a gap unless it is absent) when unreadable.
    fn names(&mut self, dir: &Path, absent_is_gap: bool) -> Option<Vec<String>> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !absent_is_gap => return None,
            Err(e) => {
                self.unreadable(dir, &e);
                return None;
            }
        };
        let mut out = Vec::new();
        for ent in rd {
            match ent {
                // Interface names are bytes: one that is not UTF-8 cannot be shown or keyed
                // reliably, so it is skipped, and said so.
                Ok(ent) => match ent.file_name().into_string() {
                    Ok(n) => out.push(n),
                    Err(raw) => self.gaps.push(Gap::NonUtf8Name {
                        path: dir.join(raw),
                    }),
                },
                Err(e) => self.unreadable(dir, &e),
            }
        }
        out.sort();
        Some(out)
    }

    fn conf_dir(&self, family: &str) -> PathBuf {
        self.root.join("proc/sys/net").join(family).join("conf")
    }

    /// One sysctl across `all`, `default` and every interface. None when the family is absent
    /// (IPv6 disabled at boot), which weakens nothing.
    fn conf_values(&mut self, family: &str, name: &str) -> Option<ConfValues> {
        let dir = self.conf_dir(family);
        let scopes = self.names(&dir, family == "ipv4")?;
        let mut v = ConfValues::default();
        for scope in scopes {
            let val = self.int(&dir.join(&scope).join(name));
            match scope.as_str() {
                "all" => v.all = val,
                "default" => v.default = val,
                _ => {
                    if let Some(x) = val {
                        v.ifaces.push((scope, x));
                    }
                }
            }
        }
        Some(v)
    }

    fn sys_links(&mut self) -> BTreeMap<String, SysLink> {
        let dir = self.root.join("sys/class/net");
        let mut out = BTreeMap::new();
        for name in self.names(&dir, true).unwrap_or_default() {
            let dev = dir.join(&name);
            // Devices are (links to) directories; bonding_masters, a file, is not one.
            if !fs::metadata(&dev).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let Some(uevent) = self.text(&dev.join("uevent")) else {
                continue;
            };
            let devtype = uevent
                .lines()
                .find_map(|l| l.strip_prefix("DEVTYPE="))
                .map(|s| s.trim().to_string());
            let arphrd = self
                .text(&dev.join("type"))
                .and_then(|t| t.trim().parse().ok());
            let up = self
                .text(&dev.join("flags"))
                .and_then(|t| u32::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok())
                .map(|f| f & 0x1 != 0);
            out.insert(
                name,
                SysLink {
                    devtype,
                    arphrd,
                    up,
                },
            );
        }
        out
    }

    fn tunnels(&mut self, links: Option<&[LinkInfo]>) -> Vec<Tunnel> {
        let sys = self.sys_links();
        let nl: BTreeMap<&str, &LinkInfo> = links
            .unwrap_or_default()
            .iter()
            .map(|l| (l.name.as_str(), l))
            .collect();
        let names: BTreeSet<&str> = sys
            .keys()
            .map(String::as_str)
            .chain(nl.keys().copied())
            .collect();
        let conf = self.conf_dir("ipv4");
        let rp_all = self.int(&conf.join("all/rp_filter"));
        let mut out = Vec::new();
        for name in names {
            let s = sys.get(name);
            let kind = match nl.get(name) {
                Some(l) => l.kind.as_deref().and_then(TunnelKind::from_kind),
                None => s.and_then(|s| TunnelKind::from_sysfs(s.devtype.as_deref(), s.arphrd)),
            };
            let Some(kind) = kind else {
                continue;
            };
            let rp_own = self.int(&conf.join(name).join("rp_filter"));
            let rp_filter = match (rp_all, rp_own) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            out.push(Tunnel {
                name: name.to_string(),
                kind,
                up: nl.get(name).map(|l| l.up).or(s.and_then(|s| s.up)),
                udp_port: nl.get(name).and_then(|l| l.udp_port),
                encap: nl.get(name).and_then(|l| l.encap),
                rp_filter,
            });
        }
        out
    }
}

/// At most a handful of names, then how many more.
fn list(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

fn join<T: ToString>(xs: &[T]) -> String {
    xs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report as lines for `status`: all of its wording is here.
pub fn render(s: &NodeSettings) -> Vec<String> {
    let mut out = Vec::new();
    let protos = join(&GUARDED_IP_PROTOCOLS);
    let ports = join(&GUARDED_UDP_PORTS);
    if s.is_clean() {
        out.push(
            "node settings: none found that weaken the guard (checked route_localnet, \
             accept_source_route, seg6_enabled, rpl_seg_enabled, tunnel devices, FOU/GUE ports)"
                .to_string(),
        );
    } else {
        out.push(
            "node settings that weaken the guard (in this network namespace; warnings only, \
             the exit code does not depend on them):"
                .to_string(),
        );
    }

    for f in &s.knobs {
        let keys = list(
            &f.set
                .iter()
                .map(|(scope, v)| format!("{}={v}", f.knob.key(scope)))
                .collect::<Vec<_>>(),
        );
        let mut effect = if f.every_interface {
            format!(
                "in effect on every interface ({}: {})",
                f.effective.len(),
                list(&f.effective)
            )
        } else if f.effective.is_empty() {
            "in effect on no interface now".to_string()
        } else {
            format!("in effect on: {}", list(&f.effective))
        };
        if f.set.iter().any(|(scope, _)| scope == "default") {
            effect.push_str("; interfaces created later (pods' host-side veths) get it too");
        }
        let (label, why) = match f.knob {
            Knob::RouteLocalnet => (
                "warning",
                "pods can send to 127.0.0.0/8 on the node (kube-proxy's iptables mode sets \
                 this). metaguard's guard drops pod packets to loopback addresses, but packets \
                 reaching the node by a path it does not see (a tunnel, an interface outside the \
                 chain) still reach services listening on 127.0.0.1."
                    .to_string(),
            ),
            Knob::Ipv4AcceptSourceRoute => (
                "warning",
                format!(
                    "the node forwards IPv4 packets along their LSRR/SSRR options (Linux needs \
                     both `all` and the receiving interface at 1). metaguard's guard drops pod \
                     packets carrying them; packets arriving by other paths go where the option \
                     says. Set {}=0 unless something needs it.",
                    f.knob.key("all")
                ),
            ),
            Knob::Ipv6AcceptSourceRoute => (
                "note",
                format!(
                    "the node states that it accepts IPv6 source routes (Linux uses the smaller \
                     of `all` and the interface). Current kernels forward no type 0 routing \
                     header whatever this says, so the risk is low; set {}=0 (the default) \
                     unless Mobile IPv6 needs it.",
                    f.knob.key("all")
                ),
            ),
            Knob::Seg6Enabled => (
                "warning",
                "where it is in effect, the node follows IPv6 segment routing headers (SRv6) \
                 and forwards the packet to its next segment (Linux needs both `all` and the \
                 receiving interface at 1). metaguard's guard drops pod packets with a routing \
                 header; other paths are not guarded."
                    .to_string(),
            ),
            Knob::RplSegEnabled => (
                "warning",
                "where it is in effect, the node follows RPL source routing headers (Linux \
                 needs both `all` and the receiving interface at 1). metaguard's guard drops pod \
                 packets with a routing header; other paths are not guarded."
                    .to_string(),
            ),
        };
        out.push(format!("{label}: {keys}: {effect}"));
        out.push(format!("  {why}"));
    }

    let guard = format!(
        "metaguard's guard drops pod traffic to IP protocols {protos} and UDP ports {ports} \
         unless a network sets \"blockTunnels\": false"
    );
    let extra_port = |port: u16| {
        format!(
            "UDP port {port} is not among those: add it to the plugin config key \
             \"tunnelPorts\" (a list of extra UDP ports), or pods can reach this tunnel"
        )
    };
    for t in &s.tunnels {
        let mut what = t.kind.name().to_string();
        match (t.encap, t.kind) {
            (Some(e), _) => {
                let how = match e.kind {
                    EncapKind::Fou => "FOU".to_string(),
                    EncapKind::Gue => "GUE".to_string(),
                    EncapKind::Mpls => "MPLS-in-UDP".to_string(),
                    EncapKind::Other(n) => format!("UDP encapsulation type {n}"),
                };
                what.push_str(&format!(" over {how}"));
                match e.port {
                    Some(p) => what.push_str(&format!(", UDP port {p}")),
                    None => what.push_str(", UDP port unknown"),
                }
            }
            (None, k) if k.is_udp() => match t.udp_port {
                Some(p) => what.push_str(&format!(", UDP port {p}")),
                None => what.push_str(", UDP port unknown"),
            },
            (None, TunnelKind::Ipip) => what.push_str(", IP protocol 4"),
            (None, TunnelKind::Sit) => what.push_str(", IP protocol 41"),
            (None, TunnelKind::Ip6tnl) => what.push_str(", IPv6 next header 4 or 41"),
            (None, TunnelKind::Gre | TunnelKind::Gretap | TunnelKind::Erspan) => {
                what.push_str(", IP protocol 47")
            }
            (None, _) => what.push_str(", IPv6 next header 47"),
        }
        match t.up {
            Some(true) => what.push_str(", up"),
            Some(false) => what.push_str(", down (decapsulates nothing until brought up)"),
            None => {}
        }
        if let Some(rp) = t.rp_filter {
            let mode = match rp {
                0 => "off",
                1 => "strict",
                2 => "loose",
                _ => "unknown mode",
            };
            what.push_str(&format!("; rp_filter {rp} ({mode})"));
        }
        out.push(format!("warning: tunnel device {}: {what}", t.name));
        out.push(format!(
            "  the node decapsulates what reaches it there and routes the inner packet, which \
             the guard never sees. {guard}."
        ));
        if t.is_udp() {
            match t.receive_port() {
                Some(p) if GUARDED_UDP_PORTS.contains(&p) => {}
                Some(p) => out.push(format!("  {}.", extra_port(p))),
                None => out.push(format!(
                    "  its UDP port could not be read: unless it is one of {ports}, add it to \
                     the plugin config key \"tunnelPorts\"."
                )),
            }
        }
        if matches!(t.rp_filter, Some(0 | 2)) {
            out.push(format!(
                "  rp_filter is {} on {} (the larger of `all` and the device's own): inner \
                 packets with a source address not routed back through this device are \
                 accepted too (informational).",
                if t.rp_filter == Some(0) {
                    "off"
                } else {
                    "loose"
                },
                t.name
            ));
        }
    }

    for p in &s.fou_ports {
        let family = if p.ipv6 { "IPv6" } else { "IPv4" };
        let inner = match p.ipproto {
            Some(n) => format!(", inner IP protocol {n}"),
            None => String::new(),
        };
        out.push(format!(
            "warning: {} receive port {} ({family}{inner})",
            if p.gue { "GUE" } else { "FOU" },
            p.port
        ));
        if GUARDED_UDP_PORTS.contains(&p.port) {
            out.push(format!(
                "  the node decapsulates UDP to this port and routes the inner packet. {guard}."
            ));
        } else {
            out.push(format!(
                "  the node decapsulates UDP to this port and routes the inner packet. {}.",
                extra_port(p.port)
            ));
        }
    }

    for g in &s.gaps {
        let what = match g {
            Gap::Unreadable { path, error } => format!("{}: {error}", path.display()),
            Gap::NotInteger { path, text } => {
                format!("{}: not an integer: {text:?}", path.display())
            }
            Gap::NonUtf8Name { path } => {
                format!("{}: name is not UTF-8, skipped", path.display())
            }
            Gap::Links(e) => {
                format!("the link list ({e}); tunnel kinds come from sysfs alone, UDP ports are unknown")
            }
            Gap::Fou(e) => format!("the FOU/GUE receive ports ({e})"),
        };
        out.push(format!(
            "note: could not read {what}; this report may be incomplete"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake root with `proc/sys/net/...` and `sys/class/net/...`, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let p =
                std::env::temp_dir().join(format!("mg-node-settings-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Tree(p)
        }

        fn put(&self, rel: &str, text: &str) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }

        fn v4(&self, scope: &str, name: &str, v: i64) {
            self.put(
                &format!("proc/sys/net/ipv4/conf/{scope}/{name}"),
                &format!("{v}\n"),
            );
        }

        fn v6(&self, scope: &str, name: &str, v: i64) {
            self.put(
                &format!("proc/sys/net/ipv6/conf/{scope}/{name}"),
                &format!("{v}\n"),
            );
        }

        fn dev(&self, name: &str, devtype: Option<&str>, arphrd: u32, flags: &str) {
            let mut ue = format!("INTERFACE={name}\nIFINDEX=3\n");
            if let Some(d) = devtype {
                ue = format!("DEVTYPE={d}\n{ue}");
            }
            self.put(&format!("sys/class/net/{name}/uevent"), &ue);
            self.put(
                &format!("sys/class/net/{name}/type"),
                &format!("{arphrd}\n"),
            );
            self.put(
                &format!("sys/class/net/{name}/flags"),
                &format!("{flags}\n"),
            );
        }

        /// A stock kernel's defaults for `scopes` (IPv4 accept_source_route is 1 on interfaces
        /// and `default`, 0 on `all`).
        fn defaults(&self, ifaces: &[&str]) {
            for scope in ["all", "default"].iter().chain(ifaces) {
                let asr = i64::from(*scope != "all");
                self.v4(scope, "route_localnet", 0);
                self.v4(scope, "accept_source_route", asr);
                self.v4(scope, "rp_filter", 0);
                self.v6(scope, "accept_source_route", 0);
                self.v6(scope, "seg6_enabled", 0);
                self.v6(scope, "rpl_seg_enabled", 0);
            }
            for i in ifaces {
                self.dev(i, None, if *i == "lo" { 772 } else { 1 }, "0x1003");
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn knob(s: &NodeSettings, k: Knob) -> Option<&KnobFinding> {
        s.knobs.iter().find(|f| f.knob == k)
    }

    #[test]
    fn stock_defaults_report_nothing() {
        let t = Tree::new("defaults");
        t.defaults(&["lo", "eth0"]);
        t.put("sys/class/net/bonding_masters", "");
        let s = read(&t.0, None);
        assert_eq!(s, NodeSettings::default(), "{s:#?}");
        let lines = render(&s);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("node settings: none found"),
            "{lines:?}"
        );
    }

    #[test]
    fn route_localnet_is_either_all_or_the_interface() {
        let t = Tree::new("localnet");
        t.defaults(&["eth0", "lo", "cni0"]);
        t.v4("cni0", "route_localnet", 1);
        let s = read(&t.0, None);
        let f = knob(&s, Knob::RouteLocalnet).unwrap();
        assert_eq!(f.set, vec![("cni0".to_string(), 1)]);
        assert_eq!(f.effective, vec!["cni0"]);
        assert!(!f.every_interface);

        t.v4("all", "route_localnet", 1);
        t.v4("default", "route_localnet", 1);
        let s = read(&t.0, None);
        let f = knob(&s, Knob::RouteLocalnet).unwrap();
        assert_eq!(f.set.len(), 3);
        assert_eq!(f.effective, vec!["cni0", "eth0", "lo"]);
        assert!(f.every_interface);
        let text = render(&s).join("\n");
        assert!(
            text.contains("warning: net.ipv4.conf.all.route_localnet=1, net.ipv4.conf.default.route_localnet=1, net.ipv4.conf.cni0.route_localnet=1: in effect on every interface (3: cni0, eth0, lo); interfaces created later"),
            "{text}"
        );
    }

    #[test]
    fn ipv4_source_route_needs_all_and_the_interface() {
        let t = Tree::new("asr4");
        t.defaults(&["eth0", "flannel.1", "lo"]);
        // Interfaces at 1 are the kernel's default: inert while `all` is 0.
        assert_eq!(knob(&read(&t.0, None), Knob::Ipv4AcceptSourceRoute), None);
        t.v4("all", "accept_source_route", 1);
        t.v4("eth0", "accept_source_route", 0);
        let s = read(&t.0, None);
        let f = knob(&s, Knob::Ipv4AcceptSourceRoute).unwrap();
        assert_eq!(f.effective, vec!["flannel.1", "lo"]);
        assert!(!f.every_interface);
        let text = render(&s).join("\n");
        assert!(
            text.contains("warning: net.ipv4.conf.all.accept_source_route=1, net.ipv4.conf.default.accept_source_route=1: in effect on: flannel.1, lo"),
            "{text}"
        );
    }

    #[test]
    fn ipv6_knobs_use_the_smaller_value() {
        let t = Tree::new("v6");
        t.defaults(&["eth0", "lo"]);
        // An interface alone does nothing without `all`.
        t.v6("eth0", "seg6_enabled", 1);
        assert_eq!(knob(&read(&t.0, None), Knob::Seg6Enabled), None);
        t.v6("all", "seg6_enabled", 1);
        t.v6("all", "accept_source_route", 1);
        t.v6("all", "rpl_seg_enabled", 1);
        let s = read(&t.0, None);
        assert_eq!(knob(&s, Knob::Seg6Enabled).unwrap().effective, vec!["eth0"]);
        // `all` alone: reported, in effect nowhere.
        let asr = knob(&s, Knob::Ipv6AcceptSourceRoute).unwrap();
        assert!(asr.effective.is_empty());
        assert_eq!(asr.set, vec![("all".to_string(), 1)]);
        let text = render(&s).join("\n");
        assert!(text.contains("warning: net.ipv6.conf.all.seg6_enabled=1: in effect on: eth0"));
        assert!(text.contains(
            "note: net.ipv6.conf.all.accept_source_route=1: in effect on no interface now"
        ));
        assert!(text.contains("warning: net.ipv6.conf.all.rpl_seg_enabled=1"));
        // A negative value (reject even type 2) is not weak.
        t.v6("all", "accept_source_route", -1);
        assert_eq!(knob(&read(&t.0, None), Knob::Ipv6AcceptSourceRoute), None);
    }

    #[test]
    fn no_ipv6_at_all_is_not_a_gap() {
        let t = Tree::new("noipv6");
        t.defaults(&["eth0"]);
        fs::remove_dir_all(t.0.join("proc/sys/net/ipv6")).unwrap();
        let s = read(&t.0, None);
        assert!(s.gaps.is_empty(), "{:?}", s.gaps);
        assert!(s.is_clean());
    }

    #[test]
    fn tunnels_from_sysfs() {
        let t = Tree::new("sysfs");
        t.defaults(&["eth0", "lo"]);
        t.dev("flannel.1", Some("vxlan"), 1, "0x1043");
        t.v4("flannel.1", "rp_filter", 2);
        t.dev("tunl0", None, 768, "0x80");
        t.dev("gre0", None, 778, "0x80");
        t.dev("sit0", None, 776, "0x80");
        t.dev("ip6tnl0", None, 769, "0x80");
        t.dev("ip6gre0", None, 823, "0x80");
        t.dev("genev", Some("geneve"), 1, "0x1003");
        t.dev("br0", Some("bridge"), 1, "0x1003");
        let s = read(&t.0, None);
        let kinds: Vec<_> = s
            .tunnels
            .iter()
            .map(|x| (x.name.as_str(), x.kind, x.up))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("flannel.1", TunnelKind::Vxlan, Some(true)),
                ("genev", TunnelKind::Geneve, Some(true)),
                ("gre0", TunnelKind::Gre, Some(false)),
                ("ip6gre0", TunnelKind::Ip6gre, Some(false)),
                ("ip6tnl0", TunnelKind::Ip6tnl, Some(false)),
                ("sit0", TunnelKind::Sit, Some(false)),
                ("tunl0", TunnelKind::Ipip, Some(false)),
            ]
        );
        let fl = &s.tunnels[0];
        assert_eq!(fl.rp_filter, Some(2));
        assert_eq!(fl.udp_port, None);
        let text = render(&s).join("\n");
        assert!(
            text.contains(
                "warning: tunnel device flannel.1: vxlan, UDP port unknown, up; rp_filter 2 (loose)"
            ),
            "{text}"
        );
        assert!(text.contains("its UDP port could not be read"), "{text}");
        assert!(text.contains("rp_filter is loose on flannel.1"), "{text}");
        assert!(text.contains(
            "warning: tunnel device tunl0: ipip, IP protocol 4, down (decapsulates nothing until brought up); rp_filter 0 (off)"
        ));
        assert!(text.contains(
            "IP protocols 4, 41, 47, 115, 137 and UDP ports 4789, 8472, 6081 unless a network sets \"blockTunnels\": false"
        ));
        // The kernel takes the larger value: `all` at 1 makes devices at 0 strict, while
        // flannel.1's own 2 stays loose.
        t.v4("all", "rp_filter", 1);
        let s = read(&t.0, None);
        assert_eq!(s.tunnels[0].rp_filter, Some(2));
        assert_eq!(s.tunnels[6].rp_filter, Some(1));
        let text = render(&s).join("\n");
        assert!(text.contains("rp_filter is loose on flannel.1"), "{text}");
        assert!(!text.contains("rp_filter is off"), "{text}");
    }

    #[test]
    fn rtnetlink_wins_over_sysfs_and_gives_ports() {
        let t = Tree::new("netlink");
        t.defaults(&["eth0"]);
        t.dev("flannel.1", Some("vxlan"), 1, "0x1003");
        t.dev("vxgpe", Some("vxlan"), 1, "0x1003");
        // vti shares ipip's ARPHRD: sysfs alone would call it ipip.
        t.dev("ip_vti0", None, 768, "0x80");
        let links = vec![
            LinkInfo {
                name: "flannel.1".into(),
                up: true,
                kind: Some("vxlan".into()),
                udp_port: Some(8472),
                encap: None,
            },
            LinkInfo {
                name: "vxgpe".into(),
                up: true,
                kind: Some("vxlan".into()),
                udp_port: Some(4790),
                encap: None,
            },
            LinkInfo {
                name: "ip_vti0".into(),
                up: false,
                kind: Some("vti".into()),
                udp_port: None,
                encap: None,
            },
            // Only in the netlink view (sysfs from another namespace, say).
            LinkInfo {
                name: "gue1".into(),
                up: true,
                kind: Some("ipip".into()),
                udp_port: None,
                encap: Some(Encap {
                    kind: EncapKind::Gue,
                    port: Some(5555),
                }),
            },
        ];
        let s = read(&t.0, Some(&links));
        let names: Vec<_> = s.tunnels.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, vec!["flannel.1", "gue1", "vxgpe"]);
        let text = render(&s).join("\n");
        assert!(text.contains("warning: tunnel device flannel.1: vxlan, UDP port 8472, up"));
        assert!(
            text.contains("warning: tunnel device gue1: ipip over GUE, UDP port 5555, up"),
            "{text}"
        );
        assert!(text.contains(
            "UDP port 5555 is not among those: add it to the plugin config key \"tunnelPorts\""
        ));
        assert!(text.contains("UDP port 4790 is not among those"));
        assert!(!text.contains("UDP port 8472 is not among those"));
    }

    #[test]
    fn fou_ports_and_gaps_render() {
        let s = NodeSettings {
            fou_ports: vec![
                FouPort {
                    port: 5555,
                    ipv6: false,
                    ipproto: Some(4),
                    gue: false,
                },
                FouPort {
                    port: 6081,
                    ipv6: true,
                    ipproto: None,
                    gue: true,
                },
            ],
            gaps: vec![Gap::Links("rtnetlink link dump: permission denied".into())],
            ..Default::default()
        };
        let text = render(&s).join("\n");
        assert!(text.contains("warning: FOU receive port 5555 (IPv4, inner IP protocol 4)"));
        assert!(text.contains("UDP port 5555 is not among those"));
        assert!(text.contains("warning: GUE receive port 6081 (IPv6)"));
        assert!(!text.contains("UDP port 6081 is not among those"));
        assert!(text.contains(
            "note: could not read the link list (rtnetlink link dump: permission denied); tunnel kinds come from sysfs alone, UDP ports are unknown; this report may be incomplete"
        ), "{text}");
    }

    #[test]
    fn unreadable_values_are_gaps_not_errors() {
        let t = Tree::new("gaps");
        t.defaults(&["eth0"]);
        t.put("proc/sys/net/ipv4/conf/all/route_localnet", "yes\n");
        let s = read(&t.0, None);
        assert_eq!(s.gaps.len(), 1, "{:?}", s.gaps);
        assert!(matches!(&s.gaps[0], Gap::NotInteger { text, .. } if text == "yes"));
        // No tree at all: gaps for the IPv4 conf and sysfs, nothing else.
        let empty = Tree::new("empty");
        let s = read(&empty.0, None);
        assert!(s.is_clean());
        assert!(!s.gaps.is_empty());
    }

    #[test]
    fn sysctl_keys_use_slashes_for_dots() {
        assert_eq!(
            Knob::RouteLocalnet.key("flannel.1"),
            "net.ipv4.conf.flannel/1.route_localnet"
        );
        assert_eq!(
            Knob::Seg6Enabled.key("all"),
            "net.ipv6.conf.all.seg6_enabled"
        );
    }

    #[test]
    fn long_interface_lists_are_cut() {
        let names: Vec<String> = (0..12).map(|i| format!("veth{i}")).collect();
        assert!(list(&names).ends_with("veth7 and 4 more"));
    }
}
