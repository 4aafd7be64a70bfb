//! Running CNI plugins the way a runtime does, and a pod fixture built on Debian's real plugins.
//!
//! [`exec_plugin`] runs one plugin binary with a clean environment (the `CNI_*` variables only),
//! the configuration on stdin, inside a "node" namespace (`ip netns exec`), and returns exit
//! status, stdout (parsed as JSON when it is JSON), stderr and the wall time.
//!
//! [`Node`] is a node namespace with a state directory and a host-local data directory; a
//! [`Pod`] is a pod namespace attached to it by Debian's `bridge` + `host-local` and then
//! `metaguard` chained on the bridge's result (prevResult injected as libcni does); more networks
//! on the same node, with their own bridge and ranges, come from [`Node::bridge_conf_for`] and
//! [`Node::bridge_pod_on`]. Dropping a
//! Pod runs metaguard DEL and bridge DEL (reverse order) and deletes its namespace; dropping a
//! Node deletes its namespace and directories.

use crate::bins;
use crate::netns::{Netns, TempDir};
use serde_json::{json, Value};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One plugin run.
#[derive(Debug, Clone)]
pub struct PluginOutput {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl PluginOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout as JSON; panics with the whole output when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Panics unless the plugin succeeded; returns stdout as JSON (`Null` when empty).
    pub fn expect_ok(&self) -> Value {
        assert!(self.success(), "plugin failed: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Panics unless the plugin failed with a CNI error of code `code` on stdout (non-zero exit,
    /// JSON with cniVersion, code, msg); returns the error object.
    pub fn expect_error(&self, code: u64) -> Value {
        assert!(
            !self.success(),
            "expected CNI error {code}, plugin succeeded: {self:?}"
        );
        assert!(self.code.is_some(), "plugin died from a signal: {self:?}");
        let e = self.json();
        assert_eq!(e["code"].as_u64(), Some(code), "wrong error code: {self:?}");
        assert!(e["cniVersion"].is_string(), "error has no cniVersion: {e}");
        assert!(
            e["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error has no msg: {e}"
        );
        e
    }
}

/// Runs `plugin` like a runtime: environment `env` only (plus PATH), `stdin`, inside `node` when
/// given. Kills the plugin and panics if it runs longer than 30 s.
pub fn exec_plugin(
    plugin: &Path,
    node: Option<&Netns>,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> PluginOutput {
    let mut cmd = match node {
        Some(ns) => ns.command(plugin),
        None => Command::new(plugin),
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", plugin.display()));
    let pid = child.id();
    if let Some(mut si) = child.stdin.take() {
        // A plugin that exits before reading all of stdin is not our concern here.
        let _ = si.write_all(stdin);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(r) => r.expect("wait for plugin"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{} did not finish within 30 s", plugin.display());
        }
    };
    PluginOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// The CNI variables of one attachment call.
#[derive(Debug, Clone)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub args: Option<String>,
}

impl Call {
    pub fn env(&self) -> Vec<(&str, &str)> {
        let mut v = vec![
            ("CNI_COMMAND", self.command.as_str()),
            ("CNI_CONTAINERID", self.container_id.as_str()),
            ("CNI_IFNAME", self.ifname.as_str()),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        if let Some(n) = &self.netns {
            v.push(("CNI_NETNS", n.as_str()));
        }
        if let Some(a) = &self.args {
            v.push(("CNI_ARGS", a.as_str()));
        }
        v
    }

    /// [`Call::env`] as owned pairs, to edit with [`with_env`].
    pub fn owned_env(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// `env` with `key` removed, then set to `value` when there is one (for hostile CNI calls).
pub fn with_env(
    mut env: Vec<(String, String)>,
    key: &str,
    value: Option<&str>,
) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    if let Some(v) = value {
        env.push((key.to_string(), v.to_string()));
    }
    env
}

static SUBNET: AtomicUsize = AtomicUsize::new(0);

/// The version Debian's bridge is run at for a given metaguard version (it stops at 1.0.0).
pub fn bridge_version(v: &str) -> &str {
    if v == "1.1.0" {
        "1.0.0"
    } else {
        v
    }
}

/// A "node": its own namespace, state directory and host-local data directory, one bridge.
pub struct Node {
    pub ns: Netns,
    pub dir: TempDir,
    /// Network name used in both plugins' configuration.
    pub network: String,
    pub bridge: String,
    pub subnet4: String,
    pub gateway4: IpAddr,
    pub subnet6: String,
    pub gateway6: IpAddr,
}

impl Node {
    pub fn new() -> Node {
        let ns = Netns::new("node");
        let dir = TempDir::new("cnistate");
        // Namespaces are separate, so subnets could repeat; varying them keeps logs readable.
        let n = SUBNET.fetch_add(1, Ordering::SeqCst) % 250;
        let x = (std::process::id() % 200) as usize + 20;
        Node {
            ns,
            dir,
            network: "mgtest".into(),
            bridge: "mgbr0".into(),
            subnet4: format!("10.{x}.{n}.0/24"),
            gateway4: format!("10.{x}.{n}.1").parse().unwrap(),
            subnet6: format!("fd4d:{x:x}:{n:x}::/64"),
            gateway6: format!("fd4d:{x:x}:{n:x}::1").parse().unwrap(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    pub fn record_path(&self, key: &str) -> PathBuf {
        self.state_dir().join("pods").join(format!("{key}.json"))
    }

    /// Keys of every record in the state directory.
    pub fn record_keys(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state_dir().join("pods"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".json"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Names of the files in `<state>/ips`.
    pub fn ip_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state_dir().join("ips"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The bridge + host-local configuration (routes for both families, bridge as gateway).
    pub fn bridge_conf(&self, version: &str) -> Value {
        let ranges = json!([[{"subnet": self.subnet4}], [{"subnet": self.subnet6}]]);
        let mut c = self.bridge_conf_for(version, &self.network, &self.bridge, ranges);
        c["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
        c
    }

    /// The bridge + host-local configuration of another network of this node: its own name and
    /// bridge, host-local `ranges` (as in host-local's configuration), no routes. Pods attach to
    /// it with [`Node::bridge_pod_on`] (multi-network nodes, overlapping ranges).
    pub fn bridge_conf_for(
        &self,
        version: &str,
        network: &str,
        bridge: &str,
        ranges: Value,
    ) -> Value {
        json!({
            "cniVersion": bridge_version(version),
            "name": network,
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "dataDir": self.ipam_dir(),
                "ranges": ranges
            }
        })
    }

    /// metaguard's configuration: this node's state directory, debug logs, plus `extra` keys.
    pub fn metaguard_conf(&self, version: &str, extra: &Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": self.network,
            "type": "metaguard",
            "stateDir": self.state_dir(),
            "logLevel": "debug"
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// Two more networks of this node, `neta` on bridge `mgbra` (gateway .1) and `netb` on
    /// `mgbrb` (gateway .254), whose host-local IPv4 ranges are the same one address of this
    /// node's subnet: each hands it to its first pod, as two overlapping networks (a Multus
    /// secondary network over the primary's range) would. Returns both bridge configurations
    /// (for [`Node::bridge_pod_on`]) and the address.
    pub fn overlapping_networks(&self, version: &str) -> (Value, Value, IpAddr) {
        let prefix = self.subnet4.trim_end_matches("0/24");
        let addr = format!("{prefix}100");
        let ranges = |gateway: &str| {
            json!([[{"subnet": self.subnet4, "rangeStart": addr, "rangeEnd": addr,
                     "gateway": format!("{prefix}{gateway}")}]])
        };
        (
            self.bridge_conf_for(version, "neta", "mgbra", ranges("1")),
            self.bridge_conf_for(version, "netb", "mgbrb", ranges("254")),
            addr.parse().expect("overlapping address"),
        )
    }

    /// Runs a plugin from /usr/lib/cni (or metaguard from the build) in this node.
    pub fn run(&self, plugin: &str, call: &Call, conf: &Value) -> PluginOutput {
        let path = if plugin == "metaguard" {
            bins::bin("metaguard")
        } else {
            bins::cni_plugin_dir().join(plugin)
        };
        exec_plugin(
            &path,
            Some(&self.ns),
            &call.env(),
            &serde_json::to_vec(conf).expect("conf to JSON"),
        )
    }

    /// Runs metaguard with a raw environment and stdin (for bad-input tests).
    pub fn run_metaguard_raw(&self, env: &[(&str, &str)], stdin: &[u8]) -> PluginOutput {
        exec_plugin(&bins::bin("metaguard"), Some(&self.ns), env, stdin)
    }

    /// Runs metaguard GC / STATUS (no attachment variables).
    pub fn run_metaguard_global(&self, command: &str, conf: &Value) -> PluginOutput {
        let env = [("CNI_COMMAND", command), ("CNI_PATH", "/usr/lib/cni")];
        exec_plugin(
            &bins::bin("metaguard"),
            Some(&self.ns),
            &env,
            &serde_json::to_vec(conf).expect("conf to JSON"),
        )
    }

    /// A pod attached by bridge only (metaguard not run yet).
    pub fn bridge_pod(&self, version: &str) -> Pod<'_> {
        self.bridge_pod_on(version, self.bridge_conf(version))
    }

    /// A pod attached by bridge only, on the network `bridge_conf` describes (its `name` is the
    /// network's name, for metaguard too).
    pub fn bridge_pod_on(&self, version: &str, bridge_conf: Value) -> Pod<'_> {
        let ns = Netns::new("pod");
        let cid = format!("Ctr-{}", ns.name());
        let mut pod = Pod {
            node: self,
            ns,
            container_id: cid,
            ifname: "eth0".into(),
            version: version.into(),
            args: Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_UID=6f1e2a3b-0000-4000-8000-000000000001;K8S_POD_INFRA_CONTAINER_ID=abc".into()),
            network: bridge_conf["name"].as_str().unwrap_or(&self.network).to_string(),
            bridge_conf,
            mg_extra: json!({}),
            bridge_result: Value::Null,
            prev_result: Value::Null,
            mg_result: None,
        };
        let out = self.run("bridge", &pod.call("ADD"), &pod.bridge_conf);
        pod.bridge_result = out.expect_ok();
        pod.prev_result = prev_result_for(&pod.bridge_result, version);
        pod
    }

    /// A pod attached by bridge and then metaguard (ADD must succeed).
    pub fn pod(&self, version: &str) -> Pod<'_> {
        self.pod_with(version, json!({}))
    }

    /// Like [`Node::pod`], with extra metaguard configuration keys.
    pub fn pod_with(&self, version: &str, extra: Value) -> Pod<'_> {
        let mut pod = self.bridge_pod(version);
        pod.mg_extra = extra;
        let out = pod.metaguard("ADD");
        pod.mg_result = Some(out.expect_ok());
        pod
    }

    /// A pod named `namespace/name` (a UID of its own), attached by bridge and then metaguard,
    /// with `annotations` passed the way containerd passes them (the
    /// `io.kubernetes.cri.pod-annotations` capability).
    pub fn k8s_pod(
        &self,
        version: &str,
        namespace: &str,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> Pod<'_> {
        let mut pod = self.bridge_pod(version);
        let uid = format!("uid-{}", pod.ns.name());
        pod.args = Some(format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID={uid};K8S_POD_INFRA_CONTAINER_ID={}",
            pod.container_id
        ));
        if !annotations.is_empty() {
            let map: serde_json::Map<String, Value> = annotations
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            pod.mg_extra = json!({ "runtimeConfig": { "io.kubernetes.cri.pod-annotations": map } });
        }
        let out = pod.metaguard("ADD");
        pod.mg_result = Some(out.expect_ok());
        pod
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

/// The prevResult metaguard gets for `version`: the bridge's result, and for 1.1.0 (which
/// Debian's bridge does not speak) that result as a 1.1.0 runtime would hand it over, with the
/// fields 1.1.0 added to routes, so the test can see they survive.
pub fn prev_result_for(bridge_result: &Value, version: &str) -> Value {
    let mut r = bridge_result.clone();
    if version == "1.1.0" {
        if let Some(o) = r.as_object_mut() {
            o.insert("cniVersion".into(), json!("1.1.0"));
            o.insert(
                "routes".into(),
                json!([{"dst": "0.0.0.0/0", "priority": 100, "table": 254, "scope": 0},
                       {"dst": "::/0", "mtu": 1400, "advmss": 1360}]),
            );
        }
    }
    r
}

/// A pod: its namespace and what the plugins returned. See the module docs.
pub struct Pod<'a> {
    pub node: &'a Node,
    pub ns: Netns,
    pub container_id: String,
    pub ifname: String,
    /// metaguard's cniVersion for this pod.
    pub version: String,
    pub args: Option<String>,
    /// The network's name (the node's, unless attached with [`Node::bridge_pod_on`]).
    pub network: String,
    /// The bridge configuration it was attached with (DEL uses it too).
    pub bridge_conf: Value,
    pub mg_extra: Value,
    /// What bridge printed.
    pub bridge_result: Value,
    /// What metaguard is given as prevResult.
    pub prev_result: Value,
    /// What metaguard's ADD printed.
    pub mg_result: Option<Value>,
}

impl Pod<'_> {
    pub fn call(&self, command: &str) -> Call {
        Call {
            command: command.into(),
            container_id: self.container_id.clone(),
            netns: Some(self.ns.path_str().to_string()),
            ifname: self.ifname.clone(),
            args: self.args.clone(),
        }
    }

    /// metaguard's configuration for this pod, with prevResult for ADD/DEL/CHECK.
    pub fn metaguard_conf(&self) -> Value {
        let mut c = self.node.metaguard_conf(&self.version, &self.mg_extra);
        if let Some(o) = c.as_object_mut() {
            if self.mg_extra.get("name").is_none() {
                o.insert("name".into(), json!(self.network));
            }
            o.insert("prevResult".into(), self.prev_result.clone());
        }
        c
    }

    /// Makes this attachment that of container `container_id`, pod `namespace/name` (its UID
    /// derived from the container ID): what a runtime passes when a sandbox is replaced on the
    /// same network namespace, so the next ADD gets the same address.
    pub fn become_k8s(&mut self, container_id: &str, namespace: &str, name: &str) {
        self.container_id = container_id.to_string();
        self.args = Some(format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID=uid-{container_id}"
        ));
    }

    /// Runs metaguard `command` for this pod as a runtime would.
    pub fn metaguard(&self, command: &str) -> PluginOutput {
        self.node
            .run("metaguard", &self.call(command), &self.metaguard_conf())
    }

    /// Runs metaguard with a modified call or configuration.
    pub fn metaguard_with(&self, call: &Call, conf: &Value) -> PluginOutput {
        self.node.run("metaguard", call, conf)
    }

    pub fn key(&self) -> String {
        format!("{}:{}:{}", self.network, self.container_id, self.ifname)
    }

    /// The pod's address of one family, from the bridge result.
    pub fn ip(&self, v6: bool) -> IpAddr {
        self.bridge_result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
            .find(|a| a.is_ipv6() == v6)
            .expect("pod address of that family")
    }

    /// The host-side veth (second interface of the bridge result).
    pub fn host_veth(&self) -> String {
        self.bridge_result["interfaces"][1]["name"]
            .as_str()
            .expect("host veth in bridge result")
            .to_string()
    }

    pub fn record_path(&self) -> PathBuf {
        self.node.record_path(&self.key())
    }

    /// Deletes the pod's namespace now (the runtime's part of pod removal).
    pub fn delete_netns(&mut self) {
        self.ns.delete();
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        // Reverse order, as a runtime does; errors are irrelevant here (tests assert DEL itself).
        let _ = self.metaguard("DEL");
        let mut bridge_del = self.call("DEL");
        if self.ns.is_deleted() {
            bridge_del.netns = None;
        }
        let _ = self.node.run("bridge", &bridge_del, &self.bridge_conf);
        self.ns.delete();
    }
}

/// `nft list tables` inside a namespace, one "family name" per entry.
pub fn nft_tables(ns: &Netns) -> Vec<String> {
    ns.ok("nft", &["list", "tables"])
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect()
}
