//! Who is calling: source address -> pod record, from the plugin's state directory, cached.
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
//! The hot path takes a read lock for a hash lookup and an `Arc` clone; no lock is held across I/O.

use metaguard_common::record::PodRecord;
use metaguard_common::state::{StateDir, StateError};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
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

/// Identity of the file `ips/<ip>` when the entry was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(md: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: md.dev(),
            ino: md.ino(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
        }
    }
}

struct Entry {
    record: Arc<PodRecord>,
    stamp: FileStamp,
    /// Milliseconds since the cache's epoch when the entry was last known good.
    checked_ms: AtomicU64,
}

pub struct RecordCache {
    state: StateDir,
    ips_dir: PathBuf,
    map: RwLock<HashMap<IpAddr, Arc<Entry>>>,
    revalidate_after: Duration,
    epoch: Instant,
}

impl RecordCache {
    pub fn new(state: StateDir, revalidate_after: Duration) -> RecordCache {
        RecordCache {
            ips_dir: state.ips_dir(),
            state,
            map: RwLock::new(HashMap::new()),
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

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<IpAddr, Arc<Entry>>> {
        // A poisoned lock only means another thread panicked mid-insert of a complete value;
        // the map is still consistent.
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<IpAddr, Arc<Entry>>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    fn stat_ip(&self, ip: &IpAddr) -> io::Result<Option<FileStamp>> {
        match std::fs::metadata(self.ips_dir.join(ip.to_string())) {
            Ok(md) => Ok(Some(FileStamp::of(&md))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The record owning `ip` (already normalised), or `None` for an unknown caller.
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<Arc<PodRecord>>, StateError> {
        let now = self.now_ms();
        let cached = self.read_map().get(&ip).cloned();
        if let Some(entry) = &cached {
            let age = now.saturating_sub(entry.checked_ms.load(Ordering::Relaxed));
            if u128::from(age) < self.revalidate_after.as_millis() {
                return Ok(Some(entry.record.clone()));
            }
        }
        self.refresh(ip, cached, now)
    }

    /// Checks (or loads) the entry for `ip` against the files.
    fn refresh(
        &self,
        ip: IpAddr,
        cached: Option<Arc<Entry>>,
        now: u64,
    ) -> Result<Option<Arc<PodRecord>>, StateError> {
        let io_err = |source| StateError::Io {
            path: self.ips_dir.join(ip.to_string()),
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
            if entry.stamp == stamp {
                entry.checked_ms.store(now, Ordering::Relaxed);
                return Ok(Some(entry.record.clone()));
            }
        }
        match self.state.lookup_ip(&ip) {
            Ok(Some(rec)) => {
                let record = Arc::new(rec);
                let entry = Arc::new(Entry {
                    record: record.clone(),
                    stamp,
                    checked_ms: AtomicU64::new(now),
                });
                self.write_map().insert(ip, entry);
                Ok(Some(record))
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

    /// Loads every record that has address entries (at start, so the first requests after a
    /// restart hit the cache). Records listing several addresses share one allocation.
    /// Returns (addresses loaded, errors).
    pub fn preload(&self) -> (usize, Vec<String>) {
        let mut errors = Vec::new();
        let rd = match std::fs::read_dir(&self.ips_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (0, errors),
            Err(e) => {
                errors.push(format!("{}: {e}", self.ips_dir.display()));
                return (0, errors);
            }
        };
        let now = self.now_ms();
        let mut by_key: HashMap<String, Arc<PodRecord>> = HashMap::new();
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
            let record = match by_key.get(&key) {
                Some(r) => r.clone(),
                None => match self.state.read_record(&key) {
                    Ok(Some(r)) => {
                        let r = Arc::new(r);
                        by_key.insert(key, r.clone());
                        r
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                },
            };
            // Same rule as StateDir::lookup_ip: a stale entry never grants an identity.
            if !record.ips.contains(&ip) {
                continue;
            }
            loaded.push((
                ip,
                Arc::new(Entry {
                    record,
                    stamp,
                    checked_ms: AtomicU64::new(now),
                }),
            ));
        }
        let n = loaded.len();
        let mut map = self.write_map();
        for (ip, e) in loaded {
            // An entry a request loaded meanwhile is at least as fresh.
            map.entry(ip).or_insert(e);
        }
        (n, errors)
    }

    /// Drops entries whose address file is gone, so memory follows pod churn even for addresses
    /// that never call again. Changed files are left for the next lookup to re-read.
    /// Returns the number evicted.
    pub fn sweep(&self) -> usize {
        let snapshot: Vec<(IpAddr, FileStamp)> = self
            .read_map()
            .iter()
            .map(|(ip, e)| (*ip, e.stamp))
            .collect();
        let mut gone = Vec::new();
        for (ip, _) in snapshot {
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
    use metaguard_common::record::RECORD_VERSION;
    use std::collections::BTreeMap;

    struct TmpDir(PathBuf);
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmpdir(tag: &str) -> TmpDir {
        let p = std::env::temp_dir().join(format!("mg-records-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TmpDir(p)
    }

    fn rec(cid: &str, ips: &[&str], ns: &str) -> PodRecord {
        PodRecord {
            version: RECORD_VERSION,
            container_id: cid.into(),
            network: "net".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            namespace: Some(ns.into()),
            pod_name: Some(cid.into()),
            pod_uid: None,
            annotations: BTreeMap::new(),
            host_interface: None,
            host_guard: true,
            created_unix: 1,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
    fn miss_reads_files_directly() {
        let d = tmpdir("miss");
        let s = StateDir::new(&d.0);
        let c = RecordCache::new(s.clone(), Duration::from_secs(1));
        assert!(c.lookup(ip("10.0.0.1")).unwrap().is_none());
        assert!(c.is_empty(), "unknown callers are not cached");
        s.write_record(&rec("a", &["10.0.0.1"], "ns1")).unwrap();
        // Immediately visible: no scan needed.
        let r = c.lookup(ip("10.0.0.1")).unwrap().unwrap();
        assert_eq!(r.container_id, "a");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn removal_stops_counting_after_revalidation() {
        let d = tmpdir("rm");
        let s = StateDir::new(&d.0);
        let c = RecordCache::new(s.clone(), Duration::from_millis(100));
        let r = rec("a", &["10.0.0.2"], "ns1");
        s.write_record(&r).unwrap();
        assert!(c.lookup(ip("10.0.0.2")).unwrap().is_some());
        assert!(s.remove_record(&r.key()).is_empty());
        // Poll with a deadline: within the revalidation interval (plus slack) it must be gone.
        let start = Instant::now();
        loop {
            if c.lookup(ip("10.0.0.2")).unwrap().is_none() {
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
        let s = StateDir::new(&d.0);
        let c = RecordCache::new(s.clone(), Duration::from_secs(3600));
        let r = rec("a", &["10.0.0.3"], "ns1");
        s.write_record(&r).unwrap();
        assert!(c.lookup(ip("10.0.0.3")).unwrap().is_some());
        s.remove_record(&r.key());
        // Within the revalidation window the cache answers without touching the files; this is
        // the hot path's contract (and why the window is short).
        assert!(c.lookup(ip("10.0.0.3")).unwrap().is_some());
    }

    #[test]
    fn rewrite_is_noticed() {
        let d = tmpdir("rewrite");
        let s = StateDir::new(&d.0);
        let c = RecordCache::new(s.clone(), Duration::ZERO);
        s.write_record(&rec("old", &["10.0.0.4"], "ns1")).unwrap();
        assert_eq!(
            c.lookup(ip("10.0.0.4")).unwrap().unwrap().container_id,
            "old"
        );
        // The address is reused by a new pod: ips/<ip> is replaced (new inode).
        s.write_record(&rec("new", &["10.0.0.4"], "ns2")).unwrap();
        let r = c.lookup(ip("10.0.0.4")).unwrap().unwrap();
        assert_eq!(r.container_id, "new");
        assert_eq!(r.namespace.as_deref(), Some("ns2"));
    }

    #[test]
    fn preload_shares_records_and_skips_stale_entries() {
        let d = tmpdir("preload");
        let s = StateDir::new(&d.0);
        let a = rec("a", &["10.0.0.5", "fd00::5"], "ns1");
        s.write_record(&a).unwrap();
        s.write_record(&rec("b", &["10.0.0.6"], "ns1")).unwrap();
        // Stale: points at a record that does not list the address.
        metaguard_common::state::write_atomic(&s.ip_path(&ip("10.0.0.7")), a.key().as_bytes())
            .unwrap();
        // Junk in the directory.
        std::fs::write(s.ips_dir().join(".tmp.junk"), b"x").unwrap();
        let c = RecordCache::new(s.clone(), Duration::from_secs(1));
        let (n, errors) = c.preload();
        assert_eq!(n, 3, "{errors:?}");
        assert!(errors.is_empty(), "{errors:?}");
        let r1 = c.lookup(ip("10.0.0.5")).unwrap().unwrap();
        let r2 = c.lookup(ip("fd00::5")).unwrap().unwrap();
        assert!(Arc::ptr_eq(&r1, &r2));
        assert!(c.lookup(ip("10.0.0.7")).unwrap().is_none());
    }

    #[test]
    fn preload_of_missing_dir_is_empty() {
        let d = tmpdir("nodir");
        let c = RecordCache::new(StateDir::new(&d.0), Duration::from_secs(1));
        assert_eq!(c.preload(), (0, vec![]));
    }

    #[test]
    fn sweep_evicts_gone_addresses() {
        let d = tmpdir("sweep");
        let s = StateDir::new(&d.0);
        let c = RecordCache::new(s.clone(), Duration::from_secs(3600));
        let a = rec("a", &["10.0.0.8"], "ns1");
        s.write_record(&a).unwrap();
        s.write_record(&rec("b", &["10.0.0.9"], "ns1")).unwrap();
        c.preload();
        assert_eq!(c.len(), 2);
        s.remove_record(&a.key());
        assert_eq!(c.sweep(), 1);
        assert_eq!(c.len(), 1);
        assert!(c.lookup(ip("10.0.0.9")).unwrap().is_some());
    }

    #[test]
    fn corrupt_record_fails_closed() {
        let d = tmpdir("corrupt");
        let s = StateDir::new(&d.0);
        let a = rec("a", &["10.0.0.10"], "ns1");
        s.write_record(&a).unwrap();
        std::fs::write(s.record_path(&a.key()), b"{not json").unwrap();
        let c = RecordCache::new(s, Duration::from_secs(1));
        assert!(c.lookup(ip("10.0.0.10")).is_err());
        assert!(c.is_empty());
    }
}
