//! Whole-file replacement that readers can never catch half-done.
//!
//! Every file the installer writes (the plugin binary, a conflist, a backup) goes to a temporary
//! file in the destination's own directory, is flushed to disk, gets its mode, and is renamed over
//! the destination; the directory is then flushed so the rename survives a crash. A process that
//! runs or reads the old file keeps the old inode; the next one sees the new file whole.
//!
//! Temporary names end in `.metaguard-tmp`, an extension libcni does not load (it reads only
//! `.conf`, `.conflist` and `.json`), and start with a dot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The destination changed between the moment its content was read and the moment the new
    /// content was about to replace it: another writer (the main CNI) is at work.
    #[error("{path} changed while metaguard-install was editing it; nothing was written")]
    Changed { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the destination must hold just before the rename (a compare-and-swap on content).
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// Replace whatever is there.
    Anything,
    /// The destination must not exist.
    Absent,
    /// The destination must hold exactly these bytes.
    Bytes(&'a [u8]),
}

/// The temporary file used for `path`.
///
/// The pid alone is not unique enough: two installer containers on one node (an old pod
/// finishing, a new one starting) may both be pid 1.
pub fn temp_path(path: &Path) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(
        ".{name}.{}-{nanos:09}-{seq}{TEMP_SUFFIX}",
        std::process::id()
    ))
}

/// Suffix of every temporary file (an extension libcni does not load).
pub const TEMP_SUFFIX: &str = ".metaguard-tmp";

/// Removes temporary files in `dir` older than `max_age`: what a run killed between writing and
/// renaming leaves behind. Younger ones may belong to a run in progress and are left alone.
/// Returns how many were removed; errors are ignored (this is housekeeping).
pub fn sweep_temps(dir: &Path, max_age: std::time::Duration) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for ent in rd.flatten() {
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') || !name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let old = ent
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if old && ent.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(ent.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Reads `path`; `Ok(None)` when it does not exist.
pub fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, WriteError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn matches_expect(path: &Path, expect: Expect<'_>) -> Result<bool, WriteError> {
    Ok(match expect {
        Expect::Anything => true,
        Expect::Absent => read_opt(path)?.is_none(),
        Expect::Bytes(b) => read_opt(path)?.as_deref() == Some(b),
    })
}

/// Replaces `path` with `data` (mode `mode`) atomically. When `owner` is given and differs from
/// the temporary file's, the new file is given that owner first (keeping a root-owned
/// configuration root-owned); failing to do so is not fatal and is returned as a warning.
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    expect: Expect<'_>,
) -> Result<Option<String>, WriteError> {
    let tmp = temp_path(path);
    let mut warning = None;
    let res = (|| -> Result<(), WriteError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        // The umask may have narrowed the mode given at creation.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(&tmp))?;
        if let Some((uid, gid)) = owner {
            let md = f.metadata().map_err(io_err(&tmp))?;
            if (md.uid(), md.gid()) != (uid, gid) {
                if let Err(e) = std::os::unix::fs::fchown(&f, Some(uid), Some(gid)) {
                    warning = Some(format!(
                        "{}: could not keep owner {uid}:{gid} ({e}); the file is owned by {}:{}",
                        path.display(),
                        md.uid(),
                        md.gid()
                    ));
                }
            }
        }
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        if !matches_expect(path, expect)? {
            return Err(WriteError::Changed {
                path: path.to_path_buf(),
            });
        }
        fs::rename(&tmp, path).map_err(io_err(path))?;
        sync_dir(path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(warning)
}

/// Removes `path` if it holds what `expect` says; `Ok(false)` when it was already gone.
pub fn remove_checked(path: &Path, expect: Expect<'_>) -> Result<bool, WriteError> {
    if !matches_expect(path, expect)? {
        return Err(WriteError::Changed {
            path: path.to_path_buf(),
        });
    }
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Flushes the directory holding `path`, so a rename or unlink in it is durable.
pub fn sync_dir(path: &Path) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Permission bits and owner of an existing file, to give its replacement the same.
pub fn mode_and_owner(path: &Path) -> Result<(u32, (u32, u32)), WriteError> {
    let md = fs::metadata(path).map_err(io_err(path))?;
    Ok((md.permissions().mode() & 0o7777, (md.uid(), md.gid())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mg-atomic-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn writes_with_mode_and_leaves_no_temp() {
        let d = tmpdir("mode");
        let p = d.join("f.conflist");
        write_atomic(&p, b"one", 0o755, None, Expect::Absent).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o755
        );
        write_atomic(&p, b"two", 0o600, None, Expect::Bytes(b"one")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn compare_and_swap_refuses_a_changed_file() {
        let d = tmpdir("cas");
        let p = d.join("f");
        fs::write(&p, b"theirs").unwrap();
        let e = write_atomic(&p, b"ours", 0o644, None, Expect::Bytes(b"old")).unwrap_err();
        assert!(matches!(e, WriteError::Changed { .. }), "{e}");
        assert!(write_atomic(&p, b"ours", 0o644, None, Expect::Absent).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"theirs");
        assert!(remove_checked(&p, Expect::Bytes(b"old")).is_err());
        assert!(remove_checked(&p, Expect::Bytes(b"theirs")).unwrap());
        assert!(!remove_checked(&p, Expect::Anything).unwrap());
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn sweeps_only_old_temporaries() {
        let d = tmpdir("sweep");
        let t = temp_path(&d.join("a.conflist"));
        fs::write(&t, b"x").unwrap();
        fs::write(d.join("keep.conflist"), b"x").unwrap();
        assert_eq!(sweep_temps(&d, std::time::Duration::from_secs(60)), 0);
        assert!(t.exists());
        assert_eq!(sweep_temps(&d, std::time::Duration::ZERO), 1);
        assert!(!t.exists());
        assert!(d.join("keep.conflist").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_names_are_unique() {
        let p = Path::new("/x/y");
        assert_ne!(temp_path(p), temp_path(p));
    }

    #[test]
    fn temp_name_is_not_a_cni_config_name() {
        let t = temp_path(Path::new("/etc/cni/net.d/10-calico.conflist"));
        let name = t.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with('.') && name.ends_with(".metaguard-tmp"),
            "{name}"
        );
        assert_eq!(t.parent().unwrap(), Path::new("/etc/cni/net.d"));
    }
}
