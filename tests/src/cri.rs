//! containerd's CRI, driven the way the kubelet drives it: RunPodSandbox, PodSandboxStatus,
//! StopPodSandbox and RemovePodSandbox over containerd's gRPC socket (CRI `runtime.v1`, through
//! the `k8s-cri` bindings and tonic), so the CNI plugins see exactly what they see in a cluster:
//! `K8S_POD_NAMESPACE` / `K8S_POD_NAME` / `K8S_POD_UID` / `K8S_POD_INFRA_CONTAINER_ID` in
//! CNI_ARGS and the pod's annotations in `runtimeConfig["io.kubernetes.cri.pod-annotations"]`.
//!
//! Two pieces:
//! - [`CriClient`]: a small blocking client (a current-thread tokio runtime inside) over a unix
//!   socket. Errors are typed ([`CriError`]) and name the call that failed.
//! - [`CriLab`]: the world it runs in, built by `scripts/lab.sh` (a node namespace with containerd
//!   and metaguard-proxy, a cloud namespace with fake-metadata) with the CRI's `sandbox_image`
//!   pointed at a pause image built by `scripts/build-pause-image.sh` and imported into the
//!   `k8s.io` namespace, since no registry is reachable. Pods get a cgroup parent unique to the
//!   lab, so `Drop` can find and kill a pod's processes even when a test failed before removing
//!   the sandbox (the lab's own teardown only knows its `ctr` containers), then takes the lab down.

use crate::bins;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandbox, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatus, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, SecurityProfile, StatusRequest, StopPodSandboxRequest, VersionRequest,
    VersionResponse,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// The CRI's name for its containerd namespace.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The pause image the lab's CRI is configured with.
pub const PAUSE_IMAGE: &str = "metaguard.local/pause:cri";
/// The kubelet's label keys for a pod's identity (it sets them on every sandbox).
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";

/// Errors of the CRI client.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("connecting to the CRI at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI {call}: {status}")]
    Rpc {
        call: &'static str,
        // Boxed: a Status is large and would make every Result large.
        status: Box<tonic::Status>,
    },
    #[error("CRI {call}: the answer has no {what}")]
    Missing {
        call: &'static str,
        what: &'static str,
    },
    #[error("CRI PodSandboxStatus: verbose info is not the JSON expected: {0}")]
    Info(String),
}

fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |status| CriError::Rpc {
        call,
        status: Box::new(status),
    }
}

/// A blocking CRI client on a unix socket.
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// What PodSandboxStatus says about a sandbox, with the parts of its verbose info tests use.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    pub status: PodSandboxStatus,
    /// The sandbox process (containerd's verbose info `pid`), 0 when not running.
    pub pid: u32,
    /// The network namespace path containerd created (and passed as CNI_NETNS), as seen in
    /// containerd's mount namespace.
    pub netns: Option<String>,
    /// The whole verbose info (`info["info"]`, parsed).
    pub info: Value,
}

impl SandboxStatus {
    pub fn ready(&self) -> bool {
        self.status.state == k8s_cri::v1::PodSandboxState::SandboxReady as i32
    }

    /// Every pod address the CRI reports (primary first).
    pub fn ips(&self) -> Vec<String> {
        let Some(net) = &self.status.network else {
            return Vec::new();
        };
        let mut ips = vec![net.ip.clone()];
        ips.extend(net.additional_ips.iter().map(|p| p.ip.clone()));
        ips.retain(|ip| !ip.is_empty());
        ips
    }
}

impl CriClient {
    /// Connects to the CRI on `socket`; `timeout` bounds every call.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<CriClient, CriError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CriError::Runtime)?;
        let path = socket.to_path_buf();
        // The URI is required by the API but never used: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout);
        let dial = path.clone();
        let channel = rt
            .block_on(
                endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                    let dial = dial.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(dial).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                })),
            )
            .map_err(|source| CriError::Connect { path, source })?;
        Ok(CriClient {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    pub fn version(&mut self) -> Result<VersionResponse, CriError> {
        let req = VersionRequest {
            version: "v1".into(),
        };
        self.rt
            .block_on(self.runtime.version(req))
            .map(|r| r.into_inner())
            .map_err(rpc("Version"))
    }

    /// The runtime's conditions as (type, status, reason: message).
    pub fn conditions(&mut self) -> Result<Vec<(String, bool, String)>, CriError> {
        let resp = self
            .rt
            .block_on(self.runtime.status(StatusRequest { verbose: false }))
            .map_err(rpc("Status"))?
            .into_inner();
        let status = resp.status.ok_or(CriError::Missing {
            call: "Status",
            what: "status",
        })?;
        Ok(status
            .conditions
            .into_iter()
            .map(|c| (c.r#type, c.status, format!("{}: {}", c.reason, c.message)))
            .collect())
    }

    /// Whether the CRI reports `NetworkReady` (it has loaded a CNI configuration).
    pub fn network_ready(&mut self) -> Result<bool, CriError> {
        Ok(self
            .conditions()?
            .iter()
            .any(|(t, ok, _)| t == "NetworkReady" && *ok))
    }

    /// Whether the CRI's image store knows `image` (what RunPodSandbox looks up before pulling).
    pub fn image_present(&mut self, image: &str) -> Result<bool, CriError> {
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        let resp = self
            .rt
            .block_on(self.images.image_status(req))
            .map_err(rpc("ImageStatus"))?
            .into_inner();
        Ok(resp.image.is_some())
    }

    /// RunPodSandbox; returns the sandbox ID (also the CNI container ID).
    pub fn run_pod_sandbox(&mut self, config: PodSandboxConfig) -> Result<String, CriError> {
        let req = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        self.rt
            .block_on(self.runtime.run_pod_sandbox(req))
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(rpc("RunPodSandbox"))
    }

    /// PodSandboxStatus with verbose info (containerd adds the pid, the runtime spec with the
    /// netns path, the CNI result...).
    pub fn pod_sandbox_status(&mut self, id: &str) -> Result<SandboxStatus, CriError> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        let resp = self
            .rt
            .block_on(self.runtime.pod_sandbox_status(req))
            .map_err(rpc("PodSandboxStatus"))?
            .into_inner();
        let status = resp.status.ok_or(CriError::Missing {
            call: "PodSandboxStatus",
            what: "status",
        })?;
        let info: Value = match resp.info.get("info") {
            Some(text) => serde_json::from_str(text).map_err(|e| CriError::Info(e.to_string()))?,
            None => Value::Null,
        };
        let pid = info
            .get("pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        let netns = info
            .pointer("/runtimeSpec/linux/namespaces")
            .and_then(Value::as_array)
            .and_then(|nss| {
                nss.iter()
                    .find(|ns| ns.get("type").and_then(Value::as_str) == Some("network"))
            })
            .and_then(|ns| ns.get("path"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(SandboxStatus {
            status,
            pid,
            netns,
            info,
        })
    }

    pub fn list_pod_sandboxes(&mut self) -> Result<Vec<PodSandbox>, CriError> {
        self.rt
            .block_on(
                self.runtime
                    .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
            )
            .map(|r| r.into_inner().items)
            .map_err(rpc("ListPodSandbox"))
    }

    /// StopPodSandbox: kills the sandbox's processes, calls CNI DEL, removes the netns.
    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), CriError> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.stop_pod_sandbox(req))
            .map(|_| ())
            .map_err(rpc("StopPodSandbox"))
    }

    /// RemovePodSandbox: forgets a stopped sandbox (containerd calls CNI DEL again if needed).
    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), CriError> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.remove_pod_sandbox(req))
            .map(|_| ())
            .map_err(rpc("RemovePodSandbox"))
    }
}

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
                        profile_type: k8s_cri::v1::security_profile::ProfileType::Unconfined
                            as i32,
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

/// Path of the repository (the tests crate's parent).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// How long lab start-up and each wait may take.
const LAB_TIMEOUT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(30);

/// The lab from `scripts/lab.sh`, set up for the CRI. Torn down on `Drop`.
pub struct CriLab {
    name: String,
    env: HashMap<String, String>,
    policy: PathBuf,
    /// Cgroup parent of every pod started here: `/<lab name>` (cgroupfs driver).
    cgroup_parent: String,
    up: bool,
}

impl CriLab {
    /// Builds the pause image, brings the lab up with `policy` (a policy file's text) for
    /// metaguard-proxy and the pause image as the CRI's sandbox image, imports the image into
    /// the CRI's namespace, and waits until the CRI reports its network ready and knows the image.
    pub fn up(policy: &str) -> CriLab {
        for b in ["metaguard", "metaguard-proxy", "fake-metadata", "mgcurl"] {
            bins::bin(b);
        }
        let name = format!("mgcri{}", std::process::id());
        // The policy and the image live outside the lab directory: they must exist before `up`.
        let policy_path = std::env::temp_dir().join(format!("{name}-policy.toml"));
        std::fs::write(&policy_path, policy).expect("write the policy file");
        let mut lab = CriLab {
            cgroup_parent: format!("/{name}"),
            name,
            env: HashMap::new(),
            policy: policy_path,
            up: true,
        };
        let started = Instant::now();
        let out = lab.lab_command().arg("up").output().expect("run scripts/lab.sh up");
        assert!(
            out.status.success(),
            "scripts/lab.sh up failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        let out = lab.lab_command().arg("env").output().expect("scripts/lab.sh env");
        assert!(out.status.success(), "scripts/lab.sh env: {}", text(&out.stderr));
        lab.env = text(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        eprintln!(
            "[cri] lab {} up in {:.1?} ({})",
            lab.name,
            started.elapsed(),
            lab.dir().display()
        );
        lab.import_pause_image();
        lab
    }

    fn lab_command(&self) -> Command {
        let mut c = Command::new("bash");
        c.arg(repo().join("scripts/lab.sh"))
            .env("LAB_NAME", &self.name)
            .env("METAGUARD_BIN_DIR", bins::bin_dir())
            .env("LAB_POLICY", &self.policy)
            .env("LAB_SANDBOX_IMAGE", PAUSE_IMAGE)
            .stdin(Stdio::null());
        c
    }

    fn import_pause_image(&self) {
        let started = Instant::now();
        let tar = self.dir().join("pause-image.tar");
        let out = Command::new("bash")
            .arg(repo().join("scripts/build-pause-image.sh"))
            .arg(&tar)
            .arg(PAUSE_IMAGE)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/build-pause-image.sh");
        assert!(
            out.status.success(),
            "build-pause-image.sh: {}",
            text(&out.stderr)
        );
        let tar_s = tar.to_string_lossy().into_owned();
        self.ctr_k8s(&["images", "import", &tar_s]);
        eprintln!(
            "[cri] pause image {PAUSE_IMAGE} built and imported in {:.1?}",
            started.elapsed()
        );
    }

    /// `ctr -n k8s.io ARGS` in the node; panics unless it succeeds; returns stdout.
    pub fn ctr_k8s(&self, args: &[&str]) -> String {
        let sock = self.env("CONTAINERD_SOCK").to_string();
        let mut all = vec!["ctr", "--address", &sock, "--namespace", K8S_NAMESPACE];
        all.extend_from_slice(args);
        let out = self.exec_node(&all);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// A connected CRI client, once the CRI is ready for pods (network ready, pause image known).
    pub fn client(&self) -> CriClient {
        let sock = PathBuf::from(self.env("CONTAINERD_SOCK"));
        let mut c = CriClient::connect(&sock, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + WAIT;
        loop {
            let conds = c.conditions().unwrap_or_else(|e| panic!("{e}"));
            let net = conds.iter().any(|(t, ok, _)| t == "NetworkReady" && *ok);
            let image = c.image_present(PAUSE_IMAGE).unwrap_or_else(|e| panic!("{e}"));
            if net && image {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "CRI not ready for pods after {WAIT:?}: conditions {conds:?}, pause image known: {image}\n{}",
                self.containerd_log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A value from `scripts/lab.sh env`.
    pub fn env(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("scripts/lab.sh env has no {key}"))
    }

    /// The lab's directory (everything it made lives there).
    pub fn dir(&self) -> PathBuf {
        match self.env.get("LAB_DIR") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(format!("/run/metaguard-lab/{}", self.name)),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(self.env("STATE_DIR"))
    }

    /// The CNI network name in the lab's conflist (first part of every attachment key).
    pub fn network(&self) -> &str {
        self.env("CNI_NETWORK")
    }

    /// `/run/netns/<node ns>`.
    pub fn node_netns(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.env("NODE_NS")))
    }

    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// Where pod sandbox log directories point (the CRI writes nothing there for a sandbox).
    pub fn pod_log_dir(&self) -> PathBuf {
        self.dir().join("pod-logs")
    }

    /// The sandbox config for `pod` in this lab (its cgroup parent and log directory).
    pub fn sandbox_config(&self, pod: &PodSpec) -> PodSandboxConfig {
        pod.sandbox_config(&self.cgroup_parent, &self.pod_log_dir())
    }

    /// Runs a command in the node: containerd's mount and network namespaces (where the netns
    /// paths containerd hands to CNI exist).
    pub fn exec_node(&self, args: &[&str]) -> Output {
        self.lab_command()
            .arg("exec-node")
            .args(args)
            .output()
            .expect("scripts/lab.sh exec-node")
    }

    /// Like [`CriLab::exec_node`], panicking unless the command succeeds; returns stdout.
    pub fn node_ok(&self, args: &[&str]) -> String {
        let out = self.exec_node(args);
        assert!(
            out.status.success(),
            "in the node: {args:?} failed ({}): {}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `nft list ruleset` inside the network namespace at `netns` (a path valid in containerd's
    /// mount namespace, as CNI_NETNS was).
    pub fn pod_ruleset(&self, netns: &str) -> String {
        let arg = format!("--net={netns}");
        self.node_ok(&["nsenter", &arg, "nft", "list", "ruleset"])
    }

    /// Whether `path` exists in containerd's mount namespace.
    pub fn node_path_exists(&self, path: &str) -> bool {
        self.exec_node(&["test", "-e", path]).status.success()
    }

    /// The proxy's decision log so far.
    pub fn decisions(&self) -> Vec<Value> {
        crate::proxy::read_json_lines(Path::new(self.env("DECISION_LOG")))
    }

    /// Polls the decision log until a line matches.
    pub fn wait_decision(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        crate::netns::wait_for_value(&format!("decision line: {what}"), WAIT, || {
            self.decisions().into_iter().find(|v| pred(v))
        })
    }

    /// What reached the fake metadata service.
    pub fn fake_record(&self) -> crate::fake::RecordFile {
        crate::fake::RecordFile::new(self.env("FAKE_RECORD"))
    }

    /// The plugin's own log (its `logFile`).
    pub fn plugin_log(&self) -> String {
        std::fs::read_to_string(self.env("PLUGIN_LOG")).unwrap_or_default()
    }

    pub fn containerd_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!("containerd.log (last lines):\n{}", lines[from..].join("\n"))
    }

    /// The cgroup directories of this lab's pods, one per hierarchy that has one.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let rel = self.cgroup_parent.trim_start_matches('/');
        let mut dirs = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let d = e.path().join(rel);
                if d.is_dir() {
                    dirs.push(d);
                }
            }
        }
        let unified = Path::new("/sys/fs/cgroup").join(rel);
        if unified.is_dir() && !dirs.contains(&unified) {
            dirs.push(unified);
        }
        dirs
    }

    /// Pids in this lab's pod cgroups (pause processes a failed test left).
    pub fn pod_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in self.cgroup_dirs() {
            for path in walk_dirs(&d) {
                let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Tears the lab down now (idempotent; `Drop` calls it).
    pub fn down(&mut self) {
        if !self.up {
            return;
        }
        self.up = false;
        // Pods first: their processes live in their own network namespaces, out of reach of
        // the lab's teardown, which kills by namespace and by its ctr namespace's cgroups.
        let pids = self.pod_pids();
        for &p in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        match self.lab_command().arg("down").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "[cri] scripts/lab.sh down failed ({}): {}",
                out.status,
                text(&out.stderr)
            ),
            Err(e) => eprintln!("[cri] scripts/lab.sh down: {e}"),
        }
        // Cgroups runc left (a sandbox never removed), deepest first.
        for d in self.cgroup_dirs() {
            let mut all = walk_dirs(&d);
            all.reverse();
            for dir in all {
                let _ = std::fs::remove_dir(&dir);
            }
        }
        let _ = std::fs::remove_file(&self.policy);
    }
}

impl Drop for CriLab {
    fn drop(&mut self) {
        self.down();
    }
}

/// `dir` and every directory below it, parents before children.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
