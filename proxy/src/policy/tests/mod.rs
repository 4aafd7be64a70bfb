//! Policy language, selection and preset tests, by concern (one file each). Presets are checked
//! path by path: each table row is (method, target, headers, expected outcome, expected rule id).

use super::*;
use crate::canon::canonicalize_str;
use crate::http1::rules::check_request_headers;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Allow,
    Deny(u16),
    Respond(u16),
    /// Refused before policy (canonicaliser or header checks).
    Refused(u16),
}

/// Run a request through the same steps as the proxy: header checks, canonicaliser, decision.
fn run(p: &Policy, method: &str, target: &str, headers: &[(&str, &str)]) -> (Out, String) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    if let Err(r) = check_request_headers(http::Version::HTTP_11, &map) {
        return (Out::Refused(r.status), String::new());
    }
    let t = match canonicalize_str(&method, target) {
        Ok(t) => t,
        Err(r) => return (Out::Refused(r.status), String::new()),
    };
    let view = RequestView {
        method: &method,
        target: &t,
        headers: &map,
    };
    let d = p.decide(&view);
    let out = match d.action {
        Action::Allow => Out::Allow,
        Action::Deny { status, .. } => Out::Deny(*status),
        Action::Respond { status, .. } => Out::Respond(*status),
    };
    (out, d.rule_id.to_owned())
}

type Row<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Out, &'a str);

fn check_table(p: &Policy, rows: &[Row<'_>]) {
    let mut failures = Vec::new();
    for (m, t, h, want, rule) in rows {
        let (got, got_rule) = run(p, m, t, h);
        let rule_ok = rule.is_empty() || got_rule == *rule;
        if got != *want || !rule_ok {
            failures.push(format!(
                "{} {m} {t} {h:?}: want {want:?} by {rule:?}, got {got:?} by {got_rule:?}",
                p.name()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn builtin(name: &str) -> PolicySet {
    let set = PolicySet::builtin_default();
    assert!(set.policy(name).is_some(), "{name}");
    set
}

const NONE: &[(&str, &str)] = &[];

const TTL: &[(&str, &str)] = &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")];
const TOKEN: &[(&str, &str)] = &[("X-aws-ec2-metadata-token", "AQAEAB==")];

mod aws;
mod caching;
mod conf_files;
mod gcp_azure;
mod loading;
mod near_miss;
mod presets;
mod rate_limits;
mod rules;
mod selection;

/// Each `(text, line, column, fragment)`: the policy file `text` is refused at that line (and
/// column, unless 0), with a message containing `fragment` and shown as `line L, column C: ...`.
fn assert_refused_at(cases: &[(&str, usize, usize, &str)]) {
    for (text, line, col, frag) in cases {
        let e = match PolicySet::from_toml(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        let shown = e.to_string();
        assert_eq!(e.line, *line, "{text:?}: {shown}");
        if *col != 0 {
            assert_eq!(e.column, *col, "{text:?}: {shown}");
        }
        assert!(e.message.contains(frag), "{text:?}: {shown}");
        assert!(
            shown.starts_with(&format!("line {line}, column ")),
            "{shown}"
        );
    }
}
