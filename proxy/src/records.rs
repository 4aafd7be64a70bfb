//! Who is calling: source address -> pod identity and the policy its record selects, from the
//! plugin's state directory, cached.
//!
//! The plugin writes `pods/<key>.json` and then `ips/<ip>` before ADD returns, and removes
//! `ips/<ip>` before the record at DEL. So:
//! - a miss reads the files directly (two small reads on tmpfs), which makes a pod's very first
//!   request work without waiting for any scan;
//! - a cached entry older than `revalidate_after` is checked with one `stat` of `ips/<ip>`: the
//!   same (device, inode, mtime, ctime) means unchanged (every write is a rename, so a rewrite is a
//!   new inode); a change means re-read; gone means evict. A removed record therefore stops
//!   counting within `revalidate_after` of its removal, without a restart;
//! - nothing is cached for addresses without a record, so the cache only ever holds what the
//!   plugin wrote (an unknown or spoofed source cannot grow it).
//!
//! What is cached is small: the container ID and `namespace/name` for the logs, and the policy the
//! record selects under one policy generation. Annotations (which can be large in Kubernetes) are
//! read, used for selection, and dropped. After a policy reload an entry selects again, from the
//! file, on its next use (or all at once in the background, see [`RecordCache::preload`]).
//!
//! The hot path takes a read lock for a hash lookup and an `Arc` clone; no lock is held across I/O.

use crate::decision_log::WhoJson;
use crate::policy::store::Snapshot;
use metaguard_common::record::PodRecord;
use metaguard_common::state::{StateDir, StateError};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`, seen on dual-stack sockets) are the IPv4 caller.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// What the logs say about a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub container_id: Box<str>,
    /// `namespace/name` when the record has both.
    pub pod: Option<Box<str>>,
    /// Both, as the decision log writes them.
    pub who: WhoJson,
}

impl Identity {
    pub fn new(container_id: &str, pod: Option<String>) -> Identity {
        Identity {
            who: WhoJson::new(pod.as_deref(), container_id),
            container_id: container_id.into(),
            pod: pod.map(String::into_boxed_str),
        }
    }

    pub fn of(rec: &PodRecord) -> Identity {
        let pod = match (&rec.namespace, &rec.pod_name) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            _ => None,
        };
        Identity::new(&rec.container_id, pod)
    }
}

/// A known caller: who, and which policy of the snapshot it was resolved against.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
    /// Index for [`Snapshot::policy`].
    pub policy: u32,
}

/// Identity of the file `ips/<ip>` when the entry was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl FileStamp {
    fn of(md: &std::fs::Metadata) -> FileStamp {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        FileStamp {
            dev: md.dev(),
            ino: md.ino(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
        }
    }
}

struct Entry {
    identity: Arc<Identity>,
    policy: u32,
    /// The policy generation `policy` was selected under.
    generation: u64,
    stamp: FileStamp,
    /// Milliseconds since the cache's epoch when the entry was last known good.
    checked_ms: AtomicU64,
}

impl Entry {
    fn caller(&self) -> Caller {
        Caller {
            identity: self.identity.clone(),
            policy: self.policy,
        }
    }
}

pub struct RecordCache {
    state: StateDir,
    map: RwLock<FxHashMap<IpAddr, Arc<Entry>>>,
    revalidate_after: Duration,
    epoch: Instant,
}

impl RecordCache {
    pub fn new(state: StateDir, revalidate_after: Duration) -> RecordCache {
        RecordCache {
            state,
            map: RwLock::new(FxHashMap::default()),
            revalidate_after,
            epoch: Instant::now(),
        }
    }

    pub fn state_dir(&self) -> &StateDir {
        &self.state
    }

    /// Number of addresses with a cached record.
    pub fn len(&self) -> usize {
        self.read_map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `ip` has a cached record (no file is read).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.read_map().contains_key(ip)
    }

    /// `at` as milliseconds since this cache was made (what entries are stamped with).
    fn ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, FxHashMap<IpAddr, Arc<Entry>>> {
        // A poisoned lock only means another thread panicked mid-insert of a complete value;
        // the map is still consistent.
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, FxHashMap<IpAddr, Arc<Entry>>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    fn stat_ip(&self, ip: &IpAddr) -> io::Result<Option<FileStamp>> {
        match std::fs::metadata(self.state.ip_path(ip)) {
            Ok(md) => Ok(Some(FileStamp::of(&md))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The caller at `ip` (already normalised) with its policy under `snap`, or `None` for an
    /// unknown caller.
    pub fn lookup(&self, ip: IpAddr, snap: &Snapshot) -> Result<Option<Caller>, StateError> {
        self.lookup_at(ip, snap, Instant::now())
    }

    /// [`RecordCache::lookup`] at `now` (the request's start: one clock read serves the whole
    /// request).
    pub fn lookup_at(
        &self,
        ip: IpAddr,
        snap: &Snapshot,
        now: Instant,
    ) -> Result<Option<Caller>, StateError> {
        let now = self.ms_at(now);
        let cached = self.read_map().get(&ip).cloned();
        if let Some(entry) = &cached {
            let age = now.saturating_sub(entry.checked_ms.load(Ordering::Relaxed));
            if u128::from(age) < self.revalidate_after.as_millis()
                && entry.generation == snap.generation
            {
                return Ok(Some(entry.caller()));
            }
        }
        self.refresh(ip, cached, now, snap)
    }

    /// Checks (or loads) the entry for `ip` against the files.
    fn refresh(
        &self,
        ip: IpAddr,
        cached: Option<Arc<Entry>>,
        now: u64,
        snap: &Snapshot,
    ) -> Result<Option<Caller>, StateError> {
        let io_err = |source| StateError::Io {
            path: self.state.ip_path(&ip),
            source,
        };
        // Stat before reading: if the file is replaced between the two, the stamp we keep is the
        // older one and the next check re-reads.
        let Some(stamp) = self.stat_ip(&ip).map_err(io_err)? else {
            if cached.is_some() {
                self.write_map().remove(&ip);
            }
            return Ok(None);
        };
        if let Some(entry) = &cached {
            if entry.stamp == stamp && entry.generation == snap.generation {
                entry.checked_ms.store(now, Ordering::Relaxed);
                return Ok(Some(entry.caller()));
            }
        }
        match self.state.lookup_ip(&ip) {
            Ok(Some(rec)) => {
                let entry = Arc::new(Entry {
                    identity: Arc::new(Identity::of(&rec)),
                    policy: snap.select(&rec),
                    generation: snap.generation,
                    stamp,
                    checked_ms: AtomicU64::new(now),
                });
                let caller = entry.caller();
                self.write_map().insert(ip, entry);
                Ok(Some(caller))
            }
            Ok(None) => {
                self.write_map().remove(&ip);
                Ok(None)
            }
            Err(e) => {
                // Fail closed: an unreadable record grants nothing.
                self.write_map().remove(&ip);
                Err(e)
            }
        }
    }

    /// Loads every record that has address entries and selects its policy under `snap`: at start
    /// (so the first requests after a restart hit the cache) and after a reload (so requests do not
    /// have to re-read files to select again). Entries selected under a newer generation are kept.
    /// Records listing several addresses share one identity. Returns (addresses loaded, errors).
    pub fn preload(&self, snap: &Snapshot) -> (usize, Vec<String>) {
        let mut errors = Vec::new();
        let ips_dir = self.state.ips_dir();
        let rd = match std::fs::read_dir(&ips_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (0, errors),
            Err(e) => {
                errors.push(format!("{}: {e}", ips_dir.display()));
                return (0, errors);
            }
        };
        let now = self.ms_at(Instant::now());
        // key -> (identity, policy, addresses the record lists)
        let mut by_key: HashMap<String, (Arc<Identity>, u32, Vec<IpAddr>)> = HashMap::new();
        let mut loaded = Vec::new();
        for ent in rd {
            let Ok(ent) = ent else { continue };
            let name = ent.file_name();
            // Temporary files of atomic writes start with '.', and are not addresses anyway.
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            let stamp = match self.stat_ip(&ip) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    errors.push(format!("{ip}: {e}"));
                    continue;
                }
            };
            let key = match self.state.owner_of(&ip) {
                Ok(Some(k)) => k,
                Ok(None) => continue,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            if !by_key.contains_key(&key) {
                match self.state.read_record(&key) {
                    Ok(Some(r)) => {
                        let v = (Arc::new(Identity::of(&r)), snap.select(&r), r.ips);
                        by_key.insert(key.clone(), v);
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                }
            }
            let Some((identity, policy, ips)) = by_key.get(&key) else {
                continue;
            };
            // Same rule as StateDir::lookup_ip: a stale entry never grants an identity.
            if !ips.contains(&ip) {
                continue;
            }
            let entry = Entry {
                identity: identity.clone(),
                policy: *policy,
                generation: snap.generation,
                stamp,
                checked_ms: AtomicU64::new(now),
            };
            loaded.push((ip, Arc::new(entry)));
        }
        drop(by_key);
        let n = loaded.len();
        let mut map = self.write_map();
        for (ip, e) in loaded {
            match map.get(&ip) {
                // A request loaded it meanwhile under the same or a newer policy: keep that.
                Some(cur) if cur.generation >= e.generation => {}
                _ => {
                    map.insert(ip, e);
                }
            }
        }
        (n, errors)
    }

    /// Drops entries whose address file is gone, so memory follows pod churn even for addresses
    /// that never call again. Changed files are left for the next lookup to re-read.
    /// Returns the number evicted.
    pub fn sweep(&self) -> usize {
        let snapshot: Vec<IpAddr> = self.read_map().keys().copied().collect();
        let mut gone = Vec::new();
        for ip in snapshot {
            if let Ok(None) = self.stat_ip(&ip) {
                gone.push(ip);
            }
        }
        if gone.is_empty() {
            return 0;
        }
        let mut n = 0;
        let mut map = self.write_map();
        for ip in gone {
            // If the address was re-added since the stat, removing it costs one re-read on its
            // next request, nothing more.
            if map.remove(&ip).is_some() {
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;
    use crate::testing::{pod_record as rec, TempDir};

    fn tmpdir(tag: &str) -> TempDir {
        TempDir::new(&format!("records-{tag}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Namespace ns-aws gets `aws`, everyone else `deny-all`.
    fn snap(generation: u64, aws_ns: &str) -> Snapshot {
        let text = format!(
            "default = \"deny-all\"\n[[selector]]\nnamespace = \"{aws_ns}\"\npolicy = \"aws\"\n"
        );
        Snapshot::new(PolicySet::from_toml(&text).unwrap(), generation)
    }

    fn policy_of(c: &RecordCache, s: &Snapshot, a: &str) -> Option<String> {
        c.lookup(ip(a), s)
            .unwrap()
            .map(|caller| s.policy(caller.policy).name().to_string())
    }

    #[test]
    fn mapped_addresses_normalise() {
        assert_eq!(normalize(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(normalize(ip("10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(normalize(ip("fd00::1")), ip("fd00::1"));
        // IPv4-compatible (deprecated) addresses are not mapped ones.
        assert_eq!(normalize(ip("::10.0.0.1")), ip("::10.0.0.1"));
    }

    #[test]
    fn identity_for_logs() {
        let r = rec("abc", &[], "ns1");
        let id = Identity::of(&r);
        assert_eq!(&*id.container_id, "abc");
        assert_eq!(id.pod.as_deref(), Some("ns1/abc"));
        assert_eq!(id, Identity::new("abc", Some("ns1/abc".into())));
        let mut r = rec("abc", &[], "ns1");
        r.pod_name = None;
        assert_eq!(Identity::of(&r).pod, None);
    }

    #[test]
    fn miss_reads_files_directly() {
        let d = tmpdir("miss");
        let s = StateDir::new(d.path());
        let sn = snap(1, "ns1");
        let c = RecordCache::new(s.clone(), Duration::from_secs(1));
        assert!(c.lookup(ip("10.0.0.1"), &sn).unwrap().is_none());
        assert!(c.is_empty(), "unknown callers are not cached");
        s.write_record(&rec("a", &["10.0.0.1"], "ns1")).unwrap();
        // Immediately visible: no scan needed.
        let caller = c.lookup(ip("10.0.0.1"), &sn).unwrap().unwrap();
        assert_eq!(&*caller.identity.container_id, "a");
        assert_eq!(sn.policy(caller.policy).name(), "aws");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn removal_stops_counting_after_revalidation() {
        let d = tmpdir("rm");
        let s = StateDir::new(d.path());
        let sn = snap(1, "ns1");
        let c = RecordCache::new(s.clone(), Duration::from_millis(100));
        let r = rec("a", &["10.0.0.2"], "ns1");
        s.write_record(&r).unwrap();
        assert!(c.lookup(ip("10.0.0.2"), &sn).unwrap().is_some());
        assert!(s.remove_record(&r.key()).is_empty());
        // Poll with a deadline: within the revalidation interval (plus slack) it must be gone.
        let start = Instant::now();
        loop {
            if c.lookup(ip("10.0.0.2"), &sn).unwrap().is_none() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_millis(1000),
                "record still honoured"
            );
            std::thread::yield_now();
        }
        assert!(c.is_empty(), "evicted");
    }

    #[test]
    fn fresh_entries_are_served_from_memory() {
        let d = tmpdir("fresh");
        let s = StateDir::new(d.path());
        let sn = snap(1, "ns1");
        let c = RecordCache::new(s.clone(), Duration::from_secs(3600));
        let r = rec("a", &["10.0.0.3"], "ns1");
        s.write_record(&r).unwrap();
        assert!(c.lookup(ip("10.0.0.3"), &sn).unwrap().is_some());
        s.remove_record(&r.key());
        // Within the revalidation window the cache answers without touching the files; this is
        // the hot path's contract (and why the window is short).
        assert!(c.lookup(ip("10.0.0.3"), &sn).unwrap().is_some());
    }

    #[test]
    fn rewrite_is_noticed() {
        let d = tmpdir("rewrite");
        let s = StateDir::new(d.path());
        let sn = snap(1, "ns1");
        let c = RecordCache::new(s.clone(), Duration::ZERO);
        s.write_record(&rec("old", &["10.0.0.4"], "ns1")).unwrap();
        assert_eq!(policy_of(&c, &sn, "10.0.0.4").as_deref(), Some("aws"));
        // The address is reused by a new pod: ips/<ip> is replaced (new inode).
        s.write_record(&rec("new", &["10.0.0.4"], "ns2")).unwrap();
        let caller = c.lookup(ip("10.0.0.4"), &sn).unwrap().unwrap();
        assert_eq!(&*caller.identity.container_id, "new");
        assert_eq!(caller.identity.pod.as_deref(), Some("ns2/new"));
        assert_eq!(sn.policy(caller.policy).name(), "deny-all");
    }

    #[test]
    fn a_new_policy_generation_selects_again() {
        let d = tmpdir("regen");
        let s = StateDir::new(d.path());
        let c = RecordCache::new(s.clone(), Duration::from_secs(3600));
        s.write_record(&rec("a", &["10.0.0.11"], "ns1")).unwrap();
        let g1 = snap(1, "ns1");
        assert_eq!(policy_of(&c, &g1, "10.0.0.11").as_deref(), Some("aws"));
        // Same files, new policy: the cached selection is not reused across generations.
        let g2 = snap(2, "other");
        assert_eq!(policy_of(&c, &g2, "10.0.0.11").as_deref(), Some("deny-all"));
        // And a preload under a newer generation refreshes every entry without requests.
        let g3 = snap(3, "ns1");
        assert_eq!(c.preload(&g3).0, 1);
        let e = c.read_map().get(&ip("10.0.0.11")).cloned().unwrap();
        assert_eq!((e.generation, g3.policy(e.policy).name()), (3, "aws"));
        // An older preload never overwrites a newer selection.
        c.preload(&g2);
        assert_eq!(c.read_map().get(&ip("10.0.0.11")).unwrap().generation, 3);
    }

    #[test]
    fn preload_shares_identities_and_skips_stale_entries() {
        let d = tmpdir("preload");
        let s = StateDir::new(d.path());
        let sn = snap(1, "ns1");
        let a = rec("a", &["10.0.0.5", "fd00::5"], "ns1");
        s.write_record(&a).unwrap();
        s.write_record(&rec("b", &["10.0.0.6"], "ns1")).unwrap();
        // Stale: points at a record that does not list the address.
        metaguard_common::state::write_atomic(&s.ip_path(&ip("10.0.0.7")), a.key().as_bytes())
            .unwrap();
        // Junk in the directory.
        std::fs::write(s.ips_dir().join(".tmp.junk"), b"x").unwrap();
        let c = RecordCache::new(s.clone(), Duration::from_secs(1));
        let (n, errors) = c.preload(&sn);
        assert_eq!(n, 3, "{errors:?}");
        assert!(errors.is_empty(), "{errors:?}");
        let r1 = c.lookup(ip("10.0.0.5"), &sn).unwrap().unwrap();
        let r2 = c.lookup(ip("fd00::5"), &sn).unwrap().unwrap();
        assert!(Arc::ptr_eq(&r1.identity, &r2.identity));
        assert!(c.lookup(ip("10.0.0.7"), &sn).unwrap().is_none());
    }

    #[test]
    fn preload_of_missing_dir_is_empty() {
        let d = tmpdir("nodir");
        let c = RecordCache::new(StateDir::new(d.path()), Duration::from_secs(1));
        assert_eq!(c.preload(&snap(1, "x")), (0, vec![]));
    }

    #[test]
    fn sweep_evicts_gone_addresses() {
        let d = tmpdir("sweep");
        let s = StateDir::new(d.path());
        let sn = snap(1, "ns1");
        let c = RecordCache::new(s.clone(), Duration::from_secs(3600));
        let a = rec("a", &["10.0.0.8"], "ns1");
        s.write_record(&a).unwrap();
        s.write_record(&rec("b", &["10.0.0.9"], "ns1")).unwrap();
        c.preload(&sn);
        assert_eq!(c.len(), 2);
        s.remove_record(&a.key());
        assert_eq!(c.sweep(), 1);
        assert_eq!(c.len(), 1);
        assert!(c.lookup(ip("10.0.0.9"), &sn).unwrap().is_some());
    }

    #[test]
    fn corrupt_record_fails_closed() {
        let d = tmpdir("corrupt");
        let s = StateDir::new(d.path());
        let a = rec("a", &["10.0.0.10"], "ns1");
        s.write_record(&a).unwrap();
        std::fs::write(s.record_path(&a.key()), b"{not json").unwrap();
        let c = RecordCache::new(s, Duration::from_secs(1));
        assert!(c.lookup(ip("10.0.0.10"), &snap(1, "ns1")).is_err());
        assert!(c.is_empty());
    }
}
