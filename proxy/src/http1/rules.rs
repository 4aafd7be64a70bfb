//! Request framing and header rules, applied before policy (issue 3 item 5).
//!
//! Metadata requests carry no body, so every framing feature beyond "no body" is refused: that
//! removes the request-smuggling surface HTTP servers have had bugs in (multiple Transfer-Encoding, `+`
//! in Content-Length). Forwarding headers are refused with 403 because the clouds reject them
//! (AWS on the token PUT, GCP and Azure everywhere) and because a pod that sends them is trying
//! to look like someone else. The proxy itself never adds X-Forwarded-For, Forwarded or Via.

use crate::canon::Rejection;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// Hop-by-hop headers (RFC 9110 7.6.1 plus the legacy Keep-Alive/Proxy-Connection): never
/// forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// [`HOP_BY_HOP`] as header names (a test checks the two lists agree).
pub(super) static HOP_BY_HOP_NAMES: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is a hop-by-hop header (any case). Runs for every header of every relayed
/// answer: the length picks the one or two candidates (a test checks this agrees with
/// [`HOP_BY_HOP`]).
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    let candidates: &[&str] = match name.len() {
        2 => &["te"],
        7 => &["trailer", "upgrade"],
        10 => &["connection", "keep-alive"],
        16 => &["proxy-connection"],
        17 => &["transfer-encoding"],
        18 => &["proxy-authenticate"],
        19 => &["proxy-authorization"],
        _ => return false,
    };
    candidates.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Headers that claim the request was forwarded for someone else.
const FORWARDING: &[&str] = &["forwarded", "via", "x-real-ip", "x-forwarded-for"];

fn is_forwarding(name: &str) -> bool {
    FORWARDING.contains(&name) || name.starts_with("x-forwarded-")
}

/// The comma-separated tokens of every Connection header, lower-cased by the caller's compare.
pub(super) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Check a request's version, framing and headers. `Ok(())` means the request may go on to policy.
///
/// - HTTP/1.0 and HTTP/1.1 only (505 otherwise);
/// - `Transfer-Encoding` (any value) -> 400; more than one `Content-Length`, or one other than `0`
///   -> 400 (metadata requests have no bodies);
/// - `Upgrade`, `HTTP2-Settings` or `Connection: upgrade` (h2c included) -> 400;
/// - a `Connection` header naming anything but `close`, `keep-alive` or a hop-by-hop header
///   -> 400 (it would make the proxy drop an end-to-end header the policy already looked at);
/// - more than one `Host` -> 400; a non-ASCII Connection header -> 400;
/// - `Forwarded`, `Via`, `X-Real-IP`, `X-Forwarded-For` or any `X-Forwarded-*` -> 403
///   "forwarding headers are not accepted".
pub fn check_request_headers(version: Version, headers: &HeaderMap) -> Result<(), Rejection> {
    if version != Version::HTTP_11 && version != Version::HTTP_10 {
        return Err(Rejection {
            status: 505,
            reason: format!("{version:?} is not supported"),
        });
    }
    // One pass over the headers gathers what the checks below need: this runs on every request,
    // and a lookup by name per check cost more than the pass. The checks then run in a fixed
    // order, so a request with several problems always gets the same answer.
    let (mut te, mut upgrade, mut connection, mut forwarding) = (false, false, false, false);
    let (mut lengths, mut length_is_zero, mut hosts) = (0usize, true, 0usize);
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING {
            te = true;
        } else if *name == header::CONTENT_LENGTH {
            lengths += 1;
            length_is_zero &= value.as_bytes() == b"0";
        } else if *name == header::UPGRADE || name.as_str() == "http2-settings" {
            upgrade = true;
        } else if *name == header::CONNECTION {
            connection = true;
        } else if *name == header::HOST {
            hosts += 1;
        } else if is_forwarding(name.as_str()) {
            forwarding = true;
        }
    }
    if te {
        return Err(Rejection::bad_request(
            "Transfer-Encoding is not accepted (requests have no body)",
        ));
    }
    if lengths > 1 {
        return Err(Rejection::bad_request("several Content-Length headers"));
    }
    if !length_is_zero {
        return Err(Rejection::bad_request(
            "request bodies are not accepted (Content-Length must be 0)",
        ));
    }
    if upgrade {
        return Err(Rejection::bad_request("protocol upgrades are not accepted"));
    }
    if connection {
        for v in headers.get_all(header::CONNECTION) {
            if v.to_str().is_err() {
                return Err(Rejection::bad_request("malformed Connection header"));
            }
        }
        for token in connection_tokens(headers) {
            if token.eq_ignore_ascii_case("upgrade") || token.eq_ignore_ascii_case("http2-settings")
            {
                return Err(Rejection::bad_request("protocol upgrades are not accepted"));
            }
            let ok = token.eq_ignore_ascii_case("close")
                || HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h));
            if !ok {
                return Err(Rejection::bad_request(format!(
                    "Connection header names an end-to-end header ({token})"
                )));
            }
        }
    }
    if hosts > 1 {
        return Err(Rejection::bad_request("several Host headers"));
    }
    if forwarding {
        return Err(Rejection::forbidden("forwarding headers are not accepted"));
    }
    Ok(())
}

/// The pod's headers that go upstream (everything but Host, which the proxy sets,
/// and the hop-by-hop, forwarding and Expect headers), in order. Also what the answer cache keys
/// on, so the key and the forwarded request can never disagree.
pub fn forwarded(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    // Only a request with a Connection header can name other headers in it (and accepted
    // requests only name hop-by-hop ones, but the filter does not rely on that).
    let has_connection = headers.keys().any(|k| k == header::CONNECTION);
    headers.iter().filter(move |(name, _)| {
        !(HOP_BY_HOP_NAMES.contains(name)
            || *name == header::HOST
            || *name == header::EXPECT
            || is_forwarding(name.as_str())
            || (has_connection && named_in_connection(headers, name.as_str())))
    })
}

/// The headers to send upstream, written straight into an upstream request as `name: value`
/// lines: the request's headers without hop-by-hop headers, without any header named in
/// `Connection`, without `Expect` (no body is ever forwarded) and without forwarding headers
/// ([`forwarded`], in order), then `Host` set to `upstream_host`. Nothing is added besides Host.
/// (`reference::upstream_headers` builds the same as a map, for the tests.)
pub fn write_upstream_headers(headers: &HeaderMap, upstream_host: &str, out: &mut Vec<u8>) {
    write_lines(forwarded(headers), out);
    write_host(upstream_host, out);
}

/// The pod's IMDSv2 token header (and the name the node's token is sent under).
pub const IMDS_TOKEN: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token");

/// [`forwarded`] on EC2's metadata service when the proxy answers IMDSv2 per pod (`[aws]`):
/// without the pod's `X-aws-ec2-metadata-token`, which is the proxy's own and means nothing
/// upstream (and must not key the answer cache: the node's token fetches the same answer).
pub fn forwarded_imds(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    forwarded(headers).filter(|(n, _)| **n != IMDS_TOKEN)
}

/// [`write_upstream_headers`] for EC2's metadata service under `[aws]`: [`forwarded_imds`], then
/// the node's own token when the proxy holds one, then `Host`.
pub fn write_upstream_headers_imds(
    headers: &HeaderMap,
    upstream_host: &str,
    node_token: Option<&str>,
    out: &mut Vec<u8>,
) {
    write_lines(forwarded_imds(headers), out);
    if let Some(t) = node_token.filter(|t| t.bytes().all(valid_value_byte)) {
        out.extend_from_slice(b"x-aws-ec2-metadata-token: ");
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    write_host(upstream_host, out);
}

fn write_lines<'h>(
    lines: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
    out: &mut Vec<u8>,
) {
    for (name, value) in lines {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn write_host(upstream_host: &str, out: &mut Vec<u8>) {
    // The check `HeaderValue::from_str` makes, without its copy.
    if upstream_host.bytes().all(valid_value_byte) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(upstream_host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn named_in_connection(headers: &HeaderMap, name: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name))
}

/// What `http::HeaderValue::from_bytes` accepts.
pub(crate) fn valid_value_byte(b: u8) -> bool {
    (b >= 0x20 && b != 0x7f) || b == b'\t'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::reference::{filter_response_headers, upstream_headers};

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn hop_by_hop_lists_agree() {
        let names: Vec<&str> = HOP_BY_HOP_NAMES.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, HOP_BY_HOP);
        for h in HOP_BY_HOP {
            assert!(
                is_hop_by_hop(h) && is_hop_by_hop(&h.to_ascii_uppercase()),
                "{h}"
            );
        }
        for other in [
            "t",
            "tee",
            "trailers",
            "connections",
            "content-type",
            "date",
            "",
        ] {
            assert!(!is_hop_by_hop(other), "{other}");
        }
        // Every name of a hop-by-hop length that is not in the list (one byte changed) is not.
        for h in HOP_BY_HOP {
            for i in 0..h.len() {
                let mut b = h.as_bytes().to_vec();
                b[i] = b'x';
                let n = String::from_utf8(b).unwrap();
                assert_eq!(is_hop_by_hop(&n), HOP_BY_HOP.contains(&n.as_str()), "{n}");
            }
        }
    }

    type Case<'a> = (&'a [(&'a str, &'a str)], Result<(), u16>);

    fn check(pairs: &[(&str, &str)]) -> Result<(), u16> {
        check_request_headers(Version::HTTP_11, &map(pairs)).map_err(|r| r.status)
    }

    #[test]
    fn request_header_table() {
        let cases: &[Case<'_>] = &[
            (&[], Ok(())),
            (&[("host", "169.254.169.254")], Ok(())),
            (&[("content-length", "0")], Ok(())),
            (&[("connection", "close")], Ok(())),
            (&[("connection", "Keep-Alive")], Ok(())),
            (&[("connection", "keep-alive, close")], Ok(())),
            (&[("connection", "TE"), ("te", "trailers")], Ok(())),
            (&[("metadata-flavor", "Google")], Ok(())),
            (&[("x-aws-ec2-metadata-token-ttl-seconds", "21600")], Ok(())),
            (&[("transfer-encoding", "chunked")], Err(400)),
            (&[("transfer-encoding", "identity")], Err(400)),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "0")],
                Err(400),
            ),
            (
                &[("content-length", "0"), ("content-length", "0")],
                Err(400),
            ),
            (&[("content-length", "5")], Err(400)),
            (&[("content-length", "+0")], Err(400)),
            (&[("content-length", "00")], Err(400)),
            (&[("content-length", "0, 0")], Err(400)),
            (&[("upgrade", "h2c")], Err(400)),
            (
                &[("upgrade", "websocket"), ("connection", "Upgrade")],
                Err(400),
            ),
            (
                &[
                    ("connection", "Upgrade, HTTP2-Settings"),
                    ("http2-settings", "AAAA"),
                ],
                Err(400),
            ),
            (&[("http2-settings", "AAAA")], Err(400)),
            (&[("connection", "upgrade")], Err(400)),
            (
                &[
                    ("connection", "metadata-flavor"),
                    ("metadata-flavor", "Google"),
                ],
                Err(400),
            ),
            (&[("connection", "x-aws-ec2-metadata-token")], Err(400)),
            (&[("host", "a"), ("host", "b")], Err(400)),
            (&[("x-forwarded-for", "10.0.0.1")], Err(403)),
            (&[("X-Forwarded-Host", "x")], Err(403)),
            (&[("x-forwarded-proto", "http")], Err(403)),
            (&[("forwarded", "for=1.2.3.4")], Err(403)),
            (&[("via", "1.1 proxy")], Err(403)),
            (&[("x-real-ip", "1.2.3.4")], Err(403)),
        ];
        for (pairs, want) in cases {
            assert_eq!(&check(pairs), want, "headers {pairs:?}");
        }
    }

    #[test]
    fn versions() {
        let h = HeaderMap::new();
        assert!(check_request_headers(Version::HTTP_10, &h).is_ok());
        assert!(check_request_headers(Version::HTTP_11, &h).is_ok());
        for v in [Version::HTTP_09, Version::HTTP_2, Version::HTTP_3] {
            assert_eq!(check_request_headers(v, &h).unwrap_err().status, 505);
        }
    }

    #[test]
    fn forwarding_reason() {
        let r = check_request_headers(Version::HTTP_11, &map(&[("x-forwarded-for", "1.1.1.1")]))
            .unwrap_err();
        assert_eq!(r.reason, "forwarding headers are not accepted");
    }

    #[test]
    fn upstream_headers_drop_hop_by_hop_and_set_host() {
        let h = map(&[
            ("host", "evil.example"),
            ("connection", "keep-alive, x-drop-me"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("upgrade", "h2c"),
            ("x-drop-me", "1"),
            ("expect", "100-continue"),
            ("x-forwarded-for", "1.2.3.4"),
            ("metadata-flavor", "Google"),
            ("x-aws-ec2-metadata-token", "tok"),
            ("accept", "a"),
            ("accept", "b"),
        ]);
        let out = upstream_headers(&h, "169.254.169.254");
        assert_eq!(out.get("host").unwrap(), "169.254.169.254");
        assert_eq!(out.get_all("host").iter().count(), 1);
        for gone in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "te",
            "trailer",
            "upgrade",
            "x-drop-me",
            "expect",
            "x-forwarded-for",
            "forwarded",
            "via",
        ] {
            assert!(!out.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(out.get("metadata-flavor").unwrap(), "Google");
        assert_eq!(out.get("x-aws-ec2-metadata-token").unwrap(), "tok");
        assert_eq!(out.get_all("accept").iter().count(), 2);
        assert_eq!(out.keys_len(), 4);
        // The direct writer sends exactly the map's lines, in its order.
        let mut lines = Vec::new();
        for (n, v) in &out {
            lines.extend_from_slice(format!("{n}: ").as_bytes());
            lines.extend_from_slice(v.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        let mut direct = Vec::new();
        write_upstream_headers(&h, "169.254.169.254", &mut direct);
        assert_eq!(
            String::from_utf8(direct).unwrap(),
            String::from_utf8(lines).unwrap()
        );
        // Without a Connection header nothing is dropped for being named in one.
        let plain = map(&[("x-drop-me", "1"), ("host", "h")]);
        let mut direct = Vec::new();
        write_upstream_headers(&plain, "[fd00:ec2::254]", &mut direct);
        assert_eq!(direct, b"x-drop-me: 1\r\nhost: [fd00:ec2::254]\r\n");
    }

    #[test]
    fn response_headers_filtered() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("content-type", "text/plain"),
            ("metadata-flavor", "Google"),
        ]);
        filter_response_headers(&mut h);
        assert_eq!(h.keys_len(), 2);
        assert!(h.contains_key("content-type"));
        assert!(h.contains_key("metadata-flavor"));
    }
}
