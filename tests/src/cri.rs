//! containerd's CRI, driven the way the kubelet drives it: RunPodSandbox, PodSandboxStatus,
//! StopPodSandbox and RemovePodSandbox over containerd's gRPC socket (CRI `runtime.v1`, through
//! the `k8s-cri` bindings and tonic), so the CNI plugins see exactly what they see in a cluster:
//! `K8S_POD_NAMESPACE` / `K8S_POD_NAME` / `K8S_POD_UID` / `K8S_POD_INFRA_CONTAINER_ID` in
//! CNI_ARGS and the pod's annotations in `runtimeConfig["io.kubernetes.cri.pod-annotations"]`.
//!
//! Two pieces:
//! - [`CriClient`]: a small blocking client (a current-thread tokio runtime inside) over a unix
//!   socket. Errors are typed ([`CriError`]) and name the call that failed.
//! - [`CriNode`]: the world it runs in. A "node" network namespace with containerd (its own root,
//!   state, socket, and a private mount namespace: scripts/lib/cri-node.sh) configured from
//!   conf/cri/containerd.toml, a conflist chaining bridge + host-local with metaguard
//!   (conf/cri/10-metaguard-cri.conflist), metaguard-proxy ([`Proxy`]) and a cloud namespace with
//!   fake-metadata ([`Cloud`]). The CRI's `sandbox_image` is a pause image built by
//!   scripts/build-pause-image.sh and imported into the `k8s.io` namespace, since no registry is
//!   reachable. Pods get a cgroup parent unique to the node, so teardown finds and kills a pod's
//!   processes even when a test failed before removing its sandbox.
//!
//! Why not scripts/lab.sh: its containerd config lacks `restrict_oom_score_adj`, which the CRI
//! needs here (root has no CAP_SYS_RESOURCE, so the sandbox's oom_score_adj -998 makes runc fail).

mod client;
mod node;
mod pod;

pub use client::{CriClient, CriError, SandboxStatus};
pub use node::{repo, CriNode, CNI_NETWORK};
pub use pod::PodSpec;

/// The CRI's name for its containerd namespace.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The pause image the node's CRI is configured with (scripts/build-pause-image.sh builds it).
pub const PAUSE_IMAGE: &str = "metaguard.local/pause:cri";
/// The kubelet's label keys for a pod's identity (it sets them on every sandbox).
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
