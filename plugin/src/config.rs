//! The plugin configuration (one entry of a conflist, as the runtime hands it to us on stdin).
//!
//! Every key is checked: a key metaguard does not know is an error (code 7) naming it, and so is
//! a value of the wrong type or out of range. A typo such as `hostguard: false` must not silently
//! leave the default in place; for a security control, "I meant to configure it" and "it is
//! configured" have to be the same thing.
//!
//! Keys (camelCase), with defaults:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `proxy.ipv4` | IPv4 address | gateway of the pod's first IPv4 address in prevResult | where IPv4 metadata traffic is sent (port = the endpoint's `proxyPort`) |
//! | `proxy.ipv6` | IPv6 address | gateway of the pod's first IPv6 address in prevResult | same for IPv6 |
//! | `endpoints` | list of `{name, address, port, proxyPort}` | 169.254.169.254:80→8169, [fd00:ec2::254]:80→8170, 100.100.100.200:80→8171 | metadata services redirected to the proxy |
//! | `block` | list of opt-in names (`ecs`, `eks-pod-identity`, `azure-wireserver`), IPs or CIDRs | empty | addresses rejected outright, on top of every endpoint address |
//! | `hostGuard` | bool | true | attach the host-side guard to the pod's host veth |
//! | `blockTunnels` | bool | true | the host guard drops pod packets a node could decapsulate (IP protocols 4, 41, 47, 115, 137; UDP to the tunnel ports), to any destination |
//! | `tunnelPorts` | list of UDP ports | empty | tunnel ports dropped on top of 4789, 8472 and 6081 (FOU/GUE, VXLAN elsewhere) |
//! | `stateDir` | absolute path | /run/metaguard | where pod records go |
//! | `logFile` | absolute path | none | also append log lines to this file |
//! | `logLevel` | `off`, `error`, `warn`, `info`, `debug`, `trace` | `warn` | log verbosity (stderr and logFile) |
//!
//! Standard keys: `cniVersion` (required), `name` (required except for VERSION), `type`,
//! `prevResult`, `capabilities` (only `io.kubernetes.cri.pod-annotations`), `runtimeConfig`
//! (only `io.kubernetes.cri.pod-annotations`), `args` (runtime-generated, ignored) and any key
//! starting with `cni.dev/` (reserved for runtimes; GC reads `cni.dev/attachments` and
//! `cni.dev/valid-attachments`).

use crate::cni::error::CniError;
use crate::cni::{CniVersion, Command};
use ipnetwork::IpNetwork;
use metaguard_common::endpoints::{default_endpoints, opt_in_addresses, Endpoint, OPT_IN_NAMES};
use metaguard_common::ids::{valid_cni_name, valid_ifname};
use metaguard_common::state::DEFAULT_STATE_DIR;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// The capability (and runtimeConfig key) through which containerd passes pod annotations.
pub const POD_ANNOTATIONS_CAP: &str = "io.kubernetes.cri.pod-annotations";

/// Where each family's metadata traffic is sent. `None`: the gateway from prevResult.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// One still-valid attachment named by GC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cni_version: CniVersion,
    /// Network name (`name`), part of every attachment key.
    pub name: String,
    pub proxy: ProxyConfig,
    /// Metadata endpoints redirected to the proxy. Default: common's `default_endpoints()`.
    pub endpoints: Vec<Endpoint>,
    /// Extra networks rejected outright (opt-in names resolved, IPs as /32 or /128).
    pub block: Vec<IpNetwork>,
    /// Attach the host-side guard (default true). Without it a container with CAP_NET_ADMIN can
    /// flush its own rules, and raw sockets skip them.
    pub host_guard: bool,
    /// Drop pod packets a node could decapsulate (`blockTunnels`, default true): IP-in-IP, GRE
    /// and friends, and UDP to the tunnel ports. Networks whose pods run their own overlays set
    /// it to false.
    pub block_tunnels: bool,
    /// `tunnelPorts`: UDP ports dropped as tunnel ports in addition to
    /// [`crate::rules::DEFAULT_TUNNEL_PORTS`] (FOU/GUE, a VXLAN on another port).
    pub tunnel_ports: Vec<u16>,
    /// Default /run/metaguard.
    pub state_dir: PathBuf,
    pub log_file: Option<PathBuf>,
    /// Default `warn`: runtimes copy a plugin's stderr into their own log on every call.
    pub log_level: log::LevelFilter,
    /// prevResult as received (raw), for ADD and CHECK.
    pub prev_result: Option<Value>,
    /// From `runtimeConfig["io.kubernetes.cri.pod-annotations"]`.
    pub annotations: BTreeMap<String, String>,
    /// GC only: the union of `cni.dev/valid-attachments` and `cni.dev/attachments`. `None` when
    /// the input has neither (GC then refuses to run rather than treat it as "nothing is valid").
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn invalid(key: &str, details: impl Into<String>) -> CniError {
    CniError::invalid_config(key, details)
}

/// Reads the `cniVersion` of a raw input, for VERSION and for the version of error output.
/// `None` when the input is not a JSON object with a string `cniVersion`.
pub fn peek_version(input: &[u8]) -> Option<String> {
    declared_version(&decode(input).ok()?)
}

/// The string `cniVersion` an already decoded input declares, if any (see [`peek_version`]).
pub fn declared_version(obj: &Map<String, Value>) -> Option<String> {
    obj.get("cniVersion")?.as_str().map(str::to_string)
}

/// Parses the stdin JSON into the object the other functions read.
pub fn decode(input: &[u8]) -> Result<Map<String, Value>, CniError> {
    let v: Value = serde_json::from_slice(input)
        .map_err(|e| CniError::decode(format!("stdin is not JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(CniError::decode(format!(
            "stdin is not a JSON object: {}",
            type_name(&other)
        ))),
    }
}

/// The negotiated version of an input object (code 1 when missing or unsupported).
pub fn version_of(obj: &Map<String, Value>) -> Result<CniVersion, CniError> {
    match obj.get("cniVersion") {
        None => Err(CniError::incompatible_version(
            "incompatible CNI version",
            "cniVersion is missing (that means 0.1.0, which metaguard does not support)",
        )),
        Some(Value::String(s)) => CniVersion::negotiate(s),
        Some(other) => Err(invalid(
            "cniVersion",
            format!("expected a string, got {}", type_name(other)),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn as_str<'a>(key: &str, v: &'a Value) -> Result<&'a str, CniError> {
    v.as_str()
        .ok_or_else(|| invalid(key, format!("expected a string, got {}", type_name(v))))
}

fn as_obj<'a>(key: &str, v: &'a Value) -> Result<&'a Map<String, Value>, CniError> {
    v.as_object()
        .ok_or_else(|| invalid(key, format!("expected an object, got {}", type_name(v))))
}

fn as_array<'a>(key: &str, v: &'a Value) -> Result<&'a Vec<Value>, CniError> {
    v.as_array()
        .ok_or_else(|| invalid(key, format!("expected a list, got {}", type_name(v))))
}

fn as_port(key: &str, v: &Value) -> Result<u16, CniError> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
        .ok_or_else(|| invalid(key, format!("expected a port number 1-65535, got {v}")))
}

fn as_abs_path(key: &str, v: &Value) -> Result<PathBuf, CniError> {
    let s = as_str(key, v)?;
    if !s.starts_with('/') || s.contains('\0') {
        return Err(invalid(
            key,
            format!("expected an absolute path, got {s:?}"),
        ));
    }
    Ok(PathBuf::from(s))
}

/// An address a pod may be sent to or blocked from: not unspecified, not multicast.
fn usable_address(ip: &IpAddr) -> bool {
    !ip.is_unspecified() && !ip.is_multicast() && *ip != IpAddr::V4(Ipv4Addr::BROADCAST)
}

impl Config {
    /// Parses and validates the input for `command` (not VERSION, which reads only cniVersion).
    pub fn parse(input: &[u8], command: Command) -> Result<Config, CniError> {
        let obj = decode(input)?;
        Config::from_object(&obj, command)
    }

    pub fn from_object(obj: &Map<String, Value>, command: Command) -> Result<Config, CniError> {
        let cni_version = version_of(obj)?;
        let mut cfg = Config {
            cni_version,
            name: String::new(),
            proxy: ProxyConfig::default(),
            endpoints: default_endpoints(),
            block: Vec::new(),
            host_guard: true,
            block_tunnels: true,
            tunnel_ports: Vec::new(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            log_file: None,
            log_level: log::LevelFilter::Warn,
            prev_result: None,
            annotations: BTreeMap::new(),
            valid_attachments: None,
        };
        let mut name = None;
        for (key, v) in obj {
            match key.as_str() {
                "cniVersion" => {}
                "name" => name = Some(as_str(key, v)?.to_string()),
                "type" => {
                    as_str(key, v)?;
                }
                "proxy" => cfg.proxy = parse_proxy(v)?,
                "endpoints" => cfg.endpoints = parse_endpoints(v)?,
                "block" => cfg.block = parse_block(v)?,
                "hostGuard" => {
                    cfg.host_guard =
                        v.as_bool().ok_or_else(|| invalid(key, format!("expected true or false, got {v}")))?;
                }
                "blockTunnels" => {
                    cfg.block_tunnels =
                        v.as_bool().ok_or_else(|| invalid(key, format!("expected true or false, got {v}")))?;
                }
                "tunnelPorts" => {
                    for (i, p) in as_array(key, v)?.iter().enumerate() {
                        let p = as_port(&format!("{key}[{i}]"), p)?;
                        if !cfg.tunnel_ports.contains(&p) {
                            cfg.tunnel_ports.push(p);
                        }
                    }
                }
                "stateDir" => cfg.state_dir = as_abs_path(key, v)?,
                "logFile" => cfg.log_file = Some(as_abs_path(key, v)?),
                "logLevel" => cfg.log_level = parse_level(v)?,
                "prevResult" => {
                    as_obj(key, v)?;
                    cfg.prev_result = Some(v.clone());
                }
                "capabilities" => parse_capabilities(v)?,
                "runtimeConfig" => cfg.annotations = parse_runtime_config(v)?,
                // Reserved for the runtime (CONVENTIONS.md `args.cni`); nothing in it is for us.
                "args" => {
                    as_obj(key, v)?;
                }
                "cni.dev/attachments" | "cni.dev/valid-attachments" => {
                    let list = parse_attachments(key, v)?;
                    let all = cfg.valid_attachments.get_or_insert_with(Vec::new);
                    all.extend(list);
                    all.sort();
                    all.dedup();
                }
                // Other runtime-reserved keys: the runtime may add them to any call.
                k if k.starts_with("cni.dev/") => log::debug!("ignoring runtime key {k}"),
                other => {
                    return Err(invalid(
                        other,
                        format!("unknown key {other:?}; metaguard accepts cniVersion, name, type, proxy, endpoints, block, hostGuard, blockTunnels, tunnelPorts, stateDir, logFile, logLevel, capabilities, runtimeConfig, args, prevResult"),
                    ))
                }
            }
        }
        cfg.name = match name {
            Some(n) if valid_cni_name(&n) => n,
            Some(n) => {
                return Err(invalid(
                    "name",
                    format!("network name {n:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"),
                ))
            }
            None => {
                return Err(invalid(
                    "name",
                    "missing: the network name is part of every pod record",
                ))
            }
        };
        check_proxy_not_blocked(&cfg)?;
        if command == Command::Gc && cfg.valid_attachments.is_none() {
            return Err(invalid(
                "cni.dev/attachments",
                "GC input lists no valid attachments (neither cni.dev/attachments nor cni.dev/valid-attachments); refusing to treat that as \"none are valid\"",
            ));
        }
        Ok(cfg)
    }

    /// The UDP ports the host guard drops as tunnel ports: the defaults, then `tunnelPorts`.
    pub fn all_tunnel_ports(&self) -> Vec<u16> {
        let mut v = crate::rules::DEFAULT_TUNNEL_PORTS.to_vec();
        for p in &self.tunnel_ports {
            if !v.contains(p) {
                v.push(*p);
            }
        }
        v
    }

    /// Every address rejected inside the pod and dropped by the host guard: each endpoint's
    /// address (all ports and protocols, the redirect comes first) plus `block`, deduplicated.
    pub fn blocked_networks(&self) -> Vec<IpNetwork> {
        let mut out: Vec<IpNetwork> = Vec::new();
        for ep in &self.endpoints {
            push_unique(&mut out, IpNetwork::from(ep.address));
        }
        for n in &self.block {
            push_unique(&mut out, *n);
        }
        out
    }
}

fn push_unique(v: &mut Vec<IpNetwork>, n: IpNetwork) {
    if !v.contains(&n) {
        v.push(n);
    }
}

fn parse_proxy(v: &Value) -> Result<ProxyConfig, CniError> {
    let obj = as_obj("proxy", v)?;
    let mut out = ProxyConfig::default();
    for (k, v) in obj {
        let key = format!("proxy.{k}");
        match k.as_str() {
            "ipv4" => {
                let s = as_str(&key, v)?;
                let ip: Ipv4Addr = s
                    .parse()
                    .map_err(|_| invalid(&key, format!("expected an IPv4 address (no port: the port is each endpoint's proxyPort), got {s:?}")))?;
                if !usable_address(&IpAddr::V4(ip)) {
                    return Err(invalid(
                        &key,
                        format!("{ip} cannot receive redirected traffic"),
                    ));
                }
                out.ipv4 = Some(ip);
            }
            "ipv6" => {
                let s = as_str(&key, v)?;
                let ip: Ipv6Addr = s.parse().map_err(|_| {
                    invalid(
                        &key,
                        format!("expected an IPv6 address without brackets or port, got {s:?}"),
                    )
                })?;
                if !usable_address(&IpAddr::V6(ip)) {
                    return Err(invalid(
                        &key,
                        format!("{ip} cannot receive redirected traffic"),
                    ));
                }
                out.ipv6 = Some(ip);
            }
            _ => {
                return Err(invalid(
                    &key,
                    format!("unknown key {key:?}; proxy accepts ipv4 and ipv6"),
                ))
            }
        }
    }
    Ok(out)
}

fn valid_endpoint_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse_endpoints(v: &Value) -> Result<Vec<Endpoint>, CniError> {
    let list = as_array("endpoints", v)?;
    let mut out: Vec<Endpoint> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = format!("endpoints[{i}]");
        let obj = as_obj(&at, item)?;
        let (mut name, mut address, mut port, mut proxy_port) = (None, None, 80u16, None);
        for (k, v) in obj {
            let key = format!("{at}.{k}");
            match k.as_str() {
                "name" => {
                    let s = as_str(&key, v)?;
                    if !valid_endpoint_name(s) {
                        return Err(invalid(
                            &key,
                            format!("{s:?}: use 1-63 letters, digits, '-', '_' or '.'"),
                        ));
                    }
                    name = Some(s.to_string());
                }
                "address" => {
                    let s = as_str(&key, v)?;
                    let ip: IpAddr = s
                        .parse()
                        .map_err(|_| invalid(&key, format!("expected an IP address, got {s:?}")))?;
                    if !usable_address(&ip) {
                        return Err(invalid(
                            &key,
                            format!("{ip} is not a usable endpoint address"),
                        ));
                    }
                    address = Some(ip);
                }
                "port" => port = as_port(&key, v)?,
                "proxyPort" => proxy_port = Some(as_port(&key, v)?),
                _ => {
                    return Err(invalid(
                        &key,
                        format!(
                            "unknown key {key:?}; an endpoint has name, address, port, proxyPort"
                        ),
                    ))
                }
            }
        }
        let ep = Endpoint {
            name: name.ok_or_else(|| invalid(&format!("{at}.name"), "missing"))?,
            address: address.ok_or_else(|| invalid(&format!("{at}.address"), "missing"))?,
            port,
            proxy_port: proxy_port.ok_or_else(|| invalid(&format!("{at}.proxyPort"), "missing"))?,
        };
        // The proxy tells endpoints apart by the port a connection arrives on, so proxy ports
        // must be unique; two redirects of one destination would make the second one dead.
        if let Some(other) = out.iter().find(|o| o.name == ep.name) {
            return Err(invalid(
                &format!("{at}.name"),
                format!("{:?} is used twice", other.name),
            ));
        }
        if let Some(other) = out.iter().find(|o| o.proxy_port == ep.proxy_port) {
            return Err(invalid(
                &format!("{at}.proxyPort"),
                format!(
                    "{} is already the proxy port of {:?}",
                    ep.proxy_port, other.name
                ),
            ));
        }
        if let Some(other) = out
            .iter()
            .find(|o| o.address == ep.address && o.port == ep.port)
        {
            return Err(invalid(
                &format!("{at}.address"),
                format!(
                    "{}:{} is already endpoint {:?}",
                    ep.address, ep.port, other.name
                ),
            ));
        }
        out.push(ep);
    }
    Ok(out)
}

fn parse_block(v: &Value) -> Result<Vec<IpNetwork>, CniError> {
    let list = as_array("block", v)?;
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let key = format!("block[{i}]");
        let s = as_str(&key, item)?;
        if let Some(addrs) = opt_in_addresses(s) {
            for a in addrs {
                push_unique(&mut out, IpNetwork::from(a));
            }
            continue;
        }
        let net: IpNetwork = s.parse().map_err(|_| {
            invalid(
                &key,
                format!(
                    "{s:?} is neither an opt-in name ({}) nor an IP address or CIDR",
                    OPT_IN_NAMES.join(", ")
                ),
            )
        })?;
        if net.prefix() == 0 {
            return Err(invalid(&key, format!("{s:?} would block all traffic")));
        }
        if net.network() != net.ip() {
            return Err(invalid(
                &key,
                format!(
                    "{s:?} has host bits set; did you mean {}/{}?",
                    net.network(),
                    net.prefix()
                ),
            ));
        }
        if !usable_address(&net.ip()) {
            return Err(invalid(&key, format!("{s:?} is not a unicast network")));
        }
        push_unique(&mut out, net);
    }
    Ok(out)
}

fn parse_level(v: &Value) -> Result<log::LevelFilter, CniError> {
    let s = as_str("logLevel", v)?;
    Ok(match s {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => {
            return Err(invalid(
                "logLevel",
                format!("{s:?}: expected off, error, warn, info, debug or trace"),
            ))
        }
    })
}

/// `capabilities` as written in the conflist. Only the pod-annotations capability is meaningful
/// for metaguard; declaring another one would make the runtime send data we would ignore.
fn parse_capabilities(v: &Value) -> Result<(), CniError> {
    let obj = as_obj("capabilities", v)?;
    for (k, v) in obj {
        let key = format!("capabilities.{k}");
        v.as_bool()
            .ok_or_else(|| invalid(&key, format!("expected true or false, got {v}")))?;
        if k != POD_ANNOTATIONS_CAP {
            return Err(invalid(
                &key,
                format!("unsupported capability {k:?}; metaguard supports {POD_ANNOTATIONS_CAP:?}"),
            ));
        }
    }
    Ok(())
}

fn parse_runtime_config(v: &Value) -> Result<BTreeMap<String, String>, CniError> {
    let obj = as_obj("runtimeConfig", v)?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let key = format!("runtimeConfig.{k}");
        if k != POD_ANNOTATIONS_CAP {
            return Err(invalid(
                &key,
                format!(
                    "unsupported runtime config {k:?}; metaguard reads {POD_ANNOTATIONS_CAP:?}"
                ),
            ));
        }
        if v.is_null() {
            continue;
        }
        for (ak, av) in as_obj(&key, v)? {
            let s = as_str(&format!("{key}.{ak}"), av)?;
            out.insert(ak.clone(), s.to_string());
        }
    }
    Ok(out)
}

fn parse_attachments(key: &str, v: &Value) -> Result<Vec<Attachment>, CniError> {
    let mut out = Vec::new();
    for (i, item) in as_array(key, v)?.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let obj = as_obj(&at, item)?;
        // Extra fields are the runtime's business and tolerated; the two we need are required.
        let cid = obj
            .get("containerID")
            .ok_or_else(|| invalid(&format!("{at}.containerID"), "missing"))?;
        let cid = as_str(&format!("{at}.containerID"), cid)?;
        let ifname = obj
            .get("ifname")
            .ok_or_else(|| invalid(&format!("{at}.ifname"), "missing"))?;
        let ifname = as_str(&format!("{at}.ifname"), ifname)?;
        if !valid_cni_name(cid) {
            return Err(invalid(
                &format!("{at}.containerID"),
                format!("{cid:?} is not a valid container ID"),
            ));
        }
        if !valid_ifname(ifname) {
            return Err(invalid(
                &format!("{at}.ifname"),
                format!("{ifname:?} is not a valid interface name"),
            ));
        }
        out.push(Attachment {
            container_id: cid.to_string(),
            ifname: ifname.to_string(),
        });
    }
    Ok(out)
}

/// A configured proxy address inside a blocked network would reject the redirected traffic
/// itself. (Gateways from prevResult are checked at ADD, when they are known.)
fn check_proxy_not_blocked(cfg: &Config) -> Result<(), CniError> {
    let blocked = cfg.blocked_networks();
    let configured = [
        cfg.proxy.ipv4.map(IpAddr::V4),
        cfg.proxy.ipv6.map(IpAddr::V6),
    ];
    for (ip, key) in configured.iter().zip(["proxy.ipv4", "proxy.ipv6"]) {
        if let Some(ip) = ip {
            if let Some(net) = blocked.iter().find(|n| n.contains(*ip)) {
                return Err(invalid(
                    key,
                    format!("{ip} is inside the blocked network {net}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"cniVersion": "1.0.0", "name": "mgnet", "type": "metaguard"})
    }

    fn with(k: &str, v: Value) -> Value {
        let mut b = base();
        b.as_object_mut().unwrap().insert(k.into(), v);
        b
    }

    fn parse(v: &Value) -> Result<Config, CniError> {
        Config::parse(&serde_json::to_vec(v).unwrap(), Command::Add)
    }

    fn err(v: &Value) -> CniError {
        parse(v).unwrap_err()
    }

    #[test]
    fn defaults() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.name, "mgnet");
        assert_eq!(c.proxy, ProxyConfig::default());
        assert_eq!(c.endpoints, default_endpoints());
        assert!(c.block.is_empty());
        assert!(c.host_guard);
        assert!(c.block_tunnels);
        assert_eq!(c.all_tunnel_ports(), vec![4789, 8472, 6081]);
        assert_eq!(c.state_dir, PathBuf::from("/run/metaguard"));
        assert_eq!(c.log_file, None);
        assert_eq!(c.log_level, log::LevelFilter::Warn);
        assert_eq!(c.prev_result, None);
        assert!(c.annotations.is_empty());
        let blocked: Vec<String> = c.blocked_networks().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            blocked,
            vec![
                "169.254.169.254/32",
                "fd00:ec2::254/128",
                "100.100.100.200/32"
            ]
        );
    }

    #[test]
    fn full_config() {
        let v = json!({
            "cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "metaguard",
            "proxy": {"ipv4": "10.0.0.1", "ipv6": "fd00::1"},
            "endpoints": [{"name": "imds", "address": "169.254.169.254", "proxyPort": 9000},
                          {"name": "other", "address": "fd00:ec2::254", "port": 8080, "proxyPort": 9001}],
            "block": ["ecs", "eks-pod-identity", "192.0.2.0/24", "2001:db8::1"],
            "hostGuard": false, "stateDir": "/tmp/mg", "logFile": "/var/log/mg.log", "logLevel": "debug",
            "blockTunnels": false, "tunnelPorts": [5555, 4789, 5555],
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"metaguard.io/policy": "aws"}},
            "args": {"cni": {"labels": []}},
            "prevResult": {"cniVersion": "0.3.1"},
            "cni.dev/something-new": 1
        });
        let c = parse(&v).unwrap();
        assert_eq!(c.cni_version, CniVersion::V0_3_1);
        assert_eq!(c.proxy.ipv4, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(c.proxy.ipv6, Some("fd00::1".parse().unwrap()));
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.endpoints[0].port, 80);
        assert_eq!(c.endpoints[1].port, 8080);
        let block: Vec<String> = c.block.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            block,
            vec![
                "169.254.170.2/32",
                "169.254.170.23/32",
                "fd00:ec2::23/128",
                "192.0.2.0/24",
                "2001:db8::1/128"
            ]
        );
        assert!(!c.host_guard);
        assert!(!c.block_tunnels);
        assert_eq!(c.tunnel_ports, vec![5555, 4789]);
        assert_eq!(c.all_tunnel_ports(), vec![4789, 8472, 6081, 5555]);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/mg"));
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/mg.log")));
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(
            c.annotations.get("metaguard.io/policy").map(String::as_str),
            Some("aws")
        );
        assert!(c.prev_result.is_some());
        assert_eq!(c.blocked_networks().len(), 2 + 5);
    }

    #[test]
    fn empty_endpoints_means_block_only() {
        let c = parse(&with("endpoints", json!([]))).unwrap();
        assert!(c.endpoints.is_empty());
        assert!(c.blocked_networks().is_empty());
    }

    #[test]
    fn decode_errors() {
        assert_eq!(Config::parse(b"{", Command::Add).unwrap_err().code, 6);
        assert_eq!(Config::parse(b"", Command::Add).unwrap_err().code, 6);
        assert_eq!(Config::parse(b"[1]", Command::Add).unwrap_err().code, 6);
        assert_eq!(Config::parse(b"\"x\"", Command::Add).unwrap_err().code, 6);
    }

    #[test]
    fn version_errors() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("cniVersion");
        assert_eq!(err(&v).code, 1);
        assert_eq!(err(&with("cniVersion", json!("0.2.0"))).code, 1);
        assert_eq!(err(&with("cniVersion", json!("1.2.0"))).code, 1);
        let e = err(&with("cniVersion", json!(1)));
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("cniVersion"));
    }

    /// Every unknown key, at every level, is code 7 and named.
    #[test]
    fn unknown_keys_are_named() {
        let cases = [
            (with("hostguard", json!(false)), "hostguard"),
            (with("ipam", json!({"type": "host-local"})), "ipam"),
            (with("dns", json!({})), "dns"),
            (with("ipMasq", json!(true)), "ipMasq"),
            (
                with("proxy", json!({"ipv4": "10.0.0.1", "port": 80})),
                "proxy.port",
            ),
            (
                with(
                    "endpoints",
                    json!([{"name": "a", "address": "1.2.3.4", "proxyPort": 1, "proto": "tcp"}]),
                ),
                "endpoints[0].proto",
            ),
            (
                with("capabilities", json!({"portMappings": true})),
                "capabilities.portMappings",
            ),
            (
                with("runtimeConfig", json!({"portMappings": []})),
                "runtimeConfig.portMappings",
            ),
        ];
        for (v, key) in cases {
            let e = err(&v);
            assert_eq!(e.code, 7, "{v}");
            assert!(e.msg.ends_with(key), "{key}: {e}");
        }
    }

    /// Every bad value is code 7 and names its key.
    #[test]
    fn bad_values_are_named() {
        let ep = |extra: Value| {
            let mut e = json!({"name": "a", "address": "1.2.3.4", "proxyPort": 9000});
            for (k, v) in extra.as_object().unwrap() {
                e.as_object_mut().unwrap().insert(k.clone(), v.clone());
            }
            with("endpoints", json!([e]))
        };
        let cases = [
            (with("name", json!("bad/name")), "name"),
            (with("name", json!(3)), "name"),
            (with("type", json!(3)), "type"),
            (with("proxy", json!("10.0.0.1")), "proxy"),
            (
                with("proxy", json!({"ipv4": "10.0.0.1:8169"})),
                "proxy.ipv4",
            ),
            (with("proxy", json!({"ipv4": "fd00::1"})), "proxy.ipv4"),
            (with("proxy", json!({"ipv4": "0.0.0.0"})), "proxy.ipv4"),
            (with("proxy", json!({"ipv6": "10.0.0.1"})), "proxy.ipv6"),
            (with("proxy", json!({"ipv6": "[fd00::1]"})), "proxy.ipv6"),
            (with("proxy", json!({"ipv6": "ff02::1"})), "proxy.ipv6"),
            (with("proxy", json!({"ipv4": 1})), "proxy.ipv4"),
            (with("endpoints", json!({})), "endpoints"),
            (with("endpoints", json!(["x"])), "endpoints[0]"),
            (ep(json!({"name": ""})), "endpoints[0].name"),
            (ep(json!({"name": "a b"})), "endpoints[0].name"),
            (ep(json!({"address": "nope"})), "endpoints[0].address"),
            (ep(json!({"address": "224.0.0.1"})), "endpoints[0].address"),
            (ep(json!({"port": 0})), "endpoints[0].port"),
            (ep(json!({"port": 65536})), "endpoints[0].port"),
            (ep(json!({"port": "80"})), "endpoints[0].port"),
            (ep(json!({"proxyPort": -1})), "endpoints[0].proxyPort"),
            (ep(json!({"proxyPort": 1.5})), "endpoints[0].proxyPort"),
            (
                with("endpoints", json!([{"address": "1.2.3.4", "proxyPort": 1}])),
                "endpoints[0].name",
            ),
            (
                with("endpoints", json!([{"name": "a", "proxyPort": 1}])),
                "endpoints[0].address",
            ),
            (
                with("endpoints", json!([{"name": "a", "address": "1.2.3.4"}])),
                "endpoints[0].proxyPort",
            ),
            (
                with(
                    "endpoints",
                    json!([{"name": "a", "address": "1.2.3.4", "proxyPort": 1},
                                         {"name": "a", "address": "1.2.3.5", "proxyPort": 2}]),
                ),
                "endpoints[1].name",
            ),
            (
                with(
                    "endpoints",
                    json!([{"name": "a", "address": "1.2.3.4", "proxyPort": 1},
                                         {"name": "b", "address": "1.2.3.5", "proxyPort": 1}]),
                ),
                "endpoints[1].proxyPort",
            ),
            (
                with(
                    "endpoints",
                    json!([{"name": "a", "address": "1.2.3.4", "proxyPort": 1},
                                         {"name": "b", "address": "1.2.3.4", "proxyPort": 2}]),
                ),
                "endpoints[1].address",
            ),
            (with("block", json!("ecs")), "block"),
            (with("block", json!(["aws"])), "block[0]"),
            (with("block", json!(["ecs", 5])), "block[1]"),
            (with("block", json!(["0.0.0.0/0"])), "block[0]"),
            (with("block", json!(["::/0"])), "block[0]"),
            (with("block", json!(["10.0.0.1/8"])), "block[0]"),
            (with("block", json!(["10.0.0.0/33"])), "block[0]"),
            (with("block", json!(["224.0.0.0/4"])), "block[0]"),
            (with("hostGuard", json!("false")), "hostGuard"),
            (with("hostGuard", json!(0)), "hostGuard"),
            (with("blockTunnels", json!("no")), "blockTunnels"),
            (with("tunnelPorts", json!(5555)), "tunnelPorts"),
            (with("tunnelPorts", json!([5555, 0])), "tunnelPorts[1]"),
            (with("tunnelPorts", json!([70000])), "tunnelPorts[0]"),
            (with("tunnelPorts", json!(["5555"])), "tunnelPorts[0]"),
            (with("stateDir", json!("relative/dir")), "stateDir"),
            (with("stateDir", json!(1)), "stateDir"),
            (with("logFile", json!("x.log")), "logFile"),
            (with("logLevel", json!("verbose")), "logLevel"),
            (with("logLevel", json!(3)), "logLevel"),
            (with("prevResult", json!([])), "prevResult"),
            (with("capabilities", json!([])), "capabilities"),
            (
                with(
                    "capabilities",
                    json!({"io.kubernetes.cri.pod-annotations": "yes"}),
                ),
                "capabilities.io.kubernetes.cri.pod-annotations",
            ),
            (
                with(
                    "runtimeConfig",
                    json!({"io.kubernetes.cri.pod-annotations": {"a": 1}}),
                ),
                "runtimeConfig.io.kubernetes.cri.pod-annotations.a",
            ),
            (
                with(
                    "runtimeConfig",
                    json!({"io.kubernetes.cri.pod-annotations": []}),
                ),
                "runtimeConfig.io.kubernetes.cri.pod-annotations",
            ),
            (with("args", json!("x")), "args"),
            (
                {
                    let mut v = with("proxy", json!({"ipv4": "192.0.2.1"}));
                    v.as_object_mut()
                        .unwrap()
                        .insert("block".into(), json!(["192.0.2.0/24"]));
                    v
                },
                "proxy.ipv4",
            ),
        ];
        for (v, key) in cases {
            let e = err(&v);
            assert_eq!(e.code, 7, "{v}: {e}");
            assert!(e.msg.ends_with(key), "expected key {key}: {e}");
        }
    }

    #[test]
    fn missing_name() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("name");
        let e = err(&v);
        assert_eq!(e.code, 7);
        assert!(e.msg.ends_with("name"));
    }

    #[test]
    fn gc_attachments_from_both_keys() {
        let mut v = with("cniVersion", json!("1.1.0"));
        let o = v.as_object_mut().unwrap();
        o.insert(
            "cni.dev/attachments".into(),
            json!([{"containerID": "a", "ifname": "eth0"}]),
        );
        o.insert(
            "cni.dev/valid-attachments".into(),
            json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "B", "ifname": "net1", "extra": 1}]),
        );
        let c = Config::parse(&serde_json::to_vec(&v).unwrap(), Command::Gc).unwrap();
        let got = c.valid_attachments.unwrap();
        assert_eq!(
            got,
            vec![
                Attachment {
                    container_id: "B".into(),
                    ifname: "net1".into()
                },
                Attachment {
                    container_id: "a".into(),
                    ifname: "eth0".into()
                },
            ]
        );
    }

    #[test]
    fn gc_without_list_is_refused_and_empty_list_accepted() {
        let v = with("cniVersion", json!("1.1.0"));
        let e = Config::parse(&serde_json::to_vec(&v).unwrap(), Command::Gc).unwrap_err();
        assert_eq!(e.code, 7);
        let v = with("cni.dev/attachments", json!([]));
        let c = Config::parse(&serde_json::to_vec(&v).unwrap(), Command::Gc).unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
    }

    #[test]
    fn gc_bad_entries_are_named() {
        for (list, key) in [
            (json!({}), "cni.dev/attachments"),
            (json!([1]), "cni.dev/attachments[0]"),
            (
                json!([{"ifname": "eth0"}]),
                "cni.dev/attachments[0].containerID",
            ),
            (
                json!([{"containerID": "a"}]),
                "cni.dev/attachments[0].ifname",
            ),
            (
                json!([{"containerID": "../a", "ifname": "eth0"}]),
                "cni.dev/attachments[0].containerID",
            ),
            (
                json!([{"containerID": "a", "ifname": "a/b"}]),
                "cni.dev/attachments[0].ifname",
            ),
        ] {
            let v = with("cni.dev/attachments", list);
            let e = Config::parse(&serde_json::to_vec(&v).unwrap(), Command::Gc).unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.ends_with(key), "{key}: {e}");
        }
    }

    /// The examples in conf/ are what a runtime would hand metaguard: the list's cniVersion and
    /// name injected into the metaguard entry.
    #[test]
    fn example_conflists_are_valid() {
        for text in [
            include_str!("../../conf/10-metaguard.conflist"),
            include_str!("../../conf/metaguard-0.3.1.conflist"),
        ] {
            let list: Value = serde_json::from_str(text).unwrap();
            let mut entry = list["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["type"] == "metaguard")
                .unwrap()
                .clone();
            entry["cniVersion"] = list["cniVersion"].clone();
            entry["name"] = list["name"].clone();
            let c = parse(&entry).unwrap();
            assert_eq!(c.name, "mgnet");
            assert!(c.host_guard);
        }
    }

    #[test]
    fn peek() {
        assert_eq!(
            peek_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(peek_version(b"{"), None);
        assert_eq!(peek_version(br#"{"cniVersion":1}"#), None);
    }
}
