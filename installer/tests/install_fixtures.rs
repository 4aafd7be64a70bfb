//! `metaguard-install install / uninstall / status` on fake host trees made from real-shaped CNI
//! configurations (see tests/fixtures/README.md). No root needed.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// (fixture, file containerd uses, plugin types before install, cniVersion)
const LISTS: &[(&str, &str, &[&str], &str)] = &[
    (
        "bridge-portmap",
        "10-containerd-net.conflist",
        &["bridge", "portmap"],
        "1.0.0",
    ),
    (
        "calico",
        "10-calico.conflist",
        &["calico", "bandwidth", "portmap"],
        "0.3.1",
    ),
    (
        "cilium-chaining",
        "05-cilium.conflist",
        &["aws-cni", "egress-cni", "portmap", "cilium-cni"],
        "0.4.0",
    ),
    (
        "flannel",
        "10-flannel.conflist",
        &["flannel", "portmap"],
        "0.3.1",
    ),
];

#[test]
fn install_twice_then_uninstall_on_each_list() {
    for &(fixture, file, types, version) in LISTS {
        let host = Host::new(Some(fixture));
        let before = host.snapshot();
        let original = fs::read(host.conf(file)).unwrap();

        ok(&host.install(&[]));
        let conflist = host.conf(file);
        let mut want: Vec<String> = types.iter().map(|s| s.to_string()).collect();
        want.push("metaguard".into());
        assert_eq!(plugin_types(&conflist), want, "{fixture}");
        let v = json(&conflist);
        let orig: serde_json::Value = serde_json::from_slice(&original).unwrap();
        assert_eq!(v["cniVersion"], version, "{fixture}");
        assert_eq!(v["name"], orig["name"], "{fixture}");
        // Other top-level keys (cilium's disableCheck) and the other plugins are untouched.
        for (k, val) in orig.as_object().unwrap() {
            if k != "plugins" {
                assert_eq!(&v[k], val, "{fixture}: {k}");
            }
        }
        for (i, p) in orig["plugins"].as_array().unwrap().iter().enumerate() {
            assert_eq!(&v["plugins"][i], p, "{fixture}: plugin {i}");
        }
        let entry = &v["plugins"][types.len()];
        assert_eq!(
            entry["capabilities"]["io.kubernetes.cri.pod-annotations"], true,
            "{fixture}"
        );
        // The text before metaguard's entry is the original's, byte for byte (a splice, not a
        // re-serialisation): the original up to its last plugin's closing brace is a prefix.
        let now = fs::read_to_string(&conflist).unwrap();
        let orig_text = String::from_utf8(original.clone()).unwrap();
        let close = orig_text.rfind(']').unwrap();
        let last_plugin_end = orig_text[..close].rfind('}').unwrap() + 1;
        assert!(
            now.starts_with(&orig_text[..last_plugin_end]),
            "{fixture}:\n{now}"
        );
        assert!(
            now.ends_with(&orig_text[last_plugin_end..]),
            "{fixture}:\n{now}"
        );
        // Backup and binary.
        assert_eq!(
            fs::read(host.conf(&format!(".metaguard-backup/{file}"))).unwrap(),
            original
        );
        let bin = host.bin_dir().join("metaguard");
        assert_eq!(
            fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(fs::read(&bin).unwrap(), fs::read(BIN).unwrap());
        assert_eq!(host.status().status.code(), Some(0), "{fixture}");

        // Twice: nothing changes, byte for byte.
        let after_first = host.snapshot();
        let out = host.install(&[]);
        ok(&out);
        assert!(
            text(&out.stdout).contains("already"),
            "{}",
            text(&out.stdout)
        );
        assert_eq!(
            host.snapshot(),
            after_first,
            "{fixture}: {}",
            after_first.diff(&host.snapshot())
        );

        // Uninstall: exactly the tree we started from (no backup dir, no binary).
        ok(&host.uninstall(&[]));
        assert_eq!(
            host.snapshot(),
            before,
            "{fixture}: {}",
            before.diff(&host.snapshot())
        );
        assert_eq!(host.status().status.code(), Some(3), "{fixture}");
        // Uninstall twice is harmless.
        ok(&host.uninstall(&[]));
        assert_eq!(host.snapshot(), before);
    }
}

#[test]
fn single_conf_becomes_a_conflist_and_comes_back() {
    let host = Host::new(Some("single-conf"));
    let before = host.snapshot();
    let original = fs::read(host.conf("10-mynet.conf")).unwrap();
    let out = host.install(&[]);
    ok(&out);
    assert!(
        !host.conf("10-mynet.conf").exists(),
        "the .conf would still be picked first"
    );
    let list = host.conf("10-mynet.conflist");
    assert_eq!(plugin_types(&list), ["bridge", "metaguard"]);
    let v = json(&list);
    assert_eq!(v["cniVersion"], "0.3.1");
    assert_eq!(v["name"], "mynet");
    let orig: serde_json::Value = serde_json::from_slice(&original).unwrap();
    assert_eq!(v["plugins"][0], orig);
    assert_eq!(
        fs::read(host.conf(".metaguard-backup/10-mynet.conf")).unwrap(),
        original
    );
    // 99-loopback.conf is untouched and sorts after the new list.
    assert_eq!(host.status().status.code(), Some(0));
    assert!(text(&host.status().stdout).contains("10-mynet.conflist"));

    let snap = host.snapshot();
    ok(&host.install(&[]));
    assert_eq!(host.snapshot(), snap, "{}", snap.diff(&host.snapshot()));

    ok(&host.uninstall(&[]));
    assert_eq!(host.snapshot(), before, "{}", before.diff(&host.snapshot()));
}

#[test]
fn config_is_applied_and_replaced() {
    let host = Host::new(Some("flannel"));
    let before = host.snapshot();
    ok(&host.install(&[
        "--config",
        r#"{"proxy": {"ipv4": "10.0.0.1"}, "hostGuard": true}"#,
    ]));
    let v = json(&host.conf("10-flannel.conflist"));
    assert_eq!(v["plugins"][2]["proxy"]["ipv4"], "10.0.0.1");
    // Same config again: no change. A different one: only the entry changes.
    let snap = host.snapshot();
    ok(&host.install(&[
        "--config",
        r#"{"hostGuard": true, "proxy": {"ipv4": "10.0.0.1"}}"#,
    ]));
    assert_eq!(host.snapshot(), snap);
    let cfg = host.root.join("plugin.json");
    fs::write(&cfg, r#"{"logLevel": "debug"}"#).unwrap();
    ok(&host.install(&["--config", &format!("@{}", cfg.display())]));
    let v = json(&host.conf("10-flannel.conflist"));
    assert_eq!(
        plugin_types(&host.conf("10-flannel.conflist")),
        ["flannel", "portmap", "metaguard"]
    );
    assert_eq!(v["plugins"][2]["logLevel"], "debug");
    assert!(v["plugins"][2].get("proxy").is_none());
    ok(&host.uninstall(&[]));
    assert_eq!(host.snapshot(), before, "{}", before.diff(&host.snapshot()));
}

#[test]
fn a_rewrite_by_the_main_cni_becomes_the_new_original() {
    let host = Host::new(Some("calico"));
    ok(&host.install(&[]));
    // Calico upgrades and rewrites its file (without metaguard, with a new MTU).
    let rewritten = fs::read_to_string(host.conf("10-calico.conflist"))
        .unwrap()
        .replace("\"mtu\": 0", "\"mtu\": 1440");
    let rewritten = metaguard_stripped(&rewritten);
    fs::write(host.conf("10-calico.conflist"), &rewritten).unwrap();
    assert_eq!(host.status().status.code(), Some(3));
    ok(&host.install(&[]));
    assert_eq!(
        fs::read_to_string(host.conf(".metaguard-backup/10-calico.conflist")).unwrap(),
        rewritten
    );
    ok(&host.uninstall(&[]));
    assert_eq!(
        fs::read_to_string(host.conf("10-calico.conflist")).unwrap(),
        rewritten
    );
    assert!(!host.conf(".metaguard-backup").exists());
}

/// The file as Calico would write it: no metaguard entry (using the installer's own stripping is
/// fine here; its correctness is checked against the fixture bytes in the other tests).
fn metaguard_stripped(s: &str) -> String {
    metaguard_installer::chain::strip_from_list(s).unwrap()
}

#[test]
fn an_edit_after_install_is_kept_by_uninstall() {
    let host = Host::new(Some("flannel"));
    ok(&host.install(&[]));
    let path = host.conf("10-flannel.conflist");
    let edited = fs::read_to_string(&path)
        .unwrap()
        .replace("\"hairpinMode\": true", "\"hairpinMode\": false");
    fs::write(&path, &edited).unwrap();
    let out = host.uninstall(&[]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("changed since install"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(plugin_types(&path), ["flannel", "portmap"]);
    assert_eq!(json(&path)["plugins"][0]["delegate"]["hairpinMode"], false);
    assert!(!host.bin_dir().join("metaguard").exists());
}

#[test]
fn keep_plugin_and_modes() {
    let host = Host::new(Some("bridge-portmap"));
    let p = host.conf("10-containerd-net.conflist");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let before = host.snapshot();
    ok(&host.install(&[]));
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    ok(&host.uninstall(&["--keep-plugin"]));
    assert!(host.bin_dir().join("metaguard").exists());
    fs::remove_file(host.bin_dir().join("metaguard")).unwrap();
    assert_eq!(host.snapshot(), before, "{}", before.diff(&host.snapshot()));
}

#[test]
fn refusals_leave_everything_as_it_was() {
    // No configuration at all.
    let host = Host::new(None);
    let out = host.install(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no CNI configuration"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(host.status().status.code(), Some(3));

    // cniVersion too old to chain, invalid JSON, a list in a .conf, an empty list.
    for (name, body, what) in [
        (
            "10-old.conflist",
            r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"bridge"}]}"#,
            "0.2.0",
        ),
        (
            "10-bad.conflist",
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}"#,
            "JSON",
        ),
        (
            "10-list.conf",
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#,
            ".conflist",
        ),
        (
            "10-empty.conflist",
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
            "empty",
        ),
    ] {
        let host = Host::new(None);
        fs::write(host.conf(name), body).unwrap();
        let before = host.snapshot();
        let out = host.install(&[]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            text(&out.stderr).contains(what),
            "{name}: {}",
            text(&out.stderr)
        );
        // The binary may have been copied (that step comes first and is harmless); the
        // configuration directory is untouched.
        let mut after = host.snapshot();
        after.0.retain(|k, _| !k.ends_with("bin/metaguard"));
        assert_eq!(after, before, "{name}: {}", before.diff(&after));
    }

    // A typo in the plugin configuration is refused before anything is written.
    let host = Host::new(Some("flannel"));
    let before = host.snapshot();
    let out = host.install(&["--config", r#"{"hostGaurd": false}"#]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("hostGaurd"));
    assert_eq!(host.snapshot(), before);

    // A missing or non-ELF plugin binary.
    let mut a = host.install_args();
    let n = a.len();
    a[n - 1] = host.root.join("nope").display().to_string();
    let out = host.run(&a);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("plugin binary"),
        "{}",
        text(&out.stderr)
    );
    fs::write(host.root.join("script"), "#!/bin/sh\n").unwrap();
    a[n - 1] = host.root.join("script").display().to_string();
    assert!(text(&host.run(&a).stderr).contains("not an ELF"));
    assert_eq!(host.snapshot(), before);

    // A .conf whose .conflist name is taken by someone else's file.
    let host = Host::new(Some("single-conf"));
    fs::write(
        host.conf("10-mynet.conflist"),
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"ptp"}]}"#,
    )
    .unwrap();
    let before = host.snapshot();
    let out = host.install(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not metaguard's"),
        "{}",
        text(&out.stderr)
    );
    let mut after = host.snapshot();
    after.0.retain(|k, _| !k.ends_with("bin/metaguard"));
    assert_eq!(after, before, "{}", before.diff(&after));
}

#[test]
fn status_says_what_containerd_uses() {
    let host = Host::new(Some("cilium-chaining"));
    let out = host.status();
    assert_eq!(out.status.code(), Some(3));
    let s = text(&out.stdout);
    assert!(
        s.contains("05-cilium.conflist (plugins: aws-cni, egress-cni, portmap, cilium-cni)"),
        "{s}"
    );
    assert!(s.contains("metaguard in chain: no"), "{s}");
    ok(&host.install(&[]));
    let s = text(&host.status().stdout);
    assert!(s.contains("cilium-cni, metaguard)"), "{s}");
    assert!(s.contains("metaguard in chain: yes"), "{s}");
    // The binary gone: not ready even though the chain names metaguard.
    fs::remove_file(host.bin_dir().join("metaguard")).unwrap();
    assert_eq!(host.status().status.code(), Some(3));
}
