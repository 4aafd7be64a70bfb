//! The pod-facing HTTP/1.1 server: one connection task per pod connection.
//!
//! This used to be hyper's server. A metadata request is only a head (bodies are refused), and
//! the proxy answers every request with one small message, so the loop here is short: parse the
//! buffered head with httparse, run the handler, write the answer with one `write`, go on with the
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
//! - a request the handler refuses as invalid (its target, framing or headers) is answered and
//!   the connection closed, so nothing the pod sent after it is ever read as a request;
//! - a closing connection is half-closed and drained briefly before the socket is dropped, so
//!   unread input cannot turn into a reset that destroys the answer;
//! - on shutdown, idle connections close at once and a request being read or handled is finished
//!   (and answered with `connection: close`).

mod answer;
#[cfg(test)]
mod conn_tests;
mod head;
pub mod stop;

pub use answer::{encode, Persist};
pub use head::{parse, HeadError, HeadLimits, ParsedHead, MAX_HEADERS_CAP};

use crate::app::App;
use crate::config::LimitsConfig;
use crate::handler::{self, ConnCtx, RequestHead};
use crate::limits::REFUSAL_LINGER;
use bytes::BufMut;
use http::header::CONNECTION;
use http::{HeaderMap, Method, Version};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a connection task needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct FrontLimits {
    pub head: HeadLimits,
    pub header_read_timeout: Duration,
    /// Bytes buffered from the pod at most (pipelined heads included).
    pub max_buf_size: usize,
    pub keep_alive: bool,
}

impl FrontLimits {
    pub fn from_config(l: &LimitsConfig) -> FrontLimits {
        FrontLimits {
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
/// Runs on a worker's single-threaded runtime (see [`stop`]).
pub async fn serve_connection(mut stream: TcpStream, ctx: ConnCtx, app: &App, lim: &FrontLimits) {
    let shutdown = stop::Stop::new();
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
                    let (status, reason) = (e.status(), e.reason());
                    handler::record_unparsed(app, ctx, status, &reason);
                    let resp = handler::text_response(status, &reason);
                    out.clear();
                    encode(&resp, None, false, Persist::Close, &mut out);
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
        let req = RequestHead {
            method: parsed.method,
            target,
            version: parsed.version,
            headers: &headers,
        };
        // `out` is free until the answer is encoded: it carries the upstream request meanwhile.
        let answer = handler::handle(app, ctx, &req, deadline.as_mut(), &mut out).await;
        let persist = if answer.close || !lim.keep_alive || shutdown.stopped() {
            Persist::Close
        } else {
            persistence(req.version, req.headers)
        };
        out.clear();
        encode(
            &answer.resp,
            answer.relayed.as_ref(),
            req.method == Method::HEAD,
            persist,
            &mut out,
        );
        drop(req);
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

/// Whether the connection stays open after this request (RFC 9112 9.3): HTTP/1.1 unless it says
/// `close`; HTTP/1.0 only if it says `keep-alive`.
fn persistence(version: Version, headers: &HeaderMap) -> Persist {
    let mut close = false;
    let mut keep_alive = false;
    // Scanning the few headers a request has is cheaper than a lookup by name.
    for v in headers
        .iter()
        .filter_map(|(n, v)| (*n == CONNECTION).then_some(v))
    {
        // `check_request_headers` has refused non-ASCII Connection values already.
        for token in v.to_str().unwrap_or("close").split(',') {
            let token = token.trim();
            close |= token.eq_ignore_ascii_case("close");
            keep_alive |= token.eq_ignore_ascii_case("keep-alive");
        }
    }
    match (version, close, keep_alive) {
        (_, true, _) => Persist::Close,
        (Version::HTTP_11, false, _) => Persist::KeepAlive,
        (_, false, true) => Persist::KeepAlive10,
        _ => Persist::Close,
    }
}

/// Writes the whole answer. The first attempt needs no timer (an answer nearly always fits in the
/// socket buffer); a pod that stops reading gets `timeout` to take the rest.
pub(crate) async fn write_answer(
    stream: &mut TcpStream,
    out: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let n = match stream.try_write(out) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    let Some(rest) = out.get(n..).filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    match tokio::time::timeout(timeout, stream.write_all(rest)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Half-closes and reads what the pod still sends until it closes (at most [`REFUSAL_LINGER`]):
/// closing with unread input would send a reset that can destroy the answer before it is read.
pub(crate) async fn linger_close(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn conn(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONNECTION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn persistence_follows_rfc_9112() {
        use Persist::*;
        let v11 = Version::HTTP_11;
        let v10 = Version::HTTP_10;
        assert_eq!(persistence(v11, &conn(&[])), KeepAlive);
        assert_eq!(persistence(v11, &conn(&["Close"])), Close);
        assert_eq!(persistence(v11, &conn(&["keep-alive", "te, close"])), Close);
        assert_eq!(persistence(v10, &conn(&[])), Close);
        assert_eq!(persistence(v10, &conn(&["Keep-Alive"])), KeepAlive10);
        assert_eq!(persistence(v10, &conn(&["keep-alive, close"])), Close);
    }
}
