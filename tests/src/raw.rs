//! A deliberately dumb HTTP/1 client for the adversarial suite: it writes exactly the bytes it is
//! given (no normalisation, no Host header, no framing of its own) from inside a network namespace,
//! and reads back whatever comes, with a deadline.
//!
//! A well-behaved client would repair most of the malformed requests the suite is about, so the
//! suite must not use one. Sockets are created on a short-lived thread that has entered the pod's
//! namespace: a socket stays in the namespace it was created in, so the caller can use it from any
//! thread afterwards.

use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Runs `f` on a fresh thread that has entered the network namespace at `netns` (a path such as
/// `/var/run/netns/NAME` or `/proc/PID/ns/net`). The calling thread's namespace never changes.
pub fn in_netns<T, F>(netns: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = File::open(netns)?;
    let path: PathBuf = netns.to_path_buf();
    std::thread::spawn(move || -> io::Result<T> {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| io::Error::other(format!("setns {}: {e}", path.display())))?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?
}

/// Opens a TCP connection from inside `netns`.
pub fn connect(netns: &Path, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    in_netns(netns, move || TcpStream::connect_timeout(&addr, timeout))?
}

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The status line and headers, lossily decoded, for messages.
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::fake::header(&self.headers, name)
    }
}

/// How the exchange ended after the last complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer closed the connection (FIN).
    Closed,
    /// The peer reset the connection (RST), or refused it.
    Reset,
    /// Nothing more arrived before the deadline; the connection was still open.
    Timeout,
    /// We stopped reading because we had as many responses as we asked for.
    Enough,
    /// Bytes arrived that are not an HTTP/1 response.
    Garbage,
}

/// Everything one connection produced.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Final responses in order (interim 1xx responses are in `interim`).
    pub responses: Vec<Response>,
    pub interim: Vec<u16>,
    pub end: End,
    /// Bytes left over that did not form a complete response (for messages).
    pub trailing: Vec<u8>,
    pub elapsed: Duration,
}

impl Exchange {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }

    /// A short human summary, e.g. `[200, 403] then closed`.
    pub fn summary(&self) -> String {
        let mut s = format!("{:?} then {:?}", self.statuses(), self.end);
        if !self.trailing.is_empty() {
            let t: String = String::from_utf8_lossy(&self.trailing[..self.trailing.len().min(60)])
                .chars()
                .map(|c| if c.is_control() { '.' } else { c })
                .collect();
            s.push_str(&format!(" (+{} bytes: {t:?})", self.trailing.len()));
        }
        s
    }
}

/// One step of what a client sends.
#[derive(Debug, Clone)]
pub enum Step {
    Write(Vec<u8>),
    /// Pause between writes: the pause *is* the attack (slow headers, slow bodies).
    Pause(Duration),
    /// Half-close our side (FIN) after the request.
    ShutdownWrite,
}

/// Options for reading.
#[derive(Debug, Clone, Copy)]
pub struct ReadOpts {
    /// Give up waiting for more bytes this long after the last write.
    pub deadline: Duration,
    /// Stop after this many final responses.
    pub max_responses: usize,
    /// The first request was HEAD: its response has no body.
    pub head_request: bool,
}

impl Default for ReadOpts {
    fn default() -> Self {
        ReadOpts {
            deadline: Duration::from_secs(3),
            max_responses: 8,
            head_request: false,
        }
    }
}

/// Sends `steps` on `stream` and reads responses until the peer closes, `max_responses` final
/// responses arrived, or `deadline` passed since the last write. Write errors (the proxy may close
/// while we are still sending) are not failures: what was received is still judged.
pub fn exchange(stream: TcpStream, steps: &[Step], opts: ReadOpts) -> Exchange {
    exchange_inner(stream, steps, opts, usize::MAX, Duration::ZERO)
}

/// Like [`exchange`], but once `expected` final responses have arrived, waits only `grace` more
/// for anything else (an extra response would mean the server read a second request where the
/// client sent one). Keeps kept-alive connections from costing the whole deadline.
pub fn exchange_expecting(
    stream: TcpStream,
    steps: &[Step],
    opts: ReadOpts,
    expected: usize,
    grace: Duration,
) -> Exchange {
    exchange_inner(stream, steps, opts, expected, grace)
}

fn exchange_inner(
    mut stream: TcpStream,
    steps: &[Step],
    opts: ReadOpts,
    expected: usize,
    grace: Duration,
) -> Exchange {
    let start = Instant::now();
    let _ = stream.set_nodelay(true);
    let mut write_failed = false;
    for step in steps {
        match step {
            Step::Write(b) if !write_failed => {
                if stream.write_all(b).is_err() {
                    write_failed = true;
                }
            }
            Step::Write(_) => {}
            // Once the peer stopped reading there is nothing left to be slow at.
            Step::Pause(_) if write_failed => {}
            Step::Pause(d) => std::thread::sleep(*d),
            Step::ShutdownWrite => {
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
    }
    let mut deadline = Instant::now() + opts.deadline;
    let mut grace_started = false;
    let mut buf: Vec<u8> = Vec::new();
    let mut responses = Vec::new();
    let mut interim = Vec::new();
    let mut head_pending = opts.head_request;
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        // Take every complete response out of the buffer first.
        loop {
            match parse_response(&buf, head_pending) {
                Parse::Complete(resp, used) => {
                    buf.drain(..used);
                    if (100..200).contains(&resp.status) {
                        interim.push(resp.status);
                    } else {
                        head_pending = false;
                        responses.push(resp);
                    }
                }
                Parse::Partial => break,
                Parse::Garbage => break,
            }
        }
        if responses.len() >= opts.max_responses {
            break End::Enough;
        }
        if !grace_started && responses.len() >= expected {
            grace_started = true;
            deadline = deadline.min(Instant::now() + grace);
        }
        if matches!(parse_response(&buf, head_pending), Parse::Garbage) {
            break End::Garbage;
        }
        let now = Instant::now();
        if now >= deadline {
            break End::Timeout;
        }
        let _ = stream.set_read_timeout(Some(deadline - now));
        match stream.read(&mut chunk) {
            Ok(0) => {
                // A body delimited by the close: complete it now.
                if let Some(resp) = close_delimited(&buf, head_pending) {
                    buf.clear();
                    responses.push(resp);
                }
                break End::Closed;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break End::Timeout
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break End::Reset,
        }
    };
    Exchange {
        responses,
        interim,
        end,
        trailing: buf,
        elapsed: start.elapsed(),
    }
}

/// Connects from `netns` to `addr` and runs one [`exchange`]. A refused or failed connect is
/// reported as an exchange that ended in `Reset` with no response.
pub fn send(netns: &Path, addr: SocketAddr, steps: &[Step], opts: ReadOpts) -> Exchange {
    send_expecting(netns, addr, steps, opts, usize::MAX, Duration::ZERO)
}

/// [`send`] with [`exchange_expecting`]'s early stop.
pub fn send_expecting(
    netns: &Path,
    addr: SocketAddr,
    steps: &[Step],
    opts: ReadOpts,
    expected: usize,
    grace: Duration,
) -> Exchange {
    let start = Instant::now();
    match connect(netns, addr, Duration::from_secs(2)) {
        Ok(s) => exchange_inner(s, steps, opts, expected, grace),
        Err(_) => Exchange {
            responses: Vec::new(),
            interim: Vec::new(),
            end: End::Reset,
            trailing: Vec::new(),
            elapsed: start.elapsed(),
        },
    }
}

enum Parse {
    Complete(Response, usize),
    Partial,
    Garbage,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses the status line and headers at the start of `buf`.
fn parse_head(buf: &[u8]) -> Result<Option<(Response, usize)>, ()> {
    if buf.is_empty() {
        return Ok(None);
    }
    let probe = &buf[..buf.len().min(5)];
    if !b"HTTP/".starts_with(probe) {
        return Err(());
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 256 * 1024 {
            Err(())
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next();
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(())?;
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Ok(Some((
        Response {
            status,
            head,
            headers,
            body: Vec::new(),
        },
        end + 4,
    )))
}

fn parse_response(buf: &[u8], head_request: bool) -> Parse {
    let (mut resp, head_len) = match parse_head(buf) {
        Ok(Some(x)) => x,
        Ok(None) => return Parse::Partial,
        Err(()) => return Parse::Garbage,
    };
    let rest = &buf[head_len..];
    if head_request || (100..200).contains(&resp.status) || resp.status == 204 || resp.status == 304
    {
        return Parse::Complete(resp, head_len);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return match decode_chunked(rest) {
            Some((body, used)) => {
                resp.body = body;
                Parse::Complete(resp, head_len + used)
            }
            None => Parse::Partial,
        };
    }
    if let Some(cl) = resp.header("content-length") {
        let Ok(n) = cl.parse::<usize>() else {
            return Parse::Garbage;
        };
        if rest.len() < n {
            return Parse::Partial;
        }
        resp.body = rest[..n].to_vec();
        return Parse::Complete(resp, head_len + n);
    }
    // Delimited by the close of the connection: complete only at EOF.
    Parse::Partial
}

/// At EOF: a response whose body runs to the end of the connection.
fn close_delimited(buf: &[u8], head_request: bool) -> Option<Response> {
    let (mut resp, head_len) = parse_head(buf).ok()??;
    if head_request
        || resp.header("content-length").is_some()
        || resp.header("transfer-encoding").is_some()
    {
        return None;
    }
    resp.body = buf[head_len..].to_vec();
    Some(resp)
}

/// Decodes a chunked body; `None` while incomplete.
fn decode_chunked(mut b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = b.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(b, b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..line_end]).ok()?;
        let size_str = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            let end = find(b, b"\r\n")?;
            if end == 0 {
                b = &b[2..];
            } else {
                let t = find(b, b"\r\n\r\n")?;
                b = &b[t + 4..];
            }
            return Some((body, total - b.len()));
        }
        if b.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_responses() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let Parse::Complete(r1, n1) = parse_response(buf, false) else {
            panic!()
        };
        assert_eq!((r1.status, r1.body.as_slice()), (200, &b"ok"[..]));
        let Parse::Complete(r2, n2) = parse_response(&buf[n1..], false) else {
            panic!()
        };
        assert_eq!((r2.status, r2.body.as_slice()), (403, &b"abc"[..]));
        assert_eq!(n1 + n2, buf.len());
    }

    #[test]
    fn garbage_and_partial() {
        assert!(matches!(parse_response(b"SSH-2.0", false), Parse::Garbage));
        assert!(matches!(parse_response(b"HTT", false), Parse::Partial));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", false),
            Parse::Partial
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\nab", false),
            Parse::Partial
        ));
        assert_eq!(
            close_delimited(b"HTTP/1.1 200 OK\r\n\r\nab", false)
                .unwrap()
                .body,
            b"ab"
        );
    }
}
