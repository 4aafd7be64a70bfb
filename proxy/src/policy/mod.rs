//! Per-pod metadata policy: parsing, validation, selection and per-request decisions.
//!
//! A [`PolicySet`] is compiled once from TOML (see docs/policy.md) and then only read: the proxy
//! keeps it in an `Arc` and swaps the whole set on reload. [`PolicySet::select`] picks a pod's
//! [`Policy`]; [`Policy::decide`] runs per request without allocating.

mod glob;
mod load;
#[cfg(test)]
pub(crate) use load::is_name_byte;
mod matcher;
mod near_miss;
mod presets;
mod rate;
mod roles;
mod schema;
mod select;
pub mod store;

pub use glob::{GlobError, NameGlob, PathGlob};
pub use load::{DEFAULT_ANNOTATION_KEY, DEFAULT_POLICY};
pub use presets::{is_preset, PRESETS};
pub use rate::{RateLimit, DEFAULT_BURST_SECONDS, DEFAULT_RATE, MAX_BURST, MAX_RATE, MIN_RATE};
pub use roles::{RoleChoice, RoleGrant, RoleMap, DEFAULT_ROLE_ANNOTATION_KEY};

use crate::canon::CanonicalTarget;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use matcher::Rule;
use metaguard_common::record::PodRecord;
use select::{AnnotationChoice, AnnotationRule, Selector};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A policy file that could not be read or is invalid. `line`/`column` are 1-based and point at
/// the offending item; both are 0 when the error has no position (e.g. the file cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for PolicyError {}

/// Something valid but probably not meant, found while compiling a policy file: today, a denial
/// that near-miss names get past (docs/policy.md, "Near-miss names"). `check-policy` prints it;
/// the daemon logs it at load and reload. `line`/`column` are 1-based and point at the denial's
/// `path`, `prefix` or `glob`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWarning {
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// What to write instead (`glob = "..."`, possibly several, comma-separated).
    pub suggestion: String,
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}; suggested fix: {}",
            self.line, self.column, self.message, self.suggestion
        )
    }
}

/// What a policy does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward the canonical request upstream.
    Allow,
    /// Answer with `status` (403 unless configured) and `reason` as a text body. `body` is that
    /// answer (`reason` and a newline), built once when the policy is loaded, so a denial costs
    /// no formatting and no allocation for its body. Build with [`Action::deny`].
    Deny {
        status: u16,
        reason: String,
        body: Bytes,
    },
    /// Answer with a fixed response; upstream is not contacted.
    Respond {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
}

impl Action {
    /// A Deny answering `status` with `reason` (one line: validated when the file is loaded).
    pub fn deny(status: u16, reason: String) -> Action {
        let mut body = Vec::with_capacity(reason.len() + 1);
        body.extend_from_slice(reason.as_bytes());
        body.push(b'\n');
        Action::Deny {
            status,
            reason,
            body: Bytes::from(body),
        }
    }
}

/// The parts of a request a policy looks at.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub target: &'a CanonicalTarget<'a>,
    pub headers: &'a HeaderMap,
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, Copy)]
pub struct Decision<'p> {
    /// Id of the matching rule, or `"default-deny"` when no rule matched.
    pub rule_id: &'p str,
    /// Name of the policy whose rule matched (the selected one, or a fallback).
    pub policy: &'p str,
    pub action: &'p Action,
    /// The matching rule (or its policy) asks for audit logging.
    pub audit: bool,
    /// The matching allow rule's `cache_ttl_ms`: its GET answers may be cached this long.
    pub cache_ttl: Option<std::time::Duration>,
}

/// The longest `cache_ttl_ms` a rule may ask for (the answer cache never keeps an entry longer).
pub const MAX_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Rule id reported when no rule matched.
pub const DEFAULT_DENY_ID: &str = "default-deny";

static DEFAULT_DENY_ACTION: std::sync::LazyLock<Action> =
    std::sync::LazyLock::new(|| Action::deny(403, DEFAULT_DENY_REASON.to_owned()));

/// The decision line's reason when no rule matched (the line has the method and path too).
pub const DEFAULT_DENY_REASON: &str = "no rule allows this request";

impl<'p> Decision<'p> {
    /// Whether no rule matched.
    pub fn is_default_deny(&self) -> bool {
        self.rule_id == DEFAULT_DENY_ID
    }

    /// The body of a Deny answer: the rule's prebuilt one, or for a request no rule matched
    /// `no rule allows <METHOD> <path>` and a newline, built without the formatting machinery
    /// (the default-deny answer is the hot path of every denied request). The canonical path
    /// and the method token hold no control characters, so the body stays one line. `None`
    /// for Allow and Respond.
    pub fn deny_body(&self, req: &RequestView<'_>) -> Option<Bytes> {
        match self.action {
            Action::Deny { .. } if self.is_default_deny() => {
                const PREFIX: &[u8] = b"no rule allows ";
                let (m, p) = (req.method.as_str(), req.target.path);
                let mut b = Vec::with_capacity(PREFIX.len() + m.len() + p.len() + 2);
                b.extend_from_slice(PREFIX);
                b.extend_from_slice(m.as_bytes());
                b.push(b' ');
                b.extend_from_slice(p.as_bytes());
                b.push(b'\n');
                Some(Bytes::from(b))
            }
            Action::Deny { body, .. } => Some(body.clone()),
            _ => None,
        }
    }
}

/// One named, compiled policy: ordered rules, an optional fallback, headers for the proxy's own
/// answers.
#[derive(Debug)]
pub struct Policy {
    name: String,
    description: Option<String>,
    rules: Vec<Rule>,
    /// Consulted when no rule here matched (acyclic, checked at load).
    fallback: Option<Arc<Policy>>,
    response_headers: Vec<(HeaderName, HeaderValue)>,
    audit: bool,
    builtin: bool,
    /// How many requests one pod address under this policy may make (`rate`, `burst`).
    rate_limit: RateLimit,
    /// On the AWS endpoints (`[aws]` enabled): requests without a valid IMDSv2 token get 401.
    require_imdsv2: bool,
    /// On the AWS endpoints: the IP TTL / hop limit the token answer is sent with.
    token_hop_limit: Option<u8>,
}

impl Policy {
    /// The policy's name (as selected and as logged).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy's `description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Whether this is a built-in preset.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// The fallback policy's name, if any.
    pub fn fallback_name(&self) -> Option<&str> {
        self.fallback.as_deref().map(Policy::name)
    }

    /// Decide what to do with a request: the first matching rule of this policy, else of its
    /// fallback chain, else deny ([`DEFAULT_DENY_ID`], 403). Does not allocate.
    pub fn decide<'p>(&'p self, req: &RequestView<'_>) -> Decision<'p> {
        let mut p: &'p Policy = self;
        loop {
            if let Some(rule) = p.rules.iter().find(|r| r.matches(req)) {
                return Decision {
                    rule_id: &rule.id,
                    policy: &p.name,
                    action: &rule.action,
                    audit: rule.audit || self.audit,
                    cache_ttl: rule.cache_ttl,
                };
            }
            match &p.fallback {
                Some(f) => p = f,
                None => break,
            }
        }
        Decision {
            rule_id: DEFAULT_DENY_ID,
            policy: &self.name,
            action: &DEFAULT_DENY_ACTION,
            audit: self.audit,
            cache_ttl: None,
        }
    }

    /// Headers to add to every response the proxy itself generates under this policy (deny,
    /// respond, 400s after selection), e.g. GCP's `Metadata-Flavor: Google`.
    pub fn response_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.response_headers
    }

    /// The per-pod rate limit of pods this policy is selected for (its own `rate`/`burst`, else
    /// the file's, else the built-in default; never a fallback's).
    pub fn rate_limit(&self) -> &RateLimit {
        &self.rate_limit
    }

    /// Whether IMDSv1 requests are refused on the AWS endpoints (`require_imdsv2`).
    pub fn require_imdsv2(&self) -> bool {
        self.require_imdsv2
    }

    /// The IP TTL / hop limit of IMDSv2 token answers (`token_hop_limit`), if set.
    pub fn token_hop_limit(&self) -> Option<u8> {
        self.token_hop_limit
    }
}

/// How [`PolicySet::selection`] chose a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectedBy {
    /// The `[[selector]]` at this index (0-based, file order) matched.
    Selector(usize),
    /// The pod's annotation named a policy listed in `annotation_policies`.
    Annotation,
    /// The pod's annotation named a policy not listed in `annotation_policies`: the pod gets
    /// `deny-all`, and [`Selection::note`] says why.
    AnnotationRejected,
    /// Nothing else applied: the file's `default`.
    Default,
}

/// Result of [`PolicySet::selection`].
#[derive(Debug)]
pub struct Selection<'s> {
    pub policy: &'s Policy,
    pub by: SelectedBy,
    /// A reason worth logging; set when an annotation was rejected.
    pub note: Option<String>,
}

/// A parsed, validated, immutable policy file (presets included). Cheap to share in an `Arc`.
#[derive(Debug)]
pub struct PolicySet {
    /// Presets first, then the file's policies (each after its fallback).
    policies: Vec<Arc<Policy>>,
    default: usize,
    deny_all: usize,
    selectors: Vec<Selector>,
    annotation: AnnotationRule,
    /// Found while compiling; the set works as written.
    warnings: Vec<PolicyWarning>,
    /// Which pods get which AWS role (`[[role]]`, `[[role_annotation]]`).
    roles: RoleMap,
}

impl PolicySet {
    /// Parse and validate a policy file's text.
    pub fn from_toml(text: &str) -> Result<PolicySet, PolicyError> {
        load::compile_file(text)
    }

    /// Read and compile a policy file.
    pub fn load(path: &Path) -> Result<PolicySet, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            line: 0,
            column: 0,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::from_toml(&text)
    }

    /// The set used when no policy file is configured: the presets, default `deny-all`.
    pub fn builtin_default() -> PolicySet {
        match load::builtin_set() {
            Ok(s) => s,
            // Unreachable unless a preset is broken (unit tests compile them all); stay closed.
            Err(e) => {
                log::error!("built-in presets failed to compile: {e}; using an empty deny-all");
                PolicySet {
                    policies: vec![Arc::new(Policy {
                        name: DEFAULT_POLICY.to_owned(),
                        description: None,
                        rules: Vec::new(),
                        fallback: None,
                        response_headers: Vec::new(),
                        audit: false,
                        builtin: true,
                        rate_limit: RateLimit::default(),
                        require_imdsv2: false,
                        token_hop_limit: None,
                    })],
                    default: 0,
                    deny_all: 0,
                    selectors: Vec::new(),
                    annotation: AnnotationRule {
                        key: DEFAULT_ANNOTATION_KEY.to_owned(),
                        allowed: Vec::new(),
                    },
                    warnings: Vec::new(),
                    roles: RoleMap::default(),
                }
            }
        }
    }

    /// The policy for a pod (see [`PolicySet::selection`] for how and why). Does not allocate.
    pub fn select(&self, rec: &PodRecord) -> &Policy {
        &self.policies[self.choose(rec).0]
    }

    /// Choose a pod's policy: the first matching `[[selector]]`; else the annotation
    /// `annotation_key` if it names a policy in `annotation_policies` (any other name gives
    /// `deny-all`, with a note worth logging); else `default`.
    pub fn selection(&self, rec: &PodRecord) -> Selection<'_> {
        let (i, by) = self.choose(rec);
        let note = (by == SelectedBy::AnnotationRejected).then(|| {
            let asked = rec
                .annotations
                .get(&self.annotation.key)
                .map_or("", String::as_str);
            format!(
                "annotation {}={asked:?} names a policy not listed in annotation_policies; using {}",
                self.annotation.key, DEFAULT_POLICY
            )
        });
        Selection {
            policy: &self.policies[i],
            by,
            note,
        }
    }

    fn choose(&self, rec: &PodRecord) -> (usize, SelectedBy) {
        if let Some((i, s)) = self
            .selectors
            .iter()
            .enumerate()
            .find(|(_, s)| s.matches(rec))
        {
            return (s.policy, SelectedBy::Selector(i));
        }
        match self.annotation.choose(rec) {
            AnnotationChoice::Allowed(i) => (i, SelectedBy::Annotation),
            AnnotationChoice::Rejected => (self.deny_all, SelectedBy::AnnotationRejected),
            AnnotationChoice::Absent => (self.default, SelectedBy::Default),
        }
    }

    /// The AWS role a pod gets, if any (see [`RoleMap::choose`]).
    pub fn role(&self, rec: &PodRecord) -> RoleChoice {
        self.roles.choose(rec)
    }

    /// The role mapping (for `check-policy`'s summary and the docs' examples).
    pub fn roles(&self) -> &RoleMap {
        &self.roles
    }

    /// Names of every policy in the set, presets included.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.name())
    }

    /// A policy by name.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name).map(|p| &**p)
    }

    /// The policy for pods no selector or annotation picks.
    pub fn default_policy(&self) -> &Policy {
        &self.policies[self.default]
    }

    /// Warnings found while compiling (near-miss names), in file order.
    pub fn warnings(&self) -> &[PolicyWarning] {
        &self.warnings
    }

    /// The annotation key pods may use to pick a policy.
    pub fn annotation_key(&self) -> &str {
        &self.annotation.key
    }

    /// A multi-line human summary (what `check-policy` prints).
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "default policy: {}", self.default_policy().name());
        let picks: Vec<&str> = self
            .annotation
            .allowed
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        let _ = writeln!(
            s,
            "annotation {}: may pick [{}]",
            self.annotation.key,
            picks.join(", ")
        );
        let _ = writeln!(s, "selectors: {}", self.selectors.len());
        for (i, sel) in self.selectors.iter().enumerate() {
            let _ = writeln!(s, "  #{i} -> {}", self.policies[sel.policy].name());
        }
        let _ = writeln!(s, "policies:");
        for p in &self.policies {
            let _ = write!(
                s,
                "  {}{}: {} rules",
                p.name,
                if p.builtin { " (built-in)" } else { "" },
                p.rules.len()
            );
            if let Some(f) = p.fallback_name() {
                let _ = write!(s, ", fallback {f}");
            }
            if p.audit {
                let _ = write!(s, ", audit");
            }
            let l = &p.rate_limit;
            let _ = write!(s, ", {} requests/s per pod (burst {})", l.rate(), l.burst());
            if p.require_imdsv2 {
                let _ = write!(s, ", IMDSv2 required");
            }
            if let Some(h) = p.token_hop_limit {
                let _ = write!(s, ", token hop limit {h}");
            }
            s.push('\n');
        }
        let roles = self.roles.summary();
        if !roles.is_empty() {
            let _ = writeln!(s, "AWS roles (with [aws] enabled in the proxy):");
            for r in roles {
                let _ = writeln!(s, "  {r}");
            }
        }
        s
    }
}

/// What `check-policy` reports for a valid file.
#[derive(Debug)]
pub struct PolicyCheck {
    /// `<file>: ok` (with the number of warnings) and the set's summary.
    pub summary: String,
    pub warnings: Vec<PolicyWarning>,
}

/// Validate a policy file for `metaguard-proxy check-policy FILE`.
pub fn check_policy_file(path: &Path) -> Result<PolicyCheck, PolicyError> {
    let set = PolicySet::load(path)?;
    let n = set.warnings.len();
    let status = match n {
        0 => "ok".to_owned(),
        1 => "ok, 1 warning".to_owned(),
        n => format!("ok, {n} warnings"),
    };
    Ok(PolicyCheck {
        summary: format!("{}: {status}\n{}", path.display(), set.summary()),
        warnings: set.warnings,
    })
}

#[cfg(test)]
mod tests;
