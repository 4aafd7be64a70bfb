//! The pod record: what the plugin knows about one attachment, written at ADD for the proxy.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Format version of [`PodRecord`]. Readers refuse records with a newer major version rather than
/// guessing (fail closed: an unreadable record means an unknown caller, which is denied).
pub const RECORD_VERSION: u32 = 1;

/// One attachment (network, container, interface) guarded by metaguard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub version: u32,
    pub container_id: String,
    pub network: String,
    pub ifname: String,
    /// CNI_NETNS as the runtime passed it.
    pub netns: String,
    /// The pod's addresses on this attachment (from prevResult), without prefix length.
    pub ips: Vec<IpAddr>,
    /// K8S_POD_NAMESPACE / K8S_POD_NAME / K8S_POD_UID from CNI_ARGS, when the runtime passes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Pod annotations from the `io.kubernetes.cri.pod-annotations` capability.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The host-side interface of the pod's link (bridge, ptp), or `None` when prevResult names none.
    #[serde(default)]
    pub host_interface: Option<String>,
    /// Whether a host-side guard is attached to `host_interface`. `false` means the pod's own rules
    /// are the only enforcement, which a container with CAP_NET_ADMIN can remove.
    pub host_guard: bool,
    /// The MAC of the pod's interface (`aa:bb:cc:dd:ee:ff`), from prevResult or read from the
    /// pod's namespace at ADD; `None` when neither gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Whether the host guard pins the pod's Ethernet source (and ARP sender) to `mac`. `false`
    /// with `host_guard` true means layer 2 is unguarded: the pod could send frames with a
    /// neighbour's MAC and have the bridge deliver that neighbour's traffic to it.
    #[serde(default)]
    pub layer2_guard: bool,
    /// Seconds since the Unix epoch when ADD wrote the record.
    pub created_unix: u64,
}

impl PodRecord {
    /// The attachment key, also the record's file name (without `.json`).
    pub fn key(&self) -> String {
        crate::ids::attachment_key(&self.network, &self.container_id, &self.ifname)
    }

    /// "namespace/name" when known, else the container ID: what logs show as the pod.
    pub fn display_name(&self) -> String {
        match (&self.namespace, &self.pod_name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            _ => self.container_id.clone(),
        }
    }
}
