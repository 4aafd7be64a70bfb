//! Reading an upstream response: the head with httparse (strict defaults), then a body framed by
//! `Content-Length`, chunked encoding or the end of the connection, buffered up to a size cap.

use super::relay::{tokens, visible_str, RelayedHead};
use crate::outcome::UpstreamFailure;
use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most response headers accepted from upstream.
const MAX_RESPONSE_HEADERS: usize = 100;
/// Longest response head (status line and headers) accepted from upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Longest chunk-size line or trailer section accepted.
const MAX_CHUNK_META: usize = 8 * 1024;

/// A failed exchange, answered to the pod as 502 or 504 with [`UpstreamError::reason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: UpstreamFailure,
    pub detail: String,
}

impl UpstreamError {
    pub(super) fn new(kind: UpstreamFailure, detail: impl Into<String>) -> UpstreamError {
        UpstreamError {
            kind,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            UpstreamFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn reason(&self) -> String {
        let what = match self.kind {
            UpstreamFailure::Connect => "upstream connection failed",
            UpstreamFailure::Timeout => "upstream timed out",
            UpstreamFailure::Oversize => "upstream response too large",
            UpstreamFailure::Reset => "upstream connection broken",
        };
        if self.detail.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {}", self.detail)
        }
    }
}

/// A complete upstream response.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    /// Its headers as the pod gets them (hop-by-hop and framing headers already left out).
    pub head: RelayedHead,
    pub body: Bytes,
}

/// Initial read buffer of an upstream connection; metadata answers fit many times over.
pub(super) const READ_BUF: usize = 4096;
/// Bodies up to this size are copied out of the connection's buffer so the buffer can be
/// reused; larger ones are handed over without a copy (and the connection gets a new buffer).
pub(super) const COPY_BODY_MAX: usize = 16 * 1024;

/// An upstream connection and its read buffer, which goes back to the pool with it: a kept-alive
/// connection reads every response into the same allocation.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) buf: BytesMut,
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::with_capacity(READ_BUF),
        }
    }
}

/// How one attempt failed.
pub(super) enum Failure {
    /// Nothing at all came back (the write failed, or the connection was closed or reset before
    /// the first response byte): on a reused connection, the upstream had closed it while idle.
    NothingReceived(String),
    Error(UpstreamError),
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Failure::Error(e)
    }
}
fn broken(detail: impl Into<String>) -> Failure {
    Failure::Error(UpstreamError::new(UpstreamFailure::Reset, detail))
}

fn too_large(max: usize) -> Failure {
    Failure::Error(UpstreamError::new(
        UpstreamFailure::Oversize,
        format!("more than {max} bytes"),
    ))
}

/// How the response body is delimited.
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// The parts of a response head we keep.
struct Head {
    status: StatusCode,
    relayed: RelayedHead,
    framing: Framing,
    keep_alive: bool,
}

/// One request/response on `conn`. Returns the response and the connection when it can be reused.
pub(super) async fn exchange(
    conn: Conn,
    request: &[u8],
    head_only: bool,
    max: usize,
) -> Result<(UpstreamResponse, Option<Conn>), Failure> {
    let Conn {
        stream: mut s,
        mut buf,
    } = conn;
    // A reused connection's buffer is empty (it is only pooled when nothing was left over).
    buf.clear();
    if let Err(e) = s.write_all(request).await {
        return Err(Failure::NothingReceived(format!(
            "sending the request: {e}"
        )));
    }
    let head = loop {
        match parse_head(&buf, head_only)? {
            Some((len, Some(head))) => {
                buf.advance(len);
                break head;
            }
            // An interim (1xx) response: skip it, the final one follows.
            Some((len, None)) => {
                buf.advance(len);
                continue;
            }
            None => {}
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(broken("response head too large"));
        }
        match s.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => {
                return Err(Failure::NothingReceived(
                    "connection closed before a response".into(),
                ))
            }
            Ok(0) => return Err(broken("connection closed in the response head")),
            Ok(_) => {}
            Err(e) if buf.is_empty() => return Err(Failure::NothingReceived(e.to_string())),
            Err(e) => return Err(broken(e.to_string())),
        }
    };
    let (body, reusable) = match head.framing {
        Framing::Empty => (Bytes::new(), true),
        Framing::Length(n) => {
            if n > max {
                return Err(too_large(max));
            }
            while buf.len() < n {
                match s.read_buf(&mut buf).await {
                    Ok(0) => return Err(broken("connection closed in the response body")),
                    Ok(_) => {}
                    Err(e) => return Err(broken(e.to_string())),
                }
            }
            if n <= COPY_BODY_MAX {
                // Copying a small body is cheaper than sharing the buffer (which allocates a
                // shared header) and lets the connection keep its buffer.
                let body = Bytes::copy_from_slice(&buf[..n]);
                buf.advance(n);
                (body, true)
            } else {
                let body = buf.split_to(n).freeze();
                // What is left of the buffer still pins the body's allocation: give the
                // connection a new one (when anything is left, it is not reused anyway).
                if buf.is_empty() {
                    buf = BytesMut::with_capacity(READ_BUF);
                }
                (body, true)
            }
        }
        Framing::Chunked => (read_chunked(&mut s, &mut buf, max).await?, true),
        Framing::UntilClose => {
            loop {
                if buf.len() > max {
                    return Err(too_large(max));
                }
                match s.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(broken(e.to_string())),
                }
            }
            (std::mem::take(&mut buf).freeze(), false)
        }
    };
    // Bytes after the response (the upstream spoke out of turn): do not reuse the connection.
    let keep = (reusable && head.keep_alive && buf.is_empty()).then_some(Conn { stream: s, buf });
    Ok((
        UpstreamResponse {
            status: head.status,
            head: head.relayed,
            body,
        },
        keep,
    ))
}

/// Parses a response head at the start of `buf`. `None`: incomplete. `Some((len, None))`: an
/// interim 1xx response of `len` bytes. `Some((len, Some(head)))`: the final head.
fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<(usize, Option<Head>)>, Failure> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Uninitialised slots: zeroing all of them on every parse cost more than the parse.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut r, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(broken(format!("malformed response: {e}"))),
    };
    let code = r.code.unwrap_or(0);
    if code == 101 {
        return Err(broken("unexpected protocol switch"));
    }
    if (100..200).contains(&code) {
        return Ok(Some((len, None)));
    }
    let status = StatusCode::from_u16(code).map_err(|_| broken(format!("bad status {code}")))?;
    let headers: &[httparse::Header<'_>] = r.headers;
    let relayed = RelayedHead::from_parsed(headers);
    let http11 = r.version == Some(1);
    let close = tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case("close"));
    let framing = framing(headers, status, head_only)?;
    Ok(Some((
        len,
        Some(Head {
            status,
            relayed,
            framing,
            keep_alive: http11 && !close,
        }),
    )))
}

fn framing(
    headers: &[httparse::Header<'_>],
    status: StatusCode,
    head_only: bool,
) -> Result<Framing, Failure> {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        // Chunked must be the final coding; anything else runs to the end of the connection.
        let last = tokens(headers, "transfer-encoding").last().unwrap_or("");
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let mut length: Option<usize> = None;
    let mut note = |n: usize| {
        if length.is_some_and(|l| l != n) {
            return Err(broken("conflicting Content-Length values"));
        }
        length = Some(n);
        Ok(())
    };
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        // Nearly always one plain number; a list (`5, 5`) takes the general way.
        if let Some(n) = plain_number(h.value) {
            note(n)?;
            continue;
        }
        for part in visible_str(h.value).unwrap_or("x").split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(broken("bad Content-Length"));
            }
            note(part.parse().map_err(|_| broken("bad Content-Length"))?)?;
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// `v` as a number when it is 1-19 ASCII digits and nothing else (19 digits always fit a u64).
fn plain_number(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = v.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'));
    usize::try_from(n).ok()
}

/// Decodes a chunked body from `buf` and `s`; on return `buf` holds whatever followed it.
async fn read_chunked(s: &mut TcpStream, buf: &mut BytesMut, max: usize) -> Result<Bytes, Failure> {
    let mut body = BytesMut::new();
    loop {
        // Chunk-size line.
        let (skip, size) = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete(x)) => break x,
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(broken("bad chunk size")),
            }
            if buf.len() > MAX_CHUNK_META {
                return Err(broken("chunk size line too long"));
            }
            fill(s, buf).await?;
        };
        buf.advance(skip);
        let size = usize::try_from(size).map_err(|_| too_large(max))?;
        if size == 0 {
            // Trailers (ignored) end with an empty line.
            loop {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    return Ok(body.freeze());
                }
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.advance(i + 4);
                    return Ok(body.freeze());
                }
                if buf.len() > MAX_CHUNK_META {
                    return Err(broken("trailers too long"));
                }
                fill(s, buf).await?;
            }
        }
        if body.len().saturating_add(size) > max {
            return Err(too_large(max));
        }
        while buf.len() < size + 2 {
            fill(s, buf).await?;
        }
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return Err(broken("chunk not followed by CRLF"));
        }
        buf.advance(size + 2);
    }
}

async fn fill(s: &mut TcpStream, buf: &mut BytesMut) -> Result<(), Failure> {
    match s.read_buf(buf).await {
        Ok(0) => Err(broken("connection closed in the response body")),
        Ok(_) => Ok(()),
        Err(e) => Err(broken(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_framing() {
        let frame = |values: &[&str]| {
            let hs: Vec<_> = values
                .iter()
                .map(|v| httparse::Header {
                    name: "Content-Length",
                    value: v.as_bytes(),
                })
                .collect();
            match framing(&hs, StatusCode::OK, false) {
                Ok(Framing::Length(n)) => Ok(n),
                Ok(Framing::Empty) => Ok(0),
                Ok(_) => Err("other framing"),
                Err(_) => Err("broken"),
            }
        };
        assert_eq!(frame(&["5"]), Ok(5));
        assert_eq!(frame(&["0"]), Ok(0));
        assert_eq!(frame(&["007"]), Ok(7));
        assert_eq!(frame(&["5, 5", "5"]), Ok(5));
        assert_eq!(frame(&["5", " 5 "]), Ok(5));
        assert_eq!(
            frame(&["9999999999999999999"]),
            Ok(9_999_999_999_999_999_999)
        );
        for bad in [
            &["5", "6"][..],
            &["5, 6"],
            &["+5"],
            &["5,"],
            &[""],
            &["99999999999999999999"],
            &["5\u{e9}"],
        ] {
            assert_eq!(frame(bad), Err("broken"), "{bad:?}");
        }
    }
}
