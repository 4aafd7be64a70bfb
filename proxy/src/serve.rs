//! Accepting pod connections and serving HTTP/1 on them.

use crate::app::App;
use crate::config::LimitsConfig;
use crate::handler::{self, ConnCtx};
use crate::limits::{refusal_response, ConnLimits, ConnPermit, REFUSAL_LINGER};
use crate::metrics::ConnRefusal;
use crate::records::normalize;
use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// hyper's default number of headers; asking for another count makes hyper allocate the header
/// array per request, so the builder is only told when the configuration differs.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The HTTP/1 server settings shared by every pod connection.
pub fn http1_builder(l: &LimitsConfig) -> http1::Builder {
    let mut b = http1::Builder::new();
    // Without a timer hyper's header-read timeout does nothing, and slowloris wins.
    b.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(l.header_read_timeout_ms))
        .keep_alive(l.keep_alive)
        .max_buf_size(l.max_buf_size)
        .max_header_size(l.max_header_bytes)
        .half_close(false)
        // Answers are small (a denial is ~200 bytes): copying the body behind the head and
        // sending one plain write is cheaper than a writev of separate buffers.
        .writev(false);
    if l.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        b.max_headers(l.max_headers);
    }
    b
}

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

    fn dispatch(&self, mut a: Accepted) {
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
        a.ctx.worker = best;
        if tx.send(a).is_err() {
            // The worker is gone (only during shutdown): the connection was closed with it.
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One worker's end: run it with [`run_worker`] on the worker's own runtime.
pub struct WorkerQueue {
    pub index: usize,
    rx: mpsc::UnboundedReceiver<Accepted>,
    open: Arc<AtomicUsize>,
}

/// Serves the connections handed to this worker until the queue closes. Connections already
/// running keep going (and drain on `shutdown`) for as long as the worker's runtime runs.
pub async fn run_worker(
    mut q: WorkerQueue,
    app: Arc<App>,
    builder: Arc<http1::Builder>,
    shutdown: watch::Receiver<bool>,
) {
    // Every pod connection watches for shutdown, and polls that watch each time it is woken,
    // which locks the channel's waiter list. A channel of this worker's own, fed from the
    // global one, keeps that lock on one thread instead of bouncing it between CPUs.
    let (local_tx, local_rx) = watch::channel(*shutdown.borrow());
    let mut global = shutdown;
    tokio::spawn(async move {
        stopped(&mut global).await;
        // Receivers keep seeing `true` after this sender is gone.
        let _ = local_tx.send(true);
    });
    let shutdown = local_rx;
    while let Some(a) = q.rx.recv().await {
        let stream = match tokio::net::TcpStream::from_std(a.stream) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("worker {}: cannot register a connection: {e}", q.index);
                q.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        };
        let app = app.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let open = q.open.clone();
        let (ctx, permit) = (a.ctx, a.permit);
        tokio::spawn(async move {
            app.metrics.connection_opened();
            serve_connection(stream, ctx, app.clone(), &builder, shutdown).await;
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
        let ctx = ConnCtx {
            peer,
            endpoint,
            worker: 0,
        };
        dispatcher.dispatch(Accepted {
            stream,
            ctx,
            permit,
        });
    }
}

/// Writes the refusal, half-closes and reads what the client sent until it closes (bounded by
/// [`REFUSAL_LINGER`]): closing with unread data would send a reset that can destroy the answer
/// before the client reads it.
async fn answer_refusal(mut stream: tokio::net::TcpStream, why: ConnRefusal) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(refusal_response(why)).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 1024];
        while stream.read(&mut buf).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    ctx: ConnCtx,
    app: Arc<App>,
    builder: &http1::Builder,
    mut shutdown: watch::Receiver<bool>,
) {
    let svc_app = app.clone();
    let svc = service_fn(move |req| handler::handle(svc_app.clone(), ctx, req));
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        // wait_for also sees a shutdown that happened before this connection started.
        _ = stopped(&mut shutdown) => {
            // Finish the request in flight (if any), then close; idle connections close now.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        note_connection_error(&app, ctx, &e);
    }
}

fn note_connection_error(app: &App, ctx: ConnCtx, e: &hyper::Error) {
    if e.is_timeout() {
        app.metrics.header_timeout();
        log::debug!("{}: closed: request head not received in time", ctx.peer);
    } else if e.is_parse_too_large() {
        handler::record_unparsed(
            app,
            ctx,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        );
    } else if e.is_parse() {
        handler::record_unparsed(
            app,
            ctx,
            StatusCode::BAD_REQUEST,
            &format!("unparsable request: {e}"),
        );
    } else {
        log::debug!("{}: connection error: {e}", ctx.peer);
    }
}
