//! End to end through containerd: `ctr run --cni` in the lab (scripts/lab.sh), a conflist chaining
//! Debian's bridge + host-local with metaguard, metaguard-proxy on the node, fake-metadata in the
//! "cloud" namespace. Needs root, containerd + runc, busybox-static and the built binaries
//! (`cargo build --workspace --bins`).
//!
//! One lab is expensive (containerd, namespaces), so one test function runs every scenario in
//! order against one lab; each step says what it checks. The lab is torn down by `Drop` (also when
//! an assertion fails), and containers started here are killed by their own guards.
//!
//! containerd 1.6's `ctr` calls CNI DEL only when a foreground `ctr run` ends (`ctr task kill`,
//! `task rm` and `container rm` never do), so "removed" containers here are foreground runs whose
//! task is killed, and "stale" ones are detached runs removed with kill + task rm + container rm.

use metaguard_common::ids::{attachment_key, short_hash};
use metaguard_common::record::PodRecord;
use metaguard_common::state::StateDir;
use metaguard_tests::bins;
use metaguard_tests::fake::{RecordFile, INSTANCE_ID, SECRET_MARKER};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MD4: &str = "169.254.169.254";
const MD6: &str = "[fd00:ec2::254]";
const CREDS: &str = "/latest/meta-data/iam/security-credentials/";
const PARALLEL: usize = 20;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn step(s: &str) {
    eprintln!("\n=== containerd_e2e: {s}");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `cond` until it holds or `timeout` passes; panics with `what` then.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lab, up for the life of this value.
struct Lab {
    name: String,
    env: HashMap<String, String>,
}

impl Lab {
    fn script() -> PathBuf {
        repo().join("scripts/lab.sh")
    }

    fn command(name: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(Self::script())
            .env("LAB_NAME", name)
            .env("METAGUARD_BIN_DIR", bins::bin_dir())
            .env("LAB_POLICY", repo().join("conf/lab/policy.toml"))
            .stdin(Stdio::null());
        c
    }

    /// Tears down labs of earlier runs of this test whose process is gone (killed runs cannot
    /// clean up after themselves; their names carry their pid).
    fn reap_orphans() {
        let Ok(dir) = std::fs::read_dir("/run/metaguard-lab") else {
            return;
        };
        for e in dir.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("mge2e")
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("tearing down the orphaned lab {name}");
                let _ = Self::command(&name).arg("down").output();
            }
        }
    }

    fn up() -> Lab {
        Self::reap_orphans();
        let name = format!("mge2e{}", std::process::id());
        for b in ["metaguard", "metaguard-proxy", "fake-metadata", "mgcurl"] {
            bins::bin(b);
        }
        let started = Instant::now();
        let out = Self::command(&name)
            .arg("up")
            .output()
            .expect("running scripts/lab.sh up");
        // lab.sh tears down a failed `up` itself.
        assert!(
            out.status.success(),
            "lab.sh up failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        eprintln!("lab {name} up in {:?}", started.elapsed());
        let mut lab = Lab {
            name,
            env: HashMap::new(),
        };
        let env = lab.sh(&["env"]);
        lab.env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        lab
    }

    fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("lab env has no {key}"))
    }

    /// Runs lab.sh with `args`; the output, whatever the exit status.
    fn run(&self, args: &[&str]) -> Output {
        Self::command(&self.name)
            .args(args)
            .output()
            .expect("running scripts/lab.sh")
    }

    /// Runs lab.sh with `args`; stdout, asserting success.
    fn sh(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lab.sh {args:?} failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn ctr(&self, args: &[&str]) -> Output {
        let mut a = vec!["ctr"];
        a.extend_from_slice(args);
        self.run(&a)
    }

    fn cni_id(&self, name: &str) -> String {
        format!("{}-{name}", self.get("CTR_NS"))
    }

    fn key(&self, name: &str) -> String {
        attachment_key(self.get("CNI_NETWORK"), &self.cni_id(name), "eth0")
    }

    fn state(&self) -> StateDir {
        StateDir::new(self.get("STATE_DIR"))
    }

    fn record_of(&self, name: &str) -> Option<PodRecord> {
        self.state()
            .read_record(&self.key(name))
            .expect("reading a pod record")
    }

    fn fake(&self) -> RecordFile {
        RecordFile::new(self.get("FAKE_RECORD"))
    }

    /// The proxy's decision lines, parsed.
    fn decisions(&self) -> Vec<Value> {
        let data = std::fs::read_to_string(self.get("DECISION_LOG")).unwrap_or_default();
        data.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Names of the nftables tables in the node namespace.
    fn node_tables(&self) -> BTreeSet<String> {
        let out = self.sh(&["exec-node", "nft", "list", "tables"]);
        out.lines().map(|l| l.trim().to_string()).collect()
    }

    fn guard_table(&self, name: &str) -> String {
        format!("table netdev metaguard-{}", short_hash(&self.key(name)))
    }

    fn running_tasks(&self) -> BTreeSet<String> {
        let out = self.ctr(&["task", "ls"]);
        text(&out.stdout)
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(2) == Some("RUNNING"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = Self::command(&self.name).arg("down").output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("lab.sh down failed: {}", text(&o.stderr)),
            Err(e) => eprintln!("lab.sh down: {e}"),
        }
    }
}

/// What mgcurl reported.
#[derive(Debug)]
enum Answer {
    Http { status: u16, body: String },
    Failed(String),
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Http { status, .. } => Some(*status),
            Answer::Failed(_) => None,
        }
    }
    fn body(&self) -> &str {
        match self {
            Answer::Http { body, .. } => body,
            Answer::Failed(_) => "",
        }
    }
    fn refused(&self) -> bool {
        matches!(self, Answer::Failed(e) if e == "refused")
    }
}

static EXEC_ID: AtomicU64 = AtomicU64::new(0);

/// A container started with `ctr run --cni`. Foreground runs stay attached to a `lab.sh run`
/// child; removing them (killing the task) makes ctr call CNI DEL.
struct Container<'a> {
    lab: &'a Lab,
    name: String,
    fg: Option<Child>,
}

impl<'a> Container<'a> {
    /// Foreground `ctr run --cni --rm` (DEL when the task ends), without waiting for it.
    fn spawn(lab: &'a Lab, name: &str) -> Container<'a> {
        let child = Lab::command(&lab.name)
            .args(["run", name, "sleep", "3600"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning lab.sh run");
        Container {
            lab,
            name: name.to_string(),
            fg: Some(child),
        }
    }

    /// Foreground run, waiting until it runs and is guarded.
    fn start(lab: &'a Lab, name: &str) -> Container<'a> {
        let c = Self::spawn(lab, name);
        c.wait_running();
        c
    }

    /// Detached run (`ctr run -d --cni`): ctr 1.6 never calls DEL for it.
    fn start_detached(lab: &'a Lab, name: &str) -> Container<'a> {
        lab.sh(&["run", "-d", name, "sleep", "3600"]);
        let c = Container {
            lab,
            name: name.to_string(),
            fg: None,
        };
        c.wait_running();
        c
    }

    fn wait_running(&self) {
        wait_until(
            &format!("container {} running with a pod record", self.name),
            Duration::from_secs(60),
            || {
                self.lab.record_of(&self.name).is_some()
                    && self.lab.running_tasks().contains(&self.name)
            },
        );
    }

    fn exec(&self, args: &[&str]) -> Output {
        let id = format!("e{}", EXEC_ID.fetch_add(1, Ordering::Relaxed));
        let mut a = vec!["task", "exec", "--exec-id", &id, &self.name];
        a.extend_from_slice(args);
        self.lab.ctr(&a)
    }

    /// mgcurl in the container. The answer comes back through a file in the shared root
    /// filesystem: `ctr task exec` sometimes loses a short-lived process's stdout under load.
    fn curl(&self, args: &[&str]) -> Answer {
        let file = format!(
            "/tmp/mgcurl-{}-{}.json",
            self.name,
            EXEC_ID.fetch_add(1, Ordering::Relaxed)
        );
        let mut a = vec!["mgcurl", "--json", "-m", "5", "-o", &file];
        a.extend_from_slice(args);
        let out = self.exec(&a);
        let host_path = format!("{}{file}", self.lab.get("ROOTFS"));
        let line = std::fs::read_to_string(&host_path).unwrap_or_default();
        let _ = std::fs::remove_file(&host_path);
        let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            panic!(
                "mgcurl {args:?} in {}: {e}: {line:?} (exit {:?}, stderr {})",
                self.name,
                out.status.code(),
                text(&out.stderr)
            )
        });
        if v["ok"] == Value::Bool(true) {
            Answer::Http {
                status: v["status"].as_u64().unwrap_or(0) as u16,
                body: v["body"].as_str().unwrap_or_default().to_string(),
            }
        } else {
            Answer::Failed(v["error"].as_str().unwrap_or_default().to_string())
        }
    }

    /// The task's pid, from `ctr task ls`.
    fn pid(&self) -> u32 {
        let out = self.lab.ctr(&["task", "ls"]);
        text(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(self.name.as_str()))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no task {} in ctr task ls", self.name))
    }

    /// nftables tables in the container's network namespace (listed from the host: busybox has
    /// no nft).
    fn netns_tables(&self) -> Vec<String> {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-n", "nft", "list", "tables"])
            .output()
            .expect("nsenter nft");
        assert!(
            out.status.success(),
            "nft in {}'s netns: {}",
            self.name,
            text(&out.stderr)
        );
        text(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// The global addresses of eth0, as the container sees them.
    fn ips(&self) -> BTreeSet<IpAddr> {
        let out = self.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            out.status.success(),
            "ip addr in {}: {}",
            self.name,
            text(&out.stderr)
        );
        text(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l
                    .split_whitespace()
                    .skip_while(|w| *w != "inet" && *w != "inet6");
                it.next()?;
                it.next()?.split('/').next()?.parse::<IpAddr>().ok()
            })
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
            .collect()
    }

    /// Kills the task; for a foreground run, waits until ctr has run DEL and exited.
    fn remove(mut self) {
        self.kill_and_reap();
    }

    fn kill_and_reap(&mut self) {
        let _ = self.lab.ctr(&["task", "kill", "-s", "SIGKILL", &self.name]);
        if let Some(mut child) = self.fg.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if self.fg.is_some() {
            self.kill_and_reap();
        }
    }
}

#[test]
fn containerd_end_to_end() {
    let lab = Lab::up();
    let fake = lab.fake();
    let t0 = Instant::now();

    step("a container on bridge + metaguard is guarded: record, host guard, rules in its netns");
    let a = Container::start(&lab, "alpha");
    let rec = lab.record_of("alpha").expect("alpha's record");
    assert_eq!(rec.container_id, lab.cni_id("alpha"));
    assert_eq!(rec.network, lab.get("CNI_NETWORK"));
    assert_eq!(rec.ifname, "eth0");
    assert!(rec.host_guard, "alpha has no host guard: {rec:?}");
    assert_eq!(
        rec.ips.iter().copied().collect::<BTreeSet<_>>(),
        a.ips(),
        "record IPs vs the container's"
    );
    assert!(
        lab.node_tables().contains(&lab.guard_table("alpha")),
        "no host guard table for alpha"
    );
    let pod_tables = a.netns_tables();
    assert!(
        pod_tables.iter().any(|t| t.contains("metaguard")),
        "no metaguard rules in alpha's netns: {pod_tables:?}"
    );

    step("allowed path answered, forwarded as asked, without forwarding headers");
    let r = a.curl(&[&format!("http://{MD4}/latest/meta-data/instance-id")]);
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(r.body(), INSTANCE_ID);
    let seen = fake
        .wait_for(
            |q| q.target == "/latest/meta-data/instance-id",
            Duration::from_secs(2),
        )
        .expect("the allowed request reached the fake service");
    for h in ["X-Forwarded-For", "Forwarded", "Via"] {
        assert!(!seen.has_header(h), "{h} added upstream: {seen:?}");
    }
    let cid = lab.cni_id("alpha");
    let d = lab.decisions();
    assert!(
        d.iter().any(|l| l["container_id"] == cid.as_str()
            && l["path"] == "/latest/meta-data/instance-id"
            && l["decision"] == "allow"),
        "no allow decision for alpha in {d:?}"
    );

    step("IMDSv2: token PUT, then the token on a GET");
    let tok = a.curl(&[
        "-X",
        "PUT",
        "-H",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
        &format!("http://{MD4}/latest/api/token"),
    ]);
    assert_eq!(tok.status(), Some(200), "{tok:?}");
    let with_token = a.curl(&[
        "-H",
        &format!("X-aws-ec2-metadata-token: {}", tok.body()),
        &format!("http://{MD4}/latest/meta-data/placement/availability-zone"),
    ]);
    assert_eq!(with_token.status(), Some(200), "{with_token:?}");

    step("denied paths: 403 with a reason, never at the fake service");
    for path in [
        CREDS,
        "/latest/meta-data/iam/security-credentials",
        "/latest/user-data",
    ] {
        let r = a.curl(&[&format!("http://{MD4}{path}")]);
        assert_eq!(r.status(), Some(403), "{path}: {r:?}");
        assert!(
            !r.body().trim().is_empty(),
            "{path}: the denial gives no reason"
        );
        assert!(!r.body().contains(SECRET_MARKER), "{path}: secret leaked");
    }
    assert_eq!(
        fake.count_matching(
            |q| q.target.contains("security-credentials") || q.target.contains("user-data")
        ),
        0
    );

    step("another port on the metadata address: refused (fake-metadata does listen there)");
    let other = lab.get("OTHER_PORT").to_string();
    let r = a.curl(&[&format!(
        "http://{MD4}:{other}/latest/meta-data/instance-id"
    )]);
    assert!(r.refused(), "{r:?}");

    step("IPv6 endpoint: the same decisions");
    let r = a.curl(&[&format!("http://{MD6}/latest/meta-data/instance-id")]);
    assert_eq!((r.status(), r.body()), (Some(200), INSTANCE_ID), "{r:?}");
    let r = a.curl(&[&format!("http://{MD6}{CREDS}")]);
    assert_eq!(r.status(), Some(403), "{r:?}");
    let r = a.curl(&[&format!("http://{MD6}:{other}/")]);
    assert!(r.refused(), "{r:?}");
    assert_eq!(
        fake.count_matching(|q| q.target.contains("security-credentials")),
        0
    );
    assert_eq!(
        fake.count_matching(|q| q.local.ends_with(&format!(":{other}"))),
        0,
        "something reached port {other}"
    );
    let d = lab.decisions();
    assert!(
        d.iter().any(|l| l["container_id"] == cid.as_str()
            && l["endpoint"] == "imds-v6"
            && l["decision"] == "deny"),
        "no IPv6 deny decision for alpha"
    );

    step("proxy stopped: connection refused, nothing at the fake service; started again: answered");
    lab.sh(&["proxy", "stop"]);
    let before = fake.requests().len();
    for url in [
        format!("http://{MD4}/latest/meta-data/instance-id"),
        format!("http://{MD6}/latest/meta-data/instance-id"),
    ] {
        let r = a.curl(&[&url]);
        assert!(r.refused(), "{url} with the proxy down: {r:?}");
    }
    assert_eq!(
        fake.requests().len(),
        before,
        "the fake service was reached while the proxy was down"
    );
    lab.sh(&["proxy", "start"]);
    let r = a.curl(&[&format!("http://{MD4}/latest/meta-data/instance-id")]);
    assert_eq!(r.status(), Some(200), "{r:?}");

    step("a removed container (CNI DEL) leaves no record and no guard behind");
    let alpha_key = lab.key("alpha");
    let alpha_ips = rec.ips.clone();
    a.remove();
    assert!(
        lab.record_of("alpha").is_none(),
        "alpha's record outlived DEL"
    );
    for ip in &alpha_ips {
        assert!(
            !lab.state().ip_path(ip).exists(),
            "address entry {ip} outlived DEL"
        );
    }
    assert!(
        !lab.node_tables().contains(&lab.guard_table("alpha")),
        "alpha's host guard outlived DEL"
    );
    assert!(!lab.state().list_keys().unwrap().contains(&alpha_key));

    step("a stale container (removed without DEL) is cleaned by GC; a live one is kept");
    let live = Container::start_detached(&lab, "live");
    let stale = Container::start_detached(&lab, "stale");
    let stale_rec = lab.record_of("stale").expect("stale's record after ADD");
    // The record's files as ADD wrote them, to put back below if the runtime calls DEL itself.
    let st = lab.state();
    let stale_files: Vec<(PathBuf, Vec<u8>)> = std::iter::once(st.record_path(&lab.key("stale")))
        .chain(stale_rec.ips.iter().map(|ip| st.ip_path(ip)))
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {p:?}: {e}"));
            (p, data)
        })
        .collect();
    // kill + task rm + container rm: ctr 1.6 (Debian 12) calls no DEL, the netns goes away with
    // the task and the record stays: the stale state GC is for.
    lab.sh(&["rm", "stale"]);
    drop(stale);
    if lab.record_of("stale").is_none() {
        // containerd 2's ctr (Debian 13) calls DEL at removal. Then DEL must have taken the guard
        // too, and the stale state is made by hand: the record's files put back, as a runtime
        // that lost its DEL (a crash, a reboot) leaves them.
        assert!(
            !lab.node_tables().contains(&lab.guard_table("stale")),
            "the runtime's DEL left stale's host guard"
        );
        for (p, data) in &stale_files {
            std::fs::write(p, data).unwrap_or_else(|e| panic!("putting back {p:?}: {e}"));
        }
    }
    assert!(
        lab.record_of("stale").is_some(),
        "the stale record should still be there before GC"
    );
    let gc = lab.run(&["gc"]);
    assert!(
        gc.status.success(),
        "GC failed: {}\n{}",
        text(&gc.stdout),
        text(&gc.stderr)
    );
    assert!(lab.record_of("stale").is_none(), "GC left the stale record");
    assert!(
        !lab.node_tables().contains(&lab.guard_table("stale")),
        "GC left the stale host guard"
    );
    assert!(
        lab.record_of("live").is_some(),
        "GC removed a live container's record"
    );
    assert!(
        lab.node_tables().contains(&lab.guard_table("live")),
        "GC removed a live host guard"
    );
    let r = live.curl(&[&format!("http://{MD4}/latest/meta-data/instance-id")]);
    assert_eq!(r.status(), Some(200), "live container after GC: {r:?}");
    let r = live.curl(&[&format!("http://{MD4}{CREDS}")]);
    assert_eq!(r.status(), Some(403), "live container after GC: {r:?}");
    // Removed the same way, "live" is stale now too: the next GC takes it.
    lab.sh(&["rm", "live"]);
    drop(live);
    lab.sh(&["gc"]);
    assert!(lab.record_of("live").is_none(), "second GC left the record");
    assert!(
        !lab.node_tables().contains(&lab.guard_table("live")),
        "second GC left the host guard"
    );
    assert!(
        lab.state().list_keys().unwrap().is_empty(),
        "records left after GC"
    );

    step(&format!(
        "{PARALLEL} containers started at once: all guarded, records right, each identified"
    ));
    let started = Instant::now();
    let names: Vec<String> = (0..PARALLEL).map(|i| format!("p{i:02}")).collect();
    let pods: Vec<Container> = names.iter().map(|n| Container::spawn(&lab, n)).collect();
    wait_until(
        "all parallel containers running with records",
        Duration::from_secs(180),
        || {
            let running = lab.running_tasks();
            names
                .iter()
                .all(|n| running.contains(n) && lab.record_of(n).is_some())
        },
    );
    eprintln!("{PARALLEL} containers up in {:?}", started.elapsed());
    let tables = lab.node_tables();
    let mut all_ips = BTreeSet::new();
    for p in &pods {
        let rec = lab.record_of(&p.name).expect("record");
        assert_eq!(rec.container_id, lab.cni_id(&p.name));
        assert!(rec.host_guard, "{}: no host guard", p.name);
        let ips = p.ips();
        assert_eq!(
            rec.ips.iter().copied().collect::<BTreeSet<_>>(),
            ips,
            "{}: record IPs",
            p.name
        );
        assert_eq!(
            ips.len(),
            2,
            "{}: one IPv4 and one IPv6 address expected: {ips:?}",
            p.name
        );
        for ip in &ips {
            assert!(all_ips.insert(*ip), "{ip} given twice");
            let owner = lab.state().lookup_ip(ip).unwrap().map(|r| r.key());
            assert_eq!(
                owner,
                Some(lab.key(&p.name)),
                "{ip}: owner in the state directory"
            );
        }
        assert!(
            tables.contains(&lab.guard_table(&p.name)),
            "{}: no host guard table",
            p.name
        );
    }
    // Every pod, concurrently: allowed over IPv4, denied credentials over IPv6.
    std::thread::scope(|s| {
        for p in &pods {
            s.spawn(move || {
                let ok = p.curl(&[&format!("http://{MD4}/latest/meta-data/instance-id")]);
                assert_eq!(ok.status(), Some(200), "{}: {ok:?}", p.name);
                let no = p.curl(&[&format!("http://{MD6}{CREDS}")]);
                assert_eq!(no.status(), Some(403), "{}: {no:?}", p.name);
            });
        }
    });
    // The proxy attributed every request to the right container, by its source address. The
    // decision log is written in batches by a background writer: wait (bounded) until every
    // pod's allow and deny lines are in the file.
    let cids: Vec<String> = pods.iter().map(|p| lab.cni_id(&p.name)).collect();
    let mut d = Vec::new();
    metaguard_tests::netns::wait_for(
        "every pod's decision lines",
        Duration::from_secs(10),
        || {
            d = lab.decisions();
            cids.iter().all(|cid| {
                ["allow", "deny"].iter().all(|want| {
                    d.iter()
                        .any(|l| l["container_id"] == cid.as_str() && l["decision"] == *want)
                })
            })
        },
    );
    for p in &pods {
        let cid = lab.cni_id(&p.name);
        let rec = lab.record_of(&p.name).expect("record");
        let mine: Vec<&Value> = d
            .iter()
            .filter(|l| l["container_id"] == cid.as_str())
            .collect();
        assert!(
            mine.iter().any(|l| l["decision"] == "allow"),
            "{cid}: no allow line"
        );
        assert!(
            mine.iter().any(|l| l["decision"] == "deny"),
            "{cid}: no deny line"
        );
        for l in &mine {
            let src: IpAddr = l["src"].as_str().and_then(|s| s.parse().ok()).expect("src");
            assert!(
                rec.ips.contains(&src),
                "{cid}: decision from {src}, not one of its addresses"
            );
        }
    }
    assert_eq!(
        fake.count_matching(|q| q.target.contains("security-credentials")),
        0
    );

    step("removing them all: every record, address entry and guard goes");
    let keys: Vec<String> = names.iter().map(|n| lab.key(n)).collect();
    std::thread::scope(|s| {
        for p in pods {
            s.spawn(move || p.remove());
        }
    });
    let left = lab.state().list_keys().unwrap();
    for k in &keys {
        assert!(!left.contains(k), "{k} outlived DEL");
    }
    let ips_left: Vec<String> = std::fs::read_dir(lab.state().ips_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| {
                    format!(
                        "{} -> {}",
                        e.file_name().to_string_lossy(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        ips_left.is_empty(),
        "address entries left behind: {ips_left:?}"
    );
    let tables = lab.node_tables();
    assert!(
        !tables.iter().any(|t| t.contains("metaguard")),
        "guards left: {tables:?}"
    );
    eprintln!("scenarios took {:?}", t0.elapsed());
}
