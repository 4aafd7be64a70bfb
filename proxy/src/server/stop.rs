//! Shutdown as the connection tasks of one worker thread see it.
//!
//! Every idle connection waits for "shutdown" next to its socket, and that wait is set up again
//! each time the connection goes back to reading. On a `tokio::sync::watch` channel that is a
//! locked waiter-list insert and removal per request; here it is a look at a thread-local flag and,
//! when the task's waker changed, a store. It works because a worker is a single-threaded runtime:
//! its connection tasks, and the task that calls [`signal`], all run on the worker's own thread.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct State {
    stopped: bool,
    /// One slot per registered connection; `None` while that connection is not waiting.
    waiters: Vec<Option<Waker>>,
    /// Slots given back by closed connections.
    free: Vec<usize>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Tells every connection of this thread that shutdown has begun, and wakes the waiting ones.
pub fn signal() {
    let wakers: Vec<Waker> = STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.stopped = true;
        s.waiters.iter_mut().filter_map(Option::take).collect()
    });
    // Woken outside the borrow: a waker may run code that looks at the state.
    for w in wakers {
        w.wake();
    }
}

/// One connection's view of shutdown on this thread. Create and use it on the thread of the
/// runtime the connection runs on (the worker's).
pub struct Stop {
    slot: usize,
    /// The thread whose registry holds `slot` (checked in debug builds: polled elsewhere, the slot
    /// would name another connection's waker).
    thread: std::thread::ThreadId,
}

impl Stop {
    pub fn new() -> Stop {
        let slot = STATE.with(|s| {
            let mut s = s.borrow_mut();
            match s.free.pop() {
                Some(i) => i,
                None => {
                    s.waiters.push(None);
                    s.waiters.len() - 1
                }
            }
        });
        Stop {
            slot,
            thread: std::thread::current().id(),
        }
    }

    /// Whether shutdown has begun.
    pub fn stopped(&self) -> bool {
        STATE.with(|s| s.borrow().stopped)
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        debug_assert_eq!(
            self.thread,
            std::thread::current().id(),
            "a connection's shutdown watch moved threads"
        );
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            if s.stopped {
                return Poll::Ready(());
            }
            if let Some(w) = s.waiters.get_mut(self.slot) {
                match w {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
            }
            Poll::Pending
        })
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub async fn wait(&self) {
        poll_fn(|cx| self.poll(cx)).await
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        // `try_with`: a connection dropped while the thread exits finds its state gone.
        let _ = STATE.try_with(|s| {
            let mut s = s.borrow_mut();
            if let Some(w) = s.waiters.get_mut(self.slot) {
                *w = None;
                s.free.push(self.slot);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn signal_wakes_waiters_and_later_connections_see_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = Arc::new(Stop::new());
            let b = Stop::new();
            assert!(!a.stopped());
            // A slot given back is reused.
            let slot = b.slot;
            drop(b);
            let c = Stop::new();
            assert_eq!(c.slot, slot);
            let waiting = {
                let a = a.clone();
                tokio::spawn(async move { a.wait().await })
            };
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            signal();
            waiting.await.unwrap();
            assert!(a.stopped() && c.stopped());
            // A connection that starts after the signal is stopped from the start.
            Stop::new().wait().await;
        });
    }
}
