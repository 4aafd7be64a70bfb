//! Finding the host side of the pod's link, where the host guard is attached.
//!
//! prevResult lists every interface the chain created. Those without a `sandbox` are on the host:
//! the bridge plugin lists the bridge and then the host end of the pod's veth; ptp lists the host
//! veth. metaguard guards exactly one interface: the host-side **veth** of this attachment.
//!
//! Only a veth is ever guarded. The guard's chain policy is drop, so binding it to the wrong
//! device (a bridge, an uplink, a vxlan) would cut off every other pod or the node itself. A
//! bridge is skipped; any other kind of host interface (a physical device, a tap) is not guarded
//! and the attachment is recorded as unguarded, with a warning. The kind is asked of the kernel
//! (ethtool's driver name) in the plugin's current network namespace, the one the runtime runs
//! plugins in, rather than read from /sys, which shows the namespace of whoever mounted it.
//!
//! Outcomes:
//! - one host veth, present here: guard it;
//! - no host veth listed (macvlan, ipvlan, host-device, many overlay CNIs): no guard; the record
//!   says `hostGuard: false` and a warning is logged (see the README for the consequence);
//! - a listed host interface missing from this namespace, or two host veths: error 102, since
//!   the result and the node disagree and guessing could guard the wrong device.

use crate::cni::error::{code, CniError};
use crate::cni::result::ResultView;
use crate::netns::Netns;
use crate::podlink::{self, PodLink, PodLinkError};
use metaguard_common::ids::valid_ifname;
use std::io;
use std::path::Path;

/// What the kernel says a network device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Veth,
    Bridge,
    /// Another driver (its ethtool driver name), or none reported.
    Other(String),
}

/// Asks the kernel about devices; a trait so the decision logic is testable without root.
pub trait LinkProbe {
    /// `Ok(None)` when there is no such device in the current network namespace.
    fn kind(&self, ifname: &str) -> io::Result<Option<LinkKind>>;
    /// The pod's interface `ifname` inside the namespace at `netns` (see [`crate::podlink`]).
    fn pod_link(&self, netns: &Path, ifname: &str) -> Result<PodLink, PodLinkError>;
}

/// The real probe: `SIOCETHTOOL` / `ETHTOOL_GDRVINFO` on a socket of the current netns.
pub struct KernelProbe;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo` from linux/ethtool.h.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

impl LinkProbe for KernelProbe {
    fn pod_link(&self, netns: &Path, ifname: &str) -> Result<PodLink, PodLinkError> {
        podlink::read(&Netns::open(netns)?, ifname)
    }

    fn kind(&self, ifname: &str) -> io::Result<Option<LinkKind>> {
        if !valid_ifname(ifname) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid interface name",
            ));
        }
        // SAFETY: plain socket(2); the descriptor is owned and closed by OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh valid descriptor we own.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut info = EthtoolDrvinfo {
            cmd: ETHTOOL_GDRVINFO,
            driver: [0; 32],
            version: [0; 32],
            fw_version: [0; 32],
            bus_info: [0; 32],
            erom_version: [0; 32],
            reserved2: [0; 12],
            n_priv_flags: 0,
            n_stats: 0,
            testinfo_len: 0,
            eedump_len: 0,
            regdump_len: 0,
        };
        // SAFETY: ifreq is plain data; zeroed is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        // valid_ifname guarantees at most 15 bytes, so the name stays NUL-terminated.
        for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
        // SAFETY: SIOCETHTOOL reads ifr_name and writes at most sizeof(ethtool_drvinfo) bytes
        // to ifru_data, which points at `info`, alive for the call.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                SIOCETHTOOL as _,
                &mut req,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODEV) => Ok(None),
                // A device whose driver implements no ethtool at all: it exists, kind unknown.
                Some(libc::EOPNOTSUPP) => Ok(Some(LinkKind::Other(String::new()))),
                _ => Err(e),
            };
        }
        let end = info
            .driver
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(info.driver.len());
        let driver = String::from_utf8_lossy(&info.driver[..end]).into_owned();
        Ok(Some(match driver.as_str() {
            "veth" => LinkKind::Veth,
            "bridge" => LinkKind::Bridge,
            _ => LinkKind::Other(driver),
        }))
    }
}

fn host_if_error(details: String) -> CniError {
    CniError::new(
        code::HOST_INTERFACE,
        "host-side interface from prevResult is unusable",
        details,
    )
}

/// The host-side veth of this attachment, if prevResult names one. See the module docs.
pub fn find(view: &ResultView, probe: &dyn LinkProbe) -> Result<Option<String>, CniError> {
    let mut veths: Vec<&str> = Vec::new();
    for itf in view.host_interfaces() {
        let name = itf.name.as_str();
        if !valid_ifname(name) {
            return Err(host_if_error(format!(
                "{name:?} is not a valid interface name"
            )));
        }
        match probe.kind(name) {
            Ok(None) => {
                return Err(host_if_error(format!(
                    "{name} is listed in prevResult but does not exist in the plugin's network namespace"
                )))
            }
            Ok(Some(LinkKind::Veth)) => veths.push(name),
            Ok(Some(LinkKind::Bridge)) => log::debug!("{name} is a bridge: not guarded"),
            Ok(Some(LinkKind::Other(driver))) => {
                log::warn!("{name} (driver {driver:?}) is not a veth: not guarded");
            }
            Err(e) => return Err(host_if_error(format!("cannot tell what {name} is: {e}"))),
        }
    }
    match veths.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.to_string())),
        many => Err(host_if_error(format!(
            "prevResult lists several host-side veths ({}); cannot tell which one is this pod's",
            many.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::tests::{bridge_result_03, bridge_result_10, ptp_result};
    use std::collections::HashMap;

    struct Fake(HashMap<&'static str, LinkKind>);

    impl LinkProbe for Fake {
        fn kind(&self, ifname: &str) -> io::Result<Option<LinkKind>> {
            Ok(self.0.get(ifname).cloned())
        }
        fn pod_link(&self, _: &Path, _: &str) -> Result<PodLink, PodLinkError> {
            Ok(PodLink::default())
        }
    }

    fn view(v: serde_json::Value) -> ResultView {
        ResultView::parse(&v).unwrap()
    }

    #[test]
    fn bridge_result_guards_the_veth_not_the_bridge() {
        let probe = Fake(HashMap::from([
            ("mgbr0", LinkKind::Bridge),
            ("veth0186d0f8", LinkKind::Veth),
        ]));
        assert_eq!(
            find(&view(bridge_result_03("0.3.1")), &probe)
                .unwrap()
                .as_deref(),
            Some("veth0186d0f8")
        );
    }

    #[test]
    fn ptp_result_guards_its_veth() {
        let probe = Fake(HashMap::from([("veth5e2c9b0f", LinkKind::Veth)]));
        assert_eq!(
            find(&view(ptp_result()), &probe).unwrap().as_deref(),
            Some("veth5e2c9b0f")
        );
    }

    #[test]
    fn no_host_interface_means_no_guard() {
        let v = serde_json::json!({"interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}]});
        assert_eq!(find(&view(v), &Fake(HashMap::new())).unwrap(), None);
        assert_eq!(
            find(&ResultView::default(), &Fake(HashMap::new())).unwrap(),
            None
        );
    }

    #[test]
    fn non_veth_host_interfaces_are_never_guarded() {
        let v = serde_json::json!({"interfaces": [{"name": "ens5"}, {"name": "eth0", "sandbox": "/x"}]});
        let probe = Fake(HashMap::from([("ens5", LinkKind::Other("ena".into()))]));
        assert_eq!(find(&view(v), &probe).unwrap(), None);
    }

    #[test]
    fn missing_device_is_an_error() {
        let probe = Fake(HashMap::from([("mgbr0", LinkKind::Bridge)]));
        let e = find(&view(bridge_result_10()), &probe).unwrap_err();
        assert_eq!(e.code, code::HOST_INTERFACE);
        assert!(e.details.contains("veth822b8c5f"), "{e}");
    }

    #[test]
    fn two_veths_are_ambiguous() {
        let v = serde_json::json!({"interfaces": [{"name": "va"}, {"name": "vb"}]});
        let probe = Fake(HashMap::from([
            ("va", LinkKind::Veth),
            ("vb", LinkKind::Veth),
        ]));
        assert_eq!(
            find(&view(v), &probe).unwrap_err().code,
            code::HOST_INTERFACE
        );
    }

    #[test]
    fn kernel_probe_rejects_bad_names_and_reports_missing_devices() {
        assert!(KernelProbe.kind("a/b").is_err());
        // Present in every network namespace.
        assert!(matches!(KernelProbe.kind("lo"), Ok(Some(_))));
        assert_eq!(KernelProbe.kind("mgnosuchdev0").unwrap(), None);
    }
}
