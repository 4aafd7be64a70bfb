//! Watching the state directory with inotify, so that a cached record is dropped the moment its
//! `ips/<address>` or `pods/<key>.json` file changes, instead of at the next revalidation.
//!
//! # Why the lookup reads the events itself
//!
//! A thread that waits for events and then evicts still races: the plugin's ADD returns, the new
//! pod sends at once, and the thread has not been scheduled yet, so the request is decided under
//! the address's previous owner. But the kernel queues an inotify event inside the `rename` or
//! `unlink` that changes the directory, that is before the plugin's ADD (or DEL) returns. So
//! [`StateWatch::sync`], which every lookup calls before it trusts a cached entry, reads the
//! descriptor without blocking and applies every pending event; it holds a lock while it reads
//! *and applies*, so a lookup that finds the queue empty because another thread has just read it
//! waits until that thread's changes are in the cache. Every event queued before a request was
//! read has therefore been applied before the request is decided.
//!
//! Cost on the hot path: one uncontended mutex and one `read` that returns `EAGAIN`. Measured
//! with the `lookup_cost` test in `records.rs` (release build, 2 vCPUs shared with other builds,
//! load average 7-9, 2026-12-03, three runs): a cached lookup took 0.23-0.34 us without the
//! watch and 1.03-1.32 us with it, one thread or two at once; about +0.8 us, most of it the system
//! call (a bare `read` of an empty inotify descriptor took 0.50-0.64 us in C on the same machine).
//! That is about 3% of the 21-32 us of CPU a forwarded request costs (docs/proxy.md).
//!
//! # Why the `inotify` crate
//!
//! It is the maintained safe wrapper of the system calls and nothing more: events are read into a
//! buffer the caller owns and borrowed from it, so the per-request `read` allocates nothing.
//! `nix::sys::inotify` (already a dependency) allocates a `Vec` per read and an `OsString` per
//! event and zeroes a 4 KiB buffer each call; `notify` runs a thread of its own and delivers
//! events later through a channel, which is the race described above.
//!
//! # What is watched
//!
//! The state directory itself (for `ips/` or `pods/` being removed, renamed or replaced, and for
//! the directory itself going), `ips/` and `pods/`. A directory that is missing (the proxy may
//! start before the first ADD creates them), or a watch that is lost, is retried on every
//! [`StateWatch::sync`]; until all three are watched, `sync` says so and the cache checks every
//! entry against its file before use. A watch that comes (back) and a queue overflow
//! (`IN_Q_OVERFLOW`) both drop every cached entry: events may have been missed meanwhile.

use inotify::{Event, EventMask, Inotify, WatchDescriptor, WatchMask};
use metaguard_common::state::StateDir;
use std::ffi::OsStr;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;

/// What a batch of events means for the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `ips/<address>` was created, replaced, written or removed.
    Address(IpAddr),
    /// `pods/<key>.json` was created, replaced, written or removed.
    Record(Box<str>),
    /// Events may have been missed (overflow, a watch lost or newly made): drop everything.
    Everything,
}

/// The watched directories, as indices into `Inner::watches`.
const ROOT: usize = 0;
const IPS: usize = 1;
const PODS: usize = 2;
const NAMES: [&str; 3] = ["state directory", "ips/", "pods/"];

/// Big enough for many events per `read`; the kernel needs at least one whole event (16 bytes
/// plus a name of up to 256) or it fails the read with EINVAL.
const BUFFER_BYTES: usize = 4096;

pub struct StateWatch {
    inner: Mutex<Inner>,
}

struct Inner {
    inotify: Inotify,
    paths: [PathBuf; 3],
    /// The descriptor of each directory while it is watched.
    watches: [Option<WatchDescriptor>; 3],
    buf: Box<[u8]>,
    /// Why the watch is incomplete, as last logged (so a lasting condition is logged once).
    logged: Option<String>,
}

impl StateWatch {
    /// Sets up inotify and watches what exists of the state directory. Only failing to create
    /// the inotify instance is an error; missing directories are watched once they exist.
    pub fn new(state: &StateDir) -> io::Result<StateWatch> {
        let mut inner = Inner {
            inotify: Inotify::init()?,
            paths: [
                state.root().to_path_buf(),
                state.ips_dir(),
                state.pods_dir(),
            ],
            watches: [None, None, None],
            buf: vec![0; BUFFER_BYTES].into_boxed_slice(),
            logged: None,
        };
        inner.add_missing();
        Ok(StateWatch {
            inner: Mutex::new(inner),
        })
    }

    /// Reads every pending event and calls `apply` for what it means, before returning and under
    /// this watch's lock (see the module docs for why both). Also retries missing watches.
    /// Returns whether the state directory, `ips/` and `pods/` are all watched, that is whether a
    /// cached entry read since the last [`Change::Everything`] can be trusted without a `stat`.
    pub fn sync(&self, mut apply: impl FnMut(Change)) -> bool {
        // Poisoned: a thread panicked while applying; the descriptor and buffer are still sound,
        // and whatever that thread did not apply is lost, so drop everything.
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(e) => {
                self.inner.clear_poison();
                apply(Change::Everything);
                e.into_inner()
            }
        };
        inner.drain(&mut apply);
        if !inner.complete() && inner.add_missing() {
            // Whatever changed while a directory was not watched went unseen.
            apply(Change::Everything);
        }
        inner.complete()
    }
}

impl Inner {
    fn complete(&self) -> bool {
        self.watches.iter().all(Option::is_some)
    }

    /// Reads until the queue is empty, applying as it goes.
    fn drain(&mut self, apply: &mut impl FnMut(Change)) {
        loop {
            let events = match self.inotify.read_events(&mut self.buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Not expected (the buffer fits any event). Start over: forget the watches,
                    // so nothing is trusted until they are made again, and drop everything.
                    log::error!("state directory watch: read: {e}");
                    self.forget_all();
                    apply(Change::Everything);
                    return;
                }
            };
            let mut lost = [false; 3];
            for ev in events {
                if let Some(change) = change_of(&self.watches, &ev, &mut lost) {
                    apply(change);
                }
            }
            for (dir, lost) in lost.into_iter().enumerate() {
                if lost {
                    self.forget(dir);
                }
            }
        }
    }

    /// Stops watching `dir` (the descriptor may already be gone: the error is of no interest).
    fn forget(&mut self, dir: usize) {
        if let Some(wd) = self.watches[dir].take() {
            let _ = self.inotify.watches().remove(wd);
        }
    }

    fn forget_all(&mut self) {
        for dir in [ROOT, IPS, PODS] {
            self.forget(dir);
        }
    }

    /// Tries to watch every directory not watched yet. Returns whether one was added.
    fn add_missing(&mut self) -> bool {
        let mut added = false;
        let mut problem = None;
        for dir in [ROOT, IPS, PODS] {
            if self.watches[dir].is_some() {
                continue;
            }
            // Not following a symlink, and only a directory: the proxy refuses a symlinked
            // state directory at start; one that appears later is not watched, so its entries
            // are checked with a stat on every use.
            let flags = WatchMask::DONT_FOLLOW | WatchMask::ONLYDIR;
            let mask = if dir == ROOT {
                // Only its children ips/ and pods/, and itself.
                WatchMask::CREATE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM
                    | WatchMask::MOVED_TO
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF
            } else {
                // Writes by the plugin are renames (MOVED_TO) and unlinks (DELETE); CREATE,
                // MODIFY (truncation included) and CLOSE_WRITE catch anyone writing in place.
                WatchMask::CREATE
                    | WatchMask::MODIFY
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM
                    | WatchMask::MOVED_TO
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF
            };
            match self.inotify.watches().add(&self.paths[dir], mask | flags) {
                Ok(wd) => {
                    self.watches[dir] = Some(wd);
                    added = true;
                }
                Err(e) => {
                    problem.get_or_insert_with(|| {
                        let what = format!("{} {}: {e}", NAMES[dir], self.paths[dir].display());
                        (what, e.kind() == io::ErrorKind::NotFound)
                    });
                    // Below a missing directory nothing exists either.
                    if dir == ROOT {
                        break;
                    }
                }
            }
        }
        self.log_state(problem);
        added
    }

    /// Logs when the watch becomes incomplete (once per reason) and when it is complete again.
    /// A directory that does not exist yet is normal before the first ADD.
    fn log_state(&mut self, problem: Option<(String, bool)>) {
        match problem {
            Some((p, missing)) if self.logged.as_deref() != Some(p.as_str()) => {
                let level = if missing {
                    log::Level::Info
                } else {
                    log::Level::Warn
                };
                log::log!(
                    level,
                    "not watching {p}; until it is watched, every cached pod record is checked \
                     against its file before use"
                );
                self.logged = Some(p);
            }
            Some(_) => {}
            None => {
                if self.logged.take().is_some() {
                    log::info!("watching the state directory, its ips/ and pods/");
                }
            }
        }
    }
}

/// What one event means. Marks in `lost` the directories whose watch it ends (the caller stops
/// watching them; the next `sync` watches whatever is at their path then).
fn change_of(
    watches: &[Option<WatchDescriptor>; 3],
    ev: &Event<&OsStr>,
    lost: &mut [bool; 3],
) -> Option<Change> {
    if ev.mask.contains(EventMask::Q_OVERFLOW) {
        return Some(Change::Everything);
    }
    let id = ev.wd.get_watch_descriptor_id();
    // Events of a descriptor already forgotten are stale.
    let dir = watches
        .iter()
        .position(|w| w.as_ref().map(WatchDescriptor::get_watch_descriptor_id) == Some(id))?;
    let gone =
        EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED | EventMask::UNMOUNT;
    if ev.mask.intersects(gone) {
        // Removed, renamed (the watch would follow it elsewhere) or unmounted.
        lost[dir] = true;
        return Some(Change::Everything);
    }
    let name = ev.name?.to_str()?;
    match dir {
        // ips/ or pods/ created, removed or replaced: watch what is there now.
        ROOT => {
            let child = match name {
                "ips" => IPS,
                "pods" => PODS,
                _ => return None,
            };
            lost[child] = true;
            Some(Change::Everything)
        }
        // Temporary files of atomic writes start with '.', so they never parse.
        IPS => name.parse().ok().map(Change::Address),
        _ => name
            .strip_suffix(".json")
            .filter(|key| !key.starts_with('.'))
            .map(|key| Change::Record(key.into())),
    }
}
