//! Validation and compilation of a policy file (and of the built-in presets) into a [`PolicySet`].
//! Every error points at the line and column of the item at fault.

use super::glob::PathGlob;
use super::matcher::{HeaderCond, Methods, PathMatch, QueryAllow, Rule};
use super::near_miss;
use super::presets::{is_preset, PRESETS};
use super::rate::{RateLimit, MAX_BURST, MAX_RATE, MIN_RATE};
use super::roles::RoleMap;
use super::schema::{FileDoc, PolicyDoc, RuleDoc, SpannedList, SpannedMap};
use super::select::{AnnotationRule, PodMatch, Selector};
use super::{Action, Policy, PolicyError, PolicySet, PolicyWarning, DEFAULT_DENY_ID};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use toml::Spanned;

/// Annotation read when the file does not set `annotation_key`.
pub const DEFAULT_ANNOTATION_KEY: &str = "metaguard.io/policy";
/// Policy used when the file does not set `default`.
pub const DEFAULT_POLICY: &str = "deny-all";

/// Source text being compiled, to turn byte spans into line/column.
struct Src<'a> {
    text: &'a str,
    /// Prefix for messages ("built-in preset aws: ") or empty for user files.
    origin: String,
}

impl Src<'_> {
    fn err(&self, span: Range<usize>, msg: impl AsRef<str>) -> PolicyError {
        let (line, column) = line_col(self.text, span.start);
        PolicyError {
            line,
            column,
            message: format!("{}{}", self.origin, msg.as_ref()),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn parse(src: &Src<'_>) -> Result<FileDoc, PolicyError> {
    toml::from_str::<FileDoc>(src.text).map_err(|e| {
        // Some toml errors carry an empty message() (e.g. a control character in a comment);
        // fall back to the full text so the operator always learns what is wrong.
        let mut msg = e.message().trim_end().to_owned();
        if msg.is_empty() {
            msg = e.to_string().trim_end().to_owned();
        }
        if msg.is_empty() {
            msg = "the file is not valid TOML".to_owned();
        }
        match e.span() {
            Some(span) => src.err(span, msg),
            None => PolicyError {
                line: 0,
                column: 0,
                message: format!("{}{}", src.origin, msg),
            },
        }
    })
}

/// The file's top-level `rate` and `burst`: what every policy that sets neither gets, presets
/// included.
#[derive(Debug, Clone, Copy, Default)]
struct LimitDefaults {
    rate: Option<f64>,
    burst: Option<u32>,
}

impl LimitDefaults {
    fn of(src: &Src<'_>, doc: &FileDoc) -> Result<LimitDefaults, PolicyError> {
        Ok(LimitDefaults {
            rate: doc.rate.as_ref().map(|r| check_rate(src, r)).transpose()?,
            burst: doc
                .burst
                .as_ref()
                .map(|b| check_burst(src, b))
                .transpose()?,
        })
    }
}

/// `rate`: requests per second, a number in [MIN_RATE, MAX_RATE].
fn check_rate(src: &Src<'_>, r: &Spanned<f64>) -> Result<f64, PolicyError> {
    let v = *r.get_ref();
    if v.is_finite() && (MIN_RATE..=MAX_RATE).contains(&v) {
        Ok(v)
    } else {
        Err(src.err(
            r.span(),
            format!("rate must be a number of requests per second from {MIN_RATE} to {MAX_RATE}"),
        ))
    }
}

/// `burst`: how many requests at once, an integer in [1, MAX_BURST].
fn check_burst(src: &Src<'_>, b: &Spanned<i64>) -> Result<u32, PolicyError> {
    match u32::try_from(*b.get_ref()) {
        Ok(v) if (1..=MAX_BURST).contains(&v) => Ok(v),
        _ => Err(src.err(
            b.span(),
            format!("burst must be a whole number of requests from 1 to {MAX_BURST}"),
        )),
    }
}

/// A policy's limit: its own `rate`/`burst`, else the file's, else the built-in default (a burst
/// of [`super::DEFAULT_BURST_SECONDS`] of the rate).
fn rate_limit(
    src: &Src<'_>,
    pd: &PolicyDoc,
    defaults: LimitDefaults,
) -> Result<RateLimit, PolicyError> {
    let rate = match &pd.rate {
        Some(r) => check_rate(src, r)?,
        None => defaults.rate.unwrap_or(super::DEFAULT_RATE),
    };
    let burst = match &pd.burst {
        Some(b) => check_burst(src, b)?,
        None => defaults
            .burst
            .unwrap_or_else(|| RateLimit::default_burst(rate)),
    };
    Ok(RateLimit::new(rate, burst))
}

/// Compile the presets alone (what every set starts with), with the file's limits. Their
/// warnings go to `warnings` (there are none: a unit test holds the presets to that).
fn compile_presets(
    limits: LimitDefaults,
    warnings: &mut Vec<PolicyWarning>,
) -> Result<Vec<Arc<Policy>>, PolicyError> {
    let mut out = Vec::with_capacity(PRESETS.len());
    for (name, text) in PRESETS {
        let src = Src {
            text,
            origin: format!("built-in preset {name}: "),
        };
        let doc = parse(&src)?;
        let [p] = doc.policy.as_slice() else {
            return Err(src.err(0..0, "a preset must hold exactly one policy"));
        };
        if p.get_ref().name.get_ref() != name {
            return Err(src.err(p.get_ref().name.span(), "preset name mismatch"));
        }
        // A preset's text sets no limit of its own: it takes the file's.
        out.push(Arc::new(compile_policy(
            &src,
            p.get_ref(),
            None,
            true,
            limits,
            warnings,
        )?));
    }
    Ok(out)
}

/// The set used when no file is configured: presets only, default `deny-all`.
pub(super) fn builtin_set() -> Result<PolicySet, PolicyError> {
    let mut warnings = Vec::new();
    let policies = compile_presets(LimitDefaults::default(), &mut warnings)?;
    let deny_all = find(&policies, DEFAULT_POLICY).unwrap_or(0);
    Ok(PolicySet {
        policies,
        default: deny_all,
        deny_all,
        selectors: Vec::new(),
        annotation: AnnotationRule {
            key: DEFAULT_ANNOTATION_KEY.to_owned(),
            allowed: Vec::new(),
        },
        warnings,
        roles: RoleMap::default(),
    })
}

fn find(policies: &[Arc<Policy>], name: &str) -> Option<usize> {
    policies.iter().position(|p| p.name == name)
}

/// Compile a user policy file.
pub(super) fn compile_file(text: &str) -> Result<PolicySet, PolicyError> {
    let src = Src {
        text,
        origin: String::new(),
    };
    let doc = parse(&src)?;
    let limits = LimitDefaults::of(&src, &doc)?;
    let mut warnings = Vec::new();
    let mut policies = compile_presets(limits, &mut warnings)?;

    let user_idx = index_policies(&src, &doc)?;

    // Compile in dependency order so each fallback exists before the policy that uses it.
    let mut done: Vec<Option<usize>> = vec![None; doc.policy.len()];
    for i in 0..doc.policy.len() {
        ensure_compiled(
            &src,
            &doc,
            &user_idx,
            i,
            &mut done,
            &mut policies,
            &mut warnings,
        )?;
    }

    let lookup = |name: &Spanned<String>, what: &str| -> Result<usize, PolicyError> {
        find(&policies, name.get_ref()).ok_or_else(|| {
            src.err(
                name.span(),
                format!("{what}: unknown policy {:?}", name.get_ref()),
            )
        })
    };

    let default = match &doc.default {
        Some(d) => lookup(d, "default")?,
        None => find(&policies, DEFAULT_POLICY).unwrap_or(0),
    };
    let deny_all = find(&policies, DEFAULT_POLICY).unwrap_or(0);

    let key = match &doc.annotation_key {
        Some(k) => {
            let v = k.get_ref().trim();
            if v.is_empty() || v != k.get_ref() {
                return Err(src.err(
                    k.span(),
                    "annotation_key must be a non-empty key without spaces",
                ));
            }
            v.to_owned()
        }
        None => DEFAULT_ANNOTATION_KEY.to_owned(),
    };
    let mut allowed = Vec::new();
    if let Some(list) = &doc.annotation_policies {
        for n in list.get_ref() {
            allowed.push((n.get_ref().clone(), lookup(n, "annotation_policies")?));
        }
    }

    let mut selectors = Vec::new();
    let err = |span, msg: String| src.err(span, msg);
    for s in &doc.selector {
        let sd = s.get_ref();
        let cond = PodMatch::compile(
            &err,
            sd.namespace.as_ref(),
            sd.pod.as_ref(),
            sd.annotations.as_ref(),
        )?
        .ok_or_else(|| {
            src.err(
                s.span(),
                "selector has no condition (namespace, pod or annotations); use `default` instead",
            )
        })?;
        selectors.push(Selector {
            cond,
            policy: lookup(&sd.policy, "selector")?,
        });
    }

    Ok(PolicySet {
        policies,
        default,
        deny_all,
        selectors,
        annotation: AnnotationRule { key, allowed },
        warnings,
        roles: super::roles::compile(&err, &doc)?,
    })
}

/// The file's policies by name, checked: names valid, unique and not a preset's; fallbacks known
/// and acyclic.
fn index_policies<'d>(
    src: &Src<'_>,
    doc: &'d FileDoc,
) -> Result<HashMap<&'d str, usize>, PolicyError> {
    // Names: valid, unique, not a preset.
    let mut user_idx: HashMap<&str, usize> = HashMap::new();
    for (i, p) in doc.policy.iter().enumerate() {
        let name = &p.get_ref().name;
        check_name(src, name, "policy name")?;
        if is_preset(name.get_ref()) {
            return Err(src.err(
                name.span(),
                format!(
                    "{:?} is a built-in preset and cannot be redefined",
                    name.get_ref()
                ),
            ));
        }
        if user_idx.insert(name.get_ref(), i).is_some() {
            return Err(src.err(
                name.span(),
                format!("duplicate policy name {:?}", name.get_ref()),
            ));
        }
    }

    // Fallbacks: known, acyclic.
    for p in &doc.policy {
        if let Some(f) = &p.get_ref().fallback {
            if !is_preset(f.get_ref()) && !user_idx.contains_key(f.get_ref().as_str()) {
                return Err(src.err(
                    f.span(),
                    format!("unknown fallback policy {:?}", f.get_ref()),
                ));
            }
        }
    }
    for (i, p) in doc.policy.iter().enumerate() {
        let mut chain = vec![p.get_ref().name.get_ref().as_str()];
        let mut cur = i;
        while let Some(f) = &doc.policy[cur].get_ref().fallback {
            let Some(&next) = user_idx.get(f.get_ref().as_str()) else {
                break; // a preset: presets have no fallback
            };
            chain.push(f.get_ref());
            if next == i {
                let span = p.get_ref().fallback.as_ref().map_or(0..0, |f| f.span());
                return Err(src.err(span, format!("fallback cycle: {}", chain.join(" -> "))));
            }
            if chain.len() > doc.policy.len() + 1 {
                break; // a cycle not through `i`; reported when its own members are checked
            }
            cur = next;
        }
    }
    Ok(user_idx)
}

/// Compiles the file's policy `i` (after its fallback chain), under the file's top-level limits.
fn ensure_compiled(
    src: &Src<'_>,
    doc: &FileDoc,
    user_idx: &HashMap<&str, usize>,
    i: usize,
    done: &mut Vec<Option<usize>>,
    policies: &mut Vec<Arc<Policy>>,
    warnings: &mut Vec<PolicyWarning>,
) -> Result<usize, PolicyError> {
    if let Some(at) = done[i] {
        return Ok(at);
    }
    let pd = doc.policy[i].get_ref();
    let fallback = match &pd.fallback {
        None => None,
        Some(f) => match user_idx.get(f.get_ref().as_str()) {
            Some(&j) => {
                let at = ensure_compiled(src, doc, user_idx, j, done, policies, warnings)?;
                Some(policies[at].clone())
            }
            None => find(policies, f.get_ref()).map(|at| policies[at].clone()),
        },
    };
    let p = compile_policy(
        src,
        pd,
        fallback,
        false,
        LimitDefaults::of(src, doc)?,
        warnings,
    )?;
    policies.push(Arc::new(p));
    let at = policies.len() - 1;
    done[i] = Some(at);
    Ok(at)
}

/// The bytes policy names and rule ids are made of. They appear unescaped in decision lines and
/// as metric labels (`decision_log` tests that none of them needs escaping).
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
}

fn check_name(src: &Src<'_>, name: &Spanned<String>, what: &str) -> Result<(), PolicyError> {
    let n = name.get_ref();
    let ok = !n.is_empty() && n.len() <= 128 && n.bytes().all(is_name_byte);
    if ok {
        Ok(())
    } else {
        Err(src.err(
            name.span(),
            format!("{what} {n:?} must be 1-128 characters from A-Z a-z 0-9 - _ . :"),
        ))
    }
}

fn compile_policy(
    src: &Src<'_>,
    pd: &PolicyDoc,
    fallback: Option<Arc<Policy>>,
    builtin: bool,
    limits: LimitDefaults,
    warnings: &mut Vec<PolicyWarning>,
) -> Result<Policy, PolicyError> {
    let rate_limit = rate_limit(src, pd, limits)?;
    let audit = pd.audit.unwrap_or(false);
    let response_headers = match &pd.response_headers {
        Some(m) => header_pairs(src, m.get_ref())?,
        None => Vec::new(),
    };
    let mut rules: Vec<Rule> = Vec::with_capacity(pd.rule.len());
    for r in &pd.rule {
        let rule = compile_rule(src, r, audit)?;
        if rules.iter().any(|x| x.id == rule.id) {
            return Err(src.err(
                r.get_ref().id.span(),
                format!(
                    "duplicate rule id {:?} in policy {:?}",
                    rule.id,
                    pd.name.get_ref()
                ),
            ));
        }
        rules.push(rule);
    }
    near_miss_warnings(src, pd, &rules, fallback.as_deref(), warnings);
    let token_hop_limit = match &pd.token_hop_limit {
        None => None,
        Some(h) => match u8::try_from(*h.get_ref()) {
            Ok(v) if (1..=64).contains(&v) => Some(v),
            _ => return Err(src.err(h.span(), "token_hop_limit must be from 1 to 64")),
        },
    };
    Ok(Policy {
        require_imdsv2: pd.require_imdsv2.unwrap_or(false),
        token_hop_limit,
        name: pd.name.get_ref().clone(),
        description: pd.description.clone(),
        rules,
        fallback,
        response_headers,
        audit,
        builtin,
        rate_limit,
    })
}

/// A warning for each denial of `pd` that near-miss names get past (see `near_miss`), at the
/// denial's `path`/`prefix`/`glob`, naming the allow rule and a path it lets through, with the
/// denial rewritten so that each exposed segment is a segment prefix.
fn near_miss_warnings(
    src: &Src<'_>,
    pd: &PolicyDoc,
    rules: &[Rule],
    fallback: Option<&Policy>,
    out: &mut Vec<PolicyWarning>,
) {
    let (findings, complete) = near_miss::findings(rules, fallback);
    if !complete {
        let (line, column) = line_col(src.text, pd.name.span().start);
        out.push(PolicyWarning {
            line,
            column,
            message: format!(
                "{}policy `{}` is too large for the near-miss check ({} comparisons); \
                 some denials were not checked",
                src.origin,
                pd.name.get_ref(),
                near_miss::MAX_INTERSECTIONS
            ),
            suggestion: "split the policy, or check its denials by hand (docs/policy.md, \
                         \"Near-miss names\")"
                .to_owned(),
        });
    }
    for f in findings {
        let Some(rd) = pd.rule.get(f.rule).map(Spanned::get_ref) else {
            continue;
        };
        let Some((kind, value)) = [
            ("path", &rd.path),
            ("prefix", &rd.prefix),
            ("glob", &rd.glob),
        ]
        .into_iter()
        .find_map(|(k, v)| v.as_ref().map(|v| (k, v))) else {
            continue;
        };
        let text = value.get_ref();
        let names: Vec<String> = text
            .strip_prefix('/')
            .unwrap_or(text)
            .split('/')
            .enumerate()
            .filter(|(i, _)| f.segments.contains(i))
            .map(|(_, s)| format!("`{s}`"))
            .collect();
        let allow = match &f.allow.fallback {
            None => {
                let line = pd
                    .rule
                    .get(f.allow.index)
                    .map_or(0, |r| line_col(src.text, r.get_ref().id.span().start).0);
                format!("allow rule `{}` (line {line})", f.allow.id)
            }
            Some(p) => format!("allow rule `{}` of fallback policy `{p}`", f.allow.id),
        };
        let fixes: Vec<String> = near_miss::suggestion(kind, text, &f.segments)
            .iter()
            .map(|g| format!("glob = \"{g}\""))
            .collect();
        let (line, column) = line_col(src.text, value.span().start);
        out.push(PolicyWarning {
            line,
            column,
            message: format!(
                "{}{} rule `{}` names {} exactly, but {allow} lets through near-miss names \
                 (the name plus trailing characters) such as `GET {}`; a metadata server may \
                 read them as the name (or make `{}` allow named leaves, not a whole tree)",
                src.origin,
                rd.action.get_ref(),
                rd.id.get_ref(),
                names.join(", "),
                f.example,
                f.allow.id,
            ),
            suggestion: fixes.join(", "),
        });
    }
}

/// Response headers the proxy may not be told to set: it owns the framing of its answers.
const RESERVED_RESPONSE_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn header_pairs(
    src: &Src<'_>,
    m: &SpannedMap,
) -> Result<Vec<(HeaderName, HeaderValue)>, PolicyError> {
    let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for (k, v) in m {
        let name = header_name(src, k)?;
        if RESERVED_RESPONSE_HEADERS.contains(&name.as_str()) {
            return Err(src.err(
                k.span(),
                format!("{name} is set by the proxy, not by policy"),
            ));
        }
        let value = HeaderValue::from_str(v.get_ref())
            .map_err(|_| src.err(v.span(), "invalid header value"))?;
        out.push((name, value));
    }
    Ok(out)
}

fn header_name(src: &Src<'_>, k: &Spanned<String>) -> Result<HeaderName, PolicyError> {
    HeaderName::from_bytes(k.get_ref().as_bytes())
        .map_err(|_| src.err(k.span(), format!("invalid header name {:?}", k.get_ref())))
}

fn header_conds(
    src: &Src<'_>,
    m: &Spanned<SpannedMap>,
) -> Result<Vec<(HeaderName, HeaderCond)>, PolicyError> {
    let mut out: Vec<(HeaderName, HeaderCond)> = Vec::new();
    for (k, v) in m.get_ref() {
        let name = header_name(src, k)?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(src.err(
                k.span(),
                format!("header {name} listed twice (names ignore case)"),
            ));
        }
        let cond = if v.get_ref() == "*" {
            HeaderCond::Present
        } else {
            HeaderCond::Exact(
                HeaderValue::from_str(v.get_ref())
                    .map_err(|_| src.err(v.span(), "invalid header value"))?,
            )
        };
        out.push((name, cond));
    }
    if out.is_empty() {
        return Err(src.err(m.span(), "empty header table"));
    }
    Ok(out)
}

/// A query key as the canonicaliser can produce it (see `canon::decode_key`).
fn check_query_key(src: &Src<'_>, k: &Spanned<String>) -> Result<String, PolicyError> {
    let s = k.get_ref();
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'%' | b'=' | b'&' | b';' | b'#'));
    if ok && s != "*" {
        Ok(s.clone())
    } else {
        Err(src.err(k.span(), format!("{s:?} is not a query parameter name")))
    }
}

fn key_list(src: &Src<'_>, l: &Option<SpannedList>) -> Result<Vec<String>, PolicyError> {
    let mut out = Vec::new();
    if let Some(l) = l {
        if l.get_ref().is_empty() {
            return Err(src.err(l.span(), "empty list (leave the key out instead)"));
        }
        for k in l.get_ref() {
            out.push(check_query_key(src, k)?);
        }
    }
    Ok(out)
}

fn status(
    src: &Src<'_>,
    s: &Spanned<i64>,
    allowed: impl Fn(i64) -> bool,
    why: &str,
) -> Result<u16, PolicyError> {
    let v = *s.get_ref();
    if allowed(v) {
        u16::try_from(v).map_err(|_| src.err(s.span(), why))
    } else {
        Err(src.err(s.span(), why))
    }
}

fn compile_rule(
    src: &Src<'_>,
    r: &Spanned<RuleDoc>,
    policy_audit: bool,
) -> Result<Rule, PolicyError> {
    let rd = r.get_ref();
    let id = rd.id.get_ref();
    check_name(src, &rd.id, "rule id")?;
    if id == DEFAULT_DENY_ID {
        return Err(src.err(
            rd.id.span(),
            format!("rule id {DEFAULT_DENY_ID:?} is reserved"),
        ));
    }
    let is_allow = match rd.action.get_ref().as_str() {
        "allow" => true,
        "deny" | "respond" => false,
        other => {
            return Err(src.err(
                rd.action.span(),
                format!("unknown action {other:?} (allow, deny or respond)"),
            ))
        }
    };

    // Allow rules match narrowly by default; deny/respond rules broadly, so that a deny is never
    // skipped because of an unexpected method or query key.
    let methods = match &rd.methods {
        None if is_allow => Methods::List(vec![Method::GET, Method::HEAD]),
        None => Methods::Any,
        Some(l) => compile_methods(src, l)?,
    };

    // `ignore_case`: the pattern is compared with the lower-cased path, so it is lower-cased too.
    // Meant for deny rules: a case variant of a secret path is denied even if an upstream were to
    // treat paths case-insensitively (fail closed).
    let ignore_case = rd.ignore_case.unwrap_or(false);
    let path = compile_path(src, r, ignore_case)?;
    let q = compile_query(src, rd, is_allow)?;
    let headers = match &rd.headers {
        Some(m) => header_conds(src, m)?,
        None => Vec::new(),
    };
    let lacks_headers = match &rd.lacks_headers {
        Some(m) => header_conds(src, m)?,
        None => Vec::new(),
    };

    let action = compile_action(src, rd, id)?;

    Ok(Rule {
        id: id.clone(),
        description: rd.description.clone(),
        methods,
        path,
        query: q.allow,
        require_query: q.require,
        has_query: q.has,
        lacks_query: q.lacks,
        headers,
        lacks_headers,
        ignore_case,
        action,
        audit: rd.audit.unwrap_or(policy_audit),
        cache_ttl: rd
            .cache_ttl_ms
            .as_ref()
            .and_then(|t| u64::try_from(*t.get_ref()).ok())
            .map(std::time::Duration::from_millis),
    })
}

/// A rule's path condition: at most one of `path`, `prefix`, `glob` (none: any path).
fn compile_path(
    src: &Src<'_>,
    r: &Spanned<RuleDoc>,
    ignore_case: bool,
) -> Result<PathMatch, PolicyError> {
    let rd = r.get_ref();
    let fold = |s: &str| -> String {
        if ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.to_owned()
        }
    };
    let given: Vec<&str> = [
        ("path", &rd.path),
        ("prefix", &rd.prefix),
        ("glob", &rd.glob),
    ]
    .iter()
    .filter(|(_, v)| v.is_some())
    .map(|(n, _)| *n)
    .collect();
    if given.len() > 1 {
        return Err(src.err(
            r.span(),
            format!(
                "a rule takes at most one of path, prefix, glob (got {})",
                given.join(", ")
            ),
        ));
    }
    Ok(if let Some(p) = &rd.path {
        match crate::canon::canonicalize_str(&Method::GET, p.get_ref()) {
            Ok(t) if t.raw_query.is_none() && !p.get_ref().contains('?') => {
                PathMatch::Exact(fold(p.get_ref()))
            }
            Ok(_) => {
                return Err(src.err(
                    p.span(),
                    "path must not contain a query (use query/require_query)",
                ))
            }
            Err(e) => {
                return Err(src.err(
                    p.span(),
                    format!("path can never match a canonical path: {}", e.reason),
                ))
            }
        }
    } else if let Some(p) = &rd.prefix {
        let s = p.get_ref();
        if !s.starts_with('/') || !s.bytes().all(crate::canon::is_path_byte) || s.contains("//") {
            return Err(src.err(
                p.span(),
                "prefix must start with / and use only characters a canonical path can hold",
            ));
        }
        PathMatch::Prefix(fold(s))
    } else if let Some(g) = &rd.glob {
        PathMatch::Glob(
            PathGlob::new(&fold(g.get_ref()))
                .map_err(|e| src.err(g.span(), format!("bad glob: {e}")))?,
        )
    } else {
        PathMatch::Any
    })
}

/// A rule's query conditions.
struct QueryConds {
    allow: QueryAllow,
    require: Vec<String>,
    has: Vec<String>,
    lacks: Vec<String>,
}

/// `query`, `require_query`, `has_query`, `lacks_query`, checked against each other: a rule that
/// could never match is refused.
fn compile_query(src: &Src<'_>, rd: &RuleDoc, is_allow: bool) -> Result<QueryConds, PolicyError> {
    let query = match &rd.query {
        None if is_allow => QueryAllow::Keys(Vec::new()),
        None => QueryAllow::Any,
        Some(l) if l.get_ref().len() == 1 && l.get_ref()[0].get_ref() == "*" => QueryAllow::Any,
        Some(l) => {
            let mut keys = Vec::new();
            for k in l.get_ref() {
                if k.get_ref() == "*" {
                    return Err(src.err(k.span(), "\"*\" must be alone in query"));
                }
                keys.push(check_query_key(src, k)?);
            }
            QueryAllow::Keys(keys)
        }
    };
    let require_query = key_list(src, &rd.require_query)?;
    if let (QueryAllow::Keys(allowed), Some(l)) = (&query, &rd.require_query) {
        for k in l.get_ref() {
            if !allowed.contains(k.get_ref()) {
                return Err(src.err(
                    k.span(),
                    format!(
                        "required query key {:?} is not in query, so the rule can never match",
                        k.get_ref()
                    ),
                ));
            }
        }
    }
    let has_query = key_list(src, &rd.has_query)?;
    if let (QueryAllow::Keys(allowed), Some(l)) = (&query, &rd.has_query) {
        if !l
            .get_ref()
            .iter()
            .any(|k| allowed.iter().any(|a| a.eq_ignore_ascii_case(k.get_ref())))
        {
            return Err(src.err(
                l.span(),
                "none of has_query is allowed by query, so the rule can never match",
            ));
        }
    }
    let lacks_query = key_list(src, &rd.lacks_query)?;
    Ok(QueryConds {
        allow: query,
        require: require_query,
        has: has_query,
        lacks: lacks_query,
    })
}

/// The error for a field that belongs to another action.
fn only_for(src: &Src<'_>, field: &str, span: Range<usize>, action: &str) -> PolicyError {
    src.err(
        span,
        format!("{field} is only meaningful with action = \"{action}\""),
    )
}

/// A rule's action with its own fields (`status`, `reason`, `body`, `response_headers`,
/// `cache_ttl_ms`); a field of another action is refused.
fn compile_action(src: &Src<'_>, rd: &RuleDoc, id: &str) -> Result<Action, PolicyError> {
    match rd.action.get_ref().as_str() {
        "allow" => allow_action(src, rd),
        "deny" | "respond" if rd.cache_ttl_ms.is_some() => {
            let span = rd
                .cache_ttl_ms
                .as_ref()
                .map(|t| t.span())
                .unwrap_or_default();
            Err(only_for(src, "cache_ttl_ms", span, "allow"))
        }
        "deny" => deny_action(src, rd, id),
        _ => respond_action(src, rd),
    }
}

fn allow_action(src: &Src<'_>, rd: &RuleDoc) -> Result<Action, PolicyError> {
    if let Some(s) = &rd.status {
        return Err(src.err(
            s.span(),
            "status is not used with action = \"allow\" (upstream answers)",
        ));
    }
    if let Some(x) = &rd.reason {
        return Err(only_for(src, "reason", x.span(), "deny"));
    }
    if let Some(x) = &rd.body {
        return Err(only_for(src, "body", x.span(), "respond"));
    }
    if let Some(x) = &rd.response_headers {
        return Err(only_for(src, "response_headers", x.span(), "respond"));
    }
    if let Some(t) = &rd.cache_ttl_ms {
        let max = super::MAX_CACHE_TTL.as_millis() as i64;
        if !(1..=max).contains(t.get_ref()) {
            return Err(src.err(
                t.span(),
                format!("cache_ttl_ms must be between 1 and {max} (one hour)"),
            ));
        }
    }
    Ok(Action::Allow)
}

fn deny_action(src: &Src<'_>, rd: &RuleDoc, id: &str) -> Result<Action, PolicyError> {
    if let Some(x) = &rd.body {
        return Err(only_for(src, "body", x.span(), "respond"));
    }
    if let Some(x) = &rd.response_headers {
        return Err(only_for(src, "response_headers", x.span(), "respond"));
    }
    let status = match &rd.status {
        None => 403,
        Some(s) => status(
            src,
            s,
            |v| (400..500).contains(&v) && !matches!(v, 404 | 408 | 410 | 429),
            "deny status must be 4xx and not 404, 408, 410 or 429 (clients retry those; use 403)",
        )?,
    };
    let reason = match &rd.reason {
        Some(x) => {
            if x.get_ref().len() > 1024 || x.get_ref().chars().any(char::is_control) {
                return Err(src.err(x.span(), "reason must be one line of at most 1024 bytes"));
            }
            x.get_ref().clone()
        }
        None => format!("denied by rule {id}"),
    };
    Ok(Action::deny(status, reason))
}

fn respond_action(src: &Src<'_>, rd: &RuleDoc) -> Result<Action, PolicyError> {
    if let Some(x) = &rd.reason {
        return Err(only_for(src, "reason", x.span(), "deny"));
    }
    let status = match &rd.status {
        None => 200,
        Some(s) => status(
            src,
            s,
            |v| (200..600).contains(&v),
            "respond status must be 200-599",
        )?,
    };
    let headers = match &rd.response_headers {
        Some(m) => header_pairs(src, m.get_ref())?,
        None => Vec::new(),
    };
    let body = rd
        .body
        .as_ref()
        .map_or_else(Bytes::new, |b| Bytes::from(b.get_ref().clone()));
    Ok(Action::Respond {
        status,
        headers,
        body,
    })
}

fn compile_methods(src: &Src<'_>, l: &SpannedList) -> Result<Methods, PolicyError> {
    let items = l.get_ref();
    if items.is_empty() {
        return Err(src.err(l.span(), "methods is empty, so the rule can never match"));
    }
    if items.len() == 1 && items[0].get_ref() == "*" {
        return Ok(Methods::Any);
    }
    let mut out: Vec<Method> = Vec::new();
    for m in items {
        let s = m.get_ref();
        if s == "*" {
            return Err(src.err(m.span(), "\"*\" must be alone in methods"));
        }
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
        {
            return Err(src.err(
                m.span(),
                format!("method {s:?} must be an upper-case token (methods are case-sensitive)"),
            ));
        }
        if s == "CONNECT" || s == "TRACE" {
            return Err(src.err(
                m.span(),
                format!("{s} is always refused with 400 before policy"),
            ));
        }
        let method =
            Method::from_bytes(s.as_bytes()).map_err(|_| src.err(m.span(), "invalid method"))?;
        if !out.contains(&method) {
            out.push(method);
        }
    }
    Ok(Methods::List(out))
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_col_counts_from_one() {
        let t = "ab\ncd\né f";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 1), (1, 2));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 6), (3, 1));
        assert_eq!(line_col(t, 9), (3, 3));
        assert_eq!(line_col(t, 999), (3, 4));
    }
}
