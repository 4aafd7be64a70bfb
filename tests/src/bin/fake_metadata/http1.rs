//! A small, lenient HTTP/1.x request parser: it keeps every byte of the request line and header
//! names in their original case, so the record shows exactly what a proxy forwarded.

/// Largest request head accepted (request line + headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest body read and discarded; beyond it the connection is closed after the answer.
pub const MAX_BODY: usize = 1024 * 1024;

/// One request head as received.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    /// The request target, byte for byte.
    pub target: Vec<u8>,
    pub version: String,
    /// Header lines split at the first ':' (value trimmed of spaces and tabs), in order.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        metaguard_tests::fake::header(&self.headers, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Whether the connection stays open after the answer (HTTP/1.1 default, HTTP/1.0 opt-in).
    pub fn keep_alive(&self) -> bool {
        let conn = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect::<Vec<_>>();
        if conn.iter().any(|t| t == "close") {
            return false;
        }
        if self.version == "HTTP/1.1" {
            return true;
        }
        conn.iter().any(|t| t == "keep-alive")
    }
}

/// How the body after a head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    /// Framing we will not read (unknown transfer coding, conflicting lengths, oversized):
    /// answer and close.
    CloseAfter,
}

#[derive(Debug)]
pub enum ParsedHead {
    /// More bytes are needed.
    Incomplete,
    /// A head, and how many bytes of the buffer it used.
    Head(Head, usize),
    /// Not an HTTP request line; the bytes of the first line (or the whole head) are returned.
    Malformed(Vec<u8>),
}

fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    // Returns (end of head content, bytes consumed including the blank line). Accepts bare LF.
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses a request head at the start of `buf`.
pub fn parse_head(buf: &[u8]) -> ParsedHead {
    // Tolerate empty lines before a request (RFC 9112 section 2.2).
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") || buf[start..].starts_with(b"\n") {
        start += if buf[start] == b'\r' { 2 } else { 1 };
    }
    let Some((end, consumed)) = find_head_end(&buf[start..]) else {
        return ParsedHead::Incomplete;
    };
    let head = &buf[start..start + end];
    let consumed = start + consumed;
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return ParsedHead::Malformed(head.to_vec());
    };
    if method.is_empty() || target.is_empty() || !version.starts_with(b"HTTP/") {
        return ParsedHead::Malformed(head.to_vec());
    }
    let mut headers = Vec::new();
    for line in lines {
        match line.iter().position(|&b| b == b':') {
            Some(p) => {
                let value = lossy(&line[p + 1..]);
                headers.push((
                    lossy(&line[..p]),
                    value.trim_matches([' ', '\t']).to_string(),
                ));
            }
            // A header line without a colon: keep it, nameless, so the record shows it.
            None => headers.push((String::new(), lossy(line))),
        }
    }
    ParsedHead::Head(
        Head {
            method: lossy(method),
            target: target.to_vec(),
            version: lossy(version),
            headers,
        },
        consumed,
    )
}

/// The body framing of a request head.
pub fn framing(head: &Head) -> Framing {
    let te: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    if !te.is_empty() {
        let last = te
            .last()
            .and_then(|v| v.rsplit(',').next())
            .map(|s| s.trim().to_ascii_lowercase());
        return if last.as_deref() == Some("chunked") {
            Framing::Chunked
        } else {
            Framing::CloseAfter
        };
    }
    let cls: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    let Some(first) = cls.first() else {
        return Framing::None;
    };
    if cls.iter().any(|v| v != first) || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Framing::CloseAfter;
    }
    match first.parse::<usize>() {
        Ok(0) => Framing::None,
        Ok(n) if n <= MAX_BODY => Framing::Length(n),
        _ => Framing::CloseAfter,
    }
}

/// Result of looking for a whole chunked body at the start of `buf`.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    Incomplete,
    /// (bytes consumed, body length)
    Done(usize, usize),
    Invalid,
}

/// Finds the end of a chunked body (chunks, last chunk, trailers) at the start of `buf`.
pub fn chunked_body(buf: &[u8]) -> Chunked {
    let mut pos = 0;
    let mut body = 0usize;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return Chunked::Incomplete;
        };
        let line = trim_cr(&buf[pos..pos + nl]);
        let size_part = line.split(|&b| b == b';').next().unwrap_or_default();
        let Ok(size_str) = std::str::from_utf8(size_part) else {
            return Chunked::Invalid;
        };
        let Ok(size) = usize::from_str_radix(size_str.trim(), 16) else {
            return Chunked::Invalid;
        };
        pos += nl + 1;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
                    return Chunked::Incomplete;
                };
                let empty = trim_cr(&buf[pos..pos + nl]).is_empty();
                pos += nl + 1;
                if empty {
                    return Chunked::Done(pos, body);
                }
            }
        }
        body = match body.checked_add(size) {
            Some(b) if b <= MAX_BODY => b,
            _ => return Chunked::Invalid,
        };
        let need = pos + size;
        if buf.len() < need + 1 {
            return Chunked::Incomplete;
        }
        pos = need;
        if buf[pos..].starts_with(b"\r\n") {
            pos += 2;
        } else if buf[pos..].starts_with(b"\n") {
            pos += 1;
        } else if buf.len() < pos + 2 {
            return Chunked::Incomplete;
        } else {
            return Chunked::Invalid;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_keeping_bytes() {
        let raw =
            b"GET /latest/meta-data//a/../b%2F?x=1 HTTP/1.1\r\nHost: h\r\nX-Odd:  v \r\n\r\nrest";
        let ParsedHead::Head(h, n) = parse_head(raw) else {
            panic!("not a head")
        };
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, b"/latest/meta-data//a/../b%2F?x=1");
        assert_eq!(h.headers[1], ("X-Odd".to_string(), "v".to_string()));
        assert_eq!(&raw[n..], b"rest");
        assert!(h.keep_alive());
    }

    #[test]
    fn incomplete_and_malformed() {
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            ParsedHead::Incomplete
        ));
        assert!(matches!(
            parse_head(b"garbage\r\n\r\n"),
            ParsedHead::Malformed(..)
        ));
        assert!(matches!(
            parse_head(b"GET  / HTTP/1.1\r\n\r\n"),
            ParsedHead::Malformed(..)
        ));
    }

    #[test]
    fn framings() {
        let head = |hs: &[(&str, &str)]| Head {
            method: "PUT".into(),
            target: b"/".to_vec(),
            version: "HTTP/1.1".into(),
            headers: hs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        assert_eq!(framing(&head(&[])), Framing::None);
        assert_eq!(
            framing(&head(&[("Content-Length", "5")])),
            Framing::Length(5)
        );
        assert_eq!(
            framing(&head(&[("content-length", "5, 6")])),
            Framing::CloseAfter
        );
        assert_eq!(
            framing(&head(&[("Transfer-Encoding", "gzip, chunked")])),
            Framing::Chunked
        );
        assert_eq!(
            framing(&head(&[("Transfer-Encoding", "gzip")])),
            Framing::CloseAfter
        );
    }

    #[test]
    fn chunked() {
        assert_eq!(
            chunked_body(b"3\r\nabc\r\n0\r\n\r\nNEXT"),
            Chunked::Done(13, 3)
        );
        assert_eq!(chunked_body(b"3\r\nab"), Chunked::Incomplete);
        assert_eq!(chunked_body(b"zz\r\n"), Chunked::Invalid);
    }
}
