//! Listeners and connections: accept, parse, record, answer; keep-alive and pipelining.

use crate::content::{self, Action, AwsOptions, LongPoll, Reply, State};
use crate::http1::{self, Chunked, Framing, ParsedHead, MAX_HEAD};
use crate::record::{self, Conn, Line, Recorder};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Config {
    pub bench: bool,
    pub aws: AwsOptions,
}

struct Shared {
    recorder: Recorder,
    state: State,
    cfg: Config,
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // Separate IPv4 listeners may share the port.
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    TcpListener::from_std(sock.into())
}

/// Binds every address (all or nothing), prints one `listening ADDR` line each (the address bound,
/// in `--listen` order) and then `ready` on stdout, and serves until killed.
pub async fn serve(addrs: Vec<SocketAddr>, recorder: Recorder, cfg: Config) -> Result<(), String> {
    let mut listeners = Vec::new();
    for a in &addrs {
        let l = bind(*a).map_err(|e| format!("listen {a}: {e}"))?;
        listeners.push((*a, l));
    }
    for (a, l) in &listeners {
        // The bound address (port 0 becomes the port the kernel chose), in --listen order.
        let bound = l.local_addr().map_err(|e| format!("listen {a}: {e}"))?;
        println!("listening {bound}");
    }
    println!("ready");
    let shared = Arc::new(Shared {
        recorder,
        state: State::new(cfg.aws.clone()),
        cfg,
    });
    let mut tasks = Vec::new();
    for (addr, l) in listeners {
        let shared = shared.clone();
        tasks.push(tokio::spawn(accept_loop(addr, l, shared)));
    }
    for t in tasks {
        t.await.map_err(|e| format!("listener task: {e}"))?;
    }
    Ok(())
}

async fn accept_loop(addr: SocketAddr, l: TcpListener, shared: Arc<Shared>) {
    loop {
        match l.accept().await {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let local = stream
                        .local_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    let conn = Conn {
                        listener: addr,
                        local,
                        peer: peer.to_string(),
                    };
                    connection(stream, conn, &shared).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("fake-metadata: accept on {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn write_record(
    shared: &Shared,
    conn: &Conn,
    head: Option<&http1::Head>,
    body_len: usize,
    raw: Option<&[u8]>,
) {
    if !shared.recorder.enabled() {
        return;
    }
    let empty: [(String, String); 0] = [];
    let (target, target_hex) = head
        .map(|h| record::target_fields(&h.target))
        .unwrap_or_default();
    shared.recorder.write(&Line {
        ts: record::now(),
        listener: conn.listener.to_string(),
        local: conn.local.clone(),
        peer: conn.peer.clone(),
        method: head.map(|h| h.method.as_str()).unwrap_or(""),
        target,
        target_hex,
        headers: head.map(|h| h.headers.as_slice()).unwrap_or(&empty),
        version: head.map(|h| h.version.as_str()).unwrap_or(""),
        body_len,
        malformed: raw.is_some(),
        raw: raw.map(|r| String::from_utf8_lossy(r).into_owned()),
    });
}

fn status_reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn encode(reply: &Reply, head_only: bool, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + reply.body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\nServer: fake-metadata\r\nContent-Length: {}\r\n",
            reply.status,
            status_reason(reply.status),
            reply.body.len()
        )
        .as_bytes(),
    );
    for (n, v) in &reply.headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&reply.body);
    }
    out
}

/// Reads more bytes; `false` on EOF or error.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
}

/// Holds a GCE long poll (`wait_for_change=true`): a `last_etag` other than the value's ETag is
/// answered at once; else the answer waits until the value's ETag changes (a control request set
/// it) or the timeout passes, and is then the value as it is, with its ETag. Errors (403, 404) are
/// answered at once.
async fn hold(
    lp: LongPoll,
    first: Reply,
    head: &http1::Head,
    state: &State,
    mut changes: watch::Receiver<u64>,
) -> Reply {
    let Some(seen) = content::reply_etag(&first).map(str::to_string) else {
        return first;
    };
    if first.status != 200 || lp.last_etag.as_deref().is_some_and(|e| e != seen) {
        return first;
    }
    let deadline = tokio::time::Instant::now() + lp.timeout;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return content::route(head, state, false),
            r = changes.changed() => {
                if r.is_err() {
                    return first;
                }
                let now = content::route(head, state, false);
                if content::reply_etag(&now) != Some(seen.as_str()) {
                    return now;
                }
            }
        }
    }
}

async fn connection(mut stream: TcpStream, conn: Conn, shared: &Shared) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // Head.
        let (head, used) = loop {
            if !buf.is_empty() {
                match http1::parse_head(&buf) {
                    ParsedHead::Head(h, n) => break (h, n),
                    ParsedHead::Malformed(raw) => {
                        write_record(shared, &conn, None, 0, Some(&raw));
                        let r = Reply {
                            status: 400,
                            headers: vec![],
                            body: b"bad request\n".to_vec(),
                            action: Action::Respond,
                        };
                        let _ = stream.write_all(&encode(&r, false, true)).await;
                        return;
                    }
                    ParsedHead::Incomplete if buf.len() > MAX_HEAD => {
                        write_record(shared, &conn, None, 0, Some(&buf[..MAX_HEAD.min(4096)]));
                        let r = Reply {
                            status: 431,
                            headers: vec![],
                            body: vec![],
                            action: Action::Respond,
                        };
                        let _ = stream.write_all(&encode(&r, false, true)).await;
                        return;
                    }
                    ParsedHead::Incomplete => {}
                }
            }
            if !fill(&mut stream, &mut buf).await {
                // EOF: a partial request that never completed is still worth recording.
                if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                    write_record(shared, &conn, None, 0, Some(&buf));
                }
                return;
            }
        };
        buf.advance(used);
        // Body.
        let mut close = !head.keep_alive();
        let body_len = match http1::framing(&head) {
            Framing::None => 0,
            Framing::Length(n) => {
                while buf.len() < n {
                    if !fill(&mut stream, &mut buf).await {
                        write_record(shared, &conn, Some(&head), buf.len(), None);
                        return;
                    }
                }
                buf.advance(n);
                n
            }
            Framing::Chunked => loop {
                match http1::chunked_body(&buf) {
                    Chunked::Done(used, len) => {
                        buf.advance(used);
                        break len;
                    }
                    Chunked::Invalid => {
                        close = true;
                        break 0;
                    }
                    Chunked::Incomplete => {
                        if !fill(&mut stream, &mut buf).await {
                            write_record(shared, &conn, Some(&head), 0, None);
                            return;
                        }
                    }
                }
            },
            Framing::CloseAfter => {
                close = true;
                0
            }
        };
        // Record before answering.
        write_record(shared, &conn, Some(&head), body_len, None);
        // Subscribed before the value is read: a change in between is not missed.
        let changes = shared.state.subscribe();
        let mut reply = content::route(&head, &shared.state, shared.cfg.bench);
        if let Some(lp) = content::long_poll(&head).filter(|_| !shared.cfg.bench) {
            reply = hold(lp, reply, &head, &shared.state, changes).await;
        }
        match reply.action {
            Action::Respond => {}
            Action::Delay(d) => tokio::time::sleep(d).await,
            Action::Hang => {
                // Hold the connection, reading and discarding, until the client gives up.
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Action::Reset => {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return;
            }
        }
        let head_only = head.method == "HEAD";
        if stream
            .write_all(&encode(&reply, head_only, close))
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}
