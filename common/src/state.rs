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
//!
//! The plugin writing here runs as root, and what the proxy reads here decides who a caller is,
//! so nobody else may steer the directory:
//! - [`StateDir::check_secure`] refuses a state directory (or `pods/`, `ips/`) that is a symlink,
//!   not owned by root (or the process's own uid), or writable by group or others. The plugin
//!   runs it before every command that touches the directory, the proxy at start;
//! - directories are created with mode 0755 whatever the umask;
//! - temporary files get an unpredictable name and are created with `O_CREAT|O_EXCL|O_NOFOLLOW`,
//!   so an entry planted at a temporary name is never written through;
//! - records and address entries are opened with `O_NOFOLLOW` and must be regular files: a
//!   symlink there is an error ([`StateError::NotRegularFile`]), never followed.
//!
//! Writers lock, readers do not. An address entry is changed after a decision that reads the
//! directory first (ADD: is the address free, or held by an attachment whose pod is gone? DEL:
//! is this entry still mine?). Two plugin processes doing that at once could both find an
//! address free and both take it, or a DEL could remove the entry an ADD wrote between its read
//! and its unlink. So the plugin holds [`StateDir::lock`] (an exclusive `flock` on the state
//! directory itself) from such a read to the write it decides. The proxy never locks: every file
//! is replaced by a rename, so it reads the old file or the new one.

use crate::ids::{split_attachment_key, valid_cni_name, valid_ifname};
use crate::record::{PodRecord, RECORD_VERSION};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/run/metaguard";

/// Mode of the directories the plugin creates (also what an operator should set).
pub const DIR_MODE: u32 = 0o755;
/// Mode of the files the plugin writes: the proxy may run as another user and must read them.
pub const FILE_MODE: u32 = 0o644;
/// How many fresh temporary names [`write_atomic`] tries when one already exists.
const TEMP_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid pod record: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// A record or address entry that is not a regular file (`kind` says what it is, e.g. "is a
    /// symlink"). The plugin only ever writes regular files, so someone else put it there; it is
    /// neither followed nor read.
    #[error("{path}: {kind}; refused (pod records and address entries must be regular files)")]
    NotRegularFile { path: PathBuf, kind: &'static str },
    /// The state directory, or its `pods/` or `ips/`, is one someone other than root could steer.
    #[error("{}", insecure_message(.path, .problem))]
    Insecure { path: PathBuf, problem: Insecurity },
}

/// Why a state directory is refused (see [`StateDir::check_secure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insecurity {
    /// The path itself is a symlink: whoever can change it (or its target) chooses where the root
    /// plugin writes and what the proxy reads.
    Symlink,
    NotADirectory,
    /// Owned by this uid, which is neither root nor the process's effective uid.
    Owner {
        uid: u32,
    },
    /// Writable by group or others (`mode` is the permission bits).
    Writable {
        mode: u32,
    },
}

fn insecure_message(path: &Path, problem: &Insecurity) -> String {
    let p = path.display();
    const WHY: &str =
        "anyone who can create entries there can make the root plugin overwrite any file and give \
         addresses a pod identity at the proxy";
    match problem {
        Insecurity::Symlink => format!(
            "state directory {p} is a symlink: refused ({WHY}); make it a real directory owned \
             by root with mode 0755 (rm {p} && mkdir -m 0755 {p}), or point stateDir/state_dir \
             at the real directory"
        ),
        Insecurity::NotADirectory => format!(
            "state directory {p} exists and is not a directory; remove it (the plugin creates \
             the directory, mode 0755, at the next ADD)"
        ),
        Insecurity::Owner { uid } => format!(
            "state directory {p} is owned by uid {uid}, not root: refused ({WHY}); fix with \
             chown root:root {p}"
        ),
        Insecurity::Writable { mode } => format!(
            "state directory {p} has mode {mode:04o}, writable by group or others: refused \
             ({WHY}); fix with chmod go-w {p} (mode 0755)"
        ),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who holds an address according to the state directory ([`StateDir::holder_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No address entry.
    Free,
    /// The entry names the asking attachment.
    Ours,
    /// The entry names another key whose record is missing or does not list the address: a
    /// leftover that grants no identity (the proxy ignores it the same way).
    Stale { key: String },
    /// The entry is not one the plugin writes (not a regular file, not UTF-8, not a key). `reason`
    /// says what it is; it grants no identity either.
    Junk { reason: String },
    /// Another attachment's record lists the address: that attachment holds it.
    Other(Box<PodRecord>),
}

/// An exclusive lock on the state directory, released when dropped (see the module docs).
#[derive(Debug)]
pub struct StateLock {
    _dir: std::fs::File,
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

    /// Refuses a state directory someone other than root could steer: the directory, `pods/` and
    /// `ips/` must each be a real directory (not a symlink), owned by root or by this process's
    /// effective uid (so an unprivileged proxy or a rootless test can use its own directory), and
    /// not writable by group or others. Missing directories are fine: the plugin creates them
    /// with mode 0755. Parent directories are not checked.
    pub fn check_secure(&self) -> Result<(), StateError> {
        // SAFETY: geteuid has no arguments and cannot fail.
        let euid = unsafe { libc::geteuid() };
        for dir in [self.root.clone(), self.pods_dir(), self.ips_dir()] {
            if !check_dir(&dir, euid)? {
                // Nothing below a missing directory exists either.
                break;
            }
        }
        Ok(())
    }

    /// Creates the directory, `pods/` and `ips/` (and missing parents) with mode 0755 whatever
    /// the umask, so they are never group- or other-writable. Existing directories are left as
    /// they are ([`StateDir::check_secure`] is what refuses bad ones).
    pub fn create_dirs(&self) -> Result<(), StateError> {
        for dir in [self.pods_dir(), self.ips_dir()] {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&dir)
                .map_err(io_err(&dir))?;
        }
        Ok(())
    }

    /// Takes the writers' lock (see the module docs), creating the directories first when they
    /// are missing. Blocks while another process holds it; the runtime's timeout for the plugin
    /// bounds that wait (a killed holder's lock goes with its process).
    pub fn lock(&self) -> Result<StateLock, StateError> {
        self.create_dirs()?;
        match self.lock_existing()? {
            Some(lock) => Ok(lock),
            // Created a moment ago and already gone: someone removed it; say so.
            None => Err(io_err(&self.root)(io::ErrorKind::NotFound.into())),
        }
    }

    /// Takes the writers' lock if the state directory exists; `Ok(None)` when it does not (there
    /// is then nothing to protect: no entry exists to be read or removed).
    pub fn lock_existing(&self) -> Result<Option<StateLock>, StateError> {
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.root);
        let dir = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&self.root)(e)),
        };
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&dir), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Some(StateLock { _dir: dir }));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io_err(&self.root)(e));
            }
        }
    }

    /// Who holds `ip`, for the attachment `key` about to take it. Errors are reads that failed
    /// (the entry or the holder's record could not be read or parsed): the caller cannot tell
    /// whether another attachment holds the address.
    pub fn holder_of(&self, ip: &IpAddr, key: &str) -> Result<Holder, StateError> {
        let owner = match self.owner_of(ip) {
            Ok(None) => return Ok(Holder::Free),
            Ok(Some(owner)) => owner,
            // Not written by the plugin: nobody's entry.
            Err(e @ (StateError::NotRegularFile { .. } | StateError::Invalid { .. })) => {
                return Ok(Holder::Junk {
                    reason: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        };
        if owner == key {
            return Ok(Holder::Ours);
        }
        // The same rule as [`StateDir::lookup_ip`]: whatever record the proxy would give this
        // address is its holder (even one whose content names another key than its file).
        match self.read_record(&owner)? {
            Some(rec) if rec.ips.contains(ip) => Ok(Holder::Other(Box::new(rec))),
            _ => Ok(Holder::Stale { key: owner }),
        }
    }

    /// Writes the record and then its address entries, each atomically.
    pub fn write_record(&self, rec: &PodRecord) -> Result<(), StateError> {
        let key = rec.key();
        self.create_dirs()?;
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
        match read_state_file(&path)? {
            Some(data) => parse_record(&path, &data).map(Some),
            None => Ok(None),
        }
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
                match read_state_file(&p) {
                    Ok(Some(owner)) if owner == key.as_bytes() => {
                        if let Err(e) = remove_if_exists(&p) {
                            errors.push(e);
                        }
                    }
                    Ok(_) => {}
                    Err(e @ StateError::NotRegularFile { .. }) => {
                        // Nobody's entry (the plugin writes regular files only): remove it
                        // (unlink does not follow a symlink) and say so.
                        if let Err(e) = remove_if_exists(&p) {
                            errors.push(e);
                        }
                        errors.push(e);
                    }
                    Err(e) => errors.push(e),
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
        let Some(d) = read_state_file(&p)? else {
            return Ok(None);
        };
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
///
/// The temporary name ends in 16 random hex digits and the file is created with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0644): an entry someone planted at a name they guessed is
/// never opened, let alone written through (a symlink there makes the open fail, and a fresh
/// name is tried). The rename replaces whatever is at `path`, a symlink included, without
/// following it.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    write_atomic_named(path, data, random_suffix)
}

/// [`write_atomic`] with the temporary names' suffixes from `suffix` (tests choose them).
fn write_atomic_named(
    path: &Path,
    data: &[u8],
    mut suffix: impl FnMut() -> io::Result<String>,
) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut attempts = 0;
    let (mut file, tmp) = loop {
        let tmp = dir.join(format!(".{name}.tmp.{}", suffix().map_err(io_err(path))?));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp);
        match opened {
            Ok(f) => break (f, tmp),
            // Taken (by chance, or planted): another random name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts + 1 < TEMP_ATTEMPTS => {
                attempts += 1;
            }
            Err(e) => return Err(io_err(&tmp)(e)),
        }
    };
    let res = file.write_all(data).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = res {
        // The name is ours (O_EXCL created it), so removing it removes nobody else's file.
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    Ok(())
}

/// 64 random bits as hex: a temporary name nobody can guess ahead of the write.
fn random_suffix() -> io::Result<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)?;
    Ok(format!("{:016x}", u64::from_ne_bytes(b)))
}

/// Reads a record or address entry: `Ok(None)` when it does not exist. Opened with `O_NOFOLLOW`
/// (a symlink is refused, not followed) and `O_NONBLOCK` (a FIFO planted there cannot hang the
/// reader; regular files ignore the flag), and read only if it is a regular file.
pub fn read_state_file(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let not_regular = |kind| StateError::NotRegularFile {
        path: path.to_path_buf(),
        kind,
    };
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW's answer when the last component is a symlink.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_regular("is a symlink")),
        Err(e) => return Err(io_err(path)(e)),
    };
    let md = f.metadata().map_err(io_err(path))?;
    let ft = md.file_type();
    if !ft.is_file() {
        return Err(not_regular(if ft.is_dir() {
            "is a directory"
        } else if ft.is_fifo() {
            "is a FIFO"
        } else if ft.is_block_device() || ft.is_char_device() {
            "is a device"
        } else {
            "is not a regular file"
        }));
    }
    let mut data = Vec::with_capacity(usize::try_from(md.len()).unwrap_or(0));
    f.read_to_end(&mut data).map_err(io_err(path))?;
    Ok(Some(data))
}

/// One directory of [`StateDir::check_secure`]: `Ok(false)` when it does not exist.
fn check_dir(dir: &Path, euid: u32) -> Result<bool, StateError> {
    let insecure = |problem| StateError::Insecure {
        path: dir.to_path_buf(),
        problem,
    };
    // lstat: a symlink is judged as itself, never by its target.
    let md = match fs::symlink_metadata(dir) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let ft = md.file_type();
    if ft.is_symlink() {
        return Err(insecure(Insecurity::Symlink));
    }
    if !ft.is_dir() {
        return Err(insecure(Insecurity::NotADirectory));
    }
    if md.uid() != 0 && md.uid() != euid {
        return Err(insecure(Insecurity::Owner { uid: md.uid() }));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(insecure(Insecurity::Writable { mode }));
    }
    Ok(true)
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
            mac: None,
            layer2_guard: false,
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
    fn holder_of_tells_free_ours_stale_junk_and_other() {
        let d = tmpdir("holder");
        let s = StateDir::new(&d);
        let ip: IpAddr = "10.0.0.20".parse().unwrap();
        let a = rec("a", &["10.0.0.20"]);
        let b = rec("b", &["10.0.0.20"]);
        assert_eq!(s.holder_of(&ip, &b.key()).unwrap(), Holder::Free);
        s.write_record(&a).unwrap();
        assert_eq!(s.holder_of(&ip, &a.key()).unwrap(), Holder::Ours);
        assert_eq!(
            s.holder_of(&ip, &b.key()).unwrap(),
            Holder::Other(Box::new(a.clone()))
        );
        // a's record no longer lists the address: the entry is a leftover.
        let mut moved = a.clone();
        moved.ips = vec!["10.0.0.21".parse().unwrap()];
        write_atomic(
            &s.record_path(&a.key()),
            &serde_json::to_vec(&moved).unwrap(),
        )
        .unwrap();
        assert_eq!(
            s.holder_of(&ip, &b.key()).unwrap(),
            Holder::Stale { key: a.key() }
        );
        // The record gone entirely: the same.
        fs::remove_file(s.record_path(&a.key())).unwrap();
        assert_eq!(
            s.holder_of(&ip, &b.key()).unwrap(),
            Holder::Stale { key: a.key() }
        );
        // Entries the plugin never writes name nobody.
        for junk in [&b"not a key"[..], &b"net:../x:eth0"[..], &b"\xff\xfe"[..]] {
            write_atomic(&s.ip_path(&ip), junk).unwrap();
            assert!(
                matches!(s.holder_of(&ip, &b.key()), Ok(Holder::Junk { .. })),
                "{junk:?}"
            );
        }
        fs::remove_file(s.ip_path(&ip)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", s.ip_path(&ip)).unwrap();
        assert!(matches!(
            s.holder_of(&ip, &b.key()),
            Ok(Holder::Junk { .. })
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_unreadable_holder_record_is_an_error_not_a_free_address() {
        let d = tmpdir("holderbad");
        let s = StateDir::new(&d);
        let ip: IpAddr = "10.0.0.22".parse().unwrap();
        let a = rec("a", &["10.0.0.22"]);
        s.write_record(&a).unwrap();
        // Garbage, a newer format, a hostile name inside: nobody can tell whether a holds it.
        let mut wrong_version = serde_json::to_value(&a).unwrap();
        wrong_version["version"] = 99.into();
        let mut bad_id = serde_json::to_value(&a).unwrap();
        bad_id["containerId"] = "../../etc".into();
        for body in [
            b"{".to_vec(),
            serde_json::to_vec(&wrong_version).unwrap(),
            serde_json::to_vec(&bad_id).unwrap(),
            vec![b'x'; 1 << 16],
        ] {
            write_atomic(&s.record_path(&a.key()), &body).unwrap();
            let e = s.holder_of(&ip, "net:b:eth0").unwrap_err();
            assert!(matches!(e, StateError::Invalid { .. }), "{e}");
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_writers_lock_is_exclusive_across_open_files() {
        let d = tmpdir("lock");
        let s = StateDir::new(&d);
        assert!(
            s.lock_existing().unwrap().is_none(),
            "no directory, no lock"
        );
        let held = s.lock().unwrap();
        // Another open file of the directory (as another plugin process has) cannot take it.
        let other = fs::File::open(s.root()).unwrap();
        let try_lock = |f: &fs::File| {
            // SAFETY: flock on a descriptor we own.
            unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(f),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            }
        };
        assert_eq!(try_lock(&other), -1, "a second holder got the lock");
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EWOULDBLOCK)
        );
        drop(held);
        assert_eq!(try_lock(&other), 0, "the lock outlived its guard");
        drop(other);
        // And lock_existing takes it on an existing directory.
        assert!(s.lock_existing().unwrap().is_some());
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

    // --- the state directory against whoever can create entries in it (issue 11 item 6) ---

    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A file outside the state directory that an attacker would like the root plugin to write.
    fn victim(d: &Path) -> PathBuf {
        fs::create_dir_all(d).unwrap();
        let v = d.join("victim");
        fs::write(&v, b"precious").unwrap();
        v
    }

    fn assert_untouched(v: &Path) {
        assert_eq!(
            fs::read(v).unwrap(),
            b"precious",
            "{} was written",
            v.display()
        );
    }

    fn is_regular(p: &Path) -> bool {
        fs::symlink_metadata(p).unwrap().file_type().is_file()
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.contains(".tmp."))
            .collect()
    }

    #[test]
    fn temporary_names_are_unpredictable() {
        let d = tmpdir("tmpnames");
        fs::create_dir_all(&d).unwrap();
        let target = d.join("10.0.0.1");
        let mut seen = Vec::new();
        for _ in 0..2 {
            write_atomic_named(&target, b"k", || {
                let s = random_suffix()?;
                seen.push(s.clone());
                Ok(s)
            })
            .unwrap();
        }
        assert_eq!(seen.len(), 2);
        assert_ne!(seen[0], seen[1], "two writes used the same temporary name");
        for s in &seen {
            assert_eq!(s.len(), 16, "{s}");
            assert!(s.chars().all(|c| c.is_ascii_hexdigit()), "{s}");
            // Not the old scheme's process id.
            assert_ne!(s, &std::process::id().to_string());
        }
        assert!(temp_files(&d).is_empty(), "temporary file left behind");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn planted_symlink_at_a_temporary_name_is_not_followed() {
        let d = tmpdir("tmplink");
        let s = StateDir::new(d.join("state"));
        s.create_dirs().unwrap();
        let v = victim(&d);
        let target = s.ip_path(&"10.0.0.1".parse().unwrap());
        // The name the old plugin used (pid-based), and a name the attacker guessed right.
        symlink(
            &v,
            s.ips_dir()
                .join(format!(".10.0.0.1.tmp.{}", std::process::id())),
        )
        .unwrap();
        symlink(&v, s.ips_dir().join(".10.0.0.1.tmp.guessed")).unwrap();
        let mut names = vec!["guessed".to_string()].into_iter();
        write_atomic_named(&target, b"net:c1:eth0", || {
            Ok(names.next().unwrap_or_else(|| random_suffix().unwrap()))
        })
        .unwrap();
        assert_untouched(&v);
        assert!(is_regular(&target));
        assert_eq!(fs::read(&target).unwrap(), b"net:c1:eth0");
        // The real write_atomic past the old predictable name.
        write_atomic(&target, b"net:c2:eth0").unwrap();
        assert_untouched(&v);
        assert_eq!(fs::read(&target).unwrap(), b"net:c2:eth0");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn every_temporary_name_taken_fails_without_writing() {
        let d = tmpdir("tmpfull");
        fs::create_dir_all(&d).unwrap();
        let v = victim(&d);
        let target = d.join("f");
        symlink(&v, d.join(".f.tmp.same")).unwrap();
        let mut calls = 0;
        let e = write_atomic_named(&target, b"x", || {
            calls += 1;
            Ok("same".into())
        })
        .unwrap_err();
        assert!(
            matches!(&e, StateError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{e}"
        );
        assert_eq!(calls, TEMP_ATTEMPTS);
        assert_untouched(&v);
        assert!(!target.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn write_replaces_planted_entries_instead_of_following_them() {
        let d = tmpdir("plantent");
        let s = StateDir::new(d.join("state"));
        s.create_dirs().unwrap();
        let v = victim(&d);
        let r = rec("c1", &["10.0.0.5"]);
        let ip_path = s.ip_path(&"10.0.0.5".parse().unwrap());
        symlink(&v, &ip_path).unwrap();
        symlink(&v, s.record_path(&r.key())).unwrap();
        s.write_record(&r).unwrap();
        assert_untouched(&v);
        assert!(is_regular(&ip_path));
        assert!(is_regular(&s.record_path(&r.key())));
        assert_eq!(
            s.lookup_ip(&"10.0.0.5".parse().unwrap()).unwrap(),
            Some(r.clone())
        );
        for dir in [s.pods_dir(), s.ips_dir()] {
            assert!(temp_files(&dir).is_empty());
            let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode & 0o022, 0, "{} mode {mode:o}", dir.display());
        }
        let mode = fs::metadata(&ip_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o133, 0, "file mode {mode:o}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinked_record_or_address_entry_is_refused_on_read() {
        let d = tmpdir("readlink");
        let s = StateDir::new(d.join("state"));
        let r = rec("c1", &["10.0.0.6"]);
        let ip: IpAddr = "10.0.0.6".parse().unwrap();
        s.write_record(&r).unwrap();
        // Valid content behind the links: only the link itself can be what is refused.
        let rec_copy = d.join("record-copy.json");
        let ip_copy = d.join("ip-copy");
        fs::copy(s.record_path(&r.key()), &rec_copy).unwrap();
        fs::copy(s.ip_path(&ip), &ip_copy).unwrap();

        fs::remove_file(s.record_path(&r.key())).unwrap();
        symlink(&rec_copy, s.record_path(&r.key())).unwrap();
        let e = s.read_record(&r.key()).unwrap_err();
        assert!(
            matches!(
                e,
                StateError::NotRegularFile {
                    kind: "is a symlink",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("is a symlink"), "{e}");
        assert!(s.lookup_ip(&ip).is_err());

        s.write_record(&r).unwrap();
        fs::remove_file(s.ip_path(&ip)).unwrap();
        symlink(&ip_copy, s.ip_path(&ip)).unwrap();
        let e = s.owner_of(&ip).unwrap_err();
        assert!(
            matches!(
                e,
                StateError::NotRegularFile {
                    kind: "is a symlink",
                    ..
                }
            ),
            "{e}"
        );
        assert!(s.lookup_ip(&ip).is_err());

        // A FIFO is refused without blocking the reader.
        fs::remove_file(s.ip_path(&ip)).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(s.ip_path(&ip))
            .status()
            .unwrap();
        assert!(st.success());
        let e = s.owner_of(&ip).unwrap_err();
        assert!(
            matches!(
                e,
                StateError::NotRegularFile {
                    kind: "is a FIFO",
                    ..
                }
            ),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn removal_unlinks_a_planted_address_link_without_following_it() {
        let d = tmpdir("rmlink");
        let s = StateDir::new(d.join("state"));
        let v = victim(&d);
        let r = rec("c1", &["10.0.0.8"]);
        let ip: IpAddr = "10.0.0.8".parse().unwrap();
        s.write_record(&r).unwrap();
        fs::remove_file(s.ip_path(&ip)).unwrap();
        symlink(&v, s.ip_path(&ip)).unwrap();
        let errors = s.remove_record(&r.key());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(matches!(errors[0], StateError::NotRegularFile { .. }));
        assert!(fs::symlink_metadata(s.ip_path(&ip)).is_err(), "link left");
        assert!(!s.record_path(&r.key()).exists());
        assert_untouched(&v);
        fs::remove_dir_all(&d).unwrap();
    }

    fn set_mode(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn insecurity(s: &StateDir) -> (PathBuf, Insecurity, String) {
        match s.check_secure() {
            Err(e @ StateError::Insecure { .. }) => {
                let msg = e.to_string();
                let StateError::Insecure { path, problem } = e else {
                    unreachable!()
                };
                (path, problem, msg)
            }
            other => panic!("expected Insecure, got {other:?}"),
        }
    }

    #[test]
    fn secure_and_missing_state_dirs_pass() {
        let d = tmpdir("secok");
        let s = StateDir::new(d.join("state"));
        // Missing entirely, and the root without pods/ ips/: the plugin creates them.
        s.check_secure().unwrap();
        DirBuilder::new().mode(0o755).create(&d).unwrap();
        DirBuilder::new().mode(0o755).create(s.root()).unwrap();
        set_mode(s.root(), 0o755);
        s.check_secure().unwrap();
        s.create_dirs().unwrap();
        s.check_secure().unwrap();
        // Read-only for others, or private, is fine; so is the sticky bit alone.
        set_mode(&s.pods_dir(), 0o700);
        set_mode(&s.ips_dir(), 0o1755);
        s.check_secure().unwrap();
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn writable_state_dirs_are_refused() {
        let d = tmpdir("secmode");
        let s = StateDir::new(d.join("state"));
        s.create_dirs().unwrap();
        for (dir, mode) in [
            (s.root().to_path_buf(), 0o775),
            (s.root().to_path_buf(), 0o757),
            (s.root().to_path_buf(), 0o1777),
            (s.pods_dir(), 0o777),
            (s.ips_dir(), 0o775),
        ] {
            set_mode(&dir, mode);
            let (path, problem, msg) = insecurity(&s);
            assert_eq!(path, dir);
            assert_eq!(problem, Insecurity::Writable { mode });
            assert!(msg.contains(&dir.display().to_string()), "{msg}");
            assert!(msg.contains("chmod go-w"), "{msg}");
            set_mode(&dir, 0o755);
        }
        s.check_secure().unwrap();
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinked_state_dirs_are_refused() {
        let d = tmpdir("seclink");
        let real = StateDir::new(d.join("real"));
        real.create_dirs().unwrap();
        // The state directory itself a link to a perfectly good directory.
        symlink(real.root(), d.join("state")).unwrap();
        let s = StateDir::new(d.join("state"));
        let (path, problem, msg) = insecurity(&s);
        assert_eq!((path, problem), (d.join("state"), Insecurity::Symlink));
        assert!(msg.contains("is a symlink"), "{msg}");
        // ips/ a link inside a real state directory.
        let s = StateDir::new(d.join("state2"));
        s.create_dirs().unwrap();
        fs::remove_dir(s.ips_dir()).unwrap();
        symlink(real.ips_dir(), s.ips_dir()).unwrap();
        let (path, problem, _) = insecurity(&s);
        assert_eq!((path, problem), (s.ips_dir(), Insecurity::Symlink));
        // Not a directory at all.
        let s = StateDir::new(d.join("file"));
        fs::write(s.root(), b"").unwrap();
        assert_eq!(insecurity(&s).1, Insecurity::NotADirectory);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn state_dirs_owned_by_someone_else_are_refused() {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: chown needs root");
            return;
        }
        let d = tmpdir("secown");
        let s = StateDir::new(d.join("state"));
        s.create_dirs().unwrap();
        for dir in [s.root().to_path_buf(), s.pods_dir()] {
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let (path, problem, msg) = insecurity(&s);
            assert_eq!(
                (path, problem),
                (dir.clone(), Insecurity::Owner { uid: 65534 })
            );
            assert!(msg.contains("chown root"), "{msg}");
            std::os::unix::fs::chown(&dir, Some(0), None).unwrap();
        }
        // Another group owning it is fine as long as the group cannot write.
        std::os::unix::fs::chown(s.root(), None, Some(65534)).unwrap();
        s.check_secure().unwrap();
        fs::remove_dir_all(&d).unwrap();
    }
}
