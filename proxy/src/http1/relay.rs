//! What the pod gets of an upstream answer's head, built straight from the parsed response.
//!
//! Every end-to-end header, in the upstream's order, with its name lower-cased. Dropped: the
//! hop-by-hop headers, any header the answer's `Connection` names, and `Content-Length` (the
//! pod-facing server frames what it sends by the exact length of the body). This is
//! `reference::filter_response_headers` applied to a header map, without the map: the lines
//! are written once from the parser's slices into one buffer, which the answer cache can share.
//! A map cost an allocation per value and more instructions than the rest of the relay (a test
//! and the `headers` fuzz check compare the lines with the filtered map's).

use super::rules::is_hop_by_hop;
#[cfg(test)]
use super::rules::valid_value_byte;
use bytes::Bytes;
use std::cell::RefCell;

thread_local! {
    /// Where a head's lines are assembled before they get their own allocation.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An upstream answer's relayed headers (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayedHead {
    /// The `name: value\r\n` lines, then (from `lines_end`) the relayed length's digits if any.
    buf: Bytes,
    lines_end: usize,
    date: bool,
}

impl RelayedHead {
    /// Builds the relayed head from a response's headers as httparse parsed them: its strict
    /// defaults take only token names and values of tab, visible ASCII and obs-text bytes, the
    /// same sets `http::HeaderName` and `HeaderValue` accept
    /// (`httparse_takes_only_what_a_header_map_takes` below), so nothing is checked again here.
    pub fn from_parsed(headers: &[httparse::Header<'_>]) -> RelayedHead {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                Self::build(headers, &mut scratch)
            }
            // Never re-entered; but a fresh buffer is always correct.
            Err(_) => Self::build(headers, &mut Vec::new()),
        })
    }

    /// Writes the lines into `buf`, then copies them into an allocation of their exact size (a
    /// buffer with spare room would become a shared `Bytes`: one allocation more per answer).
    fn build(headers: &[httparse::Header<'_>], buf: &mut Vec<u8>) -> RelayedHead {
        // The names the answer's Connection headers list, gathered once (usually none, and then
        // nothing is allocated): checking every header against every token afresh would make a
        // hostile upstream's answer cost headers x tokens.
        let mut named: Vec<&str> = connection_tokens(headers).collect();
        named.sort_unstable();
        named.dedup();
        let mut date = false;
        let mut length: Option<&[u8]> = None;
        buf.reserve(
            headers
                .iter()
                .map(|h| h.name.len() + h.value.len() + 4)
                .sum(),
        );
        for h in headers {
            let name = h.name.as_bytes();
            let k = kind(h.name);
            if matches!(k, Kind::HopByHop | Kind::Connection)
                || named.iter().any(|t| t.eq_ignore_ascii_case(h.name))
            {
                continue;
            }
            // httparse's strict defaults never let a line break into a value (see from_parsed).
            debug_assert!(!h.value.iter().any(|&b| b == b'\r' || b == b'\n'));
            if k == Kind::ContentLength {
                // Relayed only in answer to HEAD (the length of the body not sent), and only the
                // first one that is one plain number.
                let plain = !h.value.is_empty() && h.value.iter().all(u8::is_ascii_digit);
                if plain && length.is_none() {
                    length = Some(h.value);
                }
                continue;
            }
            date |= k == Kind::Date;
            let at = buf.len();
            buf.extend_from_slice(name);
            if let Some(n) = buf.get_mut(at..) {
                n.make_ascii_lowercase();
            }
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(h.value);
            buf.extend_from_slice(b"\r\n");
        }
        let lines_end = buf.len();
        if let Some(l) = length {
            buf.extend_from_slice(l);
        }
        RelayedHead {
            buf: Bytes::copy_from_slice(buf),
            lines_end,
            date,
        }
    }

    /// The relayed header lines, each ending in CRLF.
    pub fn lines(&self) -> &[u8] {
        self.buf.get(..self.lines_end).unwrap_or_default()
    }

    /// Whether the lines include a `Date` (the server adds its own otherwise).
    pub fn has_date(&self) -> bool {
        self.date
    }

    /// The upstream's `Content-Length` digits, for a HEAD answer.
    pub fn length(&self) -> Option<&[u8]> {
        self.buf.get(self.lines_end..).filter(|l| !l.is_empty())
    }

    /// Bytes held (for the answer cache's budget).
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }
}

/// A header value as text, by `http::HeaderValue::to_str`'s rule (visible ASCII, space, tab).
pub fn visible_str(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// The comma-separated tokens of every `name` header; a value that is not visible ASCII has
/// none (as a header map's `to_str` gives none).
pub fn tokens<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| visible_str(h.value).unwrap_or("").split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn connection_tokens<'a>(headers: &'a [httparse::Header<'a>]) -> impl Iterator<Item = &'a str> {
    tokens(headers, "connection")
}

/// What the relay needs to know of a header's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    /// Any other hop-by-hop header.
    HopByHop,
    ContentLength,
    Date,
    Other,
}

/// One look at the name (by its length first) instead of a comparison per rule.
fn kind(name: &str) -> Kind {
    match name.len() {
        4 if name.eq_ignore_ascii_case("date") => Kind::Date,
        10 if name.eq_ignore_ascii_case("connection") => Kind::Connection,
        14 if name.eq_ignore_ascii_case("content-length") => Kind::ContentLength,
        _ if is_hop_by_hop(name) => Kind::HopByHop,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::reference::filter_response_headers;
    use http::{HeaderMap, HeaderName, HeaderValue};

    fn parsed<'a>(pairs: &'a [(&'a str, &'a [u8])]) -> Vec<httparse::Header<'a>> {
        pairs
            .iter()
            .map(|(n, v)| httparse::Header { name: n, value: v })
            .collect()
    }

    /// The map the relay replaces: every header, then `filter_response_headers`.
    fn oracle(pairs: &[(&str, &[u8])]) -> Option<HeaderMap> {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_bytes(v).ok()?,
            );
        }
        filter_response_headers(&mut m);
        Some(m)
    }

    #[test]
    fn end_to_end_headers_are_relayed_in_order_lower_cased() {
        let pairs: &[(&str, &[u8])] = &[
            ("Content-Type", b"text/plain"),
            ("Connection", b"close, X-Secret"),
            ("X-Secret", b"1"),
            ("Transfer-Encoding", b"chunked"),
            ("Keep-Alive", b"timeout=5"),
            ("Content-Length", b"12"),
            ("Metadata-Flavor", b"Google"),
            ("Content-Length", b"13"),
        ];
        let r = RelayedHead::from_parsed(&parsed(pairs));
        assert_eq!(
            r.lines(),
            b"content-type: text/plain\r\nmetadata-flavor: Google\r\n"
        );
        assert_eq!(r.length(), Some(&b"12"[..]));
        assert!(!r.has_date());
        assert_eq!(r.byte_len(), r.lines().len() + 2);
    }

    #[test]
    fn date_and_lengths() {
        let r = RelayedHead::from_parsed(&parsed(&[
            ("content-length", b"1, 1"),
            ("content-length", b"007"),
            ("Date", b"Fri, 27 Nov 2026 21:00:00 GMT"),
        ]));
        assert_eq!(r.length(), Some(&b"007"[..]));
        assert!(r.has_date());
        // A Connection header that names Date or Content-Length removes them too.
        let r = RelayedHead::from_parsed(&parsed(&[
            ("connection", b"date, content-length"),
            ("content-length", b"4"),
            ("date", b"x"),
        ]));
        assert_eq!(
            (r.lines(), r.length(), r.has_date()),
            (&b""[..], None, false)
        );
        assert_eq!(RelayedHead::default().lines(), b"");
    }

    #[test]
    fn httparse_takes_only_what_a_header_map_takes() {
        // Every byte in a name, and at several places of a value long enough for httparse's
        // vectorised paths: whatever the upstream client's parser (the same strict defaults as
        // `response::parse_head`) lets through, `http`'s types take as well, and no value holds a
        // line break. The relay relies on it.
        let parse = |head: &[u8]| -> Option<(String, Vec<u8>)> {
            let mut slots = [httparse::EMPTY_HEADER; 4];
            let mut r = httparse::Response::new(&mut slots);
            match httparse::ParserConfig::default().parse_response(&mut r, head) {
                Ok(httparse::Status::Complete(_)) => {
                    let h = r.headers.first()?;
                    Some((h.name.to_string(), h.value.to_vec()))
                }
                _ => None,
            }
        };
        let (mut names, mut values) = (0, 0);
        for b in 0..=255u8 {
            let mut name = b"HTTP/1.1 200 OK\r\nx".to_vec();
            name.extend_from_slice(&[b, b':', b' ', b'1', b'\r', b'\n', b'\r', b'\n']);
            if let Some((n, _)) = parse(&name) {
                assert!(
                    HeaderName::from_bytes(n.as_bytes()).is_ok(),
                    "name byte {b}"
                );
                names += 1;
            }
            for at in [0, 1, 15, 16, 31, 32, 47, 63, 70] {
                let mut v = vec![b'a'; 72];
                v[at] = b;
                let mut value = b"HTTP/1.1 200 OK\r\nx-a: ".to_vec();
                value.extend_from_slice(&v);
                value.extend_from_slice(b"\r\n\r\n");
                if let Some((_, got)) = parse(&value) {
                    assert!(
                        HeaderValue::from_bytes(&got).is_ok(),
                        "value byte {b} at {at}"
                    );
                    assert!(
                        !got.contains(&b'\r') && !got.contains(&b'\n'),
                        "{b} at {at}"
                    );
                    assert!(valid_value_byte(b), "value byte {b} at {at}");
                    values += 1;
                }
            }
        }
        // Not vacuous: token names and visible values do parse.
        assert!(names > 70 && values > 1500, "{names} {values}");
    }

    #[test]
    fn a_long_connection_list_drops_what_it_names() {
        // 100 headers and a 56 KB list naming one of them 8,000 times (the relay checks each header
        // against the list's distinct names only).
        let list = vec!["x-drop"; 8_000].join(",");
        let mut pairs: Vec<(&str, &[u8])> = vec![("Connection", list.as_bytes())];
        pairs.extend(std::iter::repeat_n(("X-Drop", &b"1"[..]), 49));
        pairs.extend(std::iter::repeat_n(("X-Keep", &b"2"[..]), 50));
        let r = RelayedHead::from_parsed(&parsed(&pairs));
        assert_eq!(r.lines(), "x-keep: 2\r\n".repeat(50).as_bytes());
    }

    #[test]
    fn kinds() {
        for (n, k) in [
            ("Date", Kind::Date),
            ("CONNECTION", Kind::Connection),
            ("content-Length", Kind::ContentLength),
            ("Keep-Alive", Kind::HopByHop),
            ("te", Kind::HopByHop),
            ("dates", Kind::Other),
            ("content-type", Kind::Other),
        ] {
            assert_eq!(kind(n), k, "{n}");
        }
    }

    #[test]
    fn tokens_follow_to_str() {
        let hs = parsed(&[
            ("Connection", b" close ,, Keep-Alive"),
            ("connection", b"x\xe9"),
            ("Transfer-Encoding", b"gzip"),
        ]);
        assert_eq!(
            tokens(&hs, "connection").collect::<Vec<_>>(),
            vec!["close", "Keep-Alive"]
        );
        assert_eq!(visible_str(b"a\tb ~"), Some("a\tb ~"));
        assert_eq!(visible_str(b"a\x7f"), None);
    }

    #[test]
    fn relay_agrees_with_the_filtered_map() {
        // Names and values drawn from a small alphabet that hits every rule, in every order.
        let names = [
            "Content-Type",
            "connection",
            "X-Named",
            "keep-alive",
            "Content-Length",
            "date",
            "TE",
            "x-other",
        ];
        let values: [&[u8]; 6] = [b"x-named", b"close, X-NAMED", b"5", b"", b"date", b"a\xe9"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut pairs: Vec<(&str, &[u8])> = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut s = seed;
            for _ in 0..(s % 6) {
                s /= 6;
                let n = names[(s % names.len() as u64) as usize];
                s /= names.len() as u64;
                let v = values[(s % values.len() as u64) as usize];
                s /= values.len() as u64;
                pairs.push((n, v));
            }
            let relayed = RelayedHead::from_parsed(&parsed(&pairs));
            let map = oracle(&pairs).unwrap();
            let mut want = Vec::new();
            for (n, v) in &map {
                if n != http::header::CONTENT_LENGTH {
                    want.extend_from_slice(n.as_str().as_bytes());
                    want.extend_from_slice(b": ");
                    want.extend_from_slice(v.as_bytes());
                    want.extend_from_slice(b"\r\n");
                }
            }
            // The map groups values by name; the relay keeps the upstream's order (a map's
            // values of one name keep theirs). Compare the lines as multisets.
            let mut got_lines: Vec<&[u8]> =
                relayed.lines().split_inclusive(|&b| b == b'\n').collect();
            let mut want_lines: Vec<&[u8]> = want.split_inclusive(|&b| b == b'\n').collect();
            got_lines.sort();
            want_lines.sort();
            assert_eq!(got_lines, want_lines, "{pairs:?}");
            assert_eq!(
                relayed.has_date(),
                map.contains_key(http::header::DATE),
                "{pairs:?}"
            );
            let first_plain = map
                .get_all(http::header::CONTENT_LENGTH)
                .iter()
                .map(|v| v.as_bytes())
                .find(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit));
            assert_eq!(relayed.length(), first_plain, "{pairs:?}");
        }
    }
}
