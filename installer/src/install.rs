//! Install, uninstall and status on a node's CNI directories.
//!
//! Install copies the plugin binary into the CNI bin directory and chains metaguard into the file
//! containerd uses (see [`crate::confdir`]). Before the first change to a file, its original bytes
//! are saved under the backup directory (default `<conf-dir>/.metaguard-backup/`, a directory,
//! which libcni skips) with the same name; uninstall puts them back exactly when the file still
//! is what install made of it, and otherwise only takes metaguard's entry out.
//!
//! Every step leaves the directory in a state containerd can load: backup first, then the new
//! file renamed into place, then (for a converted `.conf`) the old file removed.

use crate::atomic::{self, Expect, WriteError};
use crate::chain::{self, ChainError, Entry, ListView, SingleView, PLUGIN_TYPE};
use crate::confdir::{self, ConfFile, Kind};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Name of the backup directory inside the CNI configuration directory.
pub const BACKUP_DIR_NAME: &str = ".metaguard-backup";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Chain { path: PathBuf, source: ChainError },
    #[error("{path}: not UTF-8 text")]
    NotText { path: PathBuf },
    #[error(
        "no CNI configuration (.conflist, .conf or .json) in {dir}: is the main CNI installed yet?"
    )]
    NoConfig { dir: PathBuf },
    #[error("{path}: {reason}")]
    Conflict { path: PathBuf, reason: String },
    #[error("plugin binary {path}: {reason}")]
    Plugin { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn chain_err(path: &Path) -> impl FnOnce(ChainError) -> InstallError + '_ {
    move |source| InstallError::Chain {
        path: path.to_path_buf(),
        source,
    }
}

/// The directories install works on.
#[derive(Debug, Clone)]
pub struct Layout {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub backup_dir: PathBuf,
}

impl Layout {
    pub fn new(bin_dir: PathBuf, conf_dir: PathBuf, backup_dir: Option<PathBuf>) -> Layout {
        let backup_dir = backup_dir.unwrap_or_else(|| conf_dir.join(BACKUP_DIR_NAME));
        Layout {
            bin_dir,
            conf_dir,
            backup_dir,
        }
    }

    /// Where the plugin binary goes: libcni runs `<bin-dir>/<type>`.
    pub fn plugin_path(&self) -> PathBuf {
        self.bin_dir.join(PLUGIN_TYPE)
    }
}

/// What [`ensure_chain`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainOutcome {
    /// The file containerd uses already ends with metaguard, configured as asked.
    AlreadyInChain(PathBuf),
    /// metaguard was added to `file`; `converted_from` names the single-plugin file it replaced.
    Added {
        file: PathBuf,
        converted_from: Option<PathBuf>,
    },
    /// A change is needed but the file is still changing (watch mode waits for it to settle).
    Deferred(PathBuf),
}

fn read_text(path: &Path) -> Result<(Vec<u8>, String), InstallError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| InstallError::NotText {
        path: path.to_path_buf(),
    })?;
    Ok((bytes, text))
}

fn refuse_symlink(path: &Path) -> Result<(), InstallError> {
    let md = fs::symlink_metadata(path).map_err(io_err(path))?;
    if md.file_type().is_symlink() {
        return Err(InstallError::Conflict {
            path: path.to_path_buf(),
            reason: "is a symbolic link; metaguard-install edits regular files only (replace the link by the file it points to)".into(),
        });
    }
    Ok(())
}

/// Copies the plugin binary into the bin directory (mode 755, atomically). `Ok(false)` when the
/// same bytes are already there with that mode.
pub fn install_plugin(layout: &Layout, src: &Path) -> Result<bool, InstallError> {
    let plugin_err = |reason: String| InstallError::Plugin {
        path: src.to_path_buf(),
        reason,
    };
    let md = fs::metadata(src).map_err(|e| plugin_err(e.to_string()))?;
    if !md.is_file() {
        return Err(plugin_err("not a regular file".into()));
    }
    let dest = layout.plugin_path();
    if let (Ok(a), Ok(b)) = (fs::canonicalize(src), fs::canonicalize(&dest)) {
        if a == b {
            return Ok(false);
        }
    }
    let data = fs::read(src).map_err(|e| plugin_err(e.to_string()))?;
    if !data.starts_with(b"\x7fELF") {
        return Err(plugin_err("not an ELF executable".into()));
    }
    if let Ok(cur_md) = fs::metadata(&dest) {
        if cur_md.permissions().mode() & 0o7777 == 0o755
            && atomic::read_opt(&dest)?.as_deref() == Some(&data[..])
        {
            return Ok(false);
        }
    }
    fs::create_dir_all(&layout.bin_dir).map_err(io_err(&layout.bin_dir))?;
    atomic::write_atomic(&dest, &data, 0o755, None, Expect::Anything)?;
    Ok(true)
}

/// Removes temporary files older than a minute that a killed run left in the directories install
/// writes to.
pub fn sweep_temps(layout: &Layout) {
    for d in [&layout.bin_dir, &layout.conf_dir, &layout.backup_dir] {
        let n = atomic::sweep_temps(d, std::time::Duration::from_secs(60));
        if n > 0 {
            eprintln!(
                "metaguard-install: removed {n} stale temporary file(s) from {}",
                d.display()
            );
        }
    }
}

/// Whether the plugin binary is in place and executable.
pub fn plugin_present(layout: &Layout) -> bool {
    fs::metadata(layout.plugin_path())
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Saves `bytes` (the original content of conf file `name`) as its backup, unless the backup
/// already holds exactly that.
fn save_backup(
    layout: &Layout,
    name: &OsString,
    bytes: &[u8],
    original: &Path,
) -> Result<(), InstallError> {
    let path = layout.backup_dir.join(name);
    if atomic::read_opt(&path)?.as_deref() == Some(bytes) {
        return Ok(());
    }
    fs::create_dir_all(&layout.backup_dir).map_err(io_err(&layout.backup_dir))?;
    let (mode, owner) = atomic::mode_and_owner(original)?;
    if let Some(w) = atomic::write_atomic(&path, bytes, mode, Some(owner), Expect::Anything)? {
        eprintln!("metaguard-install: warning: {w}");
    }
    Ok(())
}

fn write_like(
    path: &Path,
    data: &[u8],
    like: &Path,
    expect: Expect<'_>,
) -> Result<(), InstallError> {
    let (mode, owner) = atomic::mode_and_owner(like)?;
    if let Some(w) = atomic::write_atomic(path, data, mode, Some(owner), expect)? {
        eprintln!("metaguard-install: warning: {w}");
    }
    Ok(())
}

/// Makes sure the file containerd uses chains metaguard, configured as `entry`, last.
///
/// `settled(path, bytes)` is asked before any write with the content the edit is based on;
/// returning false defers the change (watch mode uses it to wait until the main CNI has finished
/// writing). One-shot install passes `|_, _| true`.
pub fn ensure_chain(
    layout: &Layout,
    entry: &Entry,
    settled: &mut dyn FnMut(&Path, &[u8]) -> bool,
) -> Result<ChainOutcome, InstallError> {
    let sel = confdir::selected(&layout.conf_dir)
        .map_err(io_err(&layout.conf_dir))?
        .ok_or_else(|| InstallError::NoConfig {
            dir: layout.conf_dir.clone(),
        })?;
    refuse_symlink(&sel.path)?;
    let (bytes, text) = read_text(&sel.path)?;
    match sel.kind {
        Kind::List => {
            let Some(new) = chain::add_to_list(&text, entry).map_err(chain_err(&sel.path))? else {
                return Ok(ChainOutcome::AlreadyInChain(sel.path));
            };
            if !settled(&sel.path, &bytes) {
                return Ok(ChainOutcome::Deferred(sel.path));
            }
            let had_metaguard = ListView::parse(&text)
                .map_err(chain_err(&sel.path))?
                .metaguard_count()
                > 0;
            if !had_metaguard {
                // The file as the main CNI wrote it: what uninstall gives back.
                save_backup(layout, &sel.name, &bytes, &sel.path)?;
            }
            write_like(&sel.path, new.as_bytes(), &sel.path, Expect::Bytes(&bytes))?;
            Ok(ChainOutcome::Added {
                file: sel.path,
                converted_from: None,
            })
        }
        Kind::Single => convert(layout, entry, &sel, &bytes, &text, settled),
    }
}

fn convert(
    layout: &Layout,
    entry: &Entry,
    sel: &ConfFile,
    bytes: &[u8],
    text: &str,
    settled: &mut dyn FnMut(&Path, &[u8]) -> bool,
) -> Result<ChainOutcome, InstallError> {
    let list_text = chain::convert_single(text, entry).map_err(chain_err(&sel.path))?;
    let list_path = layout.conf_dir.join(confdir::list_name_for(&sel.name));
    let existing = atomic::read_opt(&list_path)?;
    if let Some(cur) = &existing {
        // Only a list we generated earlier (from an older version of this file) may be replaced.
        let ours = std::str::from_utf8(cur)
            .ok()
            .and_then(|t| ListView::parse(t).ok())
            .is_some_and(|v| v.has_metaguard());
        if !ours {
            return Err(InstallError::Conflict {
                path: list_path,
                reason: format!(
                    "exists and is not metaguard's, so {} cannot become it; move one of them away",
                    sel.path.display()
                ),
            });
        }
    }
    if !settled(&sel.path, bytes) {
        return Ok(ChainOutcome::Deferred(sel.path.clone()));
    }
    save_backup(layout, &sel.name, bytes, &sel.path)?;
    let expect = match &existing {
        Some(cur) => Expect::Bytes(cur),
        None => Expect::Absent,
    };
    write_like(&list_path, list_text.as_bytes(), &sel.path, expect)?;
    // The .conf sorts before the .conflist of the same stem: until it is gone containerd keeps
    // using it, so the node is never without a loadable network.
    match atomic::remove_checked(&sel.path, Expect::Bytes(bytes)) {
        Ok(_) => {}
        // The main CNI rewrote its file meanwhile: the next pass converts the new content.
        Err(WriteError::Changed { .. }) => return Ok(ChainOutcome::Deferred(sel.path.clone())),
        Err(e) => return Err(e.into()),
    }
    Ok(ChainOutcome::Added {
        file: list_path,
        converted_from: Some(sel.path.clone()),
    })
}

/// What [`status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The file containerd uses, if any.
    pub selected: Option<PathBuf>,
    /// Its plugin types, in order (empty when unreadable).
    pub types: Vec<String>,
    /// metaguard is in that file's chain, after another plugin.
    pub in_chain: bool,
    pub plugin_present: bool,
    /// Why the file could not be read, if it could not.
    pub problem: Option<String>,
}

impl Status {
    /// Ready: the chain containerd uses has metaguard and its binary is there.
    pub fn ready(&self) -> bool {
        self.in_chain && self.plugin_present
    }
}

pub fn status(layout: &Layout) -> Result<Status, InstallError> {
    let plugin_present = plugin_present(layout);
    let Some(sel) = confdir::selected(&layout.conf_dir).map_err(io_err(&layout.conf_dir))? else {
        return Ok(Status {
            selected: None,
            types: vec![],
            in_chain: false,
            plugin_present,
            problem: None,
        });
    };
    let mut st = Status {
        selected: Some(sel.path.clone()),
        types: vec![],
        in_chain: false,
        plugin_present,
        problem: None,
    };
    let text = match read_text(&sel.path) {
        Ok((_, t)) => t,
        Err(e) => {
            st.problem = Some(e.to_string());
            return Ok(st);
        }
    };
    match sel.kind {
        Kind::List => match ListView::parse(&text) {
            Ok(v) => {
                st.types = v.types();
                st.in_chain = v.has_metaguard();
            }
            Err(e) => st.problem = Some(e.to_string()),
        },
        Kind::Single => match SingleView::parse(&text) {
            Ok(v) => st.types = vec![v.plugin_type],
            Err(e) => st.problem = Some(e.to_string()),
        },
    }
    Ok(st)
}

/// Takes metaguard out of the CNI configuration, restoring original files byte for byte where
/// they were not changed since install, and removes the plugin binary unless `keep_plugin`.
/// Returns notes for the operator (what was restored, what was only edited, and why).
pub fn uninstall(layout: &Layout, keep_plugin: bool) -> Result<Vec<String>, InstallError> {
    let mut notes = Vec::new();
    for (name, backup) in backups(layout)? {
        match confdir::kind_of(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str())) {
            Some(Kind::List) => restore_list(layout, &name, &backup, &mut notes)?,
            Some(Kind::Single) => restore_single(layout, &name, &backup, &mut notes)?,
            None => {}
        }
    }
    // Whatever still chains metaguard (a list edited since, or one without a backup) loses it.
    for f in confdir::config_files(&layout.conf_dir).map_err(io_err(&layout.conf_dir))? {
        if f.kind != Kind::List
            || fs::symlink_metadata(&f.path).is_ok_and(|m| m.file_type().is_symlink())
        {
            continue;
        }
        let Ok((bytes, text)) = read_text(&f.path) else {
            continue;
        };
        if ListView::parse(&text).is_ok_and(|v| v.metaguard_count() > 0) {
            let stripped = chain::strip_from_list(&text).map_err(chain_err(&f.path))?;
            write_like(&f.path, stripped.as_bytes(), &f.path, Expect::Bytes(&bytes))?;
            notes.push(format!(
                "{}: metaguard entry removed (no backup to restore)",
                f.path.display()
            ));
        }
    }
    // Only removes the directory when empty (a kept backup stays for the operator).
    let _ = fs::remove_dir(&layout.backup_dir);
    if !keep_plugin && atomic::remove_checked(&layout.plugin_path(), Expect::Anything)? {
        notes.push(format!("{}: removed", layout.plugin_path().display()));
    }
    Ok(notes)
}

fn backups(layout: &Layout) -> Result<Vec<(OsString, PathBuf)>, InstallError> {
    let rd = match fs::read_dir(&layout.backup_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&layout.backup_dir)(e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(io_err(&layout.backup_dir))?;
        if ent.file_type().map_err(io_err(&ent.path()))?.is_file()
            && confdir::kind_of(std::os::unix::ffi::OsStrExt::as_bytes(
                ent.file_name().as_os_str(),
            ))
            .is_some()
        {
            out.push((ent.file_name(), ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn parse_value(text: &str) -> Option<serde_json::Value> {
    serde_json::from_str(text).ok()
}

fn restore_list(
    layout: &Layout,
    name: &OsString,
    backup: &Path,
    notes: &mut Vec<String>,
) -> Result<(), InstallError> {
    let target = layout.conf_dir.join(name);
    let (bbytes, btext) = read_text(backup)?;
    let Some(cur) = atomic::read_opt(&target)? else {
        notes.push(format!(
            "{}: gone since install; backup dropped, nothing restored",
            target.display()
        ));
        return drop_backup(backup);
    };
    let Ok(text) = String::from_utf8(cur.clone()) else {
        notes.push(format!(
            "{}: not text any more; left alone, backup kept at {}",
            target.display(),
            backup.display()
        ));
        return Ok(());
    };
    let Ok(view) = ListView::parse(&text) else {
        notes.push(format!(
            "{}: not a usable list any more; left alone, backup kept at {}",
            target.display(),
            backup.display()
        ));
        return Ok(());
    };
    if view.metaguard_count() == 0 {
        notes.push(format!(
            "{}: has no metaguard entry (rewritten since install); left alone",
            target.display()
        ));
        return drop_backup(backup);
    }
    let stripped = chain::strip_from_list(&text).map_err(chain_err(&target))?;
    if parse_value(&stripped).is_some() && parse_value(&stripped) == parse_value(&btext) {
        write_like(&target, &bbytes, backup, Expect::Bytes(&cur))?;
        notes.push(format!("{}: original restored", target.display()));
    } else {
        write_like(&target, stripped.as_bytes(), &target, Expect::Bytes(&cur))?;
        notes.push(format!(
            "{}: changed since install, so only the metaguard entry was removed (original was not restored)",
            target.display()
        ));
    }
    drop_backup(backup)
}

fn restore_single(
    layout: &Layout,
    name: &OsString,
    backup: &Path,
    notes: &mut Vec<String>,
) -> Result<(), InstallError> {
    let original = layout.conf_dir.join(name);
    let generated = layout.conf_dir.join(confdir::list_name_for(name));
    let (bbytes, btext) = read_text(backup)?;
    let Ok(single) = SingleView::parse(&btext) else {
        notes.push(format!(
            "{}: backup unreadable; nothing restored from it",
            backup.display()
        ));
        return Ok(());
    };
    let gen = atomic::read_opt(&generated)?;
    let gen_text = gen.as_ref().and_then(|g| String::from_utf8(g.clone()).ok());
    let gen_has_mg = gen_text
        .as_deref()
        .and_then(|t| ListView::parse(t).ok())
        .is_some_and(|v| v.has_metaguard());
    let gen_unchanged = gen_has_mg
        && gen_text
            .as_deref()
            .and_then(|t| chain::strip_from_list(t).ok())
            .and_then(|s| parse_value(&s))
            == Some(single.as_list_value());
    if gen.is_some() && !gen_unchanged {
        // Someone changed the list we generated: keep their list, just without metaguard.
        if let (Some(g), Some(t), true) = (&gen, &gen_text, gen_has_mg) {
            let stripped = chain::strip_from_list(t).map_err(chain_err(&generated))?;
            write_like(
                &generated,
                stripped.as_bytes(),
                &generated,
                Expect::Bytes(g),
            )?;
        }
        notes.push(format!(
            "{}: changed since install; metaguard entry removed, {} not restored (backup kept at {})",
            generated.display(),
            original.display(),
            backup.display()
        ));
        return Ok(());
    }
    if atomic::read_opt(&original)?.is_none() {
        write_like(&original, &bbytes, backup, Expect::Absent)?;
        notes.push(format!("{}: original restored", original.display()));
    } else {
        notes.push(format!(
            "{}: rewritten since install; kept as it is now",
            original.display()
        ));
    }
    if let Some(g) = &gen {
        atomic::remove_checked(&generated, Expect::Bytes(g))?;
        notes.push(format!(
            "{}: removed (it was generated by install)",
            generated.display()
        ));
    }
    drop_backup(backup)
}

fn drop_backup(backup: &Path) -> Result<(), InstallError> {
    atomic::remove_checked(backup, Expect::Anything)?;
    Ok(())
}
