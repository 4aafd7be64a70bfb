//! `watch`: install, then keep metaguard in the chain until told to stop.
//!
//! Calico's and Cilium's agents rewrite their conflist when they start or upgrade, dropping any
//! plugin they did not put there. The loop re-checks every `interval` (500 ms by default) and
//! chains metaguard again. Polling was chosen over inotify: a pass costs one directory listing and
//! one small read, it cannot miss an event (inotify loses events on queue overflow and needs the
//! watch re-armed when the directory itself is replaced, as some installers do), and it behaves the
//! same on every filesystem a hostPath can point at.
//!
//! A change is written only once the file has read the same on two consecutive passes, so a main
//! CNI that writes its file in place (truncate, then write) is not caught half-way; the write
//! itself is a compare-and-swap on the content (see [`crate::atomic`]).
//!
//! The ready file exists exactly while the chain containerd uses contains metaguard and the binary
//! is in place: the DaemonSet's readiness probe looks at it. On SIGTERM or SIGINT the loop ends. By
//! default (`OnExit::Keep`) metaguard stays in the chain, so a restart of the DaemonSet never leaves
//! a window in which a new pod starts unguarded; `OnExit::Uninstall` restores the configuration
//! before exiting instead, and otherwise removal is an explicit `metaguard-install uninstall`.

use crate::chain::Entry;
use crate::install::{self, ChainOutcome, InstallError, Layout};
use crate::signals::Signals;
use crate::taint::{Kubectl, Taint, TaintOutcome};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to do with the configuration when the watch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExit {
    /// Restore the original configuration (and remove the binary unless kept).
    Uninstall,
    /// Leave metaguard in the chain (the default): pods created while the proxy is away still get
    /// the redirect (and connection refused), never an open path to the metadata service.
    Keep,
}

/// Taint removal settings.
#[derive(Debug, Clone)]
pub struct TaintRemoval {
    pub kubectl: Kubectl,
    pub node: String,
    pub taint: Taint,
}

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub layout: Layout,
    pub plugin_src: PathBuf,
    pub entry: Entry,
    pub ready_file: Option<PathBuf>,
    /// Rewritten after every pass, so a liveness probe can tell the loop is turning.
    pub heartbeat_file: Option<PathBuf>,
    pub interval: Duration,
    pub on_exit: OnExit,
    pub keep_plugin: bool,
    pub taint: Option<TaintRemoval>,
}

/// Prints a line only when it differs from the previous one of the same kind, so a steady state
/// (or a steady error) does not fill the log every half second.
#[derive(Default)]
struct Log {
    last: String,
}

impl Log {
    fn say(&mut self, msg: String) {
        if msg != self.last {
            eprintln!("metaguard-install: {msg}");
            self.last = msg;
        }
    }
}

fn set_ready(path: Option<&Path>, ready: bool) -> std::io::Result<()> {
    let Some(p) = path else { return Ok(()) };
    if ready {
        if !p.exists() {
            fs::write(p, b"ready\n")?;
        }
        Ok(())
    } else {
        match fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Whether the installed binary still looks like the one we copied (cheap: size and mode).
fn binary_intact(layout: &Layout, src_len: Option<u64>) -> bool {
    install::plugin_present(layout)
        && match (fs::metadata(layout.plugin_path()), src_len) {
            (Ok(m), Some(l)) => m.len() == l,
            _ => false,
        }
}

/// Runs the watch loop until SIGTERM/SIGINT. Errors during the loop are logged and retried; the
/// returned error is that of the final uninstall, if it fails.
pub fn run(opts: &WatchOptions) -> Result<(), InstallError> {
    let signals =
        Signals::block(&[libc::SIGTERM, libc::SIGINT]).map_err(|source| InstallError::Io {
            path: PathBuf::from("signal mask"),
            source,
        })?;
    install::sweep_temps(&opts.layout);
    let src_len = fs::metadata(&opts.plugin_src).ok().map(|m| m.len());
    let mut log = Log::default();
    let mut chain_log = Log::default();
    let mut last_seen: Option<(PathBuf, Vec<u8>)> = None;
    let mut was_ready: Option<bool> = None;
    let mut taint_done = opts.taint.is_none();
    let mut next_taint_try = Instant::now();
    eprintln!(
        "metaguard-install: watching {} every {} ms",
        opts.layout.conf_dir.display(),
        opts.interval.as_millis()
    );
    loop {
        if !binary_intact(&opts.layout, src_len) {
            match install::install_plugin(&opts.layout, &opts.plugin_src) {
                Ok(true) => eprintln!(
                    "metaguard-install: installed {}",
                    opts.layout.plugin_path().display()
                ),
                Ok(false) => {}
                Err(e) => log.say(format!("error: {e}")),
            }
        }
        let mut settled = |p: &Path, b: &[u8]| {
            let same = last_seen
                .as_ref()
                .is_some_and(|(lp, lb)| lp == p && lb == b);
            if !same {
                last_seen = Some((p.to_path_buf(), b.to_vec()));
            }
            same
        };
        match install::ensure_chain(&opts.layout, &opts.entry, &mut settled) {
            Ok(ChainOutcome::Added {
                file,
                converted_from,
            }) => {
                match converted_from {
                    Some(c) => eprintln!(
                        "metaguard-install: {} converted to {} with metaguard last",
                        c.display(),
                        file.display()
                    ),
                    None => eprintln!("metaguard-install: metaguard added to {}", file.display()),
                }
                chain_log = Log::default();
            }
            Ok(ChainOutcome::AlreadyInChain(f)) => {
                chain_log.say(format!("metaguard is in the chain of {}", f.display()))
            }
            Ok(ChainOutcome::Deferred(f)) => {
                chain_log.say(format!("{} changed; waiting for it to settle", f.display()))
            }
            Err(e) => chain_log.say(format!("not in the chain: {e}")),
        }
        let ready = match install::status(&opts.layout) {
            Ok(st) => st.ready(),
            Err(e) => {
                log.say(format!("error: {e}"));
                false
            }
        };
        if let Err(e) = set_ready(opts.ready_file.as_deref(), ready) {
            log.say(format!("error: ready file: {e}"));
        }
        if let Some(hb) = &opts.heartbeat_file {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(e) = fs::write(hb, format!("{now}\n")) {
                log.say(format!("error: heartbeat file {}: {e}", hb.display()));
            }
        }
        if was_ready != Some(ready) {
            eprintln!("metaguard-install: ready={ready}");
            was_ready = Some(ready);
        }
        if ready && !taint_done && Instant::now() >= next_taint_try {
            if let Some(t) = &opts.taint {
                match t.kubectl.remove_taint(&t.node, &t.taint) {
                    Ok(TaintOutcome::Removed) => {
                        eprintln!(
                            "metaguard-install: removed taint {}:{} from node {}",
                            t.taint.key, t.taint.effect, t.node
                        );
                        taint_done = true;
                    }
                    Ok(TaintOutcome::Absent) => {
                        eprintln!(
                            "metaguard-install: node {} has no taint {}:{}",
                            t.node, t.taint.key, t.taint.effect
                        );
                        taint_done = true;
                    }
                    Err(e) => {
                        log.say(format!("taint removal failed (retrying in 5 s): {e}"));
                        next_taint_try = Instant::now() + Duration::from_secs(5);
                    }
                }
            }
        }
        if let Some(sig) = signals.wait(opts.interval) {
            eprintln!("metaguard-install: signal {sig}, stopping");
            break;
        }
    }
    if let Err(e) = set_ready(opts.ready_file.as_deref(), false) {
        eprintln!("metaguard-install: error: ready file: {e}");
    }
    match opts.on_exit {
        OnExit::Keep => {
            eprintln!(
                "metaguard-install: leaving metaguard in the chain (--on-exit keep); \
                 `metaguard-install uninstall` removes it"
            );
            Ok(())
        }
        OnExit::Uninstall => {
            for n in install::uninstall(&opts.layout, opts.keep_plugin)? {
                eprintln!("metaguard-install: {n}");
            }
            Ok(())
        }
    }
}
