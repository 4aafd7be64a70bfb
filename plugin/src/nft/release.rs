//! Closing an nf_tables socket without waiting for an RCU grace period.
//!
//! After a commit that deleted something (a table, a chain, rules, also a flush), nf_tables frees
//! the deleted objects from a work item that first waits for an RCU grace period (commits that
//! only create leave nothing for it). When an NETLINK_NETFILTER socket is released, the kernel's
//! NETLINK_URELEASE handler (`nft_rcv_nl_event`) flushes that work item, so the final `close` (or
//! the process exit) blocks for the whole grace period: 10-50 ms on this machine, far more than
//! the batch itself (well under 1 ms). The CNI runtime waits for our process to exit, so that wait
//! would be most of DEL's wall time (and of a repeated ADD's).
//!
//! Worse, that handler holds the namespace's nf_tables commit mutex while it waits, so the next
//! batch in the same namespace (the next pod's host guard, in the host namespace) blocks on it.
//!
//! The way around it: hand a duplicate of the descriptor to a short-lived grandchild process
//! (double fork, so nobody has to reap it), close our copy, which is then not the last one and
//! returns at once, and let the grandchild hold the last reference. The grandchild first waits
//! out a grace period itself (`membarrier(MEMBARRIER_CMD_GLOBAL)` is `synchronize_rcu()`), which
//! holds no lock; by then the cleanup work queued at commit is done, so its final close neither
//! waits nor keeps the commit mutex. It closes every other descriptor first thing (it must never
//! keep the runtime's stdout pipe open) and exits once we have closed our end of a pipe.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns background release on (the default) or off.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Closes `fd`, leaving the last reference (and its wait) to a grandchild process when enabled
/// and possible; otherwise closes it here. Never fails: the descriptor is always closed.
pub fn close_without_waiting(fd: RawFd) {
    let release = if ENABLED.load(Ordering::Relaxed) {
        hand_to_grandchild(fd)
    } else {
        None
    };
    // SAFETY: `fd` is owned by the caller, which gives it up here.
    unsafe { libc::close(fd) };
    if let Some(w) = release {
        // Our copy is closed, so the grandchild's is the last one: let it go.
        // SAFETY: `w` is the pipe end we created and still own.
        unsafe { libc::close(w) };
    }
}

/// Forks a grandchild holding `fd` until the returned pipe end is closed. `None` when that was
/// not possible (the caller then closes normally).
fn hand_to_grandchild(fd: RawFd) -> Option<RawFd> {
    let mut p = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    let (r, w) = (p[0], p[1]);
    // SAFETY: fork; the child only makes async-signal-safe calls (fork, close, close_range,
    // read, _exit), as required in a possibly multi-threaded process.
    let child = unsafe { libc::fork() };
    match child {
        -1 => {
            // SAFETY: closing descriptors we own.
            unsafe {
                libc::close(r);
                libc::close(w);
            }
            None
        }
        0 => {
            // SAFETY: async-signal-safe calls only; never returns.
            unsafe { grandchild(fd, r) }
        }
        pid => {
            // SAFETY: closing our read end; reaping the intermediate child, which exits at once.
            unsafe {
                libc::close(r);
                while libc::waitpid(pid, std::ptr::null_mut(), 0) == -1
                    && *libc::__errno_location() == libc::EINTR
                {}
            }
            Some(w)
        }
    }
}

/// Runs in the intermediate child: forks the grandchild and exits.
unsafe fn grandchild(fd: RawFd, r: RawFd) -> ! {
    if libc::fork() != 0 {
        // The intermediate child (or a failed fork: then the descriptor is simply released
        // by the parent's close, with the wait).
        libc::_exit(0);
    }
    close_all_but(fd, r);
    // Wait for a grace period without holding anything (MEMBARRIER_CMD_GLOBAL = 1). If the call
    // is unavailable, the close at exit simply waits, as it would have in the parent.
    libc::syscall(
        libc::SYS_membarrier,
        1 as libc::c_int,
        0 as libc::c_uint,
        0 as libc::c_int,
    );
    let mut byte = 0u8;
    while libc::read(r, (&mut byte as *mut u8).cast(), 1) == -1
        && *libc::__errno_location() == libc::EINTR
    {}
    libc::_exit(0)
}

/// Closes every descriptor except `a` and `b` (async-signal-safe).
unsafe fn close_all_but(a: RawFd, b: RawFd) {
    let (lo, hi) = (a.min(b) as libc::c_uint, a.max(b) as libc::c_uint);
    let mut ranges = [(0, 0); 3];
    let mut n = 0;
    if lo > 0 {
        ranges[n] = (0, lo - 1);
        n += 1;
    }
    if hi > lo + 1 {
        ranges[n] = (lo + 1, hi - 1);
        n += 1;
    }
    ranges[n] = (hi + 1, libc::c_uint::MAX);
    n += 1;
    for &(first, last) in &ranges[..n] {
        if libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) != 0 {
            // Kernels before 5.9: close the usual range one by one.
            for i in first..=last.min(1023) {
                libc::close(i as libc::c_int);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::{IntoRawFd, OwnedFd};

    fn pipe() -> (File, OwnedFd) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (File::from(r), w)
    }

    /// True when reading `f` would not block (data or EOF).
    fn ready(f: &File) -> bool {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) > 0 }
    }

    #[test]
    fn the_grandchild_keeps_only_the_handed_descriptor() {
        // `held` stands for the netlink socket: its read end sees EOF when the grandchild,
        // the last holder, exits. `other` stands for the runtime's stdout pipe: its read end must
        // see EOF as soon as we close our copy, i.e. the grandchild must not hold it.
        for _ in 0..5 {
            let (mut held_r, held_w) = pipe();
            let (mut other_r, other_w) = pipe();
            set_enabled(true);
            close_without_waiting(held_w.into_raw_fd());
            drop(other_w);
            let mut buf = Vec::new();
            other_r.read_to_end(&mut buf).unwrap();
            if ready(&held_r) {
                // The grandchild was already gone: inconclusive (a heavily loaded machine); retry.
                continue;
            }
            // The grandchild still holds `held`, and did not hold `other`. It exits on its own.
            held_r.read_to_end(&mut buf).unwrap();
            return;
        }
        panic!("could not observe the grandchild alive after closing the other pipe");
    }
}
