//! Network namespaces: open one by path, check it really is one, and run code inside it.
//!
//! The plugin is single-threaded, so switching the calling thread into the pod's namespace and back
//! is safe. Sockets keep the namespace they were created in, so a netlink socket opened inside
//! [`Netns::run`] keeps talking to the pod's namespace after we switch back.

use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// `NSFS_MAGIC` from linux/magic.h: the file system type of /proc/*/ns/* and bind-mounted
/// namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `PROC_SUPER_MAGIC`: /proc/<pid>/ns/net itself is on procfs before it is resolved.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

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
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let st = nix::sys::statfs::fstatfs(&file).map_err(|e| NetnsError::Open {
            path: path.to_path_buf(),
            source: std::io::Error::from(e),
        })?;
        let magic = st.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NetnsError::NotNetns {
                path: path.to_path_buf(),
            });
        }
        // A namespace file of another kind (mnt, pid, ...) is also on nsfs: setns with
        // CLONE_NEWNET would refuse it later, but we want the clear error now. The ioctl
        // NS_GET_NSTYPE answers which kind it is.
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
        // SAFETY: ioctl on a file descriptor we own, with no argument.
        let kind =
            unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns {
                path: path.to_path_buf(),
            });
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
