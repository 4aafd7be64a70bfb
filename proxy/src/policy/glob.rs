//! Small, allocation-free glob matchers, compiled once at load.
//!
//! - [`PathGlob`] matches canonical paths segment by segment: `*` matches within one segment
//!   (`*` alone: exactly one non-empty segment; `2009-*`: a segment starting with `2009-`),
//!   `**` (a whole segment) matches zero or more segments, and `{a,b,c}` (a whole segment) matches
//!   one of the listed literal segments. A trailing `/` in the pattern is an empty last segment, so
//!   `/a/` matches `/a/` but not `/a`; `/a/**` matches `/a`, `/a/`, `/a/b` and `/a/b/c/`.
//! - [`NameGlob`] matches names (namespaces, pod names, annotation values): `*` matches any run of
//!   characters; everything else is literal.

use std::fmt;

/// Most `**` allowed in one path glob: bounds matching cost (paths have at most
/// `canon::MAX_PATH_SEGMENTS` segments).
pub const MAX_DOUBLE_STARS: usize = 2;

/// Why a glob was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError(pub String);

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One compiled segment of a [`PathGlob`] (`near_miss` reads them to intersect two globs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    /// The segment must be exactly this (possibly empty: trailing slash).
    Literal(String),
    /// `*`: any one non-empty segment.
    Any,
    /// `a*b*c`: a wildcard confined to one segment (split on `*`, at least one star).
    Wild(NameGlob),
    /// `{a,b}`: one of these literal segments.
    OneOf(Vec<String>),
    /// `**`: zero or more segments.
    Many,
}

/// A compiled path glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    segs: Vec<Seg>,
}

/// Characters a canonical path may contain (see `canon.rs`), minus `/`.
fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@".contains(c)
}

impl PathGlob {
    /// Compile `pattern`, which must start with `/` and could only ever match canonical paths.
    pub fn new(pattern: &str) -> Result<PathGlob, GlobError> {
        let rest = pattern
            .strip_prefix('/')
            .ok_or_else(|| GlobError("glob must start with /".into()))?;
        let mut segs = Vec::new();
        if rest.is_empty() {
            segs.push(Seg::Literal(String::new()));
            return Ok(PathGlob { segs });
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let n = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let seg = compile_segment(part, i + 1 == n)?;
            if seg == Seg::Many && segs.last() == Some(&Seg::Many) {
                return Err(GlobError("`**/**` is redundant; use one `**`".into()));
            }
            segs.push(seg);
        }
        if segs.iter().filter(|s| **s == Seg::Many).count() > MAX_DOUBLE_STARS {
            return Err(GlobError(format!(
                "at most {MAX_DOUBLE_STARS} `**` per glob"
            )));
        }
        Ok(PathGlob { segs })
    }

    /// The compiled segments, in order.
    pub(super) fn segments(&self) -> &[Seg] {
        &self.segs
    }

    /// Whether the canonical `path` (starting with `/`) matches.
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix('/') {
            Some(rest) => match_segs(&self.segs, Some(rest)),
            None => false,
        }
    }
}

fn compile_segment(part: &str, last: bool) -> Result<Seg, GlobError> {
    if part.is_empty() {
        if last {
            return Ok(Seg::Literal(String::new()));
        }
        return Err(GlobError("empty segment (`//`) can never match".into()));
    }
    if part == "**" {
        return Ok(Seg::Many);
    }
    if part.contains("**") {
        return Err(GlobError("`**` must be a whole segment".into()));
    }
    if part == "*" {
        return Ok(Seg::Any);
    }
    if let Some(inner) = part.strip_prefix('{') {
        let inner = inner
            .strip_suffix('}')
            .ok_or_else(|| GlobError("`{` must close with `}` at the end of the segment".into()))?;
        let mut alts = Vec::new();
        for alt in inner.split(',') {
            check_literal_segment(alt)?;
            if alt.contains('*') {
                return Err(GlobError("`*` is not allowed inside `{..}`".into()));
            }
            alts.push(alt.to_owned());
        }
        return Ok(Seg::OneOf(alts));
    }
    if part.contains('{') || part.contains('}') {
        return Err(GlobError("`{a,b}` must be a whole segment".into()));
    }
    check_literal_segment(part)?;
    if part.contains('*') {
        return Ok(Seg::Wild(NameGlob::new(part)));
    }
    Ok(Seg::Literal(part.to_owned()))
}

fn check_literal_segment(s: &str) -> Result<(), GlobError> {
    if s.is_empty() {
        return Err(GlobError("empty alternative in `{..}`".into()));
    }
    if s == "." || s == ".." {
        return Err(GlobError(
            "dot segments can never match a canonical path".into(),
        ));
    }
    if let Some(c) = s.chars().find(|&c| !is_segment_char(c)) {
        return Err(GlobError(format!(
            "character {c:?} can never appear in a canonical path"
        )));
    }
    Ok(())
}

/// Split the next segment off `rest` (the path after a `/`). `None` means no segments remain.
fn next_seg(rest: &str) -> (&str, Option<&str>) {
    match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

fn match_segs(pats: &[Seg], rest: Option<&str>) -> bool {
    let Some((first, more)) = pats.split_first() else {
        return rest.is_none();
    };
    if matches!(first, Seg::Many) {
        // Zero segments, or consume one and try again.
        let mut cur = rest;
        loop {
            if match_segs(more, cur) {
                return true;
            }
            match cur {
                Some(r) => cur = next_seg(r).1,
                None => return false,
            }
        }
    }
    let Some(r) = rest else {
        return false;
    };
    let (seg, after) = next_seg(r);
    let ok = match first {
        Seg::Literal(l) => seg == l,
        Seg::Any => !seg.is_empty(),
        Seg::Wild(g) => g.matches(seg),
        Seg::OneOf(alts) => alts.iter().any(|a| a == seg),
        Seg::Many => false, // handled above
    };
    ok && match_segs(more, after)
}

/// A name glob: `*` matches any run of characters (including none); the rest is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameGlob {
    /// The pattern split on `*`: `parts.len() - 1` stars.
    parts: Vec<String>,
}

impl NameGlob {
    pub fn new(pattern: &str) -> NameGlob {
        NameGlob {
            parts: pattern.split('*').map(str::to_owned).collect(),
        }
    }

    /// The pattern split on `*` (at least one part; `parts().len() - 1` stars).
    pub(super) fn parts(&self) -> &[String] {
        &self.parts
    }

    pub fn matches(&self, s: &str) -> bool {
        let parts = &self.parts;
        let Some((first, rest)) = parts.split_first() else {
            return s.is_empty();
        };
        let Some(mut s) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            // No star: exact match.
            return s.is_empty();
        };
        // Greedy leftmost matching of the middle parts is optimal for `*`-only globs.
        for part in middle {
            match s.find(part.as_str()) {
                Some(i) => s = &s[i + part.len()..],
                None => return false,
            }
        }
        s.len() >= last.len() && s.ends_with(last.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/", "/", true),
            ("/", "/a", false),
            ("/a", "/a", true),
            ("/a", "/a/", false),
            ("/a/", "/a/", true),
            ("/a/", "/a", false),
            ("/*", "/a", true),
            ("/*", "/", false),
            ("/*", "/a/", false),
            ("/*/", "/latest/", true),
            ("/*/", "//", false),
            ("/*/meta-data/", "/2009-04-04/meta-data/", true),
            ("/*/meta-data/", "/latest/meta-data", false),
            ("/a/**", "/a", true),
            ("/a/**", "/a/", true),
            ("/a/**", "/a/b", true),
            ("/a/**", "/a/b/c/", true),
            ("/a/**", "/ab", false),
            ("/a/**", "/", false),
            ("/**", "/", true),
            ("/**", "/x/y", true),
            ("/**/token", "/token", true),
            ("/**/token", "/a/b/token", true),
            ("/**/token", "/a/b/token/", false),
            (
                "/**/service-accounts/*/token/**",
                "/v1/instance/service-accounts/default/token",
                true,
            ),
            (
                "/**/service-accounts/*/token/**",
                "/v1/instance/service-accounts/default/token/",
                true,
            ),
            (
                "/**/service-accounts/*/token/**",
                "/v1/instance/service-accounts/default/",
                false,
            ),
            (
                "/**/service-accounts/*/token/**",
                "/v1/instance/service-accounts//token",
                false,
            ),
            ("/*/meta-data/iam/**", "/latest/meta-data/iam", true),
            ("/*/meta-data/iam/**", "/latest/meta-data/iam/", true),
            (
                "/*/meta-data/iam/**",
                "/latest/meta-data/iam/security-credentials/role",
                true,
            ),
            ("/*/meta-data/iam/**", "/latest/meta-data/IAM", false),
            ("/*/meta-data/iam/**", "/latest/meta-data/iamx", false),
            ("/2009-*/x", "/2009-04-04/x", true),
            ("/2009-*/x", "/2009-/x", true),
            ("/2009-*/x", "/2010-04-04/x", false),
            ("/*.json", "/a.json", true),
            ("/*.json", "/a.jsonx", false),
            ("/{a,b}/c", "/a/c", true),
            ("/{a,b}/c", "/b/c", true),
            ("/{a,b}/c", "/ab/c", false),
            ("/{a,b}/c", "/{a,b}/c", false),
            ("/x/{a,b}/**", "/x/b", true),
            ("/x/{a,b}/**", "/x/b/z", true),
            ("/x/{a,b}/**", "/x/c/z", false),
        ];
        for (pat, path, want) in cases {
            let g = PathGlob::new(pat).unwrap();
            assert_eq!(g.matches(path), *want, "{pat} vs {path}");
        }
    }

    #[test]
    fn path_glob_errors() {
        for bad in [
            "a",
            "",
            "/a//b",
            "/a/***",
            "/a**/b",
            "/**/**",
            "/**/a/**/b/**",
            "/a/../b",
            "/./b",
            "/a%2fb",
            "/a;b",
            "/a\\b",
            "/a b",
            "/{a,b",
            "/x{a,b}",
            "/{a,}",
            "/{a,*}",
            "/é",
        ] {
            assert!(PathGlob::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn name_glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("*", "", true),
            ("*", "anything/at all", true),
            ("team-*", "team-a", true),
            ("team-*", "team-", true),
            ("team-*", "xteam-a", false),
            ("*-prod", "a-prod", true),
            ("*-prod", "a-prodx", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*ab*ab", "xabyab", true),
            ("*ab*ab", "xabyabab", true),
        ];
        for (pat, s, want) in cases {
            assert_eq!(NameGlob::new(pat).matches(s), *want, "{pat:?} vs {s:?}");
        }
    }
}
