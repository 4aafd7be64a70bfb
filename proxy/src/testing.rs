//! Fixtures shared by the unit tests.

use metaguard_common::record::{PodRecord, RECORD_VERSION};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A pod record as the plugin writes it: container `container_id` (also the pod's name) in
/// `namespace`, with `ips`, no annotations.
pub fn pod_record(container_id: &str, ips: &[&str], namespace: &str) -> PodRecord {
    PodRecord {
        version: RECORD_VERSION,
        container_id: container_id.into(),
        network: "net".into(),
        ifname: "eth0".into(),
        netns: "/var/run/netns/x".into(),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        namespace: Some(namespace.into()),
        pod_name: Some(container_id.into()),
        pod_uid: None,
        annotations: BTreeMap::new(),
        host_interface: None,
        host_guard: true,
        mac: None,
        layer2_guard: false,
        created_unix: 1,
    }
}

/// An empty directory of its own under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `mg-<tag>-<process>-<thread>`: tests running at once never share one.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "mg-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
