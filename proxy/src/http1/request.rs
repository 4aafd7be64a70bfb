//! Reading a request head: httparse (strict defaults) over the connection's buffer, into the
//! `http` types the rest of the proxy works with.
//!
//! Requests never have a body here (`rules::check_request_headers` refuses `Transfer-Encoding`
//! and any `Content-Length` but `0`), so a request is exactly its head.

use crate::config::LimitsConfig;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use std::mem::MaybeUninit;
use std::ops::Range;

/// The most headers a request may carry whatever `limits.max_headers` says (the configuration
/// refuses more). The header slots live on the stack, uninitialised, so a high cap costs nothing.
pub use crate::config::MAX_HEADERS_CAP;

/// A parsed request head. The target is a range of the connection's buffer (checked to be UTF-8)
/// rather than a borrow, so the connection can keep reading into that buffer while it waits. The
/// headers go into a map the caller passes (the connection keeps one for all its requests).
#[derive(Debug)]
pub struct ParsedHead {
    pub method: Method,
    pub target: Range<usize>,
    pub version: Version,
    /// Bytes of the buffer the head took (request line, headers, blank line).
    pub len: usize,
}

/// Why a head was refused before it reached the pipeline. The connection is answered with
/// `status()` and the reason, then closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// More than `limits.max_header_bytes` without the end of the head.
    TooLarge,
    /// More than `limits.max_headers` headers.
    TooManyHeaders,
    /// No `HTTP/1.0` or `HTTP/1.1` where the request line's version belongs (an HTTP/2 preface, or
    /// a target with a space in it, look the same to the parser).
    Version,
    /// Anything else httparse or the `http` types refuse.
    Malformed(String),
}

impl HeadError {
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::Version | HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            HeadError::TooLarge => "request head too large".into(),
            HeadError::TooManyHeaders => "too many request headers".into(),
            HeadError::Version => {
                "unparsable request line (or a version other than HTTP/1.0 and HTTP/1.1)".into()
            }
            HeadError::Malformed(why) => format!("unparsable request: {why}"),
        }
    }
}

/// The parts of [`LimitsConfig`] that reading a head needs.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl HeadLimits {
    pub fn from_config(l: &LimitsConfig) -> HeadLimits {
        HeadLimits {
            max_header_bytes: l.max_header_bytes,
            max_headers: l.max_headers.clamp(1, MAX_HEADERS_CAP),
        }
    }
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete (and still within
/// the size cap). `headers` is cleared, then holds the head's headers when it is complete.
pub fn parse(
    buf: &[u8],
    lim: HeadLimits,
    headers: &mut HeaderMap,
) -> Result<Option<ParsedHead>, HeadError> {
    headers.clear();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots[..lim.max_headers]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= lim.max_header_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if len > lim.max_header_bytes {
        return Err(HeadError::TooLarge);
    }
    let malformed = |why: &str| HeadError::Malformed(why.to_string());
    // A complete parse always has these three.
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(malformed("incomplete request line"));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| malformed("invalid method"))?;
    let version = match minor {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return Err(HeadError::Version),
    };
    // httparse lets bytes 0x80-0xFF through in the target; take the raw bytes back from the
    // buffer and accept them only as UTF-8 (the canonicaliser then refuses anything non-ASCII).
    let start = (path.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    let Some(end) = start.checked_add(path.len()) else {
        return Err(malformed("request target outside the head"));
    };
    let target = start..end;
    match buf.get(target.clone()) {
        // (ASCII, the usual case, is checked a word at a time.)
        Some(raw) if raw.is_ascii() || std::str::from_utf8(raw).is_ok() => {}
        _ => return Err(malformed("request target is not UTF-8")),
    }
    headers.reserve(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| malformed("invalid header name"))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| malformed("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(Some(ParsedHead {
        method,
        target,
        version,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: HeadLimits = HeadLimits {
        max_header_bytes: 256,
        max_headers: 4,
    };

    /// `parse` with a map of its own.
    fn parse(buf: &[u8], lim: HeadLimits) -> Result<Option<(ParsedHead, HeaderMap)>, HeadError> {
        let mut map = HeaderMap::new();
        Ok(super::parse(buf, lim, &mut map)?.map(|h| (h, map)))
    }

    fn target<'b>(buf: &'b [u8], h: &ParsedHead) -> &'b [u8] {
        &buf[h.target.clone()]
    }

    #[test]
    fn complete_heads() {
        let buf = b"GET /latest/meta-data/?x=1 HTTP/1.1\r\nHost: a\r\nX-Aws-Ec2-Metadata-Token: t\r\nhost: b\r\n\r\nGET /next";
        let (h, headers) = parse(buf, LIM).unwrap().unwrap();
        assert_eq!(h.method, Method::GET);
        assert_eq!(target(buf, &h), b"/latest/meta-data/?x=1");
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.len, buf.len() - b"GET /next".len());
        // Names are lower-cased; repeated headers are kept in order.
        let hosts: Vec<_> = headers.get_all("host").iter().collect();
        assert_eq!(hosts, ["a", "b"]);
        assert_eq!(headers["x-aws-ec2-metadata-token"], "t");

        let buf = b"PUT /latest/api/token HTTP/1.0\r\n\r\n";
        let (h, headers) = parse(buf, LIM).unwrap().unwrap();
        assert_eq!((h.method, h.version), (Method::PUT, Version::HTTP_10));
        assert!(headers.is_empty());
        assert_eq!(h.len, buf.len());
    }

    #[test]
    fn incomplete_heads_wait_within_the_cap() {
        for buf in [
            &b""[..],
            b"GE",
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(parse(buf, LIM).unwrap().map(|h| h.0.len), None, "{buf:?}");
        }
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(LIM.max_header_bytes, b'a');
        assert_eq!(parse(&long, LIM).unwrap_err(), HeadError::TooLarge);
        // Complete, but over the cap.
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&long, LIM).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn refusals() {
        let cases: &[(&[u8], StatusCode)] = &[
            (
                b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            (b"GET / HTTP/2.0\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", StatusCode::BAD_REQUEST),
            (
                b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                b"GET / HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (b"GET /a b HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET\t/ HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"G@T / HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET /\xff HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTP/1.1\nX: 1\r\n\r\n", StatusCode::OK),
        ];
        for (buf, want) in cases {
            let got = match parse(buf, LIM) {
                Ok(Some(_)) => StatusCode::OK,
                Ok(None) => panic!("incomplete: {buf:?}"),
                Err(e) => {
                    assert!(!e.reason().is_empty());
                    e.status()
                }
            };
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn utf8_targets_reach_the_canonicaliser() {
        // Valid UTF-8 passes here; `canon` refuses it (non-ASCII) with its own reason.
        let buf = "GET /é HTTP/1.1\r\n\r\n".as_bytes();
        let (h, _) = parse(buf, LIM).unwrap().unwrap();
        assert_eq!(target(buf, &h), "/é".as_bytes());
    }
}
