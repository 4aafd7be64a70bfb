//! Network namespaces: open one by path, check it really is one, and run code inside it.
//!
//! The plugin is single-threaded, so switching the calling thread into the pod's namespace and back
//! is safe. Sockets keep the namespace they were created in, so a netlink socket opened inside
//! [`Netns::run`] keeps talking to the pod's namespace after we switch back.

use nix::sched::{setns, CloneFlags};
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `NSFS_MAGIC` from linux/magic.h: the file system type of /proc/*/ns/* and bind-mounted
/// namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `PROC_SUPER_MAGIC`: /proc/<pid>/ns/net itself is on procfs before it is resolved.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// The file systems a namespace file is on: nsfs, or procfs for `/proc/<pid>/ns/net` looked at
/// before the link is resolved.
fn is_ns_fs(magic: i64) -> bool {
    magic == NSFS_MAGIC || magic == PROC_SUPER_MAGIC
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("netns {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("netns {path}: not a network namespace")]
    NotNetns { path: PathBuf },
    #[error("entering netns {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("returning to the host netns: {0}")]
    Return(nix::Error),
}

impl NetnsError {
    /// True when the namespace path does not exist (DEL treats that as "already gone").
    pub fn is_not_found(&self) -> bool {
        matches!(self, NetnsError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens `path` and checks that it is a network namespace file.
    ///
    /// Paths also come from pod records (DEL, GC, and ADD asking whether the pod holding an
    /// address still exists), so a path that is not a namespace file is never opened: its file
    /// system is looked at first (`statfs`, which opens nothing), and a device, a FIFO or a
    /// regular file is refused before an `open` could block on it or wake a driver. The open
    /// itself is non-blocking too.
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let open_err = |source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        };
        let not_netns = || NetnsError::NotNetns {
            path: path.to_path_buf(),
        };
        let st = nix::sys::statfs::statfs(path).map_err(|e| open_err(std::io::Error::from(e)))?;
        if !is_ns_fs(st.filesystem_type().0 as i64) {
            return Err(not_netns());
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .map_err(open_err)?;
        let st = nix::sys::statfs::fstatfs(&file).map_err(|e| open_err(std::io::Error::from(e)))?;
        if !is_ns_fs(st.filesystem_type().0 as i64) {
            return Err(not_netns());
        }
        // A namespace file of another kind (mnt, pid, ...) is also on nsfs: setns with
        // CLONE_NEWNET would refuse it later, but we want the clear error now. The ioctl
        // NS_GET_NSTYPE answers which kind it is.
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
        // SAFETY: ioctl on a file descriptor we own, with no argument.
        let kind =
            unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(not_netns());
        }
        Ok(Netns {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Netns, NetnsError> {
        Netns::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the calling thread inside this namespace, then switches back.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let home = Netns::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: self.path.clone(),
            source,
        })?;
        let out = f();
        setns(home.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(NetnsError::Return)?;
        Ok(out)
    }
}
