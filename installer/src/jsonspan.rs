//! Byte spans of the parts of a JSON document we edit.
//!
//! The installer changes a conflist by splicing text (appending one element to the `plugins` array,
//! or cutting one out) rather than by parsing and re-serialising the whole file. That keeps every
//! byte it does not need to touch as it was: the main CNI's key order, indentation and number
//! formatting survive, a diff of the file shows only metaguard's entry, and uninstall can give
//! back the original exactly. The document is validated with serde_json first; this scanner only
//! finds where things are.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed JSON at byte {offset}: {reason}")]
pub struct SpanError {
    pub offset: usize,
    pub reason: &'static str,
}

/// One member of an object: its decoded key and the span of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: String,
    pub value: Range<usize>,
}

/// The top-level object of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopObject {
    /// Span of the whole object, from `{` to `}` inclusive.
    pub span: Range<usize>,
    pub members: Vec<Member>,
}

impl TopObject {
    /// The value span of `key`; an error when the key appears more than once, since readers
    /// disagree on which copy wins and we must edit the one containerd uses.
    pub fn get(&self, key: &str) -> Result<Option<Range<usize>>, SpanError> {
        let mut found = None;
        for m in &self.members {
            if m.key == key {
                if found.is_some() {
                    return Err(SpanError {
                        offset: m.value.start,
                        reason: "duplicate key",
                    });
                }
                found = Some(m.value.clone());
            }
        }
        Ok(found)
    }
}

/// Span of a key (with its quotes) and span of its value.
type RawMember = (Range<usize>, Range<usize>);

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn err(&self, reason: &'static str) -> SpanError {
        SpanError {
            offset: self.pos,
            reason,
        }
    }

    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.pos) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8, reason: &'static str) -> Result<(), SpanError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    /// Skips one string, returning its span including the quotes.
    fn string(&mut self) -> Result<Range<usize>, SpanError> {
        let start = self.pos;
        self.expect(b'"', "expected a string")?;
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(start..self.pos);
                }
                Some(b'\\') => self.pos += 2,
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Skips one value of any kind, returning its span.
    fn value(&mut self, depth: usize) -> Result<Range<usize>, SpanError> {
        if depth > 128 {
            return Err(self.err("nesting too deep"));
        }
        self.ws();
        let start = self.pos;
        match self.peek() {
            None => Err(self.err("expected a value")),
            Some(b'"') => self.string(),
            Some(b'{') => {
                self.object_members(depth)?;
                Ok(start..self.pos)
            }
            Some(b'[') => {
                self.array_elements(depth)?;
                Ok(start..self.pos)
            }
            Some(_) => {
                // Number or literal: runs until a delimiter.
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(self.err("expected a value"));
                }
                Ok(start..self.pos)
            }
        }
    }

    fn object_members(&mut self, depth: usize) -> Result<Vec<RawMember>, SpanError> {
        self.expect(b'{', "expected an object")?;
        let mut out = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.expect(b':', "expected ':'")?;
            let val = self.value(depth + 1)?;
            out.push((key, val));
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn array_elements(&mut self, depth: usize) -> Result<Vec<Range<usize>>, SpanError> {
        self.expect(b'[', "expected an array")?;
        let mut out = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            out.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }
}

/// Finds the top-level object's members. Keys are decoded (escapes included), the way Go's
/// encoding/json sees them.
pub fn top_object(text: &str) -> Result<TopObject, SpanError> {
    let mut s = Scanner {
        b: text.as_bytes(),
        pos: 0,
    };
    s.ws();
    let start = s.pos;
    if s.peek() != Some(b'{') {
        return Err(s.err("the document is not a JSON object"));
    }
    let raw = s.object_members(0)?;
    let end = s.pos;
    s.ws();
    if s.pos != text.len() {
        return Err(s.err("trailing data after the object"));
    }
    let mut members = Vec::with_capacity(raw.len());
    for (k, v) in raw {
        let key: String = serde_json::from_str(&text[k.clone()]).map_err(|_| SpanError {
            offset: k.start,
            reason: "bad key string",
        })?;
        members.push(Member { key, value: v });
    }
    Ok(TopObject {
        span: start..end,
        members,
    })
}

/// Spans of the elements of the array at `span` (which must start with `[`).
pub fn array_elements(text: &str, span: Range<usize>) -> Result<Vec<Range<usize>>, SpanError> {
    let mut s = Scanner {
        b: text.as_bytes(),
        pos: span.start,
    };
    let els = s.array_elements(0)?;
    if s.pos != span.end {
        return Err(s.err("array ends where it should not"));
    }
    Ok(els)
}

/// The whitespace that starts the line `pos` is on, when only whitespace precedes `pos` on that
/// line; used to indent a new element like its neighbours.
pub fn line_indent(text: &str, pos: usize) -> Option<&str> {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let prefix = &text[line_start..pos];
    prefix
        .bytes()
        .all(|c| c == b' ' || c == b'\t')
        .then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_members_and_elements() {
        let t = r#" { "a" : 1, "pl\u0075gins": [ {"x": "]}\""}, [1,2], "s" ] , "z": null } "#;
        let top = top_object(t).unwrap();
        assert_eq!(top.members.len(), 3);
        let p = top.get("plugins").unwrap().unwrap();
        let els = array_elements(t, p).unwrap();
        assert_eq!(els.len(), 3);
        assert_eq!(&t[els[0].clone()], r#"{"x": "]}\""}"#);
        assert_eq!(&t[els[1].clone()], "[1,2]");
        assert_eq!(&t[els[2].clone()], r#""s""#);
        assert_eq!(&t[top.get("z").unwrap().unwrap()], "null");
        assert_eq!(top.get("nope").unwrap(), None);
    }

    #[test]
    fn empty_containers() {
        let t = r#"{"plugins": []}"#;
        let top = top_object(t).unwrap();
        let p = top.get("plugins").unwrap().unwrap();
        assert!(array_elements(t, p).unwrap().is_empty());
        assert!(top_object("{}").unwrap().members.is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_place() {
        assert!(top_object("[1]").is_err());
        assert!(top_object(r#"{"a": 1} x"#).is_err());
        assert!(top_object(r#"{"a": "unterminated}"#).is_err());
        assert!(top_object(r#"{"a" 1}"#).is_err());
        assert!(top_object("").is_err());
        let dup = top_object(r#"{"plugins": [], "plugins": []}"#).unwrap();
        assert!(dup.get("plugins").is_err());
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(top_object(&deep).is_err());
    }

    #[test]
    fn indent_of_line() {
        let t = "{\n\t  \"a\": 1\n}";
        let pos = t.find('"').unwrap();
        assert_eq!(line_indent(t, pos), Some("\t  "));
        assert_eq!(line_indent(t, t.find('1').unwrap()), None);
    }
}
