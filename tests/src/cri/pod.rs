//! A pod as the kubelet describes it to the CRI (`PodSandboxConfig`).

use super::{LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, SecurityProfile,
};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A pod as the kubelet describes it to the CRI.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str, uid: &str) -> PodSpec {
        PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            annotations: BTreeMap::new(),
        }
    }

    pub fn annotation(mut self, key: &str, value: &str) -> PodSpec {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// The sandbox config the kubelet would send for this pod (identity labels, the pod's
    /// annotations, network/IPC namespaces per pod, PID namespace per container, no seccomp
    /// profile for the sandbox), under `cgroup_parent`, with container logs in `log_dir`.
    pub fn sandbox_config(&self, cgroup_parent: &str, log_dir: &Path) -> PodSandboxConfig {
        let labels: HashMap<String, String> = [
            (LABEL_POD_NAME, &self.name),
            (LABEL_POD_NAMESPACE, &self.namespace),
            (LABEL_POD_UID, &self.uid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        let log_directory = log_dir
            .join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
            .to_string_lossy()
            .into_owned();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            log_directory,
            labels,
            annotations: self.annotations.clone().into_iter().collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    seccomp: Some(SecurityProfile {
                        profile_type: k8s_cri::v1::security_profile::ProfileType::Unconfined as i32,
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
