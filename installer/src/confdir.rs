//! Which file in the CNI configuration directory containerd uses.
//!
//! containerd (go-cni over libcni) lists the directory with `libcni.ConfFiles(dir, [".conf",
//! ".conflist", ".json"])`: every entry that is not a directory and whose extension (the text from
//! the last dot of the name, Go's `filepath.Ext`) is one of the three, hidden files included. It
//! sorts the paths bytewise (`sort.Strings`) and the first one is the default network, loaded as a
//! list when it ends in `.conflist` and as a single plugin otherwise. That first file is the one
//! metaguard must be chained into.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How containerd loads a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.conflist`: a list with `plugins`.
    List,
    /// `.conf` or `.json`: one plugin, turned into a list of one by libcni.
    Single,
}

/// A configuration file of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfFile {
    pub path: PathBuf,
    pub name: OsString,
    pub kind: Kind,
}

impl ConfFile {
    pub fn name_lossy(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }
}

/// The kind libcni gives a file name, `None` when it does not load it at all.
pub fn kind_of(name: &[u8]) -> Option<Kind> {
    let dot = name.iter().rposition(|&c| c == b'.')?;
    match &name[dot..] {
        b".conflist" => Some(Kind::List),
        b".conf" | b".json" => Some(Kind::Single),
        _ => None,
    }
}

/// Every configuration file containerd would consider, in the order it considers them. A missing
/// directory has none (libcni says the same).
pub fn config_files(dir: &Path) -> io::Result<Vec<ConfFile>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent?;
        // Like Go's DirEntry.IsDir: the entry's own type, a symlink to a directory is not one.
        if ent.file_type()?.is_dir() {
            continue;
        }
        let name = ent.file_name();
        if let Some(kind) = kind_of(name.as_bytes()) {
            out.push(ConfFile {
                path: dir.join(&name),
                name,
                kind,
            });
        }
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

/// The file containerd uses as its default network, if any.
pub fn selected(dir: &Path) -> io::Result<Option<ConfFile>> {
    Ok(config_files(dir)?.into_iter().next())
}

/// The `.conflist` name a single-plugin file becomes: same stem.
pub fn list_name_for(name: &OsString) -> OsString {
    let b = name.as_bytes();
    let stem = match b.iter().rposition(|&c| c == b'.') {
        Some(dot) => &b[..dot],
        None => b,
    };
    let mut out = stem.to_vec();
    out.extend_from_slice(b".conflist");
    OsString::from(std::ffi::OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_libcni_extensions() {
        assert_eq!(kind_of(b"10-calico.conflist"), Some(Kind::List));
        assert_eq!(kind_of(b"10-bridge.conf"), Some(Kind::Single));
        assert_eq!(kind_of(b"x.json"), Some(Kind::Single));
        assert_eq!(kind_of(b".hidden.conflist"), Some(Kind::List));
        assert_eq!(kind_of(b"10-aws.conflist.cilium_bak"), None);
        assert_eq!(kind_of(b"calico-kubeconfig"), None);
        assert_eq!(kind_of(b".10-x.conflist.123.metaguard-tmp"), None);
        assert_eq!(kind_of(b"x.CONF"), None);
    }

    #[test]
    fn picks_bytewise_first_and_skips_directories() {
        let d = std::env::temp_dir().join(format!("mg-confdir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("00-dir.conflist")).unwrap();
        fs::create_dir_all(d.join(".metaguard-backup")).unwrap();
        for n in [
            "99-loopback.conf",
            "10-z.conflist",
            "10-Z.conf",
            "05-x.conflist.bak",
            "10-z.conf",
        ] {
            fs::write(d.join(n), "{}").unwrap();
        }
        let names: Vec<String> = config_files(&d)
            .unwrap()
            .iter()
            .map(|f| f.name_lossy())
            .collect();
        // Upper case sorts before lower case, and "10-z.conf" before "10-z.conflist".
        assert_eq!(
            names,
            [
                "10-Z.conf",
                "10-z.conf",
                "10-z.conflist",
                "99-loopback.conf"
            ]
        );
        assert_eq!(selected(&d).unwrap().unwrap().kind, Kind::Single);
        assert!(selected(&d.join("missing")).unwrap().is_none());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn list_name_keeps_the_stem() {
        assert_eq!(
            list_name_for(&"10-bridge.conf".into()),
            OsString::from("10-bridge.conflist")
        );
        assert_eq!(
            list_name_for(&"10-x.json".into()),
            OsString::from("10-x.conflist")
        );
    }
}
