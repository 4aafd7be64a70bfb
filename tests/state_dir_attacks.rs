//! The state directory against whoever can create entries in it (issue 11, item 6; root).
//!
//! The plugin runs as root and writes `pods/<key>.json` and `ips/<ip>` through a temporary file
//! and a rename; the proxy trusts what it reads there. Attacks, each with a control:
//! - symlinks planted at the temporary names the old plugin used (`.{name}.tmp.{pid}`, for a
//!   range of pids that contains the plugin's) and at the entries themselves, pointing at victim
//!   files outside the state directory: after ADD every victim is unchanged and the entries are
//!   regular files. Control: the old `write_atomic` (reproduced below) with the plugin's own pid
//!   and the same planted links overwrites the victim and leaves the entry a symlink to it;
//! - a state directory (or `pods/`, `ips/`) writable by group or others, owned by someone else,
//!   or a symlink: ADD, DEL, CHECK and GC fail with CNI error 7 naming `stateDir` before anything
//!   is changed (no nftables table, no record). Control: the same pod, the directory fixed, is
//!   guarded;
//! - the proxy refuses to start on such a directory (exit 1, a message naming the path and the
//!   fix). Control: it starts on the same directory fixed, and on one that does not exist yet;
//! - a record or address entry replaced by a symlink to a copy of itself: the proxy refuses the
//!   caller (403, decision `error`, nothing upstream). Control: the same bytes as a regular file
//!   give the pod its identity (200).
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test state_dir_attacks`.

use metaguard_common::state::StateDir;
use metaguard_tests::bins;
use metaguard_tests::cni::{exec_plugin, nft_tables, Node, Pod};
use metaguard_tests::netns::{wait_for, wait_for_value, TempDir};
use metaguard_tests::proxy::{get_status, imds, Cloud, Proxy, ProxyOptions};
use serde_json::json;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

const V: &str = "1.0.0";
/// How many pids after the last one allocated get a planted temporary name.
const PLANTED_PIDS: u32 = 4096;
const PRECIOUS: &[u8] = b"precious: must never be written by the plugin\n";

/// The old `write_atomic`, as it was before this change: a predictable temporary name (`pid` is
/// the writer's process id) opened with `File::create` (follows a symlink, truncates what it
/// points at), then renamed into place (which moves the symlink itself there).
fn old_write_atomic(path: &Path, data: &[u8], pid: u32) -> std::io::Result<()> {
    let dir = path.parent().expect("path has a parent");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("UTF-8 name");
    let tmp = dir.join(format!(".{name}.tmp.{pid}"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    fs::rename(&tmp, path)
}

fn read_number(path: &str) -> u32 {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path} is not a number: {e}"))
}

/// The next `PLANTED_PIDS` pids the kernel will hand out (in order, wrapping past pid_max to 300
/// as the kernel does).
fn next_pids() -> Vec<u32> {
    let last = read_number("/proc/sys/kernel/ns_last_pid");
    let max = read_number("/proc/sys/kernel/pid_max");
    (1..=PLANTED_PIDS)
        .map(|i| {
            let p = last + i;
            if p >= max {
                p - max + 300
            } else {
                p
            }
        })
        .collect()
}

/// The plugin's pid, from its log lines (`metaguard[PID] ...`).
fn plugin_pid(stderr: &str) -> u32 {
    stderr
        .split("metaguard[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no metaguard[PID] in the plugin's log:\n{stderr}"))
}

fn victim(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, PRECIOUS).expect("write victim");
    p
}

fn assert_untouched(v: &Path) {
    assert_eq!(
        fs::read(v).expect("read victim"),
        PRECIOUS,
        "{} was written through a planted link",
        v.display()
    );
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn is_regular(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").permissions().mode() & 0o7777
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Temporary files in `dir` that are not links the test planted (leftovers of a write).
fn stray_temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

/// Everything metaguard would have left: tables in the node and the pod, records, address entries.
fn traces(node: &Node, pod: &Pod<'_>) -> Vec<String> {
    let mut v: Vec<String> = node
        .record_keys()
        .into_iter()
        .map(|k| format!("record {k}"))
        .collect();
    v.extend(
        node.ip_entries()
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .map(|n| format!("address entry {n}")),
    );
    for (where_, ns) in [("node", &node.ns), ("pod", &pod.ns)] {
        v.extend(
            nft_tables(ns)
                .into_iter()
                .filter(|t| t.contains("metaguard"))
                .map(|t| format!("{where_} table {t}")),
        );
    }
    v
}

#[test]
fn planted_links_at_temporary_names_and_entries_redirect_nothing() {
    let node = Node::new();
    let mut pod = node.bridge_pod(V);
    let state = StateDir::new(node.state_dir());
    state.create_dirs().expect("create state dirs");
    let key = pod.key();
    let ips = [pod.ip(false), pod.ip(true)];
    let outside = node.dir.path();

    // The entries themselves, linked to victims.
    let v_record = victim(outside, "victim-record");
    symlink(&v_record, state.record_path(&key)).expect("plant record link");
    let mut v_ips = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let v = victim(outside, &format!("victim-ip{i}"));
        symlink(&v, state.ip_path(ip)).expect("plant address link");
        v_ips.push(v);
    }
    // Every temporary name the old plugin could use in the next PLANTED_PIDS processes.
    let v_tmp_record = victim(outside, "victim-tmp-record");
    let v_tmp_ip = victim(outside, "victim-tmp-ip");
    let pids = next_pids();
    for &pid in &pids {
        let rec_tmp = state.pods_dir().join(format!(".{key}.json.tmp.{pid}"));
        symlink(&v_tmp_record, rec_tmp).expect("plant temporary link");
        for ip in &ips {
            let tmp = state.ips_dir().join(format!(".{ip}.tmp.{pid}"));
            symlink(&v_tmp_ip, tmp).expect("plant temporary link");
        }
    }

    let out = pod.metaguard("ADD");
    pod.mg_result = Some(out.expect_ok());
    let pid = plugin_pid(&out.stderr);
    assert!(
        pids.contains(&pid),
        "the plugin's pid {pid} is not among the {PLANTED_PIDS} planted from {}: the attack did \
         not cover it (too many processes started meanwhile)",
        pids[0]
    );

    for v in [&v_record, &v_tmp_record, &v_tmp_ip]
        .into_iter()
        .chain(&v_ips)
    {
        assert_untouched(v);
    }
    assert!(
        is_regular(&state.record_path(&key)),
        "record is not a regular file"
    );
    let rec = state
        .read_record(&key)
        .expect("record readable")
        .expect("record present");
    assert_eq!(rec.container_id, pod.container_id);
    for ip in &ips {
        assert!(
            is_regular(&state.ip_path(ip)),
            "ips/{ip} is not a regular file"
        );
        assert_eq!(
            state.owner_of(ip).expect("address entry"),
            Some(key.clone())
        );
        assert_eq!(
            mode_of(&state.ip_path(ip)) & 0o133,
            0,
            "ips/{ip} is writable by others or executable"
        );
        // The links at the old names are still there, untouched (not renamed into place).
        assert!(is_symlink(
            &state.ips_dir().join(format!(".{ip}.tmp.{pid}"))
        ));
    }
    for dir in [state.pods_dir(), state.ips_dir()] {
        assert_eq!(stray_temporaries(&dir), Vec::<String>::new());
    }

    // Control: the old write_atomic, with this very plugin process's pid and the same planted
    // links, writes the victim and leaves the entry a symlink to it.
    let ip = ips[0];
    old_write_atomic(&state.ip_path(&ip), key.as_bytes(), pid).expect("old write");
    assert_eq!(
        fs::read(&v_tmp_ip).expect("read victim"),
        key.as_bytes(),
        "control: the planted link did not redirect the old write"
    );
    assert!(
        is_symlink(&state.ip_path(&ip)),
        "control: the old rename did not leave ips/{ip} a symlink"
    );
    assert_eq!(
        fs::read_link(state.ip_path(&ip)).expect("readlink"),
        v_tmp_ip
    );
    // The entry is a link now; put the real one back so DEL (on drop) finds its own entry.
    fs::remove_file(state.ip_path(&ip)).expect("remove control link");
    metaguard_common::state::write_atomic(&state.ip_path(&ip), key.as_bytes())
        .expect("restore entry");
}

#[test]
fn directories_are_created_0755_and_files_0644_under_umask_000() {
    let node = Node::new();
    let mut pod = node.bridge_pod(V);
    // The runtime's umask is not ours to choose: run the plugin under the worst one.
    let wrapper = node.dir.path().join("metaguard-umask-000");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\numask 000\nexec '{}' \"$@\"\n",
            bins::bin("metaguard").display()
        ),
    )
    .expect("write wrapper");
    set_mode(&wrapper, 0o755);
    assert!(!node.state_dir().exists());
    let out = exec_plugin(
        &wrapper,
        Some(&node.ns),
        &pod.call("ADD").env(),
        &serde_json::to_vec(&pod.metaguard_conf()).expect("conf"),
    );
    pod.mg_result = Some(out.expect_ok());
    let state = StateDir::new(node.state_dir());
    for dir in [
        state.root().to_path_buf(),
        state.pods_dir(),
        state.ips_dir(),
    ] {
        assert_eq!(mode_of(&dir), 0o755, "{}", dir.display());
    }
    assert_eq!(mode_of(&state.record_path(&pod.key())), 0o644);
    assert_eq!(mode_of(&state.ip_path(&pod.ip(false))), 0o644);
    // And the plugin accepts what it made (a second command checks it).
    pod.metaguard("CHECK").expect_ok();
}

/// How a state directory is made unsafe, and what the error must say about it.
struct Unsafe {
    what: &'static str,
    /// Makes it unsafe; returns the path the error must name.
    apply: fn(&StateDir, &Path) -> PathBuf,
    /// What the details must contain besides the path (the reason or the fix).
    says: &'static str,
}

fn unsafe_dirs() -> Vec<Unsafe> {
    vec![
        Unsafe {
            what: "state directory 0777",
            apply: |s, _| {
                set_mode(s.root(), 0o777);
                s.root().to_path_buf()
            },
            says: "chmod go-w",
        },
        Unsafe {
            what: "pods/ group-writable (0775)",
            apply: |s, _| {
                set_mode(&s.pods_dir(), 0o775);
                s.pods_dir()
            },
            says: "writable by group or others",
        },
        Unsafe {
            what: "ips/ other-writable (0757)",
            apply: |s, _| {
                set_mode(&s.ips_dir(), 0o757);
                s.ips_dir()
            },
            says: "chmod go-w",
        },
        Unsafe {
            what: "state directory owned by nobody",
            apply: |s, _| {
                std::os::unix::fs::chown(s.root(), Some(65534), None).expect("chown");
                s.root().to_path_buf()
            },
            says: "chown root",
        },
        Unsafe {
            what: "state directory a symlink to a good directory",
            apply: |s, scratch| {
                let real = scratch.join("real-state");
                fs::rename(s.root(), &real).expect("move state dir");
                symlink(&real, s.root()).expect("link state dir");
                s.root().to_path_buf()
            },
            says: "is a symlink",
        },
    ]
}

/// Undoes any [`Unsafe`]: a real directory, mode 0755, owned by root, subdirectories likewise.
fn make_safe(s: &StateDir, scratch: &Path) {
    let real = scratch.join("real-state");
    if fs::symlink_metadata(s.root()).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(s.root()).expect("remove link");
        fs::rename(&real, s.root()).expect("move state dir back");
    }
    s.create_dirs().expect("create state dirs");
    for d in [s.root().to_path_buf(), s.pods_dir(), s.ips_dir()] {
        std::os::unix::fs::chown(&d, Some(0), Some(0)).expect("chown");
        set_mode(&d, 0o755);
    }
    s.check_secure().expect("state dir safe again");
}

fn assert_state_dir_error(out: &metaguard_tests::cni::PluginOutput, path: &Path, says: &str) {
    let e = out.expect_error(7);
    let msg = e["msg"].as_str().unwrap_or_default();
    let details = e["details"].as_str().unwrap_or_default();
    assert!(msg.contains("stateDir"), "msg does not name stateDir: {e}");
    assert!(
        details.contains(&path.display().to_string()),
        "details do not name {}: {e}",
        path.display()
    );
    assert!(details.contains(says), "details do not say {says:?}: {e}");
}

#[test]
fn unsafe_state_dir_fails_every_command_with_code_7_and_changes_nothing() {
    let node = Node::new();
    let scratch = TempDir::new("statescratch");
    let state = StateDir::new(node.state_dir());
    let mut pod = node.bridge_pod(V);
    let gc_conf = {
        let mut c = node.metaguard_conf("1.1.0", &json!({}));
        c["cni.dev/attachments"] = json!([]);
        c
    };

    for u in unsafe_dirs() {
        make_safe(&state, scratch.path());
        let path = (u.apply)(&state, scratch.path());
        let out = pod.metaguard("ADD");
        assert_state_dir_error(&out, &path, u.says);
        assert_eq!(traces(&node, &pod), Vec::<String>::new(), "{}", u.what);
        for cmd in ["DEL", "CHECK"] {
            assert_state_dir_error(&pod.metaguard(cmd), &path, u.says);
        }
        assert_state_dir_error(&node.run_metaguard_global("GC", &gc_conf), &path, u.says);
    }

    // Control: the same pod with the directory fixed is guarded, and that shows up where the
    // refused ADDs were checked for traces.
    make_safe(&state, scratch.path());
    let out = pod.metaguard("ADD");
    pod.mg_result = Some(out.expect_ok());
    let t = traces(&node, &pod);
    assert!(t.iter().any(|t| t.starts_with("pod table")), "{t:?}");
    assert!(t.iter().any(|t| t.starts_with("record")), "{t:?}");

    // With an existing pod, an unsafe directory still stops DEL before it removes anything.
    set_mode(state.root(), 0o777);
    assert_state_dir_error(&pod.metaguard("DEL"), state.root(), "chmod go-w");
    assert_eq!(traces(&node, &pod), t, "the refused DEL changed something");
    set_mode(state.root(), 0o755);
    pod.metaguard("DEL").expect_ok();

    // A state directory that does not exist is no reason to fail DEL.
    fs::remove_dir_all(state.root()).expect("remove state dir");
    pod.metaguard("DEL").expect_ok();
}

/// Runs `metaguard-proxy run` in `node` on `state_dir`, expecting it to exit by itself within
/// 10 s. Returns its exit status and stderr.
fn proxy_exit(node: &Node, state_dir: &Path) -> (ExitStatus, String) {
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            // Only if it is still running (the wait below timed out).
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = TempDir::new("proxyrefuse");
    let stderr_path = dir.path().join("stderr");
    let stderr = fs::File::create(&stderr_path).expect("stderr file");
    let child = node
        .ns
        .command(bins::bin("metaguard-proxy"))
        .arg("run")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--decision-log")
        .arg(dir.path().join("decisions.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn metaguard-proxy");
    let mut child = Reap(child);
    let status = wait_for_value("metaguard-proxy to exit", Duration::from_secs(10), || {
        child.0.try_wait().expect("try_wait")
    });
    (status, fs::read_to_string(&stderr_path).unwrap_or_default())
}

#[test]
fn proxy_refuses_to_start_on_an_unsafe_state_dir() {
    let node = Node::new();
    let scratch = TempDir::new("statescratch");
    let state = StateDir::new(node.state_dir());

    for u in unsafe_dirs() {
        make_safe(&state, scratch.path());
        let path = (u.apply)(&state, scratch.path());
        let (status, stderr) = proxy_exit(&node, state.root());
        assert_eq!(status.code(), Some(1), "{}: {status}\n{stderr}", u.what);
        assert!(stderr.contains("refusing to start"), "{}: {stderr}", u.what);
        assert!(
            stderr.contains(&path.display().to_string()),
            "{}: stderr does not name {}: {stderr}",
            u.what,
            path.display()
        );
        assert!(stderr.contains(u.says), "{}: {stderr}", u.what);
    }

    // Controls: the same directory fixed, and one that does not exist yet (the plugin creates it
    // at the first ADD), both start.
    make_safe(&state, scratch.path());
    let mut p = Proxy::start(ProxyOptions::new(node.ns.name(), state.root()));
    assert!(p.stop().is_some_and(|s| s.success()));
    fs::remove_dir_all(state.root()).expect("remove state dir");
    let mut p = Proxy::start(ProxyOptions::new(node.ns.name(), state.root()));
    assert!(p.stop().is_some_and(|s| s.success()));
}

#[test]
fn proxy_refuses_a_caller_whose_record_or_address_entry_is_a_symlink() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let pod = node.pod(V);
    let state = StateDir::new(node.state_dir());
    let key = pod.key();
    let ip = pod.ip(false);
    let outside = node.dir.path();
    let target = "/latest/meta-data/instance-id";

    // The record replaced by a link to an exact copy of itself, before the proxy has read it.
    let copy = outside.join("record-copy.json");
    fs::copy(state.record_path(&key), &copy).expect("copy record");
    fs::remove_file(state.record_path(&key)).expect("remove record");
    symlink(&copy, state.record_path(&key)).expect("link record");

    let proxy = Proxy::start(
        ProxyOptions::new(node.ns.name(), state.root())
            .policy("default = \"aws\"\n")
            .config("[records]\nrevalidate_ms = 50\n"),
    );
    proxy.wait_ready();
    assert_eq!(get_status(pod.ns.path(), imds(false), target), 403);
    let src = ip.to_string();
    let d = proxy.wait_decision("refused caller behind a record link", |d| {
        d["src"] == src.as_str()
    });
    assert_eq!(d["decision"], "error", "{d}");
    assert!(d["pod"].is_null(), "{d}");
    let log = proxy.stderr();
    assert!(
        log.contains(&format!(
            "{}: is a symlink",
            state.record_path(&key).display()
        )),
        "the proxy's log does not say why: {log}"
    );
    assert!(
        cloud.fake.requests().is_empty(),
        "a request reached the metadata service: {:?}",
        cloud.fake.requests()
    );

    // Control: the same bytes as a regular file are the pod's identity.
    fs::remove_file(state.record_path(&key)).expect("remove link");
    metaguard_common::state::write_atomic(
        &state.record_path(&key),
        &fs::read(&copy).expect("read copy"),
    )
    .expect("restore record");
    wait_for(
        "the restored record to count",
        Duration::from_secs(5),
        || get_status(pod.ns.path(), imds(false), target) == 200,
    );

    // The address entry replaced by a link to an exact copy: refused once the cache revalidates.
    let ip_copy = outside.join("ip-copy");
    fs::copy(state.ip_path(&ip), &ip_copy).expect("copy entry");
    fs::remove_file(state.ip_path(&ip)).expect("remove entry");
    symlink(&ip_copy, state.ip_path(&ip)).expect("link entry");
    wait_for(
        "the linked address entry to be refused",
        Duration::from_secs(5),
        || get_status(pod.ns.path(), imds(false), target) == 403,
    );
    let seen = cloud.fake.requests().len();
    assert_eq!(get_status(pod.ns.path(), imds(false), target), 403);
    assert_eq!(
        cloud.fake.requests().len(),
        seen,
        "refused request reached upstream"
    );

    // Put the real entry back so DEL (on drop) removes its own entry.
    fs::remove_file(state.ip_path(&ip)).expect("remove link");
    metaguard_common::state::write_atomic(&state.ip_path(&ip), key.as_bytes())
        .expect("restore entry");
}
