//! The state directory shared by the plugin (writer) and the proxy (reader).
//!
//! Layout under the state directory (default `/run/metaguard`):
//! - `pods/<network>:<container>:<ifname>.json`: one [`PodRecord`] per attachment;
//! - `ips/<address>`: the key of the record that owns that address, so the proxy can resolve a
//!   source address it has never seen with two small reads instead of scanning every record.
//!
//! Every file is written to a temporary name in the same directory and renamed into place, so a
//! reader sees the old file or the new one, never half of one. The record is written before its
//! address entries and removed after them: whoever finds an address entry finds its record.

use crate::ids::{split_attachment_key, valid_cni_name, valid_ifname};
use crate::record::{PodRecord, RECORD_VERSION};
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/run/metaguard";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid pod record: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn ips_dir(&self) -> PathBuf {
        self.root.join("ips")
    }

    pub fn record_path(&self, key: &str) -> PathBuf {
        self.pods_dir().join(format!("{key}.json"))
    }

    pub fn ip_path(&self, ip: &IpAddr) -> PathBuf {
        self.ips_dir().join(ip.to_string())
    }

    /// Writes the record and then its address entries, each atomically.
    pub fn write_record(&self, rec: &PodRecord) -> Result<(), StateError> {
        let key = rec.key();
        for dir in [self.pods_dir(), self.ips_dir()] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let body = serde_json::to_vec_pretty(rec).map_err(|e| StateError::Invalid {
            path: self.record_path(&key),
            reason: e.to_string(),
        })?;
        write_atomic(&self.record_path(&key), &body)?;
        for ip in &rec.ips {
            write_atomic(&self.ip_path(ip), key.as_bytes())?;
        }
        Ok(())
    }

    /// Reads one record by key. `Ok(None)` when there is none.
    pub fn read_record(&self, key: &str) -> Result<Option<PodRecord>, StateError> {
        let path = self.record_path(key);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        parse_record(&path, &data).map(Some)
    }

    /// Removes the address entries that still point at this key, then the record. Missing files
    /// are not an error (DEL is idempotent). Keeps going past errors and returns them all.
    pub fn remove_record(&self, key: &str) -> Vec<StateError> {
        match self.read_record(key) {
            Ok(rec) => self.remove_read_record(key, rec.as_ref()),
            Err(e) => {
                let mut errors = vec![e];
                errors.extend(self.remove_read_record(key, None));
                errors
            }
        }
    }

    /// [`StateDir::remove_record`] for a caller that has already read the record (`None`: there
    /// is none, or it was unreadable), so DEL reads it once.
    pub fn remove_read_record(&self, key: &str, rec: Option<&PodRecord>) -> Vec<StateError> {
        let mut errors = Vec::new();
        if let Some(rec) = rec {
            for ip in &rec.ips {
                let p = self.ip_path(ip);
                // Only remove an entry that is still ours: the address may already belong to a
                // newer pod whose ADD overwrote it.
                match fs::read(&p) {
                    Ok(owner) if owner == key.as_bytes() => {
                        if let Err(e) = remove_if_exists(&p) {
                            errors.push(e);
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => errors.push(io_err(&p)(e)),
                }
            }
        }
        if let Err(e) = remove_if_exists(&self.record_path(key)) {
            errors.push(e);
        }
        errors
    }

    /// Keys of every record file present (names that are not valid keys are skipped).
    pub fn list_keys(&self) -> Result<Vec<String>, StateError> {
        let dir = self.pods_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut keys = Vec::new();
        for ent in rd {
            let ent = ent.map_err(io_err(&dir))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            if split_attachment_key(key).is_some() {
                keys.push(key.to_string());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The key owning `ip`, from `ips/<ip>`; `Ok(None)` when no record claims it.
    pub fn owner_of(&self, ip: &IpAddr) -> Result<Option<String>, StateError> {
        let p = self.ip_path(ip);
        match fs::read(&p) {
            Ok(d) => {
                let key = String::from_utf8(d).map_err(|_| StateError::Invalid {
                    path: p.clone(),
                    reason: "address entry is not UTF-8".into(),
                })?;
                if split_attachment_key(&key).is_none() {
                    return Err(StateError::Invalid {
                        path: p,
                        reason: "bad key".into(),
                    });
                }
                Ok(Some(key))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Resolves a source address to its record: the address entry, then the record, and only if
    /// the record really lists that address (a stale entry never grants an identity).
    pub fn lookup_ip(&self, ip: &IpAddr) -> Result<Option<PodRecord>, StateError> {
        let Some(key) = self.owner_of(ip)? else {
            return Ok(None);
        };
        match self.read_record(&key)? {
            Some(rec) if rec.ips.contains(ip) => Ok(Some(rec)),
            _ => Ok(None),
        }
    }
}

/// Parses and checks a record file's content.
pub fn parse_record(path: &Path, data: &[u8]) -> Result<PodRecord, StateError> {
    let invalid = |reason: String| StateError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let rec: PodRecord = serde_json::from_slice(data).map_err(|e| invalid(e.to_string()))?;
    if rec.version != RECORD_VERSION {
        return Err(invalid(format!(
            "unsupported record version {}",
            rec.version
        )));
    }
    if !valid_cni_name(&rec.network)
        || !valid_cni_name(&rec.container_id)
        || !valid_ifname(&rec.ifname)
    {
        return Err(invalid(
            "bad network, container ID or interface name".into(),
        ));
    }
    Ok(rec)
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mg-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn rec(cid: &str, ips: &[&str]) -> PodRecord {
        PodRecord {
            version: RECORD_VERSION,
            container_id: cid.into(),
            network: "net".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            namespace: Some("ns".into()),
            pod_name: Some("p".into()),
            pod_uid: None,
            annotations: BTreeMap::new(),
            host_interface: Some("veth1".into()),
            host_guard: true,
            created_unix: 1,
        }
    }

    #[test]
    fn write_lookup_remove() {
        let d = tmpdir("wlr");
        let s = StateDir::new(&d);
        let r = rec("c1", &["10.0.0.5", "fd00::5"]);
        s.write_record(&r).unwrap();
        assert_eq!(
            s.lookup_ip(&"10.0.0.5".parse().unwrap()).unwrap(),
            Some(r.clone())
        );
        assert_eq!(
            s.lookup_ip(&"fd00::5".parse().unwrap()).unwrap(),
            Some(r.clone())
        );
        assert_eq!(s.list_keys().unwrap(), vec!["net:c1:eth0".to_string()]);
        assert!(s.remove_record(&r.key()).is_empty());
        assert_eq!(s.lookup_ip(&"10.0.0.5".parse().unwrap()).unwrap(), None);
        assert!(s.list_keys().unwrap().is_empty());
        // Idempotent.
        assert!(s.remove_record(&r.key()).is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reused_address_belongs_to_newest() {
        let d = tmpdir("reuse");
        let s = StateDir::new(&d);
        let old = rec("old", &["10.0.0.7"]);
        let new = rec("new", &["10.0.0.7"]);
        s.write_record(&old).unwrap();
        s.write_record(&new).unwrap();
        // Removing the stale record must not take the address from the new pod.
        assert!(s.remove_record(&old.key()).is_empty());
        assert_eq!(
            s.lookup_ip(&"10.0.0.7".parse().unwrap()).unwrap(),
            Some(new)
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_entry_grants_nothing() {
        let d = tmpdir("stale");
        let s = StateDir::new(&d);
        let r = rec("c1", &["10.0.0.9"]);
        s.write_record(&r).unwrap();
        // An address entry pointing at a record that does not list the address is ignored.
        write_atomic(
            &s.ip_path(&"10.0.0.10".parse().unwrap()),
            r.key().as_bytes(),
        )
        .unwrap();
        assert_eq!(s.lookup_ip(&"10.0.0.10".parse().unwrap()).unwrap(), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_records_are_refused() {
        let p = Path::new("x.json");
        assert!(parse_record(p, b"{").is_err());
        let mut r = rec("c1", &["10.0.0.1"]);
        r.version = 99;
        assert!(parse_record(p, &serde_json::to_vec(&r).unwrap()).is_err());
        let mut r = rec("c1", &["10.0.0.1"]);
        r.container_id = "../etc".into();
        assert!(parse_record(p, &serde_json::to_vec(&r).unwrap()).is_err());
    }
}
