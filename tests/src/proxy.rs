//! Harness for `metaguard-proxy`: run the daemon inside a node namespace with its own
//! configuration, policy and decision log; talk to it from pods; read its decisions and metrics;
//! stop it with SIGTERM on drop.
//!
//! Also [`Cloud`]: a "cloud" namespace linked to a node namespace by a veth pair, holding
//! 169.254.169.254 and fd00:ec2::254 with `fake-metadata` listening on port 80 of both, so the
//! proxy's upstream is the real address it uses in production, and a pod request that escaped the
//! redirect would reach the fake (and be recorded) instead of vanishing.

use crate::bins;
use crate::fake::{FakeMetadata, FakeOptions};
use crate::netns::{Netns, TempDir};
use crate::raw::{self, ReadOpts, Step};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the proxy's admin listener is, inside its namespace.
pub const ADMIN: &str = "127.0.0.1:9169";
pub const IMDS_V4: &str = "169.254.169.254";
pub const IMDS_V6: &str = "fd00:ec2::254";
pub const PORT_V4: u16 = 8169;
pub const PORT_V6: u16 = 8170;
/// How long start-up may take before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What to run.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Name of the namespace to run in (`ip netns`).
    pub netns: String,
    pub state_dir: PathBuf,
    /// Policy file content; `None` runs with the built-in default.
    pub policy: Option<String>,
    /// Extra TOML for the configuration file (limits, timeouts...).
    pub config: String,
    /// `--listen` addresses; empty = the defaults (0.0.0.0 and ::).
    pub listen: Vec<IpAddr>,
    /// `--upstream NAME=ADDR:PORT` overrides.
    pub upstream: Vec<(String, SocketAddr)>,
}

impl ProxyOptions {
    pub fn new(netns: &str, state_dir: &Path) -> ProxyOptions {
        ProxyOptions {
            netns: netns.to_string(),
            state_dir: state_dir.to_path_buf(),
            policy: None,
            config: String::new(),
            listen: Vec::new(),
            upstream: Vec::new(),
        }
    }

    pub fn policy(mut self, text: &str) -> Self {
        self.policy = Some(text.to_string());
        self
    }

    pub fn config(mut self, text: &str) -> Self {
        self.config = text.to_string();
        self
    }

    pub fn listen(mut self, addrs: &[IpAddr]) -> Self {
        self.listen = addrs.to_vec();
        self
    }
}

/// A running metaguard-proxy; SIGTERM (then SIGKILL after 10 s) on drop.
pub struct Proxy {
    child: Option<Child>,
    opts: ProxyOptions,
    netns_path: PathBuf,
    dir: TempDir,
}

impl Proxy {
    /// Starts the daemon and waits until `/healthz` answers.
    pub fn start(opts: ProxyOptions) -> Proxy {
        let dir = TempDir::new("proxy");
        let mut p = Proxy {
            child: None,
            netns_path: PathBuf::from(format!("/run/netns/{}", opts.netns)),
            opts,
            dir,
        };
        if let Some(text) = &p.opts.policy {
            std::fs::write(p.policy_path(), text).expect("write policy");
        }
        std::fs::write(p.config_path(), &p.opts.config).expect("write config");
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new(crate::netns::IP);
        cmd.args(["netns", "exec", &self.opts.netns])
            .arg(bins::bin("metaguard-proxy"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(&self.opts.state_dir)
            .arg("--decision-log")
            .arg(self.decision_log_path())
            .arg("--admin")
            .arg(ADMIN)
            .arg("--log-level")
            .arg("debug");
        if self.opts.policy.is_some() {
            cmd.arg("--policy").arg(self.policy_path());
        }
        for a in &self.opts.listen {
            cmd.arg("--listen").arg(a.to_string());
        }
        for (n, a) in &self.opts.upstream {
            cmd.arg("--upstream").arg(format!("{n}={a}"));
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("stderr file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        self.child = Some(cmd.spawn().expect("spawn metaguard-proxy"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "metaguard-proxy exited during start-up ({st}):\n{}",
                    self.stderr()
                );
            }
            if self.admin_get("/healthz").is_some_and(|(s, _)| s == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "metaguard-proxy not healthy in time:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again after [`Proxy::stop`], with the same files (decision log appended to).
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    pub fn decision_log_path(&self) -> PathBuf {
        self.dir.path().join("decisions.jsonl")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// Replaces the policy file (atomically, as an editor or config manager would).
    pub fn write_policy(&self, text: &str) {
        let tmp = self.dir.path().join(".policy.toml.tmp");
        std::fs::write(&tmp, text).expect("write policy");
        std::fs::rename(&tmp, self.policy_path()).expect("rename policy");
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.pid().expect("proxy running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("kill");
    }

    /// SIGHUP, then waits until the reload counters show the outcome (success or failure).
    pub fn reload(&self) {
        let before = self.reloads();
        self.signal(nix::sys::signal::Signal::SIGHUP);
        crate::netns::wait_for(
            "the policy reload to be counted",
            Duration::from_secs(10),
            || self.reloads() > before,
        );
    }

    /// Reloads so far (success + failure), from /metrics.
    pub fn reloads(&self) -> u64 {
        let ok = self
            .metric("metaguard_proxy_policy_reloads_total{result=\"success\"}")
            .unwrap_or(0.0);
        let failed = self
            .metric("metaguard_proxy_policy_reloads_total{result=\"failure\"}")
            .unwrap_or(0.0);
        (ok + failed) as u64
    }

    /// SIGTERM and wait (10 s at most, then SIGKILL). Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET path` on the admin listener: (status, body), or `None` when it does not answer.
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        let ex = raw::send(
            &self.netns_path,
            ADMIN.parse().expect("admin addr"),
            &[Step::Write(req.into_bytes())],
            ReadOpts {
                deadline: Duration::from_secs(3),
                max_responses: 1,
                head_request: false,
            },
        );
        ex.responses
            .first()
            .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
    }

    /// Waits until `/readyz` says 200.
    pub fn wait_ready(&self) {
        crate::netns::wait_for("metaguard-proxy /readyz = 200", START_TIMEOUT, || {
            self.admin_get("/readyz").is_some_and(|(s, _)| s == 200)
        });
    }

    /// The value of the sample whose name and labels are exactly `series`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.admin_get("/metrics")?;
        parse_metric(&text, series)
    }

    /// Every decision line so far.
    pub fn decisions(&self) -> Vec<Value> {
        read_json_lines(&self.decision_log_path())
    }

    /// Polls until a decision line matches (the log is written in the background).
    pub fn wait_decision(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        crate::netns::wait_for_value(
            &format!("decision line: {what}"),
            Duration::from_secs(10),
            || self.decisions().into_iter().find(|v| pred(v)),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of one sample in Prometheus text.
pub fn parse_metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// Complete JSON lines of a file (a last line without newline is still being written).
pub fn read_json_lines(path: &Path) -> Vec<Value> {
    let data = std::fs::read(path).unwrap_or_default();
    let Some(end) = data.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    data[..=end]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "{}: bad JSON line {:?}: {e}",
                    path.display(),
                    String::from_utf8_lossy(l)
                )
            })
        })
        .collect()
}

/// The cloud: a namespace with the metadata addresses, linked to `node`, running fake-metadata.
pub struct Cloud {
    pub fake: FakeMetadata,
    pub ns: Netns,
}

impl Cloud {
    /// Links a new cloud namespace to `node` (veth `mgcloud0` on the node side, 169.254.169.1/24
    /// and fd00:ec2::1/64; the cloud side holds .254 of both) and starts fake-metadata on port 80.
    ///
    /// Also turns off IPv6 duplicate address detection for interfaces the node creates from now
    /// on: otherwise the bridge's gateway address (the target of the pods' IPv6 redirect) stays
    /// "tentative", unusable, for about two seconds after the first pod.
    pub fn attach(node: &Netns) -> Cloud {
        Self::attach_with(node, FakeOptions::default())
    }

    /// [`Cloud::attach`] with fake-metadata's options (its `netns` and `listen` are set here):
    /// the identity tests serve moto's node credentials and require IMDSv2 tokens
    /// (`crate::moto::IdentityCloud`).
    pub fn attach_with(node: &Netns, fake_opts: FakeOptions) -> Cloud {
        node.ok("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
        let ns = Netns::new("cloud");
        node.ok(
            crate::netns::IP,
            &[
                "link",
                "add",
                "mgcloud0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ],
        );
        node.ok(
            crate::netns::IP,
            &["addr", "add", "169.254.169.1/24", "dev", "mgcloud0"],
        );
        node.ok(
            crate::netns::IP,
            &[
                "-6",
                "addr",
                "add",
                "fd00:ec2::1/64",
                "dev",
                "mgcloud0",
                "nodad",
            ],
        );
        node.ok(crate::netns::IP, &["link", "set", "mgcloud0", "up"]);
        ns.ok(
            crate::netns::IP,
            &["addr", "add", "169.254.169.254/24", "dev", "eth0"],
        );
        ns.ok(
            crate::netns::IP,
            &[
                "-6",
                "addr",
                "add",
                "fd00:ec2::254/64",
                "dev",
                "eth0",
                "nodad",
            ],
        );
        ns.ok(crate::netns::IP, &["link", "set", "eth0", "up"]);
        let listen: Vec<SocketAddr> = vec![
            format!("{IMDS_V4}:80").parse().expect("v4"),
            format!("[{IMDS_V6}]:80").parse().expect("v6"),
        ];
        let fake = FakeMetadata::start_with(FakeOptions {
            netns: Some(ns.name().to_string()),
            listen,
            ..fake_opts
        })
        .expect("start fake-metadata");
        Cloud { fake, ns }
    }

    /// Sets the GCP value at `path` (under `/computeMetadata/v1/`, e.g.
    /// `instance/attributes/flag`) through the fake's control path, from inside the cloud
    /// namespace: long polls held on it are answered. `path` and `value` must not need escaping.
    pub fn set_gcp(&self, path: &str, value: &str) {
        let ex = request(
            self.ns.path(),
            imds(false),
            "GET",
            &format!("/fake-control/gcp-set?path={path}&value={value}"),
            &[],
        );
        assert_eq!(
            ex.responses.first().map(|r| r.status),
            Some(200),
            "gcp-set {path}: {}",
            ex.summary()
        );
    }
}

/// One HTTP/1.1 request from inside `netns` to `addr`: `METHOD target` with `headers` (Host is
/// added unless given). Returns the exchange (status and body, or how it ended).
pub fn request(
    netns: &Path,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> raw::Exchange {
    request_within(netns, addr, method, target, headers, Duration::from_secs(5))
}

/// [`request`], waiting up to `deadline` for the answer (a long poll's is seconds away).
pub fn request_within(
    netns: &Path,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    deadline: Duration,
) -> raw::Exchange {
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str("Host: 169.254.169.254\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    raw::send(
        netns,
        addr,
        &[Step::Write(req.into_bytes())],
        ReadOpts {
            deadline,
            max_responses: 1,
            head_request: method == "HEAD",
        },
    )
}

/// Status of a GET from `netns` to `addr` (0 when no response arrived).
pub fn get_status(netns: &Path, addr: SocketAddr, target: &str) -> u16 {
    request(netns, addr, "GET", target, &[])
        .responses
        .first()
        .map(|r| r.status)
        .unwrap_or(0)
}

/// The metadata address of the given family, port 80: what pods call.
pub fn imds(v6: bool) -> SocketAddr {
    if v6 {
        format!("[{IMDS_V6}]:80").parse().expect("v6")
    } else {
        format!("{IMDS_V4}:80").parse().expect("v4")
    }
}
