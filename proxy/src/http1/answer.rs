//! Writing an answer: status line, headers, framing and body into one buffer, sent with one write;
//! and whether the connection stays open after it.

use super::fmt::{push_decimal, push_http_date};
use super::relay::RelayedHead;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version};

/// An answer to one request: made by the proxy, or relayed from the upstream (or the answer
/// cache, which keeps relayed answers). Every answer is one buffer, written with its head.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Made here: a refusal, a deny, a fixed response, an upstream failure.
    Local {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// The upstream's status and body, its headers as relayed (see [`RelayedHead`]).
    Relayed {
        status: StatusCode,
        head: RelayedHead,
        body: Bytes,
    },
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Local { status, .. } | Answer::Relayed { status, .. } => *status,
        }
    }

    pub fn body(&self) -> &Bytes {
        match self {
            Answer::Local { body, .. } | Answer::Relayed { body, .. } => body,
        }
    }
}

/// How the connection goes on after this answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 default: nothing to say.
    KeepAlive,
    /// An HTTP/1.0 client that asked for keep-alive: say `connection: keep-alive`.
    KeepAlive10,
    /// Say `connection: close` and close after writing.
    Close,
}

/// Appends the answer to `out`: status line, a local answer's own headers or a relayed answer's
/// header lines, framing, body. A local answer's own framing headers are replaced by the exact
/// length of its body, so the pod always gets a self-consistent message. `head_request`: the request was HEAD, so no body is sent; a
/// forwarded answer then keeps the upstream's `Content-Length` if it is one plain number (the
/// length the GET body would have), and an answer with neither a length nor a body says nothing
/// about a length.
pub fn encode(answer: &Answer, head_request: bool, persist: Persist, out: &mut Vec<u8>) {
    let status = answer.status();
    let body = answer.body();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // 1xx, 204 and 304 never carry a body or its length (RFC 9110 8.6, 15.3.5, 15.4.5).
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut has_length = false;
    let has_date = match answer {
        Answer::Local { headers, .. } => {
            for (name, value) in headers {
                if name == TRANSFER_ENCODING || name == CONNECTION || name == CONTENT_LENGTH {
                    continue;
                }
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            headers.contains_key(DATE)
        }
        Answer::Relayed { head, .. } => {
            out.extend_from_slice(head.lines());
            // Only a HEAD answer relays the upstream's length (of the body it did not send).
            if let Some(l) = head.length().filter(|_| head_request && !bodiless) {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
                has_length = true;
            }
            head.has_date()
        }
    };
    if !has_date {
        out.extend_from_slice(b"date: ");
        push_http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    // A HEAD answer without a body or a relayed length says nothing about a length.
    let no_length = bodiless || has_length || (head_request && body.is_empty());
    if !no_length {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, u64::try_from(body.len()).unwrap_or(u64::MAX));
        out.extend_from_slice(b"\r\n");
    }
    match persist {
        Persist::KeepAlive => {}
        Persist::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persist::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    if !head_request && !bodiless {
        out.extend_from_slice(body);
    }
}

/// Whether the connection stays open after this request (RFC 9112 9.3): HTTP/1.1 unless it says
/// `close`; HTTP/1.0 only if it says `keep-alive`.
pub fn persistence(version: Version, headers: &HeaderMap) -> Persist {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn text(answer: &Answer, head: bool, p: Persist) -> String {
        let mut out = Vec::new();
        encode(answer, head, p, &mut out);
        let s = String::from_utf8(out).unwrap();
        // The Date line changes every second: check its shape, then drop it.
        let mut lines = Vec::new();
        for l in s.split("\r\n") {
            if let Some(d) = l.strip_prefix("date: ") {
                assert_eq!(d.len(), 29, "{d}");
                assert!(d.ends_with(" GMT"), "{d}");
                continue;
            }
            lines.push(l);
        }
        lines.join("\n")
    }

    /// A local answer: status, headers of its own, body.
    fn local(status: u16, headers: &[(&str, &str)], body: &'static str) -> Answer {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Answer::Local {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    /// A forwarded answer as the pod-facing server gets it: status and body, the upstream's
    /// headers relayed.
    fn forwarded(status: u16, headers: &[(&str, &str)], body: &'static str) -> Answer {
        let parsed: Vec<_> = headers
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect();
        Answer::Relayed {
            status: StatusCode::from_u16(status).unwrap(),
            head: RelayedHead::from_parsed(&parsed),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn fwd_text(
        status: u16,
        headers: &[(&str, &str)],
        body: &'static str,
        head: bool,
        p: Persist,
    ) -> String {
        text(&forwarded(status, headers, body), head, p)
    }

    #[test]
    fn framing() {
        let h = [("content-type", "text/plain"), ("content-length", "99")];
        assert_eq!(
            fwd_text(200, &h, "i-1", false, Persist::KeepAlive),
            "HTTP/1.1 200 OK\ncontent-type: text/plain\ncontent-length: 3\n\ni-1"
        );
        // HEAD: the relayed length, no body.
        assert_eq!(
            fwd_text(200, &h, "", true, Persist::Close),
            "HTTP/1.1 200 OK\ncontent-type: text/plain\ncontent-length: 99\nconnection: close\n\n"
        );
        // A local answer: its own length, whatever its headers say, for GET and HEAD.
        let r = local(
            403,
            &[
                ("transfer-encoding", "chunked"),
                ("connection", "x"),
                ("content-length", "9"),
            ],
            "no\n",
        );
        assert_eq!(
            text(&r, true, Persist::KeepAlive10),
            "HTTP/1.1 403 Forbidden\ncontent-length: 3\nconnection: keep-alive\n\n"
        );
        assert_eq!(
            text(&r, false, Persist::KeepAlive),
            "HTTP/1.1 403 Forbidden\ncontent-length: 3\n\nno\n"
        );
        // HEAD relayed without a length (the upstream chunked it): none is made up; a length
        // that is not one plain number is not relayed.
        assert_eq!(
            fwd_text(200, &[("etag", "1")], "", true, Persist::KeepAlive),
            "HTTP/1.1 200 OK\netag: 1\n\n"
        );
        assert_eq!(
            fwd_text(
                200,
                &[("content-length", "abc, 7"), ("content-length", "7")],
                "",
                true,
                Persist::KeepAlive
            ),
            "HTTP/1.1 200 OK\ncontent-length: 7\n\n"
        );
        for code in [204, 304] {
            for head in [false, true] {
                let h = [("content-length", "5"), ("etag", "\"x\"")];
                let t = fwd_text(code, &h, "", head, Persist::KeepAlive);
                assert!(!t.contains("content-length"), "{t}");
                assert!(t.ends_with("etag: \"x\"\n\n"), "{t}");
            }
        }
    }

    #[test]
    fn an_upstream_date_is_kept() {
        let r = forwarded(200, &[("Date", "Sun, 06 Nov 1994 08:49:37 GMT")], "");
        let mut out = Vec::new();
        encode(&r, false, Persist::KeepAlive, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.matches("date: ").count(), 1);
        assert!(s.contains("date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
    }

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
