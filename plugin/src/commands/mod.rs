//! The CNI commands, and what ADD and CHECK share: turning (environment, configuration,
//! prevResult) into the exact state metaguard wants (a [`Plan`]), and what DEL and GC share:
//! tearing one attachment down ([`teardown`]).
//!
//! The commands reach the kernel through two parameters, so they can be tested without root:
//! a [`LinkProbe`] (what the host's devices are) and a [`Firewall`] (the tables). `lib.rs`
//! passes the real ones.

pub mod add;
pub mod check;
pub mod claims;
pub mod del;
pub mod gc;
pub mod status;

#[cfg(test)]
mod firewall_tests;

use crate::cni::error::{code, CniError};
use crate::cni::result::ResultView;
use crate::cni::Env;
use crate::config::Config;
use crate::firewall::{Deleted, Firewall, NftError};
use crate::hostif::{self, LinkProbe};
use crate::netns::NetnsError;
use crate::podlink::{self, PodLink, PodLinkError};
use crate::rules::{self, HostGuard, PodRuleset, Redirect};
use ipnetwork::IpNetwork;
use metaguard_common::ids::attachment_key;
use metaguard_common::record::{PodRecord, RECORD_VERSION};
use metaguard_common::state::{StateDir, StateError};
use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest attachment key ADD accepts: the key is stored as the tables' tag in nftables
/// user data, which `nft` limits to this many bytes.
pub const MAX_KEY_LEN: usize = 240;

/// Everything ADD installs for one attachment, and CHECK expects to find.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub key: String,
    pub pod: PodRuleset,
    /// `None` when prevResult names no host-side veth or `hostGuard` is false.
    pub guard: Option<HostGuard>,
    pub record: PodRecord,
}

/// The attachment key of an ADD/DEL/CHECK call.
pub fn key_of(env: &Env, cfg: &Config) -> String {
    attachment_key(&cfg.name, env.container_id(), env.ifname())
}

/// Builds the plan for an attachment (no side effects apart from asking `probe` about host
/// interfaces). `prev` is the prevResult, already required by the caller.
pub fn plan(
    env: &Env,
    cfg: &Config,
    prev: &serde_json::Value,
    probe: &dyn LinkProbe,
) -> Result<Plan, CniError> {
    let view = ResultView::parse(prev)?;
    let pod_ips = view.pod_ips();
    if pod_ips.is_empty() {
        return Err(CniError::invalid_config(
            "prevResult",
            "prevResult lists no IP address for the pod; metaguard needs the pod's addresses (is it chained after an interface plugin with IPAM?)",
        ));
    }
    let blocked = cfg.blocked_networks();
    let redirects = redirects(cfg, &view, &pod_ips, &blocked)?;
    let key = checked_key(env, cfg)?;
    let pod = PodRuleset {
        table: rules::table_name(&key),
        tag: key.clone(),
        redirects,
        blocked,
    };
    let host_if = hostif::find(&view, probe)?;
    let guard = host_guard(env, cfg, &view, probe, host_if.as_deref(), &pod, &pod_ips)?;
    let record = record(env, cfg, pod_ips, host_if, guard.as_ref());
    Ok(Plan {
        key,
        pod,
        guard,
        record,
    })
}

/// The pod's DNATs: each endpoint to the proxy address of its family. An endpoint whose family
/// has no proxy address is left out (it stays blocked: fail closed).
fn redirects(
    cfg: &Config,
    view: &ResultView,
    pod_ips: &[IpAddr],
    blocked: &[IpNetwork],
) -> Result<Vec<Redirect>, CniError> {
    let proxy_v4 = proxy_for(
        cfg.proxy.ipv4.map(IpAddr::V4),
        view.gateway(false),
        "proxy.ipv4",
        blocked,
    )?;
    let proxy_v6 = proxy_for(
        cfg.proxy.ipv6.map(IpAddr::V6),
        view.gateway(true),
        "proxy.ipv6",
        blocked,
    )?;
    let mut redirects = Vec::new();
    for ep in &cfg.endpoints {
        let (to, has_family) = if ep.address.is_ipv6() {
            (proxy_v6, pod_ips.iter().any(IpAddr::is_ipv6))
        } else {
            (proxy_v4, pod_ips.iter().any(IpAddr::is_ipv4))
        };
        match to {
            Some(to) => redirects.push(Redirect { dest: ep.address, dest_port: ep.port, to, to_port: ep.proxy_port }),
            // Fail closed: without a proxy for this family the endpoint is only rejected.
            None if has_family => log::warn!(
                "endpoint {} ({}) is rejected, not redirected: no proxy address for its family (set proxy.{} or give the pod a gateway)",
                ep.name,
                ep.address,
                if ep.address.is_ipv6() { "ipv6" } else { "ipv4" }
            ),
            None => log::debug!("endpoint {} rejected: the pod has no address of its family", ep.name),
        }
    }
    Ok(redirects)
}

/// The attachment key, refused when too long to be a table's tag.
fn checked_key(env: &Env, cfg: &Config) -> Result<String, CniError> {
    let key = key_of(env, cfg);
    if key.len() > MAX_KEY_LEN {
        return Err(CniError::invalid_env(
            "CNI_CONTAINERID",
            format!(
                "the attachment key (network:container:ifname) is {} bytes; metaguard tags its tables with it and nftables keeps at most {MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    Ok(key)
}

/// The host guard for the host-side veth `host_if`, when there is one and `hostGuard` is on. It
/// shares the pod table's name, tag and blocked networks.
fn host_guard(
    env: &Env,
    cfg: &Config,
    view: &ResultView,
    probe: &dyn LinkProbe,
    host_if: Option<&str>,
    pod: &PodRuleset,
    pod_ips: &[IpAddr],
) -> Result<Option<HostGuard>, CniError> {
    let guard = match (host_if, cfg.host_guard) {
        (Some(ifname), true) => {
            let link = pod_link(env, probe)?;
            // prevResult's MAC first (what the interface plugin set), else the kernel's.
            let pod_mac = view.sandbox_mac(env.ifname()).or(link.mac);
            if pod_mac.is_none() {
                log::warn!(
                    "no Ethernet MAC known for {}: layer 2 unguarded on {ifname} (the pod could send frames with a neighbour's MAC)",
                    env.ifname()
                );
            }
            Some(HostGuard {
                table: pod.table.clone(),
                tag: pod.tag.clone(),
                host_ifname: ifname.to_string(),
                pod_ips: pod_ips.to_vec(),
                blocked: pod.blocked.clone(),
                pod_mac,
                pod_link_locals: link.link_locals,
                block_tunnels: cfg.block_tunnels,
                tunnel_ports: cfg.all_tunnel_ports(),
            })
        }
        (Some(ifname), false) => {
            log::info!("hostGuard is false: {ifname} not guarded");
            None
        }
        (None, _) => {
            log::warn!(
                "prevResult names no host-side veth: no host guard; the pod's own rules are the only enforcement (a container with CAP_NET_ADMIN can remove them)"
            );
            None
        }
    };
    if let Some(g) = guard.as_ref().filter(|g| !g.block_tunnels) {
        log::info!(
            "blockTunnels is false: pod packets a node could decapsulate pass {}",
            g.host_ifname
        );
    }
    Ok(guard)
}

/// The pod record ADD writes: who the pod is, its addresses and how it is guarded.
fn record(
    env: &Env,
    cfg: &Config,
    pod_ips: Vec<IpAddr>,
    host_if: Option<String>,
    guard: Option<&HostGuard>,
) -> PodRecord {
    let pod_mac = guard.and_then(|g| g.pod_mac);
    PodRecord {
        version: RECORD_VERSION,
        container_id: env.container_id().to_string(),
        network: cfg.name.clone(),
        ifname: env.ifname().to_string(),
        netns: env.netns.clone().unwrap_or_default(),
        ips: pod_ips,
        namespace: env.args.pod_namespace.clone(),
        pod_name: env.args.pod_name.clone(),
        pod_uid: env.args.pod_uid.clone(),
        annotations: cfg.annotations.clone(),
        host_interface: host_if,
        host_guard: guard.is_some(),
        mac: pod_mac.as_ref().map(podlink::format_mac),
        layer2_guard: pod_mac.is_some(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// The proxy address of one family: configured, else the gateway; never inside a blocked
/// network (the redirected traffic would be rejected by the pod's own rules).
fn proxy_for(
    configured: Option<IpAddr>,
    gateway: Option<IpAddr>,
    key: &str,
    blocked: &[IpNetwork],
) -> Result<Option<IpAddr>, CniError> {
    let Some(ip) = configured.or(gateway) else {
        return Ok(None);
    };
    if let Some(net) = blocked.iter().find(|n| n.contains(ip)) {
        let what = if configured.is_some() {
            "configured"
        } else {
            "the pod's gateway, used as"
        };
        return Err(CniError::invalid_config(
            key,
            format!("{ip} ({what} proxy address) is inside the blocked network {net}"),
        ));
    }
    Ok(Some(ip))
}

/// Two records describe the same attachment state (the creation time aside).
pub fn same_record(a: &PodRecord, b: &PodRecord) -> bool {
    let mut b = b.clone();
    b.created_unix = a.created_unix;
    *a == b
}

/// Opens CNI_NETNS for ADD and CHECK, through the firewall that will program it; returns the
/// path too, for logs. A path that does not exist or is not a network namespace is an invalid
/// CNI_NETNS (code 4); other failures are I/O (code 5).
pub fn open_netns<'p, F: Firewall>(
    fw: &F,
    path: Option<&'p str>,
) -> Result<(&'p Path, F::Netns), CniError> {
    let Some(path) = path else {
        return Err(CniError::invalid_env("CNI_NETNS", "CNI_NETNS is not set"));
    };
    let ns = fw
        .open_netns(Path::new(path))
        .map_err(|e| netns_error(path, e))?;
    Ok((Path::new(path), ns))
}

fn netns_error(path: &str, e: NetnsError) -> CniError {
    match &e {
        e if e.is_not_found() => {
            CniError::invalid_env("CNI_NETNS", format!("{path} does not exist"))
        }
        NetnsError::NotNetns { .. } => {
            CniError::invalid_env("CNI_NETNS", format!("{path} is not a network namespace"))
        }
        _ => CniError::io("cannot open the pod's network namespace", e.to_string()),
    }
}

/// The pod interface's MAC and link-local addresses, for the host guard.
fn pod_link(env: &Env, probe: &dyn LinkProbe) -> Result<PodLink, CniError> {
    let Some(path) = env.netns.as_deref() else {
        return Err(CniError::invalid_env("CNI_NETNS", "CNI_NETNS is not set"));
    };
    probe
        .pod_link(Path::new(path), env.ifname())
        .map_err(|e| match e {
            PodLinkError::Netns(e) => netns_error(path, e),
            PodLinkError::NoInterface(i) => CniError::invalid_env(
                "CNI_IFNAME",
                format!("the pod's namespace {path} has no interface {i:?}"),
            ),
            e @ PodLinkError::List(_) => {
                CniError::io("cannot read the pod's interface", e.to_string())
            }
        })
}

/// nf_tables errors as CNI errors.
pub fn nft_error(what: &str, e: NftError) -> CniError {
    match e {
        NftError::NoDevice(d) => CniError::new(
            code::HOST_INTERFACE,
            "host-side interface from prevResult is unusable",
            format!("{what}: device {d} does not exist"),
        ),
        e => CniError::new(
            code::NFTABLES,
            format!("nf_tables: {what} failed"),
            e.to_string(),
        ),
    }
}

pub fn state_error(what: &str, e: StateError) -> CniError {
    CniError::io(&format!("state directory: {what} failed"), e.to_string())
}

/// Logs what a delete found. A table of our name with another tag is not an error of this DEL
/// (failing would make the runtime retry forever) but it is reported: it is either a hash
/// collision with another attachment, whose guard must survive, or someone else's table.
fn report_delete(d: &Deleted, what: &str, key: &str) {
    match d {
        Deleted::Removed => log::info!("deleted {what}"),
        Deleted::Absent => log::debug!("no {what}"),
        Deleted::NotOurs { comment } => {
            log::warn!("{what} is not {key}'s (its comment is {comment:?}): left alone")
        }
    }
}

/// Removes everything metaguard owns for one attachment: the pod's table (when its netns still
/// exists), the host guard table (by name, also when its device is gone) and the record. Missing
/// pieces are fine; every other error is collected and the rest still runs.
pub fn teardown<F: Firewall>(
    fw: &F,
    state: &StateDir,
    key: &str,
    netns: Option<&str>,
) -> Vec<CniError> {
    let mut errors = Vec::new();
    let table = rules::table_name(key);
    let record = match state.read_record(key) {
        Ok(r) => r,
        Err(e) => {
            // A corrupt record is removed below anyway; say so, but keep going.
            errors.push(state_error("reading the pod record", e));
            None
        }
    };
    let netns = netns.map(str::to_string).or_else(|| {
        record
            .as_ref()
            .map(|r| r.netns.clone())
            .filter(|p| !p.is_empty())
    });
    if let Some(path) = netns {
        match fw.open_netns(Path::new(&path)) {
            Ok(ns) => match fw.remove_pod_rules(&ns, &table, key) {
                Ok(d) => report_delete(&d, &format!("inet {table} in {path}"), key),
                Err(e) if e.is_not_found() => log::debug!("no inet {table} in {path}"),
                Err(e) => errors.push(nft_error("deleting the pod's table", e)),
            },
            // The namespace is gone (or its mount point left empty): so are the rules in it.
            Err(e) if e.is_not_found() || matches!(e, NetnsError::NotNetns { .. }) => {
                log::debug!("netns {path} is gone: nothing to remove there")
            }
            Err(e) => errors.push(CniError::io(
                "cannot open the pod's network namespace",
                e.to_string(),
            )),
        }
    }
    match fw.remove_host_guard(&table, key) {
        Ok(d) => report_delete(&d, &format!("netdev {table}"), key),
        Err(e) if e.is_not_found() => log::debug!("no netdev {table}"),
        Err(e) => errors.push(nft_error("deleting the host guard", e)),
    }
    // The record read above, so it is not read a second time. Under the writers' lock: an
    // address entry is removed only if it still names this attachment, and no ADD can take the
    // address over between that read and the unlink (the entry would then be the new pod's).
    match state.lock_existing() {
        Ok(_lock) => {
            for e in state.remove_read_record(key, record.as_ref()) {
                errors.push(state_error("removing the pod record", e));
            }
        }
        // Removing unlocked could remove another pod's fresh entry: left for the retry.
        Err(e) => errors.push(state_error("locking the state directory", e)),
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::tests::{bridge_result_03, bridge_result_10, result_11};
    use crate::cni::{CniArgs, Command};
    use crate::hostif::LinkKind;
    use serde_json::json;
    use std::collections::HashMap;

    struct Fake(HashMap<&'static str, LinkKind>);
    impl LinkProbe for Fake {
        fn kind(&self, ifname: &str) -> std::io::Result<Option<LinkKind>> {
            Ok(self.0.get(ifname).cloned())
        }
        fn pod_link(&self, netns: &Path, ifname: &str) -> Result<PodLink, PodLinkError> {
            assert_eq!(netns, Path::new("/var/run/netns/pod"));
            if ifname != "eth0" {
                return Err(PodLinkError::NoInterface(ifname.into()));
            }
            Ok(PodLink {
                mac: Some([2, 0, 0, 0, 0, 0x99]),
                link_locals: vec!["fe80::99".parse().unwrap()],
            })
        }
    }

    fn probe() -> Fake {
        Fake(HashMap::from([
            ("mgbr0", LinkKind::Bridge),
            ("cni0", LinkKind::Bridge),
            ("veth0186d0f8", LinkKind::Veth),
            ("veth822b8c5f", LinkKind::Veth),
            ("veth1234", LinkKind::Veth),
        ]))
    }

    fn env() -> Env {
        Env {
            command: Command::Add,
            container_id: Some("c1".into()),
            netns: Some("/var/run/netns/pod".into()),
            ifname: Some("eth0".into()),
            args: CniArgs::parse(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_UID=u-1",
            )
            .unwrap(),
            path: None,
        }
    }

    fn cfg(extra: serde_json::Value) -> Config {
        let mut v = json!({"cniVersion": "1.0.0", "name": "mgnet", "type": "metaguard"});
        for (k, x) in extra.as_object().unwrap() {
            v.as_object_mut().unwrap().insert(k.clone(), x.clone());
        }
        Config::parse(&serde_json::to_vec(&v).unwrap(), Command::Add).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plan_from_bridge_result_uses_gateways() {
        for prev in [bridge_result_03("0.3.1"), bridge_result_03("0.4.0")] {
            let p = plan(&env(), &cfg(json!({})), &prev, &probe()).unwrap();
            assert_eq!(p.key, "mgnet:c1:eth0");
            assert_eq!(p.pod.table, rules::table_name("mgnet:c1:eth0"));
            assert_eq!(p.pod.tag, "mgnet:c1:eth0");
            assert_eq!(
                p.pod.redirects,
                vec![
                    Redirect {
                        dest: ip("169.254.169.254"),
                        dest_port: 80,
                        to: ip("10.99.1.1"),
                        to_port: 8169
                    },
                    Redirect {
                        dest: ip("fd00:ec2::254"),
                        dest_port: 80,
                        to: ip("fd99:1::1"),
                        to_port: 8170
                    },
                    Redirect {
                        dest: ip("100.100.100.200"),
                        dest_port: 80,
                        to: ip("10.99.1.1"),
                        to_port: 8171
                    },
                ]
            );
            assert_eq!(p.pod.blocked.len(), 3);
            let g = p.guard.unwrap();
            assert_eq!(g.host_ifname, "veth0186d0f8");
            assert_eq!(g.table, p.pod.table);
            assert_eq!(g.pod_ips, vec![ip("10.99.1.2"), ip("fd99:1::2")]);
            assert_eq!(g.blocked, p.pod.blocked);
        }
    }

    #[test]
    fn record_is_built_from_env_args_and_result() {
        let c = cfg(json!({"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"a": "b"}}}));
        let p = plan(&env(), &c, &bridge_result_10(), &probe()).unwrap();
        let r = &p.record;
        assert_eq!(r.version, RECORD_VERSION);
        assert_eq!(r.key(), "mgnet:c1:eth0");
        assert_eq!(r.netns, "/var/run/netns/pod");
        assert_eq!(r.ips, vec![ip("10.99.1.4"), ip("fd99:1::4")]);
        assert_eq!(r.namespace.as_deref(), Some("ns"));
        assert_eq!(r.pod_name.as_deref(), Some("web"));
        assert_eq!(r.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(r.annotations.get("a").map(String::as_str), Some("b"));
        assert_eq!(r.host_interface.as_deref(), Some("veth822b8c5f"));
        assert!(r.host_guard);
        assert!(r.created_unix > 0);
    }

    #[test]
    fn configured_proxy_wins_and_missing_family_is_rejected_only() {
        // result_11 has no IPv6 address or gateway.
        let p = plan(
            &env(),
            &cfg(json!({"proxy": {"ipv4": "192.0.2.10"}})),
            &result_11(),
            &probe(),
        )
        .unwrap();
        let dests: Vec<_> = p.pod.redirects.iter().map(|r| (r.dest, r.to)).collect();
        assert_eq!(
            dests,
            vec![
                (ip("169.254.169.254"), ip("192.0.2.10")),
                (ip("100.100.100.200"), ip("192.0.2.10"))
            ]
        );
        // The IPv6 endpoint is still blocked.
        assert!(p
            .pod
            .blocked
            .contains(&"fd00:ec2::254/128".parse().unwrap()));
        assert_eq!(p.record.ips, vec![ip("10.1.0.5")]);
        assert_eq!(p.guard.unwrap().host_ifname, "veth1234");
    }

    #[test]
    fn guard_pins_the_pods_mac_and_link_locals() {
        // prevResult's MAC wins over the one read from the namespace.
        let p = plan(&env(), &cfg(json!({})), &bridge_result_10(), &probe()).unwrap();
        let g = p.guard.as_ref().unwrap();
        assert_eq!(g.pod_mac, Some([0xbe, 0x4c, 0xf7, 0x62, 0x83, 0x38]));
        assert_eq!(
            g.pod_link_locals,
            vec!["fe80::99".parse::<std::net::Ipv6Addr>().unwrap()]
        );
        assert!(g.block_tunnels);
        assert_eq!(g.tunnel_ports, vec![4789, 8472, 6081]);
        assert_eq!(p.record.mac.as_deref(), Some("be:4c:f7:62:83:38"));
        assert!(p.record.layer2_guard);

        // Without a MAC in prevResult, the namespace's.
        let mut prev = bridge_result_10();
        prev["interfaces"][2].as_object_mut().unwrap().remove("mac");
        let p = plan(
            &env(),
            &cfg(json!({"blockTunnels": false, "tunnelPorts": [5555]})),
            &prev,
            &probe(),
        )
        .unwrap();
        let g = p.guard.unwrap();
        assert_eq!(g.pod_mac, Some([2, 0, 0, 0, 0, 0x99]));
        assert!(!g.block_tunnels);
        assert_eq!(p.record.mac.as_deref(), Some("02:00:00:00:00:99"));
    }

    #[test]
    fn no_mac_anywhere_is_recorded_as_layer2_unguarded() {
        struct NoMac;
        impl LinkProbe for NoMac {
            fn kind(&self, ifname: &str) -> std::io::Result<Option<LinkKind>> {
                probe().kind(ifname)
            }
            fn pod_link(&self, _: &Path, _: &str) -> Result<PodLink, PodLinkError> {
                Ok(PodLink::default())
            }
        }
        let mut prev = bridge_result_10();
        prev["interfaces"][2]["mac"] = json!("not-a-mac");
        let p = plan(&env(), &cfg(json!({})), &prev, &NoMac).unwrap();
        assert!(p.record.host_guard);
        assert!(!p.record.layer2_guard);
        assert_eq!(p.record.mac, None);
        assert_eq!(p.guard.unwrap().pod_mac, None);
    }

    #[test]
    fn a_missing_pod_interface_is_refused() {
        let mut e = env();
        e.ifname = Some("net1".into());
        let mut prev = bridge_result_10();
        prev["interfaces"][2]["name"] = json!("net1");
        let err = plan(&e, &cfg(json!({})), &prev, &probe()).unwrap_err();
        assert_eq!(err.code, 4, "{err}");
        assert!(err.msg.contains("CNI_IFNAME"), "{err}");
    }

    #[test]
    fn host_guard_off_is_recorded() {
        let p = plan(
            &env(),
            &cfg(json!({"hostGuard": false})),
            &bridge_result_10(),
            &probe(),
        )
        .unwrap();
        assert!(p.guard.is_none());
        assert!(!p.record.host_guard);
        assert_eq!(p.record.host_interface.as_deref(), Some("veth822b8c5f"));
    }

    #[test]
    fn no_host_interface_is_recorded() {
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/pod"}],
            "ips": [{"interface": 0, "address": "10.5.0.2/24", "gateway": "10.5.0.1"}]});
        let p = plan(&env(), &cfg(json!({})), &prev, &probe()).unwrap();
        assert!(p.guard.is_none());
        assert!(!p.record.host_guard);
        assert_eq!(p.record.host_interface, None);
    }

    #[test]
    fn extra_blocks_reach_both_rule_sets() {
        let p = plan(
            &env(),
            &cfg(json!({"block": ["ecs", "192.0.2.0/24"]})),
            &bridge_result_10(),
            &probe(),
        )
        .unwrap();
        assert_eq!(p.pod.blocked.len(), 5);
        assert_eq!(p.guard.unwrap().blocked, p.pod.blocked);
    }

    #[test]
    fn gateway_inside_blocked_network_is_refused() {
        let e = plan(
            &env(),
            &cfg(json!({"block": ["10.99.0.0/16"]})),
            &bridge_result_10(),
            &probe(),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.ends_with("proxy.ipv4"), "{e}");
    }

    #[test]
    fn result_without_pod_ips_is_refused() {
        let prev =
            json!({"cniVersion": "1.0.0", "interfaces": [{"name": "veth822b8c5f"}], "ips": []});
        let e = plan(&env(), &cfg(json!({})), &prev, &probe()).unwrap_err();
        assert_eq!(e.code, 7);
    }

    #[test]
    fn overlong_keys_are_refused_before_anything_is_done() {
        let mut e = env();
        e.container_id = Some("a".repeat(300));
        let err = plan(&e, &cfg(json!({})), &bridge_result_10(), &probe()).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("CNI_CONTAINERID"));
    }

    #[test]
    fn same_record_ignores_creation_time() {
        let p = plan(&env(), &cfg(json!({})), &bridge_result_10(), &probe()).unwrap();
        let mut later = p.record.clone();
        later.created_unix += 100;
        assert!(same_record(&p.record, &later));
        later.ips.pop();
        assert!(!same_record(&p.record, &later));
    }

    #[test]
    fn plan_is_deterministic() {
        let a = plan(&env(), &cfg(json!({})), &bridge_result_10(), &probe()).unwrap();
        let b = plan(&env(), &cfg(json!({})), &bridge_result_10(), &probe()).unwrap();
        assert_eq!(a.pod, b.pod);
        assert_eq!(a.guard, b.guard);
    }
}
