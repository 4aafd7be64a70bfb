//! Canonicalisation of the request target, before any policy matching.
//!
//! Earlier metadata proxies matched on the raw path and forwarded something else
//! (`.../external-ip/../../attributes/kube-env`, `attributes//kube-env`). Here the rule is the
//! opposite: a target that could be read two ways is refused with 400, and what is accepted is
//! forwarded byte for byte as it was matched ([`CanonicalTarget::forward_target`]).
//!
//! Accepted paths are origin-form (`/...`), ASCII, with no percent-encoding at all, no dot
//! segments, no empty segments (except that a single trailing `/` is allowed and significant) and
//! none of `\ ; #`. Query strings are split on `&` only, each key is percent-decoded exactly once
//! and must then be a plain printable ASCII word; duplicate keys (compared case-insensitively) are
//! refused because servers disagree on which one wins.
//!
//! The pod-facing server hands over the raw target ([`canonicalize_str`]), which refuses `#`.
//! [`canonicalize`] takes an `http::Uri` instead, which silently drops a `#fragment`; the bytes that
//! remain are still checked and forwarded exactly, so the fragment cannot smuggle anything.

use http::{Method, Uri};
use std::fmt;

/// Longest path accepted (bytes). Real metadata paths are well under 300 bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Most path segments accepted; also bounds the cost of `**` glob matching.
pub const MAX_PATH_SEGMENTS: usize = 64;
/// Longest query string accepted (bytes).
pub const MAX_QUERY_LEN: usize = 2048;
/// Most query parameters accepted.
pub const MAX_QUERY_KEYS: usize = 32;

/// A request target that passed every check. The proxy matches policy on it and forwards exactly
/// [`CanonicalTarget::forward_target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalTarget<'a> {
    /// The path, starting with `/`, exactly as received (it contains nothing that needs decoding):
    /// a slice of the request target, so canonicalising copies nothing.
    pub path: &'a str,
    /// The raw query string after `?` (values untouched), or `None` when there is none or it was
    /// empty (`/x?` is forwarded as `/x`).
    pub raw_query: Option<&'a str>,
    /// Each query key percent-decoded exactly once, in request order; no duplicates (ignoring case).
    pub query_keys: Vec<String>,
}

impl CanonicalTarget<'_> {
    /// The request target to send upstream: `path` plus `?raw_query` when there is a query.
    pub fn forward_target(&self) -> String {
        match &self.raw_query {
            Some(q) => {
                let mut s = String::with_capacity(self.path.len() + 1 + q.len());
                s.push_str(self.path);
                s.push('?');
                s.push_str(q);
                s
            }
            None => self.path.to_owned(),
        }
    }

    /// Whether a query key equal to `k` ignoring ASCII case is present (after the single decoding).
    /// This is how `recursive` is caught whatever its case, value or encoding.
    pub fn has_query_key_ci(&self, k: &str) -> bool {
        self.query_keys.iter().any(|q| q.eq_ignore_ascii_case(k))
    }

    /// Whether a query key equal to `k` (exact case) is present.
    pub fn has_query_key(&self, k: &str) -> bool {
        self.query_keys.iter().any(|q| q == k)
    }
}

/// Why a request was refused before policy: 400 for ambiguous or malformed, 403 for forbidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
}

impl Rejection {
    /// A 400 Bad Request with `reason`.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Rejection {
            status: 400,
            reason: reason.into(),
        }
    }

    /// A 403 Forbidden with `reason`.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Rejection {
            status: 403,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for Rejection {}

/// Canonicalise a request target parsed into an `http::Uri` (for callers that have one; the
/// proxy itself uses [`canonicalize_str`], and tests and the `canon` fuzz target check that both
/// agree). Only origin-form targets are accepted; CONNECT and TRACE are refused whatever the
/// target.
pub fn canonicalize<'u>(method: &Method, uri: &'u Uri) -> Result<CanonicalTarget<'u>, Rejection> {
    check_method(method)?;
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(Rejection::bad_request(
            "only origin-form request targets are accepted (absolute-form or authority-form given)",
        ));
    }
    let target = match uri.path_and_query() {
        Some(pq) => pq.as_str(),
        None => return Err(Rejection::bad_request("empty request target")),
    };
    canonicalize_target(target)
}

/// Canonicalise a raw request-target string (the bytes after the method on the request line):
/// what the pipeline calls for every request. Unlike `Uri`, this refuses `#`. The result borrows
/// `target`.
pub fn canonicalize_str<'t>(
    method: &Method,
    target: &'t str,
) -> Result<CanonicalTarget<'t>, Rejection> {
    check_method(method)?;
    canonicalize_target(target)
}

fn check_method(method: &Method) -> Result<(), Rejection> {
    if method == Method::CONNECT || method == Method::TRACE {
        return Err(Rejection::bad_request(format!(
            "method {method} is not accepted"
        )));
    }
    Ok(())
}

fn canonicalize_target(target: &str) -> Result<CanonicalTarget<'_>, Rejection> {
    if target == "*" {
        return Err(Rejection::bad_request(
            "asterisk-form request target is not accepted",
        ));
    }
    if !target.starts_with('/') {
        return Err(Rejection::bad_request(
            "request target must be origin-form (start with /)",
        ));
    }
    let path_len = check_path(target.as_bytes())?;
    let (path, query) = match target.get(path_len..) {
        Some(rest) if !rest.is_empty() => (&target[..path_len], Some(&rest[1..])),
        _ => (target, None),
    };
    let (raw_query, query_keys) = match query {
        None | Some("") => (None, Vec::new()),
        Some(q) => (Some(q), query_keys(q)?),
    };
    Ok(CanonicalTarget {
        path,
        raw_query,
        query_keys,
    })
}

/// Bytes allowed in a path: RFC 3986 pchar without percent-encoding and without `;`, plus `/`.
pub(crate) fn is_path_byte(b: u8) -> bool {
    PATH_BYTES[usize::from(b)]
}

/// [`is_path_byte`] as a table: the check runs on every byte of every request's path.
static PATH_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            );
        i += 1;
    }
    t
};

/// Checks the path at the start of `target` (which starts with `/`) and returns its length (the
/// index of the `?` that starts the query, or the whole length). One pass over the bytes, since
/// this runs on every request; the reported problem is the same as checking in turn the length,
/// then every byte, then every segment: too long, else the first bad byte, else the first bad
/// segment.
fn check_path(target: &[u8]) -> Result<usize, Rejection> {
    let mut bad_byte: Option<u8> = None;
    let mut bad_segment: Option<&'static str> = None;
    let mut count = 0usize;
    // The segment being read starts after the leading '/'.
    let mut seg_start = 1;
    let mut i = 1;
    let path_len = loop {
        // Plain path bytes (nearly all of them) in a tight loop; stop at anything else.
        while i < target.len() && PATH_CLASS[usize::from(target[i])] == PLAIN {
            i += 1;
        }
        let class = match target.get(i) {
            None => QUERY,
            Some(&c) => PATH_CLASS[usize::from(c)],
        };
        if class == BAD {
            if bad_byte.is_none() {
                bad_byte = target.get(i).copied();
            }
            i += 1;
            continue;
        }
        // A segment ends at i: a '/', or the end of the path ('?' or the end of the target).
        let end = class == QUERY;
        count += 1;
        if bad_segment.is_none() {
            bad_segment = match &target[seg_start..i] {
                _ if count > MAX_PATH_SEGMENTS => Some("too many path segments"),
                b"." | b".." => Some("dot segment in path"),
                // A single trailing slash is fine; an empty segment anywhere else is `//`.
                b"" if !end => Some("empty segment in path"),
                _ => None,
            };
        }
        if end {
            break i;
        }
        i += 1;
        seg_start = i;
    };
    if path_len > MAX_PATH_LEN {
        return Err(Rejection::bad_request("path too long"));
    }
    if let Some(c) = bad_byte {
        return Err(Rejection::bad_request(path_byte_problem(c)));
    }
    match bad_segment {
        Some(why) => Err(Rejection::bad_request(why)),
        None => Ok(path_len),
    }
}

/// Byte classes for [`check_path`].
const PLAIN: u8 = 0;
const SLASH: u8 = 1;
const QUERY: u8 = 2;
const BAD: u8 = 3;

static PATH_CLASS: [u8; 256] = {
    let mut t = [BAD; 256];
    let mut i = 0;
    while i < 256 {
        if PATH_BYTES[i] {
            t[i] = PLAIN;
        }
        i += 1;
    }
    t[b'/' as usize] = SLASH;
    t[b'?' as usize] = QUERY;
    t
};

/// Why `b` (not a path byte) is refused.
fn path_byte_problem(b: u8) -> &'static str {
    match b {
        b'%' => "percent-encoding is not accepted in paths",
        b'\\' => "backslash in path",
        b';' => "';' in path",
        b'#' => "fragment in request target",
        b' ' => "space in path",
        0x00..=0x1f | 0x7f => "control byte in path",
        0x80..=0xff => "non-ASCII byte in path",
        _ => "character not accepted in path",
    }
}

/// Bytes allowed raw in a query: RFC 3986 query chars without `;` and `#`, with `%` (checked below).
fn is_query_byte(b: u8) -> bool {
    (is_path_byte(b) || b == b'?' || b == b'%') && b != b';'
}

fn query_keys(q: &str) -> Result<Vec<String>, Rejection> {
    if q.len() > MAX_QUERY_LEN {
        return Err(Rejection::bad_request("query too long"));
    }
    for &b in q.as_bytes() {
        if is_query_byte(b) {
            continue;
        }
        let what = match b {
            b';' => "';' in query",
            b'#' => "fragment in request target",
            b' ' => "space in query",
            0x00..=0x1f | 0x7f => "control byte in query",
            0x80..=0xff => "non-ASCII byte in query",
            _ => "character not accepted in query",
        };
        return Err(Rejection::bad_request(what));
    }
    let mut keys: Vec<String> = Vec::new();
    for param in q.split('&') {
        if keys.len() >= MAX_QUERY_KEYS {
            return Err(Rejection::bad_request("too many query parameters"));
        }
        let raw_key = match param.find('=') {
            Some(i) => &param[..i],
            None => param,
        };
        if raw_key.is_empty() {
            return Err(Rejection::bad_request("empty query parameter name"));
        }
        // Values are not interpreted by the policy, but a malformed escape in them would be read
        // differently by different servers.
        if let Some(value) = param.get(raw_key.len() + 1..) {
            check_escapes(value)?;
        }
        let key = decode_key(raw_key)?;
        if keys.iter().any(|k| k.eq_ignore_ascii_case(&key)) {
            return Err(Rejection::bad_request(format!(
                "duplicate query parameter {key:?}"
            )));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Every `%` must start a well-formed `%XX` escape.
fn check_escapes(s: &str) -> Result<(), Rejection> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (
                b.get(i + 1).and_then(|&x| hex(x)),
                b.get(i + 2).and_then(|&x| hex(x)),
            ) {
                (Some(_), Some(_)) => i += 3,
                _ => {
                    return Err(Rejection::bad_request(
                        "malformed percent-encoding in query",
                    ))
                }
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Decode a query key exactly once (`+` stays `+`). The result must be printable ASCII without
/// `%` (which would mean double encoding), space, `=` or `&`.
fn decode_key(raw: &str) -> Result<String, Rejection> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (
                b.get(i + 1).and_then(|&x| hex(x)),
                b.get(i + 2).and_then(|&x| hex(x)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    return Err(Rejection::bad_request(
                        "malformed percent-encoding in query",
                    ))
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    for &c in &out {
        let bad = match c {
            b'%' => Some("query parameter name still percent-encoded after decoding"),
            0x00..=0x1f | 0x7f => Some("control byte in query parameter name"),
            0x80..=0xff => Some("non-ASCII byte in query parameter name"),
            b' ' | b'=' | b'&' | b';' | b'#' => {
                Some("character not accepted in query parameter name")
            }
            _ => None,
        };
        if let Some(reason) = bad {
            return Err(Rejection::bad_request(reason));
        }
    }
    // Every byte is printable ASCII now, so this cannot fail; map the error anyway (no panics).
    String::from_utf8(out).map_err(|_| Rejection::bad_request("query parameter name is not ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path check as it was written before it became one pass (split at `?`, then length,
    /// bytes, segments): the reference the fast check must agree with.
    fn reference_path_check(target: &str) -> Result<usize, Rejection> {
        let path = match target.find('?') {
            Some(i) => &target[..i],
            None => target,
        };
        if path.len() > MAX_PATH_LEN {
            return Err(Rejection::bad_request("path too long"));
        }
        if let Some(c) = path.bytes().find(|&c| !is_path_byte(c)) {
            return Err(Rejection::bad_request(path_byte_problem(c)));
        }
        let mut segs = path[1..].split('/').peekable();
        let mut count = 0;
        while let Some(seg) = segs.next() {
            count += 1;
            if count > MAX_PATH_SEGMENTS {
                return Err(Rejection::bad_request("too many path segments"));
            }
            match seg {
                "." | ".." => return Err(Rejection::bad_request("dot segment in path")),
                "" if segs.peek().is_some() => {
                    return Err(Rejection::bad_request("empty segment in path"))
                }
                _ => {}
            }
        }
        Ok(path.len())
    }

    #[test]
    fn one_pass_path_check_agrees_with_the_reference() {
        const ALPHABET: &[u8] = b"a/.?%; ";
        let mut checked = 0;
        let mut target = Vec::new();
        // Every target of up to 6 bytes after the leading '/' over an alphabet that hits every
        // branch: plain, separator, dot, query start, and bytes refused for different reasons.
        for len in 0..=6u32 {
            for n in 0..ALPHABET.len().pow(len) {
                target.clear();
                target.push(b'/');
                let mut k = n;
                for _ in 0..len {
                    target.push(ALPHABET[k % ALPHABET.len()]);
                    k /= ALPHABET.len();
                }
                let t = std::str::from_utf8(&target).unwrap();
                assert_eq!(check_path(&target), reference_path_check(t), "{t:?}");
                checked += 1;
            }
        }
        assert!(checked > 100_000);
        // Limits: length and segment count, alone and against other problems.
        let many = "/a".repeat(MAX_PATH_SEGMENTS + 1);
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        let long_bad = format!("/%{}", "a".repeat(MAX_PATH_LEN));
        let many_dots = format!("{}/..", "/a".repeat(MAX_PATH_SEGMENTS));
        for t in [
            many.as_str(),
            &many[..many.len() - 2],
            long.as_str(),
            &long[..long.len() - 1],
            long_bad.as_str(),
            many_dots.as_str(),
            "/a/../b%",
            "/x?/../%",
            "/é/..",
            "/a\u{1}?x",
            "/a#b/./",
            "/a\\b/..",
            "/\u{7f}//",
            "/a/?",
            "//?",
        ] {
            assert_eq!(check_path(t.as_bytes()), reference_path_check(t), "{t:?}");
        }
    }

    /// Expected outcome: `Ok((forwarded target, decoded keys))` or `Err(status)`.
    type Want = Result<(&'static str, &'static [&'static str]), u16>;

    fn run_str(target: &str) -> Result<CanonicalTarget<'_>, Rejection> {
        canonicalize_str(&Method::GET, target)
    }

    /// Through `http::Uri`, when it parses at all: the forwarded target and keys, or the refusal.
    fn run_uri(target: &str) -> Option<Result<(String, Vec<String>), Rejection>> {
        let uri: Uri = target.parse().ok()?;
        Some(canonicalize(&Method::GET, &uri).map(|t| (t.forward_target(), t.query_keys)))
    }

    fn check(target: &str, want: &Want) {
        let got = run_str(target);
        match (want, &got) {
            (Ok((fwd, keys)), Ok(t)) => {
                assert_eq!(t.forward_target(), *fwd, "{target:?} forwarded");
                assert_eq!(&t.query_keys, keys, "{target:?} keys");
            }
            (Err(status), Err(r)) => assert_eq!(r.status, *status, "{target:?}: {}", r.reason),
            _ => panic!("{target:?}: want {want:?}, got {got:?}"),
        }
        // Whatever http::Uri accepts must get the same answer through `canonicalize`, except
        // that Uri silently drops a fragment (then the remainder is judged on its own).
        if !target.contains('#') {
            if let Some(via_uri) = run_uri(target) {
                assert_eq!(
                    via_uri.is_ok(),
                    got.is_ok(),
                    "{target:?} via Uri: {via_uri:?}"
                );
                if let (Ok((fwd, keys)), Ok(b)) = (&via_uri, &got) {
                    assert_eq!((fwd, keys), (&b.forward_target(), &b.query_keys));
                }
            }
        }
    }

    #[test]
    fn accepted_targets() {
        let cases: &[(&str, Want)] = &[
            ("/", Ok(("/", &[]))),
            ("/latest", Ok(("/latest", &[]))),
            ("/latest/", Ok(("/latest/", &[]))),
            (
                "/latest/meta-data/instance-id",
                Ok(("/latest/meta-data/instance-id", &[])),
            ),
            (
                "/latest/meta-data/iam/",
                Ok(("/latest/meta-data/iam/", &[])),
            ),
            (
                "/2009-04-04/meta-data/",
                Ok(("/2009-04-04/meta-data/", &[])),
            ),
            ("/Latest/Meta-Data", Ok(("/Latest/Meta-Data", &[]))),
            ("/a.b/c..d/...", Ok(("/a.b/c..d/...", &[]))),
            ("/.well-known/x", Ok(("/.well-known/x", &[]))),
            (
                "/a~b_c-d:e@f!$&'()*+,=",
                Ok(("/a~b_c-d:e@f!$&'()*+,=", &[])),
            ),
            ("/x?", Ok(("/x", &[]))),
            ("/x?alt=json", Ok(("/x?alt=json", &["alt"]))),
            ("/x?recursive", Ok(("/x?recursive", &["recursive"]))),
            ("/x?recursive=", Ok(("/x?recursive=", &["recursive"]))),
            (
                "/x?ReCuRsIvE=TRUE",
                Ok(("/x?ReCuRsIvE=TRUE", &["ReCuRsIvE"])),
            ),
            (
                "/x?%72ecursive=true",
                Ok(("/x?%72ecursive=true", &["recursive"])),
            ),
            (
                "/x?%52%45%43ursive=1",
                Ok(("/x?%52%45%43ursive=1", &["RECursive"])),
            ),
            ("/x?a=1&b=2", Ok(("/x?a=1&b=2", &["a", "b"]))),
            ("/x?a+b=1", Ok(("/x?a+b=1", &["a+b"]))),
            ("/x?a=%2F%2e%00", Ok(("/x?a=%2F%2e%00", &["a"]))),
            ("/x?a=b=c", Ok(("/x?a=b=c", &["a"]))),
            ("/x?a=?/", Ok(("/x?a=?/", &["a"]))),
            (
                "/x?api-version=2021-02-01&format=json",
                Ok((
                    "/x?api-version=2021-02-01&format=json",
                    &["api-version", "format"],
                )),
            ),
        ];
        for (t, want) in cases {
            check(t, want);
        }
    }

    #[test]
    fn path_tricks_rejected() {
        let cases: &[&str] = &[
            // dot segments
            "/.",
            "/..",
            "/./latest",
            "/latest/.",
            "/latest/./meta-data",
            "/latest/..",
            "/latest/../latest/meta-data/iam",
            "/computeMetadata/v1/instance/network-interfaces/0/external-ip/../../attributes/kube-env",
            "/../../etc/passwd",
            "/latest/meta-data/./iam/",
            // empty segments
            "//",
            "//latest",
            "/latest//meta-data",
            "/computeMetadata/v1//instance/attributes/kube-env",
            "/computeMetadata/v1/instance/attributes//kube-env",
            "/latest/meta-data//",
            "/latest/meta-data/iam//",
            // percent-encoding of / . \ NUL, any case, double encoding
            "/latest%2fmeta-data",
            "/latest%2Fmeta-data",
            "/latest/meta-data/%69am",
            "/latest/%2e%2e/meta-data",
            "/latest/%2E%2E/meta-data",
            "/latest/%2e/meta-data",
            "/latest/.%2e/meta-data",
            "/latest/%2e./meta-data",
            "/latest%5cmeta-data",
            "/latest%5Cmeta-data",
            "/latest/meta-data/iam%00",
            "/latest/meta-data/iam%00/",
            "/latest%252fmeta-data",
            "/latest/%252e%252e/x",
            "/latest/%25",
            "/latest/%",
            "/latest/%zz",
            "/%c0%af",
            "/latest/meta-data/iam%2F",
            "/latest/meta-data/iam%2f",
            "/latest/meta-data/ia%6D/",
            // backslash, matrix params, fragments
            "/latest\\meta-data",
            "/latest/meta-data\\iam",
            "/\\",
            "/latest/meta-data/iam;",
            "/latest/meta-data/iam;x=1",
            "/latest;/meta-data/iam",
            "/latest/meta-data/iam/;/",
            "/latest/meta-data#",
            "/latest/meta-data/iam#/x",
            // control bytes, space, DEL, non-ASCII
            "/latest/meta-data\u{0}",
            "/latest/meta-data\t",
            "/latest\r\n/meta-data",
            "/latest meta-data",
            "/latest/\u{7f}",
            "/latest/meta-dätä",
            "/latest/\u{2215}",
            "/latest/\u{ff0e}\u{ff0e}/x",
            // characters outside RFC 3986 pchar
            "/latest/\"x\"",
            "/latest/{x}",
            "/latest/<x>",
            "/latest/|",
            "/latest/^",
            "/latest/`",
            "/latest/[x]",
        ];
        for t in cases {
            check(t, &Err(400));
        }
    }

    #[test]
    fn query_tricks_rejected() {
        let cases: &[&str] = &[
            // ; separators and matrix
            "/x?recursive=true;alt=json",
            "/x?alt=json;recursive=true",
            "/x?a;b",
            "/x?a=1%3Brecursive=true&a=2",
            // duplicates, any case, any encoding
            "/x?recursive=false&recursive=true",
            "/x?recursive=true&RECURSIVE=false",
            "/x?recursive&%72ecursive",
            "/x?alt=json&Alt=text",
            "/x?a&a",
            // double encoding or still-encoded keys
            "/x?%2572ecursive=true",
            "/x?%25=1",
            "/x?%2",
            "/x?%zz=1",
            "/x?a=%",
            "/x?a=%g0",
            "/x?a=%2",
            // decoded key with separators, control or non-ASCII bytes
            "/x?re%00cursive=true",
            "/x?recursive%00=true",
            "/x?%0arecursive=true",
            "/x?recursive%20=true",
            "/x?%20recursive=true",
            "/x?a%3Db=1",
            "/x?a%26b=1",
            "/x?a%3Bb=1",
            "/x?a%23b=1",
            "/x?%c3%a9=1",
            "/x?%ff=1",
            // empty keys
            "/x?&",
            "/x?&a=1",
            "/x?a=1&",
            "/x?a=1&&b=2",
            "/x?=1",
            // raw bytes not allowed in a query
            "/x?a=b c",
            "/x?a=\u{1}",
            "/x?a=é",
            "/x?a=1#frag",
            "/x?a=[1]",
        ];
        for t in cases {
            check(t, &Err(400));
        }
    }

    #[test]
    fn target_forms_and_methods() {
        // absolute-form (to the metadata address and elsewhere), authority-form, asterisk, userinfo
        for t in [
            "http://169.254.169.254/latest/meta-data/",
            "http://evil.example/latest/meta-data/",
            "http://user:pw@169.254.169.254/latest",
            "https://169.254.169.254/",
            "169.254.169.254:80",
            "evil.example:443",
        ] {
            let uri: Uri = t.parse().unwrap();
            let r = canonicalize(&Method::GET, &uri).unwrap_err();
            assert_eq!(r.status, 400, "{t}");
        }
        let star: Uri = "*".parse().unwrap();
        assert_eq!(
            canonicalize(&Method::OPTIONS, &star).unwrap_err().status,
            400
        );
        assert_eq!(run_str("*").unwrap_err().status, 400);
        for t in [
            "latest",
            "",
            "?a=1",
            "@x/latest",
            "user@169.254.169.254/latest",
        ] {
            assert_eq!(run_str(t).unwrap_err().status, 400, "{t:?}");
        }
        let root: Uri = "/".parse().unwrap();
        for m in [Method::CONNECT, Method::TRACE] {
            assert_eq!(canonicalize(&m, &root).unwrap_err().status, 400, "{m}");
        }
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::OPTIONS,
        ] {
            assert!(canonicalize(&m, &root).is_ok(), "{m}");
        }
    }

    #[test]
    fn fragments_through_uri_are_dropped_not_forwarded() {
        // http::Uri truncates at '#'; what remains is checked and forwarded, never the fragment.
        let uri: Uri = "/latest/meta-data/instance-id#/../iam".parse().unwrap();
        let t = canonicalize(&Method::GET, &uri).unwrap();
        assert_eq!(t.forward_target(), "/latest/meta-data/instance-id");
    }

    #[test]
    fn limits() {
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(run_str(&long).unwrap_err().status, 400);
        let many = "/a".repeat(MAX_PATH_SEGMENTS + 1);
        assert_eq!(run_str(&many).unwrap_err().status, 400);
        assert!(run_str(&"/a".repeat(MAX_PATH_SEGMENTS)).is_ok());
        let keys: Vec<String> = (0..=MAX_QUERY_KEYS).map(|i| format!("k{i}=1")).collect();
        assert_eq!(
            run_str(&format!("/x?{}", keys.join("&")))
                .unwrap_err()
                .status,
            400
        );
        let keys: Vec<String> = (0..MAX_QUERY_KEYS).map(|i| format!("k{i}=1")).collect();
        assert!(run_str(&format!("/x?{}", keys.join("&"))).is_ok());
        let q = format!("/x?a={}", "b".repeat(MAX_QUERY_LEN));
        assert_eq!(run_str(&q).unwrap_err().status, 400);
    }

    #[test]
    fn recursive_caught_in_any_form() {
        for t in [
            "/x?recursive",
            "/x?recursive=",
            "/x?recursive=true",
            "/x?recursive=false",
            "/x?RECURSIVE=true",
            "/x?ReCuRsIvE=1",
            "/x?%72ecursive=true",
            "/x?%72%65%63%75%72%73%69%76%65",
            "/x?%52ecursive",
            "/x?alt=json&recursive=true",
        ] {
            let c = run_str(t).unwrap();
            assert!(c.has_query_key_ci("recursive"), "{t}");
            assert!(c.has_query_key_ci("RECURSIVE"), "{t}");
        }
        let c = run_str("/x?recursivex=1&xrecursive=1&a=recursive").unwrap();
        assert!(!c.has_query_key_ci("recursive"));
    }

    #[test]
    fn exact_key_lookup_is_case_sensitive() {
        let c = run_str("/x?Alt=json").unwrap();
        assert!(c.has_query_key("Alt"));
        assert!(!c.has_query_key("alt"));
        assert!(c.has_query_key_ci("alt"));
    }
}
