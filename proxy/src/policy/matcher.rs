//! A compiled rule and the per-request match. Everything is prepared at load time so matching a
//! request allocates nothing.

use super::glob::PathGlob;
use super::{Action, RequestView};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// Which methods a rule accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    Any,
    List(Vec<Method>),
}

/// How a rule matches the canonical path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// No path condition.
    Any,
    Exact(String),
    /// Plain string prefix (`/latest/meta-data/iam` also matches `/latest/meta-data/iamx`).
    Prefix(String),
    Glob(PathGlob),
}

/// Which query keys a request may carry for the rule to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryAllow {
    /// `query = ["*"]`.
    Any,
    /// Only these keys (exact case); empty means no query at all.
    Keys(Vec<String>),
}

/// A header condition: present with any value (`"*"`), or every value equal to this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCond {
    Present,
    Exact(HeaderValue),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    /// Allow rules only: answers to GET may be served from the cache for this long.
    pub cache_ttl: Option<std::time::Duration>,
    /// The rule's `description`, for summaries.
    pub description: Option<String>,
    pub methods: Methods,
    pub path: PathMatch,
    pub query: QueryAllow,
    /// All of these keys must be present (exact case).
    pub require_query: Vec<String>,
    /// If non-empty, at least one of these keys must be present (ASCII case-insensitive).
    pub has_query: Vec<String>,
    /// If non-empty, at least one of these keys must be absent (exact case).
    pub lacks_query: Vec<String>,
    /// All of these must hold.
    pub headers: Vec<(HeaderName, HeaderCond)>,
    /// If non-empty, at least one of these must fail.
    pub lacks_headers: Vec<(HeaderName, HeaderCond)>,
    /// Match the path ignoring ASCII case (patterns are stored lower-cased).
    pub ignore_case: bool,
    pub action: Action,
    pub audit: bool,
}

fn header_holds(headers: &HeaderMap, name: &HeaderName, cond: &HeaderCond) -> bool {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return false;
    }
    match cond {
        HeaderCond::Present => true,
        // A repeated header must agree everywhere: upstream might read either copy.
        HeaderCond::Exact(want) => values.all(|v| v == want),
    }
}

impl Rule {
    /// Whether the rule's path condition holds for the canonical `path`.
    pub fn path_matches(&self, path: &str) -> bool {
        match (&self.path, self.ignore_case) {
            (PathMatch::Any, _) => true,
            (PathMatch::Exact(p), false) => path == *p,
            (PathMatch::Exact(p), true) => path.eq_ignore_ascii_case(p),
            (PathMatch::Prefix(p), false) => path.starts_with(p.as_str()),
            (PathMatch::Prefix(p), true) => path
                .as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            (PathMatch::Glob(g), false) => g.matches(path),
            // Only case-insensitive glob rules pay for the lower-cased copy.
            (PathMatch::Glob(g), true) => g.matches(&path.to_ascii_lowercase()),
        }
    }

    /// Whether the path is the rule's only condition: it applies to every method, query and
    /// header set (what `near_miss` needs to call a path covered by a denial).
    pub fn path_is_only_condition(&self) -> bool {
        self.methods == Methods::Any
            && self.query == QueryAllow::Any
            && self.require_query.is_empty()
            && self.has_query.is_empty()
            && self.lacks_query.is_empty()
            && self.headers.is_empty()
            && self.lacks_headers.is_empty()
    }

    /// Whether this rule applies to `req`.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let t = req.target;
        let method_ok = match &self.methods {
            Methods::Any => true,
            Methods::List(ms) => ms.iter().any(|m| m == req.method),
        };
        if !method_ok || !self.path_matches(t.path) {
            return false;
        }
        if let QueryAllow::Keys(allowed) = &self.query {
            if !t.query_keys.iter().all(|k| allowed.iter().any(|a| a == k)) {
                return false;
            }
        }
        if !self.require_query.iter().all(|k| t.has_query_key(k)) {
            return false;
        }
        if !self.has_query.is_empty() && !self.has_query.iter().any(|k| t.has_query_key_ci(k)) {
            return false;
        }
        if !self.lacks_query.is_empty() && self.lacks_query.iter().all(|k| t.has_query_key(k)) {
            return false;
        }
        if !self
            .headers
            .iter()
            .all(|(n, c)| header_holds(req.headers, n, c))
        {
            return false;
        }
        if !self.lacks_headers.is_empty()
            && self
                .lacks_headers
                .iter()
                .all(|(n, c)| header_holds(req.headers, n, c))
        {
            return false;
        }
        true
    }
}
