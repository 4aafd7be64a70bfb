//! The pod-facing HTTP/1.1 server's connection loop: one task per pod connection, reading heads
//! (`http1::request`), handing each to the pipeline, writing its answer (`http1::answer`).
//!
//! This used to be hyper's server. A metadata request is only a head (bodies are refused), and
//! the proxy answers every request with one small message, so the loop here is short: parse the
//! buffered head with httparse, run the pipeline, write the answer with one `write`, go on with the
//! next head (pipelined ones included). Compared with hyper's dispatcher this allocates no read
//! buffer, timer or body per request; the allowed path's CPU per request was the reason (see
//! docs/benchmarks.md). hyper still serves the admin listener.
//!
//! What it guarantees:
//! - a head must arrive within `limits.header_read_timeout_ms`, counted from when the connection
//!   starts waiting for it (so an idle kept-alive connection is closed after that long too); past
//!   it the connection is closed without an answer;
//! - a head over `limits.max_header_bytes` or `limits.max_headers` gets 431, anything else
//!   httparse or the `http` types refuse (an HTTP version other than 1.0/1.1 included) gets 400;
//!   each is logged and the connection is closed;
//! - a request the pipeline refuses as invalid (its target, framing or headers) is answered and
//!   the connection closed, so nothing the pod sent after it is ever read as a request;
//! - a closing connection is half-closed and drained briefly before the socket is dropped, so
//!   unread input cannot turn into a reset that destroys the answer;
//! - on shutdown, idle connections close at once and a request being read or handled is finished
//!   (and answered with `connection: close`).

use crate::app::App;
use crate::config::LimitsConfig;
use crate::http1::io::{linger_close, write_answer};
use crate::http1::{encode, parse, persistence, HeadLimits, Persist};
use crate::pipeline::worker::Worker;
use crate::pipeline::{self, ConnCtx, Request, RequestHead};
use bytes::BufMut;
use http::{HeaderMap, Method};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a connection task needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    pub head: HeadLimits,
    pub header_read_timeout: Duration,
    /// Bytes buffered from the pod at most (pipelined heads included).
    pub max_buf_size: usize,
    pub keep_alive: bool,
}

impl ConnSettings {
    pub fn from_config(l: &LimitsConfig) -> ConnSettings {
        ConnSettings {
            head: HeadLimits::from_config(l),
            header_read_timeout: Duration::from_millis(l.header_read_timeout_ms),
            max_buf_size: l.max_buf_size.max(l.max_header_bytes),
            keep_alive: l.keep_alive,
        }
    }
}

/// First allocation of a connection's read buffer: a metadata request head is a few hundred bytes.
const INITIAL_BUF: usize = 2048;

/// Serves one pod connection until it closes, fails, times out or shutdown asks it to stop.
/// Runs on `worker`'s single-threaded runtime (see [`super::stop`]).
pub async fn serve_connection(
    mut stream: TcpStream,
    ctx: ConnCtx,
    app: &App,
    worker: &Worker,
    lim: &ConnSettings,
) {
    let shutdown = super::stop::Stop::new();
    let mut buf: Vec<u8> = Vec::with_capacity(INITIAL_BUF);
    let mut out: Vec<u8> = Vec::with_capacity(INITIAL_BUF);
    // One header map for all the connection's requests: cleared, not rebuilt, per request.
    let mut headers = HeaderMap::new();
    // One timer for the connection's life: re-arming a registered tokio timer to a later
    // deadline is a store, where a new timer per request is a registration and a removal.
    let deadline = tokio::time::sleep(lim.header_read_timeout);
    tokio::pin!(deadline);
    // `buf[..start]` holds requests already answered: pipelined heads are parsed where they are,
    // and the buffer is compacted only before it is read into again (moving the rest after every
    // request would make a long pipeline quadratic).
    let mut start = 0usize;
    loop {
        deadline
            .as_mut()
            .reset(Instant::now() + lim.header_read_timeout);
        // Read until the buffer starts with a whole head (it may already: pipelining).
        let parsed = loop {
            match parse(buf.get(start..).unwrap_or(&[]), lim.head, &mut headers) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => {
                    let req = Request::Unparsable(&e);
                    let reply =
                        pipeline::handle(app, worker, ctx, req, deadline.as_mut(), &mut out).await;
                    out.clear();
                    encode(&reply.answer, false, Persist::Close, &mut out);
                    let _ = write_answer(&mut stream, &out, lim.header_read_timeout).await;
                    linger_close(stream).await;
                    return;
                }
            }
            if start > 0 {
                buf.drain(..start);
                start = 0;
            }
            let room = lim.max_buf_size.saturating_sub(buf.len());
            let mut limited = (&mut buf).limit(room);
            let idle = limited.get_ref().is_empty();
            let read = tokio::select! {
                biased;
                // Idle (nothing of the next request yet): shutdown closes the connection now.
                _ = shutdown.wait(), if idle => return,
                _ = &mut deadline => {
                    app.metrics.header_timeout();
                    log::debug!("{}: closed: request head not received in time", ctx.peer);
                    return;
                }
                r = stream.read_buf(&mut limited) => r,
            };
            match read {
                // The pod closed (or reset) its end; a partial head is dropped with it.
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let Some(target) = buf
            .get(start + parsed.target.start..start + parsed.target.end)
            .and_then(|t| std::str::from_utf8(t).ok())
        else {
            // `parse` checked both; never taken.
            return;
        };
        let (version, head_request) = (parsed.version, parsed.method == Method::HEAD);
        let req = Request::Head(RequestHead {
            method: parsed.method,
            target,
            version,
            headers: &headers,
        });
        // `out` is free until the answer is encoded: it carries the upstream request meanwhile.
        let reply = pipeline::handle(app, worker, ctx, req, deadline.as_mut(), &mut out).await;
        let persist = if reply.close || !lim.keep_alive || shutdown.stopped() {
            Persist::Close
        } else {
            persistence(version, &headers)
        };
        out.clear();
        encode(&reply.answer, head_request, persist, &mut out);
        start += parsed.len;
        // Blank lines between requests are allowed (RFC 9112 2.2); skipping them here lets a
        // connection whose buffer holds nothing else count as idle at shutdown.
        while matches!(buf.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        if start >= buf.len() {
            buf.clear();
            start = 0;
        }
        if let Some(hops) = reply.hop_limit {
            set_hop_limit(&stream, hops);
        }
        if write_answer(&mut stream, &out, lim.header_read_timeout)
            .await
            .is_err()
        {
            return;
        }
        if persist == Persist::Close {
            linger_close(stream).await;
            return;
        }
        if out.capacity() > 64 * 1024 {
            // A large relayed body: do not keep its buffer for the rest of the connection.
            out = Vec::with_capacity(INITIAL_BUF);
        }
        if headers.capacity() > 64 {
            // Nor the room of one request with very many headers.
            headers = HeaderMap::new();
        }
    }
}

/// Sends the rest of the connection with IP TTL / IPv6 hop limit `hops` (`token_hop_limit`: an
/// IMDSv2 token answer must not travel past the pod). It stays for the rest of the connection:
/// resetting it after the write would let a retransmission of the token go out with the old
/// value. Both options are set, so an IPv4 peer on a dual-stack socket is covered too; a failure
/// is logged and the answer still goes out (the token is bound to the pod's address anyway).
fn set_hop_limit(stream: &TcpStream, hops: u8) {
    let sock = socket2::SockRef::from(stream);
    let v4 = sock.set_ttl(u32::from(hops));
    let v6 = sock.set_unicast_hops_v6(u32::from(hops));
    if v4.is_err() && v6.is_err() {
        log::warn!("cannot set the hop limit of a token answer: {v4:?} {v6:?}");
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
