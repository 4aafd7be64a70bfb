//! Waiting for SIGTERM/SIGINT with a timeout, without a signal handler.
//!
//! The signals are blocked in the calling thread before any other thread exists (threads and
//! children inherit the mask; Rust's `Command` clears it again in the child before exec), so they
//! stay pending until `sigtimedwait` takes them. The watch loop's pause between two passes is that
//! wait: it ends early when a signal arrives.

use std::io;
use std::time::Duration;

pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks `sigs` in the calling thread.
    pub fn block(sigs: &[libc::c_int]) -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use, and
        // every pointer handed to libc points at a live local or field.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            if libc::sigemptyset(&mut set) != 0 {
                return Err(io::Error::last_os_error());
            }
            for &s in sigs {
                if libc::sigaddset(&mut set, s) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Signals { set })
        }
    }

    /// Waits up to `timeout` for one of the signals; returns it, or `None` on timeout.
    pub fn wait(&self, timeout: Duration) -> Option<libc::c_int> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        loop {
            // SAFETY: `self.set` was initialised by `block`; `ts` lives across the call; a null
            // siginfo pointer is allowed.
            let rc = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
            if rc > 0 {
                return Some(rc);
            }
            // EINTR (another signal, e.g. SIGCHLD with a handler) just means "look again";
            // EAGAIN is the timeout.
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn times_out_then_takes_a_pending_signal() {
        // SIGUSR2 so the test harness' own signals are untouched; blocked only in this thread.
        let s = Signals::block(&[libc::SIGUSR2]).unwrap();
        let t = Instant::now();
        assert_eq!(s.wait(Duration::from_millis(50)), None);
        assert!(t.elapsed() >= Duration::from_millis(40));
        // SAFETY: sends a blocked signal to this very thread; it stays pending.
        unsafe {
            libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2);
        }
        assert_eq!(s.wait(Duration::from_secs(5)), Some(libc::SIGUSR2));
    }
}
