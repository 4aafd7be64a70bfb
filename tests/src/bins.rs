//! Where the binaries under test are.
//!
//! Tests run the real binaries, built by `cargo build --workspace --bins` before `cargo test`.
//! `METAGUARD_BIN_DIR` overrides the directory (for example to test release builds); otherwise it
//! is the directory of the test executable's parent (`target/<profile>/`).

use std::path::PathBuf;

/// Directory holding `metaguard`, `metaguard-proxy` and `fake-metadata`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("METAGUARD_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one built binary; panics with a clear message when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace --bins` first (or set METAGUARD_BIN_DIR)",
        p.display()
    );
    p
}

/// Directory of Debian's CNI plugins (bridge, host-local, portmap).
pub fn cni_plugin_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CNI_PLUGIN_DIR").unwrap_or_else(|| "/usr/lib/cni".into()))
}
