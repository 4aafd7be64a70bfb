//! Prefetch: a pod's credentials are fetched when its record appears, not when it first asks.
//!
//! The plugin writes `pods/<key>.json` (a rename) before it writes the pod's address file and
//! before ADD returns, and the kernel queues the inotify event inside that rename. This task
//! waits on that event (its own inotify instance, read through the runtime's reactor, so it wakes
//! at once), reads the record, resolves its role under the policy in force and hands it to
//! [`CredStore::pod_added`], which starts the STS call. By the time the runtime has started the
//! pod's containers, the credentials are in memory: the start-up race of kube2iam and kiam
//! (the pod asking before the daemon knows it) does not exist here. DEL's removal of the record
//! drops the pod's entry ([`CredStore::pod_gone`]).
//!
//! At start, after a queue overflow, and when asked (after a policy reload,
//! [`super::AwsIdentity::rescan`]) every record is read again and pods whose record is gone are
//! forgotten. While `pods/` does not exist (no ADD yet), the state directory is watched for it
//! (and both are looked for every second, for a state directory that does not exist yet).

use super::creds::CredStore;
use super::role::PodRole;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use metaguard_common::record::PodRecord;
use metaguard_common::state::StateDir;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// What the pod's record gives: its role under the policy in force (`None`: no role).
pub type Resolve = dyn Fn(&PodRecord) -> Option<Arc<PodRole>> + Send + Sync;

/// Watches `dir` for directories made or moved into it.
fn watch_dir(inotify: &mut Inotify, dir: &std::path::Path) -> Option<WatchDescriptor> {
    let mask = WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW;
    inotify.watches().add(dir, mask).ok()
}

/// A watched directory went away (or its watch did).
const LOST: EventMask = EventMask::IGNORED
    .union(EventMask::DELETE_SELF)
    .union(EventMask::MOVE_SELF);

/// How often a missing `pods/` directory is looked for again (its creation is also watched,
/// when the state directory exists).
const RETRY: Duration = Duration::from_secs(1);

pub struct Prefetch {
    state: StateDir,
    store: Arc<CredStore>,
    resolve: Box<Resolve>,
    /// Notified after a policy reload ([`super::AwsIdentity::rescan`]).
    rescan: Arc<Notify>,
}

impl Prefetch {
    pub fn new(
        state: StateDir,
        store: Arc<CredStore>,
        resolve: Box<Resolve>,
        rescan: Arc<Notify>,
    ) -> Arc<Prefetch> {
        Arc::new(Prefetch {
            state,
            store,
            resolve,
            rescan,
        })
    }

    /// The record `name` (`<key>.json`) appeared or changed.
    fn added(&self, key: &str) {
        match self.state.read_record(key) {
            Ok(Some(rec)) => {
                log::debug!("prefetch: record {key}");
                self.store.pod_added(key, (self.resolve)(&rec))
            }
            Ok(None) => self.store.pod_gone(key),
            // Unreadable: the request path will refuse it too; nothing to fetch.
            Err(e) => log::warn!("prefetch: {e}"),
        }
    }

    /// Every record, and forget the pods whose record is gone.
    fn scan(&self) {
        let keys = match self.state.list_keys() {
            Ok(k) => k,
            Err(e) => {
                log::warn!("prefetch: {e}");
                return;
            }
        };
        for k in &keys {
            self.added(k);
        }
        let live: HashSet<&str> = keys.iter().map(String::as_str).collect();
        self.store.retain_pods(&|k| live.contains(k));
    }

    /// Runs until the runtime stops.
    pub async fn run(self: Arc<Self>) {
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                log::error!(
                    "prefetch: cannot set up inotify ({e}): credentials are fetched at a pod's \
                     first request"
                );
                return;
            }
        };
        // SAFETY: `Inotify` owns its descriptor (opened non-blocking) and closes it only when
        // dropped, which is after the `AsyncFd` that owns it deregisters it.
        let mut fd = match unsafe { AsyncFd::register(inotify) } {
            Ok(fd) => fd,
            Err(e) => {
                log::error!("prefetch: {e}: credentials are fetched at a pod's first request");
                return;
            }
        };
        let mut buf = vec![0u8; 4096];
        // The state directory and its parent are watched too, so `pods/` is watched the moment
        // the first ADD makes it (a record written before the watch is found by the scan that
        // follows): on a new node the first pods are prefetched like every other.
        let root_name = self.state.root().file_name().and_then(|n| n.to_str());
        let mut parent: Option<WatchDescriptor> = None;
        let (mut root, mut pods): (Option<WatchDescriptor>, Option<WatchDescriptor>) = (None, None);
        loop {
            if pods.is_none() {
                let inotify = fd.get_mut();
                if parent.is_none() {
                    parent = self
                        .state
                        .root()
                        .parent()
                        .and_then(|p| watch_dir(inotify, p));
                }
                if root.is_none() {
                    root = watch_dir(inotify, self.state.root());
                }
                pods = self.watch_pods(inotify);
                // Whatever happened before the watch: read it all now.
                self.scan();
            }
            tokio::select! {
                ready = fd.readable_mut(), if parent.is_some() || root.is_some() || pods.is_some() => {
                    let Ok(mut guard) = ready else { return };
                    match guard.get_inner_mut().read_events(&mut buf) {
                        Ok(events) => {
                            for ev in events {
                                let name = ev.name.and_then(|n| n.to_str());
                                if parent.as_ref() == Some(&ev.wd) {
                                    if ev.mask.intersects(LOST) {
                                        parent = None;
                                    } else if name.is_some() && name == root_name {
                                        root = None;
                                        pods = None;
                                    }
                                } else if root.as_ref() == Some(&ev.wd) {
                                    if ev.mask.intersects(LOST) {
                                        root = None;
                                        pods = None;
                                    } else if name == Some("pods") {
                                        pods = None; // made or replaced: watch it, scan
                                    }
                                } else if self.event(ev.mask, name) {
                                    pods = None;
                                }
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            guard.clear_ready();
                        }
                        Err(e) => {
                            log::warn!("prefetch: reading events: {e}");
                            pods = None;
                        }
                    }
                }
                _ = tokio::time::sleep(RETRY), if pods.is_none() => {}
                _ = self.rescan.notified() => self.scan(),
            }
        }
    }

    fn watch_pods(&self, inotify: &mut Inotify) -> Option<WatchDescriptor> {
        // Records are only ever written by rename (`StateDir::write_record`), so MOVED_TO is
        // every new or changed record. Not CLOSE_WRITE: the writer closes its file after the
        // rename, under the record's name, which would read every record twice.
        let mask = WatchMask::MOVED_TO
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
            | WatchMask::DONT_FOLLOW;
        inotify.watches().add(self.state.pods_dir(), mask).ok()
    }

    /// Applies one event; `true` when the watch was lost or events were missed (watch again,
    /// rescan).
    fn event(&self, mask: EventMask, name: Option<&str>) -> bool {
        if mask.intersects(LOST | EventMask::Q_OVERFLOW) {
            return true;
        }
        // Temporary files of atomic writes start with '.'.
        let Some(key) = name
            .filter(|n| !n.starts_with('.'))
            .and_then(|n| n.strip_suffix(".json"))
        else {
            return false;
        };
        if mask.contains(EventMask::MOVED_TO) {
            self.added(key);
        } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            self.store.pod_gone(key);
        }
        false
    }
}
