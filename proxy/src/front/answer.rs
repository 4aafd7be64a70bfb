//! Writing an answer: status line, headers, framing and body into one buffer, sent with one write.

use crate::decision_log::push_decimal;
use crate::relay::RelayedHead;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Response, StatusCode};
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Appends the answer to `out`: `resp`'s status, headers and body, then the header lines
/// `relayed` from the upstream (a forwarded answer's `resp` has no headers of its own). The
/// answer's own framing headers are replaced by the exact length of `body`, so the pod always gets
/// a self-consistent message. `head_request`: the request was HEAD, so no body is sent; a
/// forwarded answer then keeps the upstream's `Content-Length` if it is one plain number (the
/// length the GET body would have), and an answer with neither a length nor a body says nothing
/// about a length.
pub fn encode(
    resp: &Response<Bytes>,
    relayed: Option<&RelayedHead>,
    head_request: bool,
    persist: Persist,
    out: &mut Vec<u8>,
) {
    let status = resp.status();
    let body = resp.body();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // 1xx, 204 and 304 never carry a body or its length (RFC 9110 8.6, 15.3.5, 15.4.5).
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    for (name, value) in resp.headers() {
        if name == TRANSFER_ENCODING || name == CONNECTION || name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let (mut has_date, mut has_length) = (false, false);
    if let Some(r) = relayed {
        out.extend_from_slice(r.lines());
        has_date = r.has_date();
        // Only a HEAD answer relays the upstream's length (of the body it did not send).
        if let Some(l) = r.length().filter(|_| head_request && !bodiless) {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(l);
            out.extend_from_slice(b"\r\n");
            has_length = true;
        }
    }
    if !has_date && !resp.headers().contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        http_date(out);
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

thread_local! {
    /// The `Date` value of the current second, per thread: formatted once a second at most.
    static DATE_CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(out: &mut Vec<u8>) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, imf_fixdate(secs));
        }
        out.extend_from_slice(&c.1);
    });
}

/// `secs` since the Unix epoch as an IMF-fixdate (RFC 9110 5.6.7).
fn imf_fixdate(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut o = [0u8; 29];
    o[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    o[3..5].copy_from_slice(b", ");
    two(&mut o[5..7], d);
    o[7] = b' ';
    o[8..11].copy_from_slice(MONTHS[(m - 1) as usize]);
    o[11] = b' ';
    two(&mut o[12..14], y / 100);
    two(&mut o[14..16], y % 100);
    o[16] = b' ';
    two(&mut o[17..19], sod / 3600);
    o[19] = b':';
    two(&mut o[20..22], sod % 3600 / 60);
    o[22] = b':';
    two(&mut o[23..25], sod % 60);
    o[25..29].copy_from_slice(b" GMT");
    o
}

fn two(dst: &mut [u8], v: u64) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Days since 1970-01-01 -> (year, month 1-12, day 1-31); Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn text(
        resp: &Response<Bytes>,
        relayed: Option<&RelayedHead>,
        head: bool,
        p: Persist,
    ) -> String {
        let mut out = Vec::new();
        encode(resp, relayed, head, p, &mut out);
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
    fn local(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<Bytes> {
        let mut r = Response::new(Bytes::from_static(body.as_bytes()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (n, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    /// A forwarded answer as the pod-facing server gets it: status and body, the upstream's
    /// headers relayed.
    fn forwarded(
        status: u16,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> (Response<Bytes>, RelayedHead) {
        let parsed: Vec<_> = headers
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect();
        (local(status, &[], body), RelayedHead::from_parsed(&parsed))
    }

    fn fwd_text(
        status: u16,
        headers: &[(&str, &str)],
        body: &'static str,
        head: bool,
        p: Persist,
    ) -> String {
        let (r, relayed) = forwarded(status, headers, body);
        text(&r, Some(&relayed), head, p)
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
            text(&r, None, true, Persist::KeepAlive10),
            "HTTP/1.1 403 Forbidden\ncontent-length: 3\nconnection: keep-alive\n\n"
        );
        assert_eq!(
            text(&r, None, false, Persist::KeepAlive),
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
        let (r, relayed) = forwarded(200, &[("Date", "Sun, 06 Nov 1994 08:49:37 GMT")], "");
        let mut out = Vec::new();
        encode(&r, Some(&relayed), false, Persist::KeepAlive, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.matches("date: ").count(), 1);
        assert!(s.contains("date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
    }

    #[test]
    fn dates() {
        let cases = [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_798_761_599, "Thu, 31 Dec 2026 23:59:59 GMT"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
        ];
        for (secs, want) in cases {
            assert_eq!(std::str::from_utf8(&imf_fixdate(secs)).unwrap(), want);
        }
        // Agrees with httpdate (hyper's formatter) over a long stretch, one day and a bit apart.
        let mut s = 0u64;
        while s < 5_000_000_000 {
            let t = UNIX_EPOCH + std::time::Duration::from_secs(s);
            assert_eq!(
                std::str::from_utf8(&imf_fixdate(s)).unwrap(),
                httpdate::fmt_http_date(t),
                "{s}"
            );
            s += 86_400 + 3_607;
        }
    }
}
