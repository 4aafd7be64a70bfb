//! Shared helpers for the installer's integration tests: a fake host tree built from a fixture,
//! snapshots of directory trees (bytes and modes), and running the real binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_metaguard-install");

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A throwaway host root with `etc/cni/net.d` (a copy of a fixture) and `opt/cni/bin`, removed on
/// drop even when the test fails.
pub struct Host {
    pub root: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Host {
    pub fn new(fixture: Option<&str>) -> Host {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("mg-install-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("etc/cni/net.d")).unwrap();
        fs::create_dir_all(root.join("opt/cni/bin")).unwrap();
        fs::create_dir_all(root.join("payload")).unwrap();
        // The "plugin" to install: any ELF file will do; this program's own binary is one.
        fs::copy(BIN, root.join("payload/metaguard")).unwrap();
        if let Some(f) = fixture {
            for ent in fs::read_dir(fixture_dir(f)).unwrap() {
                let ent = ent.unwrap();
                fs::copy(ent.path(), root.join("etc/cni/net.d").join(ent.file_name())).unwrap();
            }
        }
        Host { root }
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.root.join("etc/cni/net.d")
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("opt/cni/bin")
    }

    pub fn conf(&self, name: &str) -> PathBuf {
        self.conf_dir().join(name)
    }

    pub fn dirs_args(&self) -> Vec<String> {
        vec![
            "--cni-bin-dir".into(),
            self.bin_dir().display().to_string(),
            "--cni-conf-dir".into(),
            self.conf_dir().display().to_string(),
        ]
    }

    pub fn install_args(&self) -> Vec<String> {
        let mut a = vec!["install".to_string()];
        a.extend(self.dirs_args());
        a.push("--plugin".into());
        a.push(self.root.join("payload/metaguard").display().to_string());
        a
    }

    /// Runs the binary with `args`.
    pub fn run(&self, args: &[String]) -> Output {
        Command::new(BIN).args(args).output().unwrap()
    }

    pub fn install(&self, extra: &[&str]) -> Output {
        let mut a = self.install_args();
        a.extend(extra.iter().map(|s| s.to_string()));
        self.run(&a)
    }

    pub fn uninstall(&self, extra: &[&str]) -> Output {
        let mut a = vec!["uninstall".to_string()];
        a.extend(self.dirs_args());
        a.extend(extra.iter().map(|s| s.to_string()));
        self.run(&a)
    }

    pub fn status(&self) -> Output {
        let mut a = vec!["status".to_string()];
        a.extend(self.dirs_args());
        self.run(&a)
    }

    /// Snapshot of the CNI directories (not the payload).
    pub fn snapshot(&self) -> Tree {
        let mut t = Tree::default();
        t.add(&self.root, &self.root.join("etc"));
        t.add(&self.root, &self.root.join("opt"));
        t
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Every file and directory under a root: relative path -> (mode, bytes; none for directories).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, (u32, Option<Vec<u8>>)>);

impl Tree {
    fn add(&mut self, base: &Path, p: &Path) {
        let md = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let mode = md.permissions().mode() & 0o7777;
        if md.is_dir() {
            self.0.insert(rel, (mode, None));
            let mut ents: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            ents.sort();
            for e in ents {
                self.add(base, &e);
            }
        } else {
            self.0.insert(rel, (mode, Some(fs::read(p).unwrap())));
        }
    }

    /// Human-readable differences, for assertion messages.
    pub fn diff(&self, other: &Tree) -> String {
        let mut out = String::new();
        for (k, v) in &self.0 {
            match other.0.get(k) {
                None => out.push_str(&format!("only before: {k}\n")),
                Some(o) if o != v => out.push_str(&format!("changed: {k}\n")),
                _ => {}
            }
        }
        for k in other.0.keys() {
            if !self.0.contains_key(k) {
                out.push_str(&format!("only after: {k}\n"));
            }
        }
        out
    }
}

pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Asserts success, showing the program's output otherwise.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Plugin types of a conflist.
pub fn plugin_types(path: &Path) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_string())
        .collect()
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(cond(), "timed out after {deadline:?} waiting for: {what}");
}
