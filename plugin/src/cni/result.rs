//! prevResult: passed through as raw JSON, read through small typed views.
//!
//! A chained plugin must print the previous result, with its own changes, in the input's
//! `cniVersion`. metaguard changes nothing, so it prints the raw JSON it received: fields it does
//! not model (1.1.0's `socketPath`, `pciID`, route `table`/`scope`/..., `dns`, anything a future
//! version adds) survive. The only edits are the ones the version asks for: `cniVersion` is set to
//! the input's, and `ips[].version` is added (up to 0.4.0) or removed (from 1.0.0) if the runtime
//! handed us a result in the other shape.
//!
//! The views below read only what metaguard needs (interfaces, addresses, gateways) and refuse
//! what they cannot understand with code 7 naming the field: a misread address would put the
//! wrong source address into the host guard and the pod record.

use super::error::CniError;
use super::version::CniVersion;
use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceView {
    pub name: String,
    /// The isolation domain (netns path) for container-side interfaces; `None` (or empty in the
    /// JSON) for host-side ones.
    pub sandbox: Option<String>,
    /// `mac`, when it is a 6-byte Ethernet address (`aa:bb:cc:dd:ee:ff`). Anything else (absent,
    /// another link type, malformed) is `None`: the MAC is then read from the pod's namespace.
    pub mac: Option<[u8; 6]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpView {
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`, when the result gives one.
    pub interface: Option<usize>,
}

/// What metaguard reads from a prevResult.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResultView {
    pub interfaces: Vec<InterfaceView>,
    pub ips: Vec<IpView>,
}

/// `aa:bb:cc:dd:ee:ff` (either case) to bytes; `None` for anything else.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        // from_str_radix alone would take "+a".
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn bad(field: &str, details: impl Into<String>) -> CniError {
    CniError::invalid_config(&format!("prevResult.{field}"), details)
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(field, format!("expected a string, got {other}"))),
    }
}

impl ResultView {
    /// Reads a prevResult object (0.3.0 to 1.1.0 shapes).
    pub fn parse(prev: &Value) -> Result<ResultView, CniError> {
        let Value::Object(obj) = prev else {
            return Err(CniError::invalid_config(
                "prevResult",
                format!("expected an object, got {prev}"),
            ));
        };
        let mut view = ResultView::default();
        if let Some(ifs) = obj.get("interfaces") {
            let Value::Array(ifs) = ifs else {
                return Err(bad("interfaces", "expected an array"));
            };
            for (i, v) in ifs.iter().enumerate() {
                let field = format!("interfaces[{i}]");
                let Value::Object(o) = v else {
                    return Err(bad(&field, "expected an object"));
                };
                let name = opt_str(o, "name", &format!("{field}.name"))?
                    .ok_or_else(|| bad(&format!("{field}.name"), "missing"))?;
                let sandbox = opt_str(o, "sandbox", &format!("{field}.sandbox"))?
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                let mac = opt_str(o, "mac", &format!("{field}.mac"))?.and_then(parse_mac);
                view.interfaces.push(InterfaceView {
                    name: name.to_string(),
                    sandbox,
                    mac,
                });
            }
        }
        if let Some(ips) = obj.get("ips") {
            let Value::Array(ips) = ips else {
                return Err(bad("ips", "expected an array"));
            };
            for (i, v) in ips.iter().enumerate() {
                view.ips.push(parse_ip(i, v, view.interfaces.len())?);
            }
        }
        Ok(view)
    }

    /// Addresses that belong to the pod: those on a container-side interface (one with a
    /// `sandbox`), and those whose entry names no interface (the result cannot say otherwise, and
    /// IPAM-style results omit it). Deduplicated, in result order.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in self.pod_ip_entries() {
            if !out.contains(&ip.address.ip()) {
                out.push(ip.address.ip());
            }
        }
        out
    }

    fn pod_ip_entries(&self) -> impl Iterator<Item = &IpView> {
        self.ips.iter().filter(|ip| match ip.interface {
            None => true,
            Some(i) => self
                .interfaces
                .get(i)
                .is_some_and(|itf| itf.sandbox.is_some()),
        })
    }

    /// The gateway of the first pod address of the family of `v6`.
    pub fn gateway(&self, v6: bool) -> Option<IpAddr> {
        self.pod_ip_entries()
            .filter(|ip| ip.address.is_ipv6() == v6)
            .find_map(|ip| ip.gateway)
    }

    /// The MAC prevResult gives for the pod's interface `ifname` (the one with a sandbox).
    pub fn sandbox_mac(&self, ifname: &str) -> Option<[u8; 6]> {
        self.interfaces
            .iter()
            .find(|i| i.sandbox.is_some() && i.name == ifname)
            .and_then(|i| i.mac)
    }

    /// Host-side interfaces (no sandbox), in result order.
    pub fn host_interfaces(&self) -> impl Iterator<Item = &InterfaceView> {
        self.interfaces.iter().filter(|i| i.sandbox.is_none())
    }
}

fn parse_ip(i: usize, v: &Value, n_interfaces: usize) -> Result<IpView, CniError> {
    let field = format!("ips[{i}]");
    let Value::Object(o) = v else {
        return Err(bad(&field, "expected an object"));
    };
    let addr_s = opt_str(o, "address", &format!("{field}.address"))?
        .ok_or_else(|| bad(&format!("{field}.address"), "missing"))?;
    let address: IpNetwork = addr_s.parse().map_err(|_| {
        bad(
            &format!("{field}.address"),
            format!("{addr_s:?} is not an address in CIDR notation"),
        )
    })?;
    if !addr_s.contains('/') {
        return Err(bad(
            &format!("{field}.address"),
            format!("{addr_s:?} has no prefix length"),
        ));
    }
    let gateway = match opt_str(o, "gateway", &format!("{field}.gateway"))? {
        None | Some("") => None,
        Some(g) => {
            let gw: IpAddr = g.parse().map_err(|_| {
                bad(
                    &format!("{field}.gateway"),
                    format!("{g:?} is not an IP address"),
                )
            })?;
            if gw.is_ipv6() != address.is_ipv6() {
                return Err(bad(
                    &format!("{field}.gateway"),
                    format!("{gw} is not of the family of {address}"),
                ));
            }
            Some(gw)
        }
    };
    // 0.3.x/0.4.0 say the family in "version"; when present it must agree with the address.
    match opt_str(o, "version", &format!("{field}.version"))? {
        None => {}
        Some("4") if address.is_ipv4() => {}
        Some("6") if address.is_ipv6() => {}
        Some(other) => {
            return Err(bad(
                &format!("{field}.version"),
                format!("{other:?} does not match address {address}"),
            ));
        }
    }
    let interface = match o.get("interface") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let idx = n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    bad(
                        &format!("{field}.interface"),
                        format!("{n} is not an index"),
                    )
                })?;
            if idx >= n_interfaces {
                return Err(bad(
                    &format!("{field}.interface"),
                    format!("index {idx} is outside interfaces (length {n_interfaces})"),
                ));
            }
            Some(idx)
        }
        Some(other) => {
            return Err(bad(
                &format!("{field}.interface"),
                format!("expected an index, got {other}"),
            ))
        }
    };
    Ok(IpView {
        address,
        gateway,
        interface,
    })
}

/// The result metaguard prints: `prev` unchanged except `cniVersion` (set to `version`) and the
/// `ips[].version` field the target version expects.
pub fn pass_through(prev: &Value, version: CniVersion) -> Value {
    let mut out = prev.clone();
    let Value::Object(obj) = &mut out else {
        return out;
    };
    obj.insert("cniVersion".into(), Value::String(version.as_str().into()));
    if let Some(Value::Array(ips)) = obj.get_mut("ips") {
        for ip in ips.iter_mut() {
            let Value::Object(ip) = ip else { continue };
            if version.ips_have_version() {
                if !ip.contains_key("version") {
                    let fam = ip
                        .get("address")
                        .and_then(Value::as_str)
                        .and_then(|a| a.parse::<IpNetwork>().ok())
                        .map(|a| if a.is_ipv6() { "6" } else { "4" });
                    if let Some(fam) = fam {
                        ip.insert("version".into(), Value::String(fam.into()));
                    }
                }
            } else {
                ip.remove("version");
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// What Debian's bridge plugin (1.1.1) prints at 0.3.1 and 0.4.0 (recorded on this machine).
    pub fn bridge_result_03(version: &str) -> Value {
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "mgbr0", "mac": "7e:ef:b4:0a:d6:6b"},
                {"name": "veth0186d0f8", "mac": "de:bc:d4:c5:fc:4d"},
                {"name": "eth0", "mac": "d6:13:07:2b:d1:62", "sandbox": "/var/run/netns/pod"}
            ],
            "ips": [
                {"version": "4", "interface": 2, "address": "10.99.1.2/24", "gateway": "10.99.1.1"},
                {"version": "6", "interface": 2, "address": "fd99:1::2/64", "gateway": "fd99:1::1"}
            ],
            "dns": {}
        })
    }

    /// Debian's bridge at 1.0.0 (recorded): no `ips[].version`.
    pub fn bridge_result_10() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "mgbr0", "mac": "7e:ef:b4:0a:d6:6b"},
                {"name": "veth822b8c5f", "mac": "ea:49:2c:3a:bc:a8"},
                {"name": "eth0", "mac": "be:4c:f7:62:83:38", "sandbox": "/var/run/netns/pod"}
            ],
            "ips": [
                {"interface": 2, "address": "10.99.1.4/24", "gateway": "10.99.1.1"},
                {"interface": 2, "address": "fd99:1::4/64", "gateway": "fd99:1::1"}
            ],
            "dns": {}
        })
    }

    /// A 1.1.0 result with the fields 1.1.0 added (socketPath, pciID, route table/scope/...).
    pub fn result_11() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "7e:ef:b4:0a:d6:6b"},
                {"name": "veth1234", "mac": "ea:49:2c:3a:bc:a8", "mtu": 1500},
                {"name": "eth0", "mac": "be:4c:f7:62:83:38", "sandbox": "/run/netns/pod",
                 "socketPath": "/run/x.sock", "pciID": "0000:00:1f.6"}
            ],
            "ips": [
                {"interface": 2, "address": "10.1.0.5/16", "gateway": "10.1.0.1"},
                {"interface": 0, "address": "10.1.0.1/16"}
            ],
            "routes": [{"dst": "0.0.0.0/0", "priority": 10, "table": 100, "scope": 0, "mtu": 1400, "advmss": 1360}],
            "dns": {"nameservers": ["10.1.0.1"]}
        })
    }

    /// ptp at 0.3.1: the host veth only (no bridge), host address without interface in sandbox.
    pub fn ptp_result() -> Value {
        json!({
            "cniVersion": "0.3.1",
            "interfaces": [
                {"name": "veth5e2c9b0f", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "sandbox": "/var/run/netns/pod"}
            ],
            "ips": [{"version": "4", "interface": 1, "address": "10.1.1.2/24", "gateway": "10.1.1.1"}]
        })
    }

    #[test]
    fn reads_031_and_040() {
        for v in ["0.3.1", "0.4.0"] {
            let r = ResultView::parse(&bridge_result_03(v)).unwrap();
            assert_eq!(r.interfaces.len(), 3);
            assert_eq!(
                r.pod_ips(),
                vec![
                    "10.99.1.2".parse::<IpAddr>().unwrap(),
                    "fd99:1::2".parse().unwrap()
                ]
            );
            assert_eq!(r.gateway(false), Some("10.99.1.1".parse().unwrap()));
            assert_eq!(r.gateway(true), Some("fd99:1::1".parse().unwrap()));
            let host: Vec<_> = r.host_interfaces().map(|i| i.name.as_str()).collect();
            assert_eq!(host, vec!["mgbr0", "veth0186d0f8"]);
        }
    }

    #[test]
    fn reads_100() {
        let r = ResultView::parse(&bridge_result_10()).unwrap();
        assert_eq!(r.pod_ips().len(), 2);
        assert_eq!(r.gateway(true), Some("fd99:1::1".parse().unwrap()));
    }

    #[test]
    fn reads_110_and_ignores_host_side_ips() {
        let r = ResultView::parse(&result_11()).unwrap();
        // 10.1.0.1 is on interface 0 (the bridge, no sandbox): not the pod's.
        assert_eq!(r.pod_ips(), vec!["10.1.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.gateway(false), Some("10.1.0.1".parse().unwrap()));
        assert_eq!(r.gateway(true), None);
    }

    #[test]
    fn reads_ptp() {
        let r = ResultView::parse(&ptp_result()).unwrap();
        let host: Vec<_> = r.host_interfaces().map(|i| i.name.as_str()).collect();
        assert_eq!(host, vec!["veth5e2c9b0f"]);
        assert_eq!(r.pod_ips(), vec!["10.1.1.2".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn ips_without_interface_count_as_the_pods() {
        let r =
            ResultView::parse(&json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}))
                .unwrap();
        assert_eq!(r.pod_ips(), vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.gateway(false), None);
    }

    #[test]
    fn macs_are_read_for_the_sandbox_interface() {
        let v = ResultView::parse(&bridge_result_10()).unwrap();
        assert_eq!(
            v.sandbox_mac("eth0"),
            Some([0xbe, 0x4c, 0xf7, 0x62, 0x83, 0x38])
        );
        // The host veth has a MAC too, but it is not the pod's.
        assert_eq!(v.sandbox_mac("veth822b8c5f"), None);
        assert_eq!(v.sandbox_mac("eth1"), None);
        for (s, want) in [
            (
                "AA:bb:0c:dd:ee:01",
                Some([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x01]),
            ),
            ("aa:bb:cc:dd:ee", None),
            ("aa:bb:cc:dd:ee:ff:00", None),
            ("aa:bb:cc:dd:ee:f", None),
            ("aa-bb-cc-dd-ee-ff", None),
            ("", None),
            ("+a:bb:cc:dd:ee:ff", None),
        ] {
            assert_eq!(parse_mac(s), want, "{s:?}");
        }
    }

    #[test]
    fn empty_sandbox_means_host() {
        let r =
            ResultView::parse(&json!({"interfaces": [{"name": "veth1", "sandbox": ""}]})).unwrap();
        assert_eq!(r.host_interfaces().count(), 1);
    }

    #[test]
    fn malformed_results_name_the_field() {
        let cases = [
            (json!([]), "prevResult"),
            (json!({"interfaces": {}}), "prevResult.interfaces"),
            (
                json!({"interfaces": [{"mac": "x"}]}),
                "prevResult.interfaces[0].name",
            ),
            (
                json!({"interfaces": [{"name": 3}]}),
                "prevResult.interfaces[0].name",
            ),
            (
                json!({"ips": [{"address": "10.0.0.300/24"}]}),
                "prevResult.ips[0].address",
            ),
            (
                json!({"ips": [{"address": "10.0.0.3"}]}),
                "prevResult.ips[0].address",
            ),
            (json!({"ips": [{}]}), "prevResult.ips[0].address"),
            (
                json!({"ips": [{"address": "10.0.0.3/24", "gateway": "fd00::1"}]}),
                "prevResult.ips[0].gateway",
            ),
            (
                json!({"ips": [{"address": "10.0.0.3/24", "gateway": "x"}]}),
                "prevResult.ips[0].gateway",
            ),
            (
                json!({"ips": [{"address": "10.0.0.3/24", "version": "6"}]}),
                "prevResult.ips[0].version",
            ),
            (
                json!({"ips": [{"address": "10.0.0.3/24", "interface": 0}]}),
                "prevResult.ips[0].interface",
            ),
            (
                json!({"ips": [{"address": "10.0.0.3/24", "interface": -1}]}),
                "prevResult.ips[0].interface",
            ),
            (
                json!({"ips": [{"address": "10.0.0.3/24", "interface": "0"}]}),
                "prevResult.ips[0].interface",
            ),
        ];
        for (v, field) in cases {
            let e = ResultView::parse(&v).unwrap_err();
            assert_eq!(e.code, 7, "{v}");
            assert!(e.msg.ends_with(field), "{v}: {e}");
        }
    }

    #[test]
    fn pass_through_same_version_is_unchanged() {
        for (v, r) in [
            (CniVersion::V0_3_1, bridge_result_03("0.3.1")),
            (CniVersion::V0_4_0, bridge_result_03("0.4.0")),
            (CniVersion::V1_0_0, bridge_result_10()),
            (CniVersion::V1_1_0, result_11()),
        ] {
            assert_eq!(pass_through(&r, v), r, "{v}");
        }
    }

    #[test]
    fn pass_through_converts_ip_version_fields() {
        let down = pass_through(&bridge_result_10(), CniVersion::V0_4_0);
        assert_eq!(down["cniVersion"], "0.4.0");
        assert_eq!(down["ips"][0]["version"], "4");
        assert_eq!(down["ips"][1]["version"], "6");
        let up = pass_through(&bridge_result_03("0.3.1"), CniVersion::V1_0_0);
        assert_eq!(up["cniVersion"], "1.0.0");
        assert!(up["ips"][0].get("version").is_none());
        // Everything else is untouched.
        assert_eq!(up["interfaces"], bridge_result_03("0.3.1")["interfaces"]);
        assert_eq!(up["dns"], json!({}));
    }

    #[test]
    fn pass_through_adds_missing_cni_version() {
        let mut r = bridge_result_10();
        r.as_object_mut().unwrap().remove("cniVersion");
        assert_eq!(pass_through(&r, CniVersion::V1_0_0), bridge_result_10());
    }
}
