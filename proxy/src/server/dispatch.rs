//! Accepting pod connections and handing them to the worker threads, which serve HTTP/1 on them
//! ([`super::conn`]).

use super::conn::{self, ConnSettings};
use super::limits::{refusal_response, ConnLimits, ConnPermit, REFUSAL_LINGER};
use super::stop;
use crate::app::App;
use crate::http1::io::{linger_close, write_answer};
use crate::outcome::ConnRefusal;
use crate::pipeline::worker::Worker;
use crate::pipeline::ConnCtx;
use crate::records::normalize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Resolves once shutdown has been requested (including before the call), or the sender is gone.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await (it is not Send).
    let _ = rx.wait_for(|stop| *stop).await;
}

/// One accepted pod connection on its way to a worker.
pub struct Accepted {
    stream: std::net::TcpStream,
    ctx: ConnCtx,
    permit: ConnPermit,
}

/// Hands accepted connections to the workers, each a thread with its own single-threaded
/// runtime and its own upstream pool. A connection lives on one thread from accept to close, and
/// so does every upstream exchange it makes: no request ever crosses threads, so nothing wakes
/// another thread per request (the multi-threaded scheduler's futex traffic was the largest cost
/// after the kernel's own TCP work). New connections go to the worker with the fewest open.
pub struct Dispatcher {
    workers: Vec<(mpsc::UnboundedSender<Accepted>, Arc<AtomicUsize>)>,
}

impl Dispatcher {
    /// A dispatcher for `n` workers and the receiving end of each worker's queue.
    pub fn new(n: usize) -> (Arc<Dispatcher>, Vec<WorkerQueue>) {
        let mut workers = Vec::new();
        let mut queues = Vec::new();
        for index in 0..n.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let open = Arc::new(AtomicUsize::new(0));
            workers.push((tx, open.clone()));
            queues.push(WorkerQueue { index, rx, open });
        }
        (Arc::new(Dispatcher { workers }), queues)
    }

    fn dispatch(&self, a: Accepted) {
        let mut best = 0;
        let mut best_open = usize::MAX;
        for (i, (_, open)) in self.workers.iter().enumerate() {
            let n = open.load(Ordering::Relaxed);
            if n < best_open {
                (best, best_open) = (i, n);
            }
        }
        // `Dispatcher::new` makes at least one worker; without one the connection is closed.
        let Some((tx, open)) = self.workers.get(best) else {
            return;
        };
        open.fetch_add(1, Ordering::Relaxed);
        if tx.send(a).is_err() {
            // The worker is gone (only during shutdown): the connection was closed with it.
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One worker's end of the dispatcher: run it with [`run_worker`] on the worker's own runtime.
pub struct WorkerQueue {
    pub index: usize,
    rx: mpsc::UnboundedReceiver<Accepted>,
    open: Arc<AtomicUsize>,
}

/// Serves the connections handed to this worker until the queue closes, lending each one the
/// worker's state. Connections already running keep going (and drain on `shutdown`) for as long
/// as the worker's runtime runs.
pub async fn run_worker(
    mut q: WorkerQueue,
    app: Arc<App>,
    worker: Arc<Worker>,
    limits: ConnSettings,
    shutdown: watch::Receiver<bool>,
) {
    // The connections of this worker see shutdown through a thread-local flag (`stop`), set
    // here, on the worker's thread, when the daemon's shutdown channel says so.
    let mut global = shutdown;
    tokio::spawn(async move {
        stopped(&mut global).await;
        stop::signal();
    });
    while let Some(a) = q.rx.recv().await {
        let stream = match tokio::net::TcpStream::from_std(a.stream) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("worker {}: cannot register a connection: {e}", q.index);
                q.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        };
        let (app, worker) = (app.clone(), worker.clone());
        let open = q.open.clone();
        let (ctx, permit) = (a.ctx, a.permit);
        tokio::spawn(async move {
            app.metrics.connection_opened();
            conn::serve_connection(stream, ctx, &app, &worker, &limits).await;
            // Release the connection caps before the gauge says the connection is gone, so
            // "connections_open == 0" means a new connection from the same pod is accepted.
            drop(permit);
            open.fetch_sub(1, Ordering::Relaxed);
            app.metrics.connection_closed();
        });
    }
}

/// Accepts until `shutdown` turns true (or its sender goes away), then drops the listener so new
/// connections are refused by the kernel.
pub async fn accept_loop(
    listener: TcpListener,
    endpoint: usize,
    app: Arc<App>,
    limits: Arc<ConnLimits>,
    dispatcher: Arc<Dispatcher>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off briefly instead of spinning on the error.
                log::warn!("accept on {:?}: {e}", listener.local_addr().ok());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = normalize(peer.ip());
        let permit = match limits.try_acquire(peer) {
            Ok(p) => p,
            Err(why) => {
                app.metrics.connection_refused(why);
                log::debug!(
                    "refused connection from {peer}: {} cap reached",
                    why.as_str()
                );
                if let Some(slot) = limits.refusal_slot() {
                    tokio::spawn(async move {
                        answer_refusal(stream, why).await;
                        drop(slot);
                    });
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accepted connection from {peer}: {e}");
                continue;
            }
        };
        let ctx = ConnCtx { peer, endpoint };
        dispatcher.dispatch(Accepted {
            stream,
            ctx,
            permit,
        });
    }
}

/// Writes the refusal (the socket buffer takes it at once; a client that does not read gets
/// [`REFUSAL_LINGER`]), then closes the way every pod connection does (`linger_close`):
/// closing with unread data would send a reset that can destroy the answer before it is read.
async fn answer_refusal(mut stream: tokio::net::TcpStream, why: ConnRefusal) {
    if write_answer(&mut stream, refusal_response(why), REFUSAL_LINGER)
        .await
        .is_ok()
    {
        linger_close(stream).await;
    }
}
