//! Hostile input for the metaguard CNI plugin (issue 5, item 3): malformed, oversized and wrongly
//! typed configurations and environments, container IDs and interface names with path separators
//! or control characters, netns paths that are not network namespaces.
//!
//! Every case runs the real binary inside a node namespace against a real pod namespace (attached by
//! Debian's bridge + host-local, so everything but the hostile part is valid) and must:
//! - fail with the right CNI error code: JSON on stdout with cniVersion, code and msg, exit 1;
//! - never panic (exit code never 101, no "panicked" on stderr) nor die from a signal;
//! - leave nothing behind: no pod record or address entry, no metaguard nftables table in the node
//!   (host guard) or in the pod.
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test plugin_hostile`.

use metaguard_plugin::rules::table_name;
use metaguard_tests::bins;
use metaguard_tests::cni::{exec_plugin, nft_tables, with_env, Node, PluginOutput, Pod};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const V: &str = "1.0.0";

/// One hostile invocation.
struct Hostile {
    id: String,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    /// Acceptable CNI error codes (usually one).
    codes: &'static [u64],
}

fn base_env(pod: &Pod<'_>, command: &str) -> Vec<(String, String)> {
    pod.call(command).owned_env()
}

fn with_key(conf: &Value, key: &str, value: Option<Value>) -> Vec<u8> {
    let mut c = conf.clone();
    let o = c.as_object_mut().unwrap();
    match value {
        Some(v) => {
            o.insert(key.to_string(), v);
        }
        None => {
            o.remove(key);
        }
    }
    serde_json::to_vec(&c).unwrap()
}

fn cases(pod: &Pod<'_>, scratch: &std::path::Path) -> Vec<Hostile> {
    let conf = pod.metaguard_conf();
    let good = serde_json::to_vec(&conf).unwrap();
    let add = base_env(pod, "ADD");
    let mut v = Vec::new();
    let mut push = |id: &str, env: Vec<(String, String)>, stdin: Vec<u8>, codes: &'static [u64]| {
        v.push(Hostile {
            id: id.to_string(),
            env,
            stdin,
            codes,
        });
    };

    // --- environment ---
    push(
        "env-no-command",
        with_env(add.clone(), "CNI_COMMAND", None),
        good.clone(),
        &[4],
    );
    push(
        "env-command-lower",
        with_env(add.clone(), "CNI_COMMAND", Some("add")),
        good.clone(),
        &[4],
    );
    push(
        "env-command-newline",
        with_env(add.clone(), "CNI_COMMAND", Some("ADD\n")),
        good.clone(),
        &[4],
    );
    push(
        "env-command-unknown",
        with_env(add.clone(), "CNI_COMMAND", Some("EXEC")),
        good.clone(),
        &[4],
    );
    push(
        "env-no-containerid",
        with_env(add.clone(), "CNI_CONTAINERID", None),
        good.clone(),
        &[4],
    );
    for (id, cid) in [
        ("env-cid-dotdot", "../../etc/passwd"),
        ("env-cid-slash", "abc/def"),
        ("env-cid-leading-slash", "/abc"),
        ("env-cid-dot", ".."),
        ("env-cid-newline", "abc\ndef"),
        ("env-cid-nul-like", "abc\u{1}def"),
        ("env-cid-tab", "abc\tdef"),
        ("env-cid-colon", "abc:def"),
        ("env-cid-space", "abc def"),
        ("env-cid-leading-dash", "-abc"),
        ("env-cid-unicode", "abc\u{e9}"),
        ("env-cid-glob", "abc*"),
    ] {
        push(
            id,
            with_env(add.clone(), "CNI_CONTAINERID", Some(cid)),
            good.clone(),
            &[4],
        );
    }
    push(
        "env-cid-2000",
        with_env(add.clone(), "CNI_CONTAINERID", Some(&"a".repeat(2000))),
        good.clone(),
        &[4],
    );
    push(
        "env-no-ifname",
        with_env(add.clone(), "CNI_IFNAME", None),
        good.clone(),
        &[4],
    );
    for (id, ifname) in [
        ("env-ifname-slash", "eth0/../x"),
        ("env-ifname-dotdot", ".."),
        ("env-ifname-dot", "."),
        ("env-ifname-tab", "eth\t0"),
        ("env-ifname-newline", "eth0\n"),
        ("env-ifname-colon", "eth0:1"),
        ("env-ifname-space", "eth 0"),
        ("env-ifname-16", "abcdefghijklmnop"),
        ("env-ifname-control", "eth\u{7f}"),
    ] {
        push(
            id,
            with_env(add.clone(), "CNI_IFNAME", Some(ifname)),
            good.clone(),
            &[4],
        );
    }
    push(
        "env-no-netns",
        with_env(add.clone(), "CNI_NETNS", None),
        good.clone(),
        &[4],
    );
    push(
        "env-netns-relative",
        with_env(add.clone(), "CNI_NETNS", Some("run/netns/x")),
        good.clone(),
        &[4],
    );
    push(
        "env-netns-missing",
        with_env(
            add.clone(),
            "CNI_NETNS",
            Some("/run/netns/mg-no-such-netns"),
        ),
        good.clone(),
        &[4],
    );
    let file = scratch.join("regular-file");
    std::fs::write(&file, b"not a namespace").unwrap();
    push(
        "env-netns-regular-file",
        with_env(add.clone(), "CNI_NETNS", Some(file.to_str().unwrap())),
        good.clone(),
        &[4],
    );
    push(
        "env-netns-directory",
        with_env(add.clone(), "CNI_NETNS", Some(scratch.to_str().unwrap())),
        good.clone(),
        &[4],
    );
    push(
        "env-netns-mnt-ns",
        with_env(add.clone(), "CNI_NETNS", Some("/proc/self/ns/mnt")),
        good.clone(),
        &[4],
    );
    push(
        "env-netns-pid-ns",
        with_env(add.clone(), "CNI_NETNS", Some("/proc/self/ns/pid")),
        good.clone(),
        &[4],
    );
    push(
        "env-netns-dev-null",
        with_env(add.clone(), "CNI_NETNS", Some("/dev/null")),
        good.clone(),
        &[4],
    );
    // A FIFO: opening it for reading would wait for a writer forever (the plugin used to).
    let fifo = scratch.join("fifo");
    mkfifo(&fifo);
    push(
        "env-netns-fifo",
        with_env(add.clone(), "CNI_NETNS", Some(fifo.to_str().unwrap())),
        good.clone(),
        &[4],
    );
    push(
        "env-netns-proc-dir",
        with_env(add.clone(), "CNI_NETNS", Some("/proc/self/ns")),
        good.clone(),
        &[4],
    );
    for (id, args) in [
        ("env-args-no-equals", "K8S_POD_NAME"),
        ("env-args-empty-key", "=x"),
        ("env-args-dup", "K8S_POD_NAME=a;K8S_POD_NAME=b"),
        ("env-args-control", "K8S_POD_NAME=a\u{1b}[31mred"),
        ("env-args-space", "K8S_POD_NAMESPACE=a b"),
        ("env-args-newline", "K8S_POD_NAME=a\nb"),
        ("env-args-ignore-bad", "IgnoreUnknown=maybe"),
    ] {
        push(
            id,
            with_env(add.clone(), "CNI_ARGS", Some(args)),
            good.clone(),
            &[4],
        );
    }
    let long_arg = format!("K8S_POD_NAME={}", "a".repeat(300));
    push(
        "env-args-long",
        with_env(add.clone(), "CNI_ARGS", Some(&long_arg)),
        good.clone(),
        &[4],
    );
    // DEL and CHECK refuse the same identifiers.
    let del = base_env(pod, "DEL");
    push(
        "del-cid-dotdot",
        with_env(del.clone(), "CNI_CONTAINERID", Some("../x")),
        good.clone(),
        &[4],
    );
    push(
        "del-ifname-slash",
        with_env(del, "CNI_IFNAME", Some("a/b")),
        good.clone(),
        &[4],
    );
    push(
        "check-cid-newline",
        with_env(base_env(pod, "CHECK"), "CNI_CONTAINERID", Some("a\nb")),
        good.clone(),
        &[4],
    );

    // --- stdin: not a configuration ---
    push("stdin-empty", add.clone(), Vec::new(), &[6]);
    push(
        "stdin-not-json",
        add.clone(),
        b"cniVersion: 1.0.0".to_vec(),
        &[6],
    );
    push("stdin-array", add.clone(), b"[]".to_vec(), &[6]);
    push("stdin-null", add.clone(), b"null".to_vec(), &[6]);
    push("stdin-string", add.clone(), b"\"{}\"".to_vec(), &[6]);
    let mut trailing = good.clone();
    trailing.extend_from_slice(b" {\"hostGuard\": false}");
    push("stdin-trailing-object", add.clone(), trailing, &[6]);
    push(
        "stdin-truncated",
        add.clone(),
        good[..good.len() / 2].to_vec(),
        &[6],
    );
    push("stdin-nul-bytes", add.clone(), vec![0u8; 4096], &[6]);
    push(
        "stdin-invalid-utf8",
        add.clone(),
        b"{\"cniVersion\":\"1.0.0\",\"name\":\"\xff\xfe\"}".to_vec(),
        &[6],
    );
    let mut nested = "[".repeat(100_000);
    nested.push_str(&"]".repeat(100_000));
    push("stdin-nested-100k", add.clone(), nested.into_bytes(), &[6]);
    let mut nested_obj = String::new();
    for _ in 0..50_000 {
        nested_obj.push_str("{\"a\":");
    }
    nested_obj.push('1');
    nested_obj.push_str(&"}".repeat(50_000));
    push(
        "stdin-nested-object-50k",
        add.clone(),
        nested_obj.into_bytes(),
        &[6],
    );
    // 10 MiB: junk, a valid document with a huge unknown key, a huge name.
    push("stdin-10mib-junk", add.clone(), vec![b'x'; 10 << 20], &[6]);
    push(
        "stdin-10mib-unknown-key",
        add.clone(),
        with_key(&conf, "padding", Some(json!("p".repeat(10 << 20)))),
        &[7],
    );
    push(
        "stdin-10mib-name",
        add.clone(),
        with_key(&conf, "name", Some(json!("n".repeat(10 << 20)))),
        &[7],
    );
    let many_keys: serde_json::Map<String, Value> =
        (0..200_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let mut big = conf.clone();
    big.as_object_mut().unwrap().extend(many_keys);
    push(
        "stdin-200k-unknown-keys",
        add.clone(),
        serde_json::to_vec(&big).unwrap(),
        &[7],
    );

    // --- configuration: wrong versions, names, types ---
    push(
        "conf-no-version",
        add.clone(),
        with_key(&conf, "cniVersion", None),
        &[1],
    );
    push(
        "conf-version-future",
        add.clone(),
        with_key(&conf, "cniVersion", Some(json!("9.9.9"))),
        &[1],
    );
    push(
        "conf-version-empty",
        add.clone(),
        with_key(&conf, "cniVersion", Some(json!(""))),
        &[1],
    );
    push(
        "conf-version-number",
        add.clone(),
        with_key(&conf, "cniVersion", Some(json!(1.0))),
        &[1, 7],
    );
    push(
        "conf-version-010",
        add.clone(),
        with_key(&conf, "cniVersion", Some(json!("0.1.0"))),
        &[1],
    );
    push(
        "conf-no-name",
        add.clone(),
        with_key(&conf, "name", None),
        &[7],
    );
    for (id, name) in [
        ("conf-name-dotdot", json!("../etc")),
        ("conf-name-slash", json!("a/b")),
        ("conf-name-colon", json!("a:b")),
        ("conf-name-newline", json!("a\nb")),
        ("conf-name-empty", json!("")),
        ("conf-name-number", json!(5)),
        ("conf-name-null", json!(null)),
    ] {
        push(id, add.clone(), with_key(&conf, "name", Some(name)), &[7]);
    }
    for (id, key, value) in [
        ("conf-unknown-key-typo", "hostguard", json!(false)),
        ("conf-unknown-key-proxyport", "proxyPort", json!(1)),
        ("conf-hostguard-string", "hostGuard", json!("false")),
        ("conf-hostguard-number", "hostGuard", json!(0)),
        ("conf-statedir-relative", "stateDir", json!("run/metaguard")),
        ("conf-statedir-number", "stateDir", json!(1)),
        ("conf-statedir-empty", "stateDir", json!("")),
        ("conf-logfile-relative", "logFile", json!("x.log")),
        ("conf-loglevel-unknown", "logLevel", json!("loud")),
        ("conf-loglevel-number", "logLevel", json!(3)),
        ("conf-proxy-string", "proxy", json!("10.0.0.1")),
        ("conf-proxy-bad-ipv4", "proxy", json!({"ipv4": "999.1.1.1"})),
        ("conf-proxy-ipv4-is-v6", "proxy", json!({"ipv4": "fd00::1"})),
        (
            "conf-proxy-ipv6-is-v4",
            "proxy",
            json!({"ipv6": "10.0.0.1"}),
        ),
        (
            "conf-proxy-unknown-key",
            "proxy",
            json!({"ipv5": "10.0.0.1"}),
        ),
        (
            "conf-proxy-metadata-addr",
            "proxy",
            json!({"ipv4": "169.254.169.254"}),
        ),
        ("conf-endpoints-object", "endpoints", json!({"name": "x"})),
        (
            "conf-endpoints-item-string",
            "endpoints",
            json!(["169.254.169.254"]),
        ),
        (
            "conf-endpoints-unknown-key",
            "endpoints",
            json!([{"name": "x", "address": "169.254.169.254", "proxyPort": 8169, "extra": 1}]),
        ),
        (
            "conf-endpoints-port-big",
            "endpoints",
            json!([{"name": "x", "address": "169.254.169.254", "proxyPort": 70000}]),
        ),
        (
            "conf-endpoints-port-zero",
            "endpoints",
            json!([{"name": "x", "address": "169.254.169.254", "proxyPort": 0}]),
        ),
        (
            "conf-endpoints-port-negative",
            "endpoints",
            json!([{"name": "x", "address": "169.254.169.254", "proxyPort": -1}]),
        ),
        (
            "conf-endpoints-bad-address",
            "endpoints",
            json!([{"name": "x", "address": "metadata", "proxyPort": 8169}]),
        ),
        (
            "conf-endpoints-no-proxyport",
            "endpoints",
            json!([{"name": "x", "address": "169.254.169.254"}]),
        ),
        ("conf-block-unknown-name", "block", json!(["nope"])),
        ("conf-block-bad-cidr", "block", json!(["10.0.0.0/33"])),
        ("conf-block-number", "block", json!([5])),
        ("conf-block-string", "block", json!("ecs")),
        ("conf-runtimeconfig-string", "runtimeConfig", json!("x")),
        (
            "conf-runtimeconfig-annotations-list",
            "runtimeConfig",
            json!({"io.kubernetes.cri.pod-annotations": ["a"]}),
        ),
        (
            "conf-runtimeconfig-annotation-number",
            "runtimeConfig",
            json!({"io.kubernetes.cri.pod-annotations": {"a": 1}}),
        ),
        (
            "conf-capabilities-list",
            "capabilities",
            json!(["io.kubernetes.cri.pod-annotations"]),
        ),
        ("conf-type-number", "type", json!(1)),
    ] {
        push(id, add.clone(), with_key(&conf, key, Some(value)), &[7]);
    }
    // prevResult: missing, wrongly typed, lying.
    push(
        "prev-missing",
        add.clone(),
        with_key(&conf, "prevResult", None),
        &[7],
    );
    push(
        "prev-string",
        add.clone(),
        with_key(&conf, "prevResult", Some(json!("{}"))),
        &[7],
    );
    push(
        "prev-ips-not-list",
        add.clone(),
        with_key(
            &conf,
            "prevResult",
            Some(json!({"cniVersion": V, "ips": "10.0.0.2"})),
        ),
        &[7],
    );
    push(
        "prev-ip-garbage",
        add.clone(),
        with_key(
            &conf,
            "prevResult",
            Some(json!({"cniVersion": V, "ips": [{"address": "not-an-ip"}]})),
        ),
        &[7],
    );
    let mut evil_prev = pod.prev_result.clone();
    evil_prev["interfaces"][1]["name"] = json!("../../etc");
    push(
        "prev-host-if-dotdot",
        add.clone(),
        with_key(&conf, "prevResult", Some(evil_prev)),
        &[7, 102],
    );
    let mut evil_prev = pod.prev_result.clone();
    evil_prev["interfaces"][1]["name"] = json!("veth\nx");
    push(
        "prev-host-if-newline",
        add.clone(),
        with_key(&conf, "prevResult", Some(evil_prev)),
        &[7, 102],
    );
    let mut lying = pod.prev_result.clone();
    lying["interfaces"][1]["name"] = json!("mgnosuchveth");
    push(
        "prev-host-if-missing",
        add.clone(),
        with_key(&conf, "prevResult", Some(lying)),
        &[102],
    );
    v
}

fn mkfifo(path: &std::path::Path) {
    let st = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(st.success(), "mkfifo {}", path.display());
}

/// The plugin must fail cleanly with one of `codes`.
fn check_failure(id: &str, out: &PluginOutput, codes: &[u64]) -> Result<(), String> {
    if out.code.is_none() {
        return Err(format!("died from a signal; stderr: {}", tail(&out.stderr)));
    }
    if out.code == Some(101) || out.stderr.contains("panicked") {
        return Err(format!("panicked: {}", tail(&out.stderr)));
    }
    if out.success() {
        return Err(format!("succeeded; stdout: {}", tail(&out.stdout)));
    }
    let e: Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("stdout is not JSON ({e}): {}", tail(&out.stdout)))?;
    let code = e["code"].as_u64();
    if !code.is_some_and(|c| codes.contains(&c)) {
        return Err(format!("code {code:?}, expected one of {codes:?}: {e}"));
    }
    if !e["cniVersion"].is_string() || e["msg"].as_str().is_none_or(str::is_empty) {
        return Err(format!("error object lacks cniVersion or msg: {e}"));
    }
    let _ = id;
    Ok(())
}

fn tail(s: &str) -> String {
    let s = s.trim();
    let start = s.len().saturating_sub(300);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// What metaguard left in the node and the pod.
fn leftovers(node: &Node, pod: &Pod<'_>) -> Vec<String> {
    let mut v = Vec::new();
    v.extend(
        node.record_keys()
            .into_iter()
            .map(|k| format!("record {k}")),
    );
    v.extend(
        node.ip_entries()
            .into_iter()
            .map(|k| format!("address entry {k}")),
    );
    v.extend(
        nft_tables(&node.ns)
            .into_iter()
            .filter(|t| t.contains("metaguard"))
            .map(|t| format!("node table {t}")),
    );
    v.extend(
        nft_tables(&pod.ns)
            .into_iter()
            .filter(|t| t.contains("metaguard"))
            .map(|t| format!("pod table {t}")),
    );
    v
}

/// Runs metaguard with environment values that are not UTF-8 (which `exec_plugin` cannot pass).
fn run_with_os_env(node: &Node, env: &[(&str, OsString)], stdin: &[u8]) -> PluginOutput {
    let mut cmd: Command = node.ns.command(bins::bin("metaguard"));
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = std::time::Instant::now();
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(stdin);
    }
    let out = child.wait_with_output().unwrap();
    PluginOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

#[test]
fn hostile_inputs_fail_cleanly_and_leave_nothing() {
    let node = Node::new();
    let pod = node.bridge_pod(V);
    let scratch = metaguard_tests::netns::TempDir::new("hostile");
    let cases = cases(&pod, scratch.path());
    let mg = bins::bin("metaguard");
    let mut failures = Vec::new();
    let mut slowest = (String::new(), Duration::ZERO);
    for c in &cases {
        let env: Vec<(&str, &str)> = c
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let out = exec_plugin(&mg, Some(&node.ns), &env, &c.stdin);
        if out.elapsed > slowest.1 {
            slowest = (c.id.clone(), out.elapsed);
        }
        if let Err(e) = check_failure(&c.id, &out, c.codes) {
            failures.push(format!("{}: {e}", c.id));
        }
        let left = leftovers(&node, &pod);
        if !left.is_empty() {
            failures.push(format!("{}: left behind {left:?}", c.id));
        }
    }
    // Environment values that are not UTF-8.
    let good = serde_json::to_vec(&pod.metaguard_conf()).unwrap();
    let netns = OsString::from(pod.ns.path_str());
    for (id, var) in [
        ("env-cid-not-utf8", "CNI_CONTAINERID"),
        ("env-ifname-not-utf8", "CNI_IFNAME"),
        ("env-netns-not-utf8", "CNI_NETNS"),
    ] {
        let mut env: Vec<(&str, OsString)> = vec![
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", pod.container_id.clone().into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_NETNS", netns.clone()),
        ];
        env.retain(|(k, _)| *k != var);
        env.push((var, OsString::from_vec(b"abc\xff\xfe".to_vec())));
        let out = run_with_os_env(&node, &env, &good);
        if let Err(e) = check_failure(id, &out, &[4]) {
            failures.push(format!("{id}: {e}"));
        }
        let left = leftovers(&node, &pod);
        if !left.is_empty() {
            failures.push(format!("{id}: left behind {left:?}"));
        }
    }
    let total = cases.len() + 3;
    println!(
        "plugin_hostile: {total} hostile inputs, slowest {} in {:?}",
        slowest.0, slowest.1
    );
    for f in &failures {
        println!("FAIL {f}");
    }
    // The fixture itself still works: the same pod with the good configuration is accepted, and
    // DEL takes everything away again (so "nothing left" above was not a broken plugin).
    pod.metaguard("ADD").expect_ok();
    assert!(
        !node.record_keys().is_empty(),
        "control ADD wrote no record"
    );
    pod.metaguard("DEL").expect_ok();
    assert!(
        leftovers(&node, &pod).is_empty(),
        "control DEL left {:?}",
        leftovers(&node, &pod)
    );
    assert!(
        failures.is_empty(),
        "{} of {total} hostile inputs were mishandled (listed above)",
        failures.len()
    );
}

/// A record in the state directory that claims the address a new pod got (issue 14 item 5): the
/// state directory is root's, but ADD reads records another ADD wrote, so it reads them
/// defensively. A holder it cannot read is not taken over (code 103, nothing installed); a
/// holder whose netns is a FIFO or a device is never opened (no hang, no driver woken) and,
/// being no namespace, counts as gone: the address is taken over.
#[test]
fn hostile_holder_records_neither_hang_nor_get_taken_over_unread() {
    let node = Node::new();
    let (conf_a, conf_b, addr) = node.overlapping_networks(V);
    let a = node.bridge_pod_on(V, conf_a);
    a.metaguard("ADD").expect_ok();
    let b = node.bridge_pod_on(V, conf_b);
    let good: Value = serde_json::from_slice(&std::fs::read(a.record_path()).unwrap()).unwrap();
    let entry = node.state_dir().join("ips").join(addr.to_string());
    let owner = || std::fs::read_to_string(&entry).unwrap_or_default();
    let scratch = metaguard_tests::netns::TempDir::new("holder");
    let fifo = scratch.path().join("fifo");
    mkfifo(&fifo);
    let copy = scratch.path().join("record-copy.json");
    std::fs::write(&copy, serde_json::to_vec(&good).unwrap()).unwrap();
    let with = |k: &str, v: Value| {
        let mut r = good.clone();
        r[k] = v;
        serde_json::to_vec(&r).unwrap()
    };
    let b_left = || {
        let mut left: Vec<String> = nft_tables(&b.ns);
        left.extend(
            nft_tables(&node.ns)
                .into_iter()
                .filter(|t| t.ends_with(&table_name(&b.key()))),
        );
        if b.record_path().exists() {
            left.push("b's record".into());
        }
        left
    };

    // Unreadable: refused, b gets nothing, the entry stays a's.
    let unreadable: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"{\"version\": 1, ".to_vec()),
        ("newer-version", with("version", json!(2))),
        ("path-in-id", with("containerId", json!("../../../etc/x"))),
        ("not-utf8", b"\xff\xfe{}".to_vec()),
        ("huge", vec![b' '; 4 << 20]),
        ("relative-netns", with("netns", json!("run/netns/x"))),
    ];
    for (id, body) in unreadable {
        std::fs::write(a.record_path(), &body).unwrap();
        let out = b.metaguard("ADD");
        let e = out.expect_error(103);
        assert!(
            e["msg"].as_str().unwrap().contains(&a.container_id),
            "{id}: {e}"
        );
        assert_eq!(b_left(), Vec::<String>::new(), "{id}: b left {out:?}");
        assert_eq!(owner(), a.key(), "{id}");
    }
    // A symlink at the record's name (to a perfectly good copy) is not followed.
    std::fs::remove_file(a.record_path()).unwrap();
    std::os::unix::fs::symlink(&copy, a.record_path()).unwrap();
    let e = b.metaguard("ADD").expect_error(103);
    assert!(e["details"].as_str().unwrap().contains("symlink"), "{e}");
    assert_eq!(b_left(), Vec::<String>::new());
    std::fs::remove_file(a.record_path()).unwrap();

    // Paths that are no namespace: never opened, so never waited on; the address is taken over.
    for netns in [fifo.to_str().unwrap(), "/dev/zero", "/dev/kmsg"] {
        std::fs::write(a.record_path(), with("netns", json!(netns))).unwrap();
        let out = b.metaguard("ADD");
        out.expect_ok();
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{netns}: {:?}",
            out.elapsed
        );
        assert_eq!(owner(), b.key(), "{netns}");
        assert!(out.stderr.contains("taken over from"), "{netns}: {out:?}");
        // Back to a holding it.
        b.metaguard("DEL").expect_ok();
        std::fs::write(a.record_path(), serde_json::to_vec(&good).unwrap()).unwrap();
        a.metaguard("ADD").expect_ok();
        assert_eq!(owner(), a.key(), "{netns}");
    }
    // Control: the untouched record still refuses b.
    b.metaguard("ADD").expect_error(103);
    assert_eq!(b_left(), Vec::<String>::new());
}
