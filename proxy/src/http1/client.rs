//! The upstream client: forwarding allowed requests to the metadata service, and its pool of
//! kept-alive connections (the response is read by `response.rs`).
//!
//! A deliberately small HTTP/1.1 client. The request task itself writes the request and reads the
//! response on a kept-alive connection taken from a pool (one pool per endpoint, per worker
//! thread): no connection task, no channel, no cross-thread wake-up per request. That is what a
//! proxy whose whole job is one short exchange per request needs, and it measured markedly cheaper
//! than hyper's pooled client on the allowed path.
//!
//! What it sends is built from values that cannot carry CR or LF (`http::Method`, the canonical
//! target, `HeaderName`/`HeaderValue`), so no request can be split. What it reads is parsed with
//! `httparse`: status line and headers, then a body framed by `Content-Length`, chunked encoding,
//! or the end of the connection. The whole exchange runs under the response timeout and the body is
//! buffered up to a size cap, so a slow or huge upstream answer becomes a clean 504 or 502 instead
//! of a half-relayed response. A pooled connection the upstream closed while it was idle is
//! detected (nothing was received) and the request is retried once on a new connection.

use super::response::{exchange, Conn, Failure, READ_BUF};
pub use super::response::{UpstreamError, UpstreamResponse};
use crate::config::{EndpointConfig, UpstreamConfig};
use crate::outcome::UpstreamFailure;
use bytes::BytesMut;
use http::Method;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Where one endpoint's allowed requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    /// Host header value: the metadata service's own address (what the pod addressed), even when
    /// `addr` points elsewhere (a test fake, a local cache).
    pub host: String,
}

impl Target {
    pub fn from_config(e: &EndpointConfig) -> Target {
        Target {
            name: e.name.clone(),
            addr: e.upstream_addr(),
            host: host_header(e.address, e.port),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamSetupError(String);

/// `169.254.169.254`, `[fd00:ec2::254]`, with `:port` only when it is not 80.
pub fn host_header(ip: IpAddr, port: u16) -> String {
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// A buffer that grew past this (a large answer) is not kept with the idle connection.
const KEEP_BUF_MAX: usize = 64 * 1024;

struct Idle {
    conn: Conn,
    since: Instant,
}

pub struct Upstream {
    targets: Vec<Target>,
    /// Idle kept-alive connections, per target. Each `Upstream` belongs to one worker thread, so
    /// these locks are never contended.
    pools: Vec<Mutex<Vec<Idle>>>,
    connect_timeout: Duration,
    pub(super) response_timeout: Duration,
    max_response_bytes: usize,
    pool_idle_timeout: Duration,
    pool_max_idle: usize,
}

impl Upstream {
    pub fn new(
        cfg: &UpstreamConfig,
        endpoints: &[EndpointConfig],
    ) -> Result<Upstream, UpstreamSetupError> {
        let targets: Vec<Target> = endpoints.iter().map(Target::from_config).collect();
        if let Some(t) = targets.iter().find(|t| t.addr.port() == 0) {
            return Err(UpstreamSetupError(format!(
                "endpoint {}: upstream port 0",
                t.name
            )));
        }
        Ok(Upstream {
            pools: targets.iter().map(|_| Mutex::new(Vec::new())).collect(),
            targets,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            response_timeout: Duration::from_millis(cfg.response_timeout_ms),
            max_response_bytes: cfg.max_response_bytes,
            pool_idle_timeout: Duration::from_millis(cfg.pool_idle_timeout_ms),
            pool_max_idle: cfg.pool_max_idle_per_host,
        })
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn target(&self, endpoint: usize) -> Option<&Target> {
        self.targets.get(endpoint)
    }

    /// Sends an encoded request (see [`encode_request`]) to `endpoint`. `deadline` is re-armed to
    /// the response timeout: a caller that has a timer of its own lends it, which is cheaper than
    /// registering a new one per request. `now` is the caller's reading of the clock just before
    /// (it starts the timeout and dates the pool's idle connections: no clock read of our own).
    pub async fn send_encoded(
        &self,
        endpoint: usize,
        head_only: bool,
        request: &[u8],
        deadline: Pin<&mut Sleep>,
        now: Instant,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let timeout = self.response_timeout;
        self.send_encoded_within(endpoint, head_only, request, deadline, now, timeout)
            .await
    }

    /// [`Upstream::send_encoded`] under `timeout` instead of the response timeout (a long poll's
    /// deadline, `crate::longpoll`).
    pub async fn send_encoded_within(
        &self,
        endpoint: usize,
        head_only: bool,
        request: &[u8],
        mut deadline: Pin<&mut Sleep>,
        now: Instant,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let target = self
            .targets
            .get(endpoint)
            .ok_or_else(|| UpstreamError::new(UpstreamFailure::Connect, "no such endpoint"))?;
        deadline
            .as_mut()
            .reset(tokio::time::Instant::from_std(now) + timeout);
        let exchange = async {
            // A pooled connection may have been closed by the upstream while idle; that shows as
            // nothing received, and deserves one more try on a fresh connection.
            let mut reused_failed = false;
            loop {
                let (conn, reused) = match self.checkout(endpoint, now) {
                    Some(c) if !reused_failed => (c, true),
                    _ => (Conn::new(self.connect(target).await?), false),
                };
                match exchange(conn, request, head_only, self.max_response_bytes).await {
                    Ok((resp, keep)) => {
                        if let Some(c) = keep {
                            self.checkin(endpoint, c, now);
                        }
                        return Ok(resp);
                    }
                    Err(Failure::NothingReceived(_)) if reused && !reused_failed => {
                        reused_failed = true
                    }
                    Err(Failure::NothingReceived(detail)) => {
                        return Err(UpstreamError::new(UpstreamFailure::Reset, detail));
                    }
                    Err(Failure::Error(e)) => return Err(e),
                }
            }
        };
        tokio::select! {
            biased;
            r = exchange => r,
            _ = deadline => Err(UpstreamError::new(
                UpstreamFailure::Timeout,
                format!("no complete response within {} ms", timeout.as_millis()),
            )),
        }
    }

    async fn connect(&self, target: &Target) -> Result<TcpStream, UpstreamError> {
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(target.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(UpstreamError::new(
                UpstreamFailure::Connect,
                format!("{}: {e}", target.addr),
            )),
            Err(_) => Err(UpstreamError::new(
                UpstreamFailure::Timeout,
                format!(
                    "connecting to {} took over {} ms",
                    target.addr,
                    self.connect_timeout.as_millis()
                ),
            )),
        }
    }

    fn checkout(&self, endpoint: usize, now: Instant) -> Option<Conn> {
        let mut idle = self
            .pools
            .get(endpoint)?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.pop() {
            if now.saturating_duration_since(i.since) > self.pool_idle_timeout {
                continue;
            }
            // An idle connection has nothing to say: if it is readable, the upstream closed it
            // (or sent garbage). This costs no system call unless the reactor saw it readable.
            let mut probe = [0u8; 1];
            match i.conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(i.conn),
                _ => continue,
            }
        }
        None
    }

    /// `now`: when the exchange that used `conn` started (its idle time is counted from there,
    /// so it expires a little early, never late).
    fn checkin(&self, endpoint: usize, mut conn: Conn, now: Instant) {
        if conn.buf.capacity() > KEEP_BUF_MAX {
            conn.buf = BytesMut::with_capacity(READ_BUF);
        }
        if let Some(pool) = self.pools.get(endpoint) {
            let mut idle = pool.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.pool_max_idle {
                idle.push(Idle { conn, since: now });
            }
        }
    }
}
/// Appends `METHOD path[?query] HTTP/1.1`, the header lines `headers` writes and the blank line to
/// `v` (the caller's buffer, reused from request to request). Nothing here can hold CR or LF: the
/// target is canonical and header names and values come from `http` types.
pub fn encode_request(
    v: &mut Vec<u8>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: impl FnOnce(&mut Vec<u8>),
) {
    v.extend_from_slice(method.as_str().as_bytes());
    v.push(b' ');
    v.extend_from_slice(path.as_bytes());
    if let Some(q) = query {
        v.push(b'?');
        v.extend_from_slice(q.as_bytes());
    }
    v.extend_from_slice(b" HTTP/1.1\r\n");
    headers(v);
    v.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::reference::header_lines;
    use crate::http1::response::COPY_BODY_MAX;
    use http::HeaderMap;
    use http::StatusCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn host_headers() {
        assert_eq!(
            host_header("169.254.169.254".parse().unwrap(), 80),
            "169.254.169.254"
        );
        assert_eq!(
            host_header("fd00:ec2::254".parse().unwrap(), 80),
            "[fd00:ec2::254]"
        );
        assert_eq!(
            host_header("fd00:ec2::254".parse().unwrap(), 8080),
            "[fd00:ec2::254]:8080"
        );
    }

    #[test]
    fn statuses_and_reasons() {
        let t = UpstreamError::new(UpstreamFailure::Timeout, "x");
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(t.reason(), "upstream timed out: x");
        let c = UpstreamError::new(UpstreamFailure::Connect, "");
        assert_eq!(c.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(c.reason(), "upstream connection failed");
    }

    #[test]
    fn request_encoding() {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, "169.254.169.254".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        let mut r = Vec::new();
        encode_request(&mut r, &Method::PUT, "/latest/api/token", None, |v| {
            header_lines(&h, v)
        });
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "PUT /latest/api/token HTTP/1.1\r\nhost: 169.254.169.254\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        // The canonical target's parts, as `CanonicalTarget::forward_target` joins them.
        let mut r = Vec::new();
        encode_request(
            &mut r,
            &Method::GET,
            "/computeMetadata/v1/",
            Some("recursive=true"),
            |_| {},
        );
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "GET /computeMetadata/v1/?recursive=true HTTP/1.1\r\n\r\n"
        );
    }

    fn upstream(addr: SocketAddr, max: usize, timeout_ms: u64) -> Upstream {
        let ep = EndpointConfig {
            name: "e".into(),
            address: "169.254.169.254".parse().unwrap(),
            port: 80,
            proxy_port: 8169,
            upstream: Some(addr),
        };
        let cfg = UpstreamConfig {
            max_response_bytes: max,
            response_timeout_ms: timeout_ms,
            ..Default::default()
        };
        Upstream::new(&cfg, &[ep]).unwrap()
    }

    /// Reads one request head from `s`.
    async fn read_head(s: &mut TcpStream) -> Option<String> {
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(1) => got.push(b[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8(got).unwrap())
    }

    /// A loopback server: for each connection, answers the requests on it with the `replies` in
    /// turn (`None` = say nothing and hold the connection); records each request head.
    async fn server(
        replies: Vec<Vec<Option<&'static [u8]>>>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let mut all = Vec::new();
            for conn in replies {
                let (mut s, _) = l.accept().await.unwrap();
                let mut heads = Vec::new();
                for reply in conn {
                    let Some(head) = read_head(&mut s).await else {
                        break;
                    };
                    heads.push(head);
                    match reply {
                        Some(r) => s.write_all(r).await.unwrap(),
                        None => {
                            let mut b = [0u8; 1];
                            let _ = s.read(&mut b).await;
                        }
                    }
                }
                all.push(heads);
            }
            all
        });
        (addr, h)
    }

    /// Sends `GET /` without headers and returns the failure it must end in.
    async fn get_fails(u: &Upstream) -> UpstreamError {
        u.send(0, Method::GET, "/", HeaderMap::new())
            .await
            .err()
            .unwrap()
    }

    fn host() -> HeaderMap {
        let mut hm = HeaderMap::new();
        hm.insert(http::header::HOST, "169.254.169.254".parse().unwrap());
        hm
    }

    #[tokio::test]
    async fn forwards_and_reuses_the_connection() {
        let (addr, h) = server(vec![vec![
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello"),
            Some(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
        ]])
        .await;
        let u = upstream(addr, 1024, 2000);
        let r = u
            .send(0, Method::GET, "/latest/meta-data/?a=1", host())
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"hello");
        // The length is the pod-facing server's to write; the rest is relayed.
        assert_eq!(r.head.lines(), b"x-a: b\r\n");
        // Second request: same connection (the server accepts only one).
        let r = u.send(0, Method::GET, "/nope", host()).await.unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let heads = h.await.unwrap();
        assert_eq!(heads.len(), 1);
        assert!(
            heads[0][0].starts_with("GET /latest/meta-data/?a=1 HTTP/1.1\r\n"),
            "{heads:?}"
        );
        assert!(
            heads[0][0].contains("host: 169.254.169.254\r\n"),
            "{heads:?}"
        );
        assert!(heads[0][1].starts_with("GET /nope HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn bodies_stay_intact_while_the_connection_reuses_its_buffer() {
        // Small bodies are copied out of the pooled connection's buffer, large ones are handed
        // over as they are, and a buffer that grew is replaced: every body must come back
        // whole, in order, on the one connection.
        let body = |n: usize, seed: u8| -> Vec<u8> {
            (0..n)
                .map(|i| b'a' + (i as u8).wrapping_add(seed) % 26)
                .collect()
        };
        let sizes = [
            5,
            COPY_BODY_MAX,
            COPY_BODY_MAX + 1,
            7,
            KEEP_BUF_MAX + 4096,
            3,
        ];
        let mut replies = Vec::new();
        let mut want = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let b = body(n, i as u8);
            let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").into_bytes();
            r.extend_from_slice(&b);
            replies.push(Some(&*Box::leak(r.into_boxed_slice())));
            want.push(b);
        }
        let (addr, h) = server(vec![replies]).await;
        let u = upstream(addr, 1 << 20, 2000);
        let mut got = Vec::new();
        for _ in &sizes {
            let r = u.send(0, Method::GET, "/", host()).await.unwrap();
            got.push(r.body);
        }
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.len(), w.len());
            assert!(g[..] == w[..], "a body of {} bytes changed", w.len());
        }
        let heads = h.await.unwrap();
        assert_eq!(heads.len(), 1, "one connection for every request");
        assert_eq!(heads[0].len(), sizes.len());
    }

    #[tokio::test]
    async fn chunked_bodies_and_interim_responses() {
        let (addr, _h) = server(vec![vec![
            Some(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;x=y\r\nRust\r\n6\r\n rocks\r\n0\r\nx-trailer: 1\r\n\r\n"),
            Some(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ]])
        .await;
        let u = upstream(addr, 1024, 2000);
        let r = u.send(0, Method::GET, "/", host()).await.unwrap();
        assert_eq!(&r.body[..], b"Rust rocks");
        let r = u.send(0, Method::GET, "/", host()).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.is_empty());
    }

    #[tokio::test]
    async fn close_delimited_and_head_responses() {
        let (addr, _h) = server(vec![
            vec![Some(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n")],
            vec![Some(b"HTTP/1.0 200 OK\r\n\r\nuntil close")],
        ])
        .await;
        let u = upstream(addr, 1024, 2000);
        let r = u.send(0, Method::HEAD, "/", host()).await.unwrap();
        assert!(r.body.is_empty());
        assert_eq!(r.head.length(), Some(&b"7"[..]));
        // The HEAD connection goes back to the pool, but the server moves on to a new one:
        // the stale pooled connection is detected and the request retried on a fresh one.
        let r = tokio::time::timeout(Duration::from_secs(5), u.send(0, Method::GET, "/", host()))
            .await
            .unwrap();
        // The server task dropped its first connection after the HEAD; either the pool probe or
        // the retry must get us to the second one.
        let r = r.unwrap();
        assert_eq!(&r.body[..], b"until close");
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_retried_once() {
        // Connection 1 answers once then closes; connection 2 answers.
        let (addr, h) = server(vec![
            vec![Some(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na")],
            vec![Some(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb")],
        ])
        .await;
        let u = upstream(addr, 1024, 2000);
        assert_eq!(
            &u.send(0, Method::GET, "/1", host()).await.unwrap().body[..],
            b"a"
        );
        assert_eq!(
            &u.send(0, Method::GET, "/2", host()).await.unwrap().body[..],
            b"b"
        );
        let heads = h.await.unwrap();
        assert_eq!(heads.len(), 2);
    }

    #[tokio::test]
    async fn oversize_is_502() {
        let (addr, _h) = server(vec![vec![Some(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789",
        )]])
        .await;
        let u = upstream(addr, 4, 2000);
        let e = get_fails(&u).await;
        assert_eq!(e.kind, UpstreamFailure::Oversize);
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let (addr, _h) =
            server(vec![vec![Some(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")]])
                .await;
        let u = upstream(addr, 4, 2000);
        assert_eq!(get_fails(&u).await.kind, UpstreamFailure::Oversize);
    }

    #[tokio::test]
    async fn silence_is_504() {
        let (addr, _h) = server(vec![vec![None]]).await;
        let u = upstream(addr, 1024, 100);
        let e = get_fails(&u).await;
        assert_eq!(e.kind, UpstreamFailure::Timeout);
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[tokio::test]
    async fn a_longer_deadline_outlasts_the_response_timeout() {
        // The server answers after 300 ms: past the 100 ms response timeout, within 2 s.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            read_head(&mut s).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
        });
        let u = upstream(addr, 1024, 100);
        let deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(deadline);
        let r = u
            .send_encoded_within(
                0,
                false,
                b"GET / HTTP/1.1\r\n\r\n",
                deadline.as_mut(),
                Instant::now(),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert_eq!(&r.body[..], b"ok");
        server.await.unwrap();
        // The deadline given, not the response timeout, is what a timeout reports.
        let (addr, _h) = server_silent().await;
        let u = upstream(addr, 1024, 5000);
        let e = u
            .send_encoded_within(
                0,
                false,
                b"GET / HTTP/1.1\r\n\r\n",
                deadline.as_mut(),
                Instant::now(),
                Duration::from_millis(150),
            )
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, UpstreamFailure::Timeout);
        assert!(e.reason().contains("150 ms"), "{}", e.reason());
    }

    /// A server that reads one request and never answers.
    async fn server_silent() -> (SocketAddr, tokio::task::JoinHandle<Vec<Vec<String>>>) {
        server(vec![vec![None]]).await
    }

    #[tokio::test]
    async fn refused_is_502() {
        // Bind then drop to get a loopback port with nothing listening.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let u = upstream(addr, 1024, 2000);
        let e = get_fails(&u).await;
        assert_eq!(e.kind, UpstreamFailure::Connect, "{e:?}");
        assert!(e.reason().contains("refused"), "{}", e.reason());
    }

    #[tokio::test]
    async fn broken_responses_are_502() {
        for reply in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\na",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            // Header bytes the relay must never pass on (it relies on the parser refusing them):
            // an obsolete folded line, NUL, a bare CR, a name with a space.
            b"HTTP/1.1 200 OK\r\nx-a: a\r\n b\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: a\0b\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: a\rb\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx a: 1\r\ncontent-length: 0\r\n\r\n",
        ] {
            let (addr, _h) = server(vec![vec![Some(reply)]]).await;
            let u = upstream(addr, 1024, 2000);
            let e = get_fails(&u).await;
            assert_eq!(
                e.kind,
                UpstreamFailure::Reset,
                "{:?}: {e:?}",
                String::from_utf8_lossy(reply)
            );
        }
    }
}
