//! `cni-bench`: the timing driver of `scripts/bench-plugin.sh`.
//!
//! It runs the plugins of a conflist the way a runtime (libcni) does: ADD in list order, each
//! plugin getting the previous plugin's output as `prevResult`; DEL in reverse order, each plugin
//! getting the cached result of the whole ADD. Every plugin is one whole process (spawn, stdin,
//! stdout, exit), timed with the monotonic clock from just before `spawn` to just after `wait4`
//! returns, and its peak memory read from the `rusage` that `wait4` hands back (`ru_maxrss` of the
//! process and the children it waited for, e.g. bridge's host-local or portmap's iptables).
//!
//! Doing this from one small compiled process (instead of `ip netns exec` or a shell per plugin)
//! keeps the driver's own overhead out of the figures: the script starts the driver once per pod
//! inside the node namespace, and the driver's children inherit it.
//!
//! ```text
//! cni-bench add   --conflist F --netns PATH --cid ID [--ifname eth0] [--host-port N] [--cache DIR]
//!                 [--out FILE.jsonl --label L] [--cni-path DIRS] [--skip TYPE]...
//! cni-bench del   (same options; prevResult from --cache DIR/<cid>.json when present)
//! cni-bench cycle (same options; ADD then DEL of the same pod, both timed)
//! cni-bench stats --in FILE.jsonl [--base 0] [--load 200]
//! ```
//! Each timed plugin run appends one JSON line to `--out`:
//! `{"label","pod","plugin","cmd","ms","maxrss_kb","status"}`.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

const USAGE: &str =
    "usage: cni-bench add|del|cycle --conflist F --netns PATH --cid ID [--ifname eth0] \
[--host-port N] [--cache DIR] [--out FILE --label L] [--cni-path DIRS] [--skip TYPE]...\n       \
cni-bench stats --in FILE [--base LABEL] [--load LABEL]\n       \
cni-bench floor [--runs N] [--bin PATH]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("add") | Some("del") | Some("cycle") => {
            Opts::parse(&args[1..]).and_then(|o| run_chain(&args[0], &o))
        }
        Some("stats") => stats(&args[1..]),
        Some("floor") => floor(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cni-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    conflist: PathBuf,
    netns: String,
    cid: String,
    ifname: String,
    host_port: Option<u16>,
    cache: Option<PathBuf>,
    out: Option<PathBuf>,
    label: String,
    cni_path: String,
    skip: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            conflist: PathBuf::new(),
            netns: String::new(),
            cid: String::new(),
            ifname: "eth0".into(),
            host_port: None,
            cache: None,
            out: None,
            label: "run".into(),
            cni_path: std::env::var("CNI_PATH").unwrap_or_else(|_| "/usr/lib/cni".into()),
            skip: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--conflist" => o.conflist = val()?.into(),
                "--netns" => o.netns = val()?,
                "--cid" => o.cid = val()?,
                "--ifname" => o.ifname = val()?,
                "--host-port" => {
                    o.host_port = Some(val()?.parse().map_err(|e| format!("--host-port: {e}"))?)
                }
                "--cache" => o.cache = Some(val()?.into()),
                "--out" => o.out = Some(val()?.into()),
                "--label" => o.label = val()?,
                "--cni-path" => o.cni_path = val()?,
                "--skip" => o.skip.push(val()?),
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        if o.conflist.as_os_str().is_empty() || o.netns.is_empty() || o.cid.is_empty() {
            return Err(format!(
                "--conflist, --netns and --cid are required\n{USAGE}"
            ));
        }
        Ok(o)
    }
}

/// One plugin of the list, ready to run: its binary and its network configuration (with `name`
/// and `cniVersion` of the list, and `runtimeConfig` for the capabilities it asks for).
struct Plugin {
    ptype: String,
    bin: PathBuf,
    conf: Map<String, Value>,
}

fn load_plugins(o: &Opts) -> Result<Vec<Plugin>, String> {
    let text =
        fs::read_to_string(&o.conflist).map_err(|e| format!("{}: {e}", o.conflist.display()))?;
    let list: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", o.conflist.display()))?;
    let name = list.get("name").cloned().ok_or("conflist has no name")?;
    let version = list
        .get("cniVersion")
        .cloned()
        .ok_or("conflist has no cniVersion")?;
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or("conflist has no plugins")?;
    let mut out = Vec::new();
    for p in plugins {
        let mut conf = p
            .as_object()
            .cloned()
            .ok_or("a plugin entry is not an object")?;
        let ptype = conf
            .get("type")
            .and_then(Value::as_str)
            .ok_or("a plugin has no type")?
            .to_string();
        if o.skip.contains(&ptype) {
            continue;
        }
        conf.insert("name".into(), name.clone());
        conf.insert("cniVersion".into(), version.clone());
        // libcni fills runtimeConfig only with the capabilities the plugin declares.
        let wants_ports = conf
            .get("capabilities")
            .and_then(|c| c.get("portMappings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let (true, Some(hp)) = (wants_ports, o.host_port) {
            conf.insert(
                "runtimeConfig".into(),
                json!({"portMappings": [{"hostPort": hp, "containerPort": 80, "protocol": "tcp"}]}),
            );
        }
        let bin = o
            .cni_path
            .split(':')
            .map(|d| Path::new(d).join(&ptype))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("plugin {ptype} not found in CNI_PATH {}", o.cni_path))?;
        out.push(Plugin { ptype, bin, conf });
    }
    Ok(out)
}

/// What one plugin process did.
struct Outcome {
    stdout: Vec<u8>,
    /// Exit code, or 128 + signal number.
    status: i32,
    ms: f64,
    maxrss_kb: i64,
}

/// Runs one plugin as a whole process and times it: spawn, write stdin, read stdout, wait4.
fn exec_plugin(
    bin: &Path,
    env: &[(&str, &str)],
    stdin: &[u8],
    stderr_file: &Path,
) -> Result<Outcome, String> {
    // Opened before the clock starts: the runtime's own bookkeeping is not the plugin's time.
    let errf = File::create(stderr_file).map_err(|e| format!("{}: {e}", stderr_file.display()))?;
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(errf));
    let mut stdout = Vec::with_capacity(4096);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    if let Some(mut si) = child.stdin.take() {
        // A plugin may exit without reading stdin (errors): a broken pipe is its answer, not ours.
        match si.write_all(stdin) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(format!("writing stdin: {e}")),
        }
    }
    if let Some(mut so) = child.stdout.take() {
        so.read_to_end(&mut stdout)
            .map_err(|e| format!("reading stdout: {e}"))?;
    }
    let pid = child.id() as libc::pid_t;
    let mut wstatus: libc::c_int = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for a child we spawned and have not reaped (std's Child never is waited
        // here, and dropping it does not wait).
        let r = unsafe { libc::wait4(pid, &mut wstatus, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(format!("wait4: {err}"));
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let status = if libc::WIFEXITED(wstatus) {
        libc::WEXITSTATUS(wstatus)
    } else {
        128 + libc::WTERMSIG(wstatus)
    };
    Ok(Outcome {
        stdout,
        status,
        ms,
        maxrss_kb: ru.ru_maxrss,
    })
}

struct Recorder {
    file: Option<File>,
    label: String,
    pod: String,
}

impl Recorder {
    fn record(&mut self, plugin: &str, cmd: &str, o: &Outcome) -> Result<(), String> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        let line = json!({
            "label": self.label, "pod": self.pod, "plugin": plugin, "cmd": cmd,
            "ms": (o.ms * 1000.0).round() / 1000.0, "maxrss_kb": o.maxrss_kb, "status": o.status,
        });
        writeln!(f, "{line}").map_err(|e| format!("writing results: {e}"))
    }
}

fn run_chain(sub: &str, o: &Opts) -> Result<(), String> {
    let plugins = load_plugins(o)?;
    let file = match &o.out {
        Some(p) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut rec = Recorder {
        file,
        label: o.label.clone(),
        pod: o.cid.clone(),
    };
    let cache_file = o.cache.as_ref().map(|d| d.join(format!("{}.json", o.cid)));
    let stderr_file = std::env::temp_dir().join(format!("cni_bench.{}.stderr", std::process::id()));
    let res = (|| match sub {
        "add" => {
            let result = chain_add(o, &plugins, &mut rec, &stderr_file)?;
            if let Some(cf) = &cache_file {
                fs::write(cf, result.to_string()).map_err(|e| format!("{}: {e}", cf.display()))?;
            }
            Ok(())
        }
        "del" => {
            let cached = match &cache_file {
                Some(cf) => match fs::read_to_string(cf) {
                    Ok(t) => Some(
                        serde_json::from_str(&t).map_err(|e| format!("{}: {e}", cf.display()))?,
                    ),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(format!("{}: {e}", cf.display())),
                },
                None => None,
            };
            chain_del(o, &plugins, cached.as_ref(), &mut rec, &stderr_file)?;
            if let Some(cf) = &cache_file {
                let _ = fs::remove_file(cf);
            }
            Ok(())
        }
        _ => {
            let result = chain_add(o, &plugins, &mut rec, &stderr_file)?;
            chain_del(o, &plugins, Some(&result), &mut rec, &stderr_file)
        }
    })();
    let _ = fs::remove_file(&stderr_file);
    res
}

fn cni_args(o: &Opts) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID=uid-{cid}",
        cid = o.cid
    )
}

fn run_one(
    o: &Opts,
    p: &Plugin,
    cmd: &str,
    prev: Option<&Value>,
    rec: &mut Recorder,
    stderr_file: &Path,
) -> Result<Outcome, String> {
    let mut conf = p.conf.clone();
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let stdin = Value::Object(conf).to_string();
    let args = cni_args(o);
    let env = [
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", o.cid.as_str()),
        ("CNI_NETNS", o.netns.as_str()),
        ("CNI_IFNAME", o.ifname.as_str()),
        ("CNI_ARGS", args.as_str()),
        ("CNI_PATH", o.cni_path.as_str()),
        // portmap and bridge look up iptables/ip6tables on PATH.
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
    ];
    let out = exec_plugin(&p.bin, &env, stdin.as_bytes(), stderr_file)?;
    rec.record(&p.ptype, cmd, &out)?;
    if out.status != 0 {
        let err = fs::read_to_string(stderr_file).unwrap_or_default();
        return Err(format!(
            "{} {cmd} (pod {}) exited {}\nstdout: {}\nstderr: {}",
            p.ptype,
            o.cid,
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            err.trim()
        ));
    }
    Ok(out)
}

fn chain_add(
    o: &Opts,
    plugins: &[Plugin],
    rec: &mut Recorder,
    stderr_file: &Path,
) -> Result<Value, String> {
    let mut prev: Option<Value> = None;
    for p in plugins {
        let out = run_one(o, p, "ADD", prev.as_ref(), rec, stderr_file)?;
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{} ADD printed no JSON result: {e}", p.ptype))?;
        prev = Some(v);
    }
    prev.ok_or_else(|| "the conflist has no plugins to run".to_string())
}

fn chain_del(
    o: &Opts,
    plugins: &[Plugin],
    cached: Option<&Value>,
    rec: &mut Recorder,
    stderr_file: &Path,
) -> Result<(), String> {
    // Like libcni: reverse order, every plugin gets the cached ADD result; keep going past a
    // failure so the pod is torn down as far as possible, then report the first error.
    let mut first_err = None;
    for p in plugins.iter().rev() {
        if let Err(e) = run_one(o, p, "DEL", cached, rec, stderr_file) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The harness's own floor: the same spawn/stdin/stdout/wait4 path around a process that does
/// nothing (`/bin/true` by default), so readers know how much of a figure is not the plugin's.
fn floor(args: &[String]) -> Result<(), String> {
    let mut runs: usize = 30;
    let mut bin = PathBuf::from("/bin/true");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--runs" => runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--bin" => bin = val()?.into(),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let stderr_file = std::env::temp_dir().join(format!("cni_bench.{}.floor", std::process::id()));
    let env = [("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")];
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        t.push(exec_plugin(&bin, &env, b"{}", &stderr_file)?.ms);
    }
    let _ = fs::remove_file(&stderr_file);
    t.sort_by(f64::total_cmp);
    println!(
        "harness floor ({} spawned {} times): median {:.2} ms, p90 {:.2} ms",
        bin.display(),
        t.len(),
        percentile(&t, 0.5),
        percentile(&t, 0.9)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// stats

struct Row {
    label: String,
    plugin: String,
    cmd: String,
    ms: f64,
    maxrss_kb: i64,
}

/// (rank of the plugin in the report, plugin, level rank + label, command).
type GroupKey = (usize, String, String, String);

/// Linear-interpolation percentile (the "type 7" definition) of sorted data.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn stats(args: &[String]) -> Result<(), String> {
    let mut input = None;
    let mut base = "0".to_string();
    let mut load = "200".to_string();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--in" => input = Some(val()?),
            "--base" => base = val()?,
            "--load" => load = val()?,
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let input = input.ok_or("stats needs --in FILE")?;
    let text = fs::read_to_string(&input).map_err(|e| format!("{input}: {e}"))?;
    let mut rows = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{input}:{}: {e}", n + 1))?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if v.get("status").and_then(Value::as_i64) != Some(0) {
            continue;
        }
        rows.push(Row {
            label: s("label"),
            plugin: s("plugin"),
            cmd: s("cmd"),
            ms: v.get("ms").and_then(Value::as_f64).unwrap_or(f64::NAN),
            maxrss_kb: v.get("maxrss_kb").and_then(Value::as_i64).unwrap_or(0),
        });
    }
    // (plugin, label, cmd) -> (times, max rss)
    let order = ["bridge", "portmap", "metaguard"];
    let mut groups: BTreeMap<GroupKey, (Vec<f64>, i64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.label == base || r.label == load) {
        let rank = order
            .iter()
            .position(|p| *p == r.plugin)
            .unwrap_or(order.len());
        let level = if r.label == base { 0 } else { 1 };
        let g = groups
            .entry((
                rank,
                r.plugin.clone(),
                format!("{level}{}", r.label),
                r.cmd.clone(),
            ))
            .or_insert((Vec::new(), 0));
        g.0.push(r.ms);
        g.1 = g.1.max(r.maxrss_kb);
    }
    let mut medians: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    println!(
        "| plugin | pods on node | cmd | n | median ms | p90 ms | min ms | max ms | peak RSS KiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for ((_, plugin, level, cmd), (mut t, rss)) in groups {
        t.sort_by(f64::total_cmp);
        let label = &level[1..];
        let med = percentile(&t, 0.5);
        medians.insert((plugin.clone(), label.to_string(), cmd.clone()), med);
        println!(
            "| {plugin} | {label} | {cmd} | {} | {med:.2} | {:.2} | {:.2} | {:.2} | {rss} |",
            t.len(),
            percentile(&t, 0.9),
            t[0],
            t[t.len() - 1]
        );
    }
    let m = |p: &str, l: &str, c: &str| {
        medians
            .get(&(p.to_string(), l.to_string(), c.to_string()))
            .copied()
    };
    println!();
    println!("Targets (issue 2):");
    let check = |what: String, num: Option<f64>, den: Option<f64>, limit: f64| match (num, den) {
        (Some(a), Some(b)) if b > 0.0 => {
            let r = a / b;
            let verdict = if r <= limit { "PASS" } else { "FAIL" };
            println!("  {what} = {a:.2} / {b:.2} = {r:.3}  (target <= {limit})  {verdict}");
        }
        _ => println!("  {what}: n/a (missing samples)"),
    };
    check(
        format!("metaguard ADD median / portmap ADD median at {base} pods"),
        m("metaguard", &base, "ADD"),
        m("portmap", &base, "ADD"),
        0.2,
    );
    check(
        format!("metaguard DEL median / portmap DEL median at {base} pods"),
        m("metaguard", &base, "DEL"),
        m("portmap", &base, "DEL"),
        0.2,
    );
    check(
        format!("metaguard ADD median at {load} pods / at {base} pods"),
        m("metaguard", &load, "ADD"),
        m("metaguard", &base, "ADD"),
        1.2,
    );
    let peak = |cmd: &str| {
        rows.iter()
            .filter(|r| r.plugin == "metaguard" && r.cmd == cmd)
            .map(|r| r.maxrss_kb)
            .max()
    };
    match (peak("ADD"), peak("DEL")) {
        (Some(a), Some(d)) => println!(
            "Peak memory of metaguard (max ru_maxrss over every run, incl. background pods): ADD {a} KiB ({:.1} MiB), DEL {d} KiB ({:.1} MiB)",
            a as f64 / 1024.0,
            d as f64 / 1024.0
        ),
        _ => println!("Peak memory of metaguard: n/a (no metaguard samples)"),
    }
    Ok(())
}
