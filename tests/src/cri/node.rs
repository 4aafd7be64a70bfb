//! The node the CRI tests run on: containerd with its CRI in a throwaway network namespace, next
//! to metaguard-proxy and a cloud namespace with fake-metadata.

use super::{CriClient, PodSpec, K8S_NAMESPACE, PAUSE_IMAGE};
use crate::bins;
use crate::netns::{unique_name, Netns, TempDir};
use crate::proxy::{Cloud, Proxy, ProxyOptions};
use k8s_cri::v1::PodSandboxConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the repository (the tests crate's parent).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// How long each wait for containerd, the CRI or a log line may take.
const WAIT: Duration = Duration::from_secs(30);
/// containerd's configuration and the node's conflist (`@DIR@` and `@SANDBOX_IMAGE@` filled in).
const CONTAINERD_TEMPLATE: &str = include_str!("../../../conf/cri/containerd.toml");
const CONFLIST_TEMPLATE: &str = include_str!("../../../conf/cri/10-metaguard-cri.conflist");
/// The network name in that conflist: first part of every attachment key.
pub const CNI_NETWORK: &str = "metaguard-cri";
/// A PATH for containerd and what it runs (shims, runc, CNI plugins), whatever the test's is.
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A Kubernetes-like node: a network namespace running containerd with its CRI enabled (private
/// root, state, socket and mount namespace; conf/cri/containerd.toml) on a conflist chaining
/// bridge + host-local with metaguard (conf/cri/10-metaguard-cri.conflist), metaguard-proxy with
/// the given policy, and a cloud namespace with fake-metadata at 169.254.169.254 and
/// [fd00:ec2::254] (see [`Cloud`]). Torn down on `Drop`, also after a failed assertion.
pub struct CriNode {
    containerd: Option<Child>,
    proxy: Option<Proxy>,
    cloud: Option<Cloud>,
    node: Netns,
    /// Cgroup parent of every pod started here: `/<unique name>` (cgroupfs driver).
    cgroup_parent: String,
    torn_down: bool,
    // Last: removed once every process that used it is gone.
    dir: TempDir,
}

impl CriNode {
    /// Builds the node, starts containerd, metaguard-proxy (with `policy`, a policy file's text)
    /// and fake-metadata, imports the pause image into the CRI's namespace, and waits until the
    /// CRI knows the image and reports its network ready.
    pub fn up(policy: &str) -> CriNode {
        let started = Instant::now();
        let dir = TempDir::new("cri");
        let node = Netns::new("crinode");
        let cgroup_parent = format!("/{}", unique_name("cri"));
        let mut n = CriNode {
            containerd: None,
            proxy: None,
            cloud: None,
            node,
            cgroup_parent,
            torn_down: false,
            dir,
        };
        // No duplicate address detection on the node: the bridge's IPv6 gateway (where pods'
        // IPv6 metadata traffic is redirected) is usable at once.
        n.node.ok(
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        );
        n.cloud = Some(Cloud::attach(&n.node));
        n.write_files();
        n.proxy = Some(Proxy::start(
            ProxyOptions::new(n.node.name(), &n.state_dir()).policy(policy),
        ));
        n.start_containerd();
        n.import_pause_image();
        eprintln!(
            "[cri] node {} up in {:.1?} ({})",
            n.node.name(),
            started.elapsed(),
            n.dir().display()
        );
        n
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("@DIR@", &self.dir().to_string_lossy())
            .replace("@SANDBOX_IMAGE@", PAUSE_IMAGE)
    }

    fn write_files(&self) {
        let d = self.dir();
        for sub in [
            "cni/bin",
            "cni/net.d",
            "cni/ipam",
            "state",
            "containerd",
            "pod-logs",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("create the node's directories");
        }
        let cni = bins::cni_plugin_dir();
        for p in ["bridge", "host-local", "loopback"] {
            std::fs::copy(cni.join(p), d.join("cni/bin").join(p))
                .unwrap_or_else(|e| panic!("copy {}/{p}: {e}", cni.display()));
        }
        std::fs::copy(bins::bin("metaguard"), d.join("cni/bin/metaguard"))
            .expect("copy the metaguard plugin");
        std::fs::write(
            d.join("cni/net.d/10-metaguard-cri.conflist"),
            self.fill(CONFLIST_TEMPLATE),
        )
        .expect("write the conflist");
        std::fs::write(d.join("containerd.toml"), self.fill(CONTAINERD_TEMPLATE))
            .expect("write containerd.toml");
    }

    fn start_containerd(&mut self) {
        let log = std::fs::File::create(self.containerd_log_path()).expect("containerd.log");
        let log2 = log.try_clone().expect("containerd.log");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.node.path_str()))
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "bash",
            ])
            .arg(repo().join("scripts/lib/cri-node.sh"))
            .arg(self.dir())
            .env("PATH", NODE_PATH)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        self.containerd = Some(cmd.spawn().expect("start containerd"));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self
                .containerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "containerd exited during start-up ({st})\n{}",
                    self.containerd_log_tail()
                );
            }
            if self.socket().exists() {
                if let Ok(mut c) = CriClient::connect(&self.socket(), Duration::from_secs(5)) {
                    if c.version().is_ok() {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "containerd's CRI did not answer within {WAIT:?}\n{}",
                self.containerd_log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
        // ctr streams the archive to containerd, which stores and unpacks it (overlayfs).
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", K8S_NAMESPACE, "images", "import"])
            .arg(&tar)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr images import");
        assert!(
            out.status.success(),
            "ctr images import: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        eprintln!(
            "[cri] pause image {PAUSE_IMAGE} built and imported in {:.1?}",
            started.elapsed()
        );
    }

    /// A connected CRI client, once the CRI is ready for pods (network ready, pause image known).
    pub fn client(&self) -> CriClient {
        let mut c = CriClient::connect(&self.socket(), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + WAIT;
        loop {
            let conds = c.conditions().unwrap_or_else(|e| panic!("{e}"));
            let net = conds.iter().any(|(t, ok, _)| t == "NetworkReady" && *ok);
            let image = c
                .image_present(PAUSE_IMAGE)
                .unwrap_or_else(|e| panic!("{e}"));
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

    /// The node's private directory (configuration, state, logs, containerd's root and state).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// containerd's gRPC socket (CRI and containerd's own API).
    pub fn socket(&self) -> PathBuf {
        self.dir().join("containerd.sock")
    }

    /// The plugin's `stateDir`, which the proxy reads.
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// The CNI network name (first part of every attachment key).
    pub fn network(&self) -> &str {
        CNI_NETWORK
    }

    pub fn node(&self) -> &Netns {
        &self.node
    }

    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("the proxy runs while the node is up")
    }

    pub fn cloud(&self) -> &Cloud {
        self.cloud
            .as_ref()
            .expect("the cloud exists while the node is up")
    }

    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// The sandbox config for `pod` on this node (its cgroup parent and log directory).
    pub fn sandbox_config(&self, pod: &PodSpec) -> PodSandboxConfig {
        pod.sandbox_config(&self.cgroup_parent, &self.dir().join("pod-logs"))
    }

    fn containerd_pid(&self) -> u32 {
        self.containerd
            .as_ref()
            .map(Child::id)
            .expect("containerd runs while the node is up")
    }

    /// Runs a command in containerd's mount and network namespaces (where the netns paths
    /// containerd hands to CNI exist); its output, whatever its status.
    pub fn exec_containerd_ns(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg("-t")
            .arg(self.containerd_pid().to_string())
            .args(["-m", "-n", "--"])
            .args(args)
            .env("PATH", NODE_PATH)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// `nft list ruleset` inside the network namespace at `netns`, a path valid in containerd's
    /// mount namespace (as CNI_NETNS was): `nsenter --net=<netns>` from there.
    pub fn pod_ruleset(&self, netns: &str) -> String {
        let arg = format!("--net={netns}");
        let out = self.exec_containerd_ns(&["nsenter", &arg, "nft", "list", "ruleset"]);
        assert!(
            out.status.success(),
            "nsenter {arg} nft list ruleset: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Whether `path` exists in containerd's mount namespace.
    pub fn node_path_exists(&self, path: &str) -> bool {
        self.exec_containerd_ns(&["test", "-e", path])
            .status
            .success()
    }

    /// The plugin's own log (its `logFile`).
    pub fn plugin_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("plugin.log")).unwrap_or_default()
    }

    fn containerd_log_path(&self) -> PathBuf {
        self.dir().join("containerd.log")
    }

    pub fn containerd_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.containerd_log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!("containerd.log (last lines):\n{}", lines[from..].join("\n"))
    }

    /// The cgroup directories of this node's pods, one per hierarchy that has one.
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

    /// Pids in this node's pod cgroups (sandbox processes still running).
    pub fn pod_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in self.cgroup_dirs() {
            for path in walk_dirs(&d) {
                let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
                pids.extend(
                    procs
                        .split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Tears everything down now (idempotent; `Drop` calls it).
    pub fn down(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        // Pods first: their processes live in their own network namespaces, out of reach of
        // the node namespace's teardown.
        let pids = self.pod_pids();
        kill_and_wait(&pids);
        if let Some(mut c) = self.containerd.take() {
            stop_child(&mut c);
        }
        // The shims and anything else in the node namespace die with it; the mount namespace
        // (and every mount containerd made) goes with its last process.
        self.proxy.take();
        self.cloud.take();
        let stragglers = netns_pids(self.node.name());
        self.node.delete();
        wait_gone(&stragglers);
        for d in self.cgroup_dirs() {
            let mut all = walk_dirs(&d);
            all.reverse();
            for dir in all {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

impl Drop for CriNode {
    fn drop(&mut self) {
        self.down();
    }
}

/// SIGTERM, then SIGKILL after 10 s.
fn stop_child(c: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn kill_and_wait(pids: &[i32]) {
    for &p in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_gone(pids);
}

/// Waits (5 s at most) until none of `pids` exists.
fn wait_gone(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of the processes in network namespace `name` (`ip netns pids`).
fn netns_pids(name: &str) -> Vec<i32> {
    Command::new(crate::netns::IP)
        .args(["netns", "pids", name])
        .output()
        .map(|o| {
            text(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
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
