//! Which policy a pod gets: selection order, annotation bounds, fallback chains.

use super::*;
use std::collections::BTreeMap;

/// A pod with namespace, name and annotations set or left out (the shared fixture otherwise).
fn rec(ns: Option<&str>, pod: Option<&str>, ann: &[(&str, &str)]) -> PodRecord {
    let mut r = crate::testing::pod_record("c0ffee", &["10.0.0.2"], "");
    r.namespace = ns.map(str::to_owned);
    r.pod_name = pod.map(str::to_owned);
    r.annotations = ann
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    r
}

const SELECT: &str = r#"
default = "aws"
annotation_policies = ["audit", "readonly"]

[[selector]]
namespace = "kube-system"
policy = "deny-all"

[[selector]]
namespace = "team-*"
pod = "ci-*"
policy = "gcp"

[[selector]]
annotations = { "example.com/tier" = "gold*" }
policy = "azure"

[[policy]]
name = "readonly"
fallback = "aws"
"#;

#[test]
fn selection_order_and_annotation_bounds() {
    let set = PolicySet::from_toml(SELECT).unwrap();
    let pick = |r: &PodRecord| {
        let s = set.selection(r);
        (s.policy.name().to_owned(), s.by, s.note.is_some())
    };
    let k = DEFAULT_ANNOTATION_KEY;
    // selectors first, in order
    assert_eq!(
        pick(&rec(Some("kube-system"), Some("x"), &[])),
        ("deny-all".into(), SelectedBy::Selector(0), false)
    );
    assert_eq!(
        pick(&rec(Some("kube-system"), Some("ci-1"), &[(k, "audit")])),
        ("deny-all".into(), SelectedBy::Selector(0), false)
    );
    assert_eq!(
        pick(&rec(Some("team-a"), Some("ci-7"), &[])),
        ("gcp".into(), SelectedBy::Selector(1), false)
    );
    assert_eq!(
        pick(&rec(Some("team-a"), Some("ci-7"), &[(k, "audit")])),
        ("gcp".into(), SelectedBy::Selector(1), false)
    );
    // both conditions must hold
    assert_eq!(
        pick(&rec(Some("team-a"), Some("web"), &[])),
        ("aws".into(), SelectedBy::Default, false)
    );
    assert_eq!(
        pick(&rec(
            Some("team-a"),
            Some("web"),
            &[("example.com/tier", "golden")]
        )),
        ("azure".into(), SelectedBy::Selector(2), false)
    );
    assert_eq!(
        pick(&rec(None, None, &[("example.com/tier", "silver")])),
        ("aws".into(), SelectedBy::Default, false)
    );
    // a condition on a missing field does not hold
    assert_eq!(
        pick(&rec(None, Some("ci-7"), &[])),
        ("aws".into(), SelectedBy::Default, false)
    );
    // then the annotation, bounded by annotation_policies
    assert_eq!(
        pick(&rec(Some("default"), Some("p"), &[(k, "audit")])),
        ("audit".into(), SelectedBy::Annotation, false)
    );
    assert_eq!(
        pick(&rec(Some("default"), Some("p"), &[(k, "readonly")])),
        ("readonly".into(), SelectedBy::Annotation, false)
    );
    assert_eq!(
        pick(&rec(Some("default"), Some("p"), &[(k, "gcp")])),
        ("deny-all".into(), SelectedBy::AnnotationRejected, true)
    );
    assert_eq!(
        pick(&rec(Some("default"), Some("p"), &[(k, "no-such")])),
        ("deny-all".into(), SelectedBy::AnnotationRejected, true)
    );
    assert_eq!(
        pick(&rec(Some("default"), Some("p"), &[(k, "Audit")])),
        ("deny-all".into(), SelectedBy::AnnotationRejected, true)
    );
    assert_eq!(
        pick(&rec(Some("default"), Some("p"), &[(k, "")])),
        ("deny-all".into(), SelectedBy::AnnotationRejected, true)
    );
    // then default
    assert_eq!(
        pick(&rec(Some("default"), Some("p"), &[])),
        ("aws".into(), SelectedBy::Default, false)
    );
    assert_eq!(
        pick(&rec(None, None, &[])),
        ("aws".into(), SelectedBy::Default, false)
    );
    let note = set.selection(&rec(None, None, &[(k, "gcp")])).note.unwrap();
    assert!(
        note.contains("metaguard.io/policy") && note.contains("\"gcp\""),
        "{note}"
    );
    assert_eq!(
        set.select(&rec(Some("kube-system"), None, &[])).name(),
        "deny-all"
    );
}

#[test]
fn custom_annotation_key_and_no_list_means_nothing_allowed() {
    let set = PolicySet::from_toml("annotation_key = \"x/p\"\n").unwrap();
    assert_eq!(set.annotation_key(), "x/p");
    let s = set.selection(&rec(None, None, &[("x/p", "audit")]));
    assert_eq!(
        (s.policy.name(), s.by),
        ("deny-all", SelectedBy::AnnotationRejected)
    );
    let s = set.selection(&rec(None, None, &[("metaguard.io/policy", "audit")]));
    assert_eq!((s.policy.name(), s.by), ("deny-all", SelectedBy::Default));
}

#[test]
fn empty_file_is_deny_all() {
    let set = PolicySet::from_toml("").unwrap();
    assert_eq!(set.default_policy().name(), "deny-all");
    assert_eq!(set.policy_names().count(), PRESETS.len());
}

pub(super) const FALLBACK: &str = r#"
default = "strict"

[[policy]]
name = "strict"
fallback = "middle"
response_headers = { "X-Policy" = "strict" }
[[policy.rule]]
id = "no-hostname"
path = "/latest/meta-data/hostname"
action = "deny"
status = 451
reason = "not here"

[[policy]]
name = "middle"
fallback = "aws"
audit = true
[[policy.rule]]
id = "fake-creds"
glob = "/latest/meta-data/iam/security-credentials/**"
action = "respond"
status = 200
body = "{}"
response_headers = { "Content-Type" = "application/json" }
"#;

#[test]
fn fallback_chain() {
    let set = PolicySet::from_toml(FALLBACK).unwrap();
    let p = set.default_policy();
    assert_eq!(p.name(), "strict");
    assert_eq!(p.fallback_name(), Some("middle"));
    check_table(
        p,
        &[
            (
                "GET",
                "/latest/meta-data/hostname",
                NONE,
                Out::Deny(451),
                "no-hostname",
            ),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/role",
                NONE,
                Out::Respond(200),
                "fake-creds",
            ),
            (
                "GET",
                "/latest/meta-data/iam/info",
                NONE,
                Out::Deny(403),
                "iam",
            ),
            (
                "GET",
                "/latest/meta-data/instance-id",
                NONE,
                Out::Allow,
                "meta-data",
            ),
            ("GET", "/nothing", NONE, Out::Deny(403), DEFAULT_DENY_ID),
        ],
    );
    let t = canonicalize_str(&Method::GET, "/latest/meta-data/iam/security-credentials/").unwrap();
    let h = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        target: &t,
        headers: &h,
    };
    let d = p.decide(&view);
    assert_eq!(d.policy, "middle");
    assert!(d.audit, "middle is an audit policy");
    match d.action {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            assert_eq!(*status, 200);
            assert_eq!(&body[..], b"{}");
            assert_eq!(headers[0].0, "content-type");
        }
        other => panic!("{other:?}"),
    }
    assert!(d.deny_body(&view).is_none());
    let t = canonicalize_str(&Method::GET, "/nothing").unwrap();
    let view = RequestView {
        method: &Method::GET,
        target: &t,
        headers: &h,
    };
    let d = p.decide(&view);
    assert_eq!(d.policy, "strict");
    assert_eq!(d.deny_body(&view).unwrap(), "no rule allows GET /nothing\n");
    assert_eq!(p.response_headers()[0].0, "x-policy");
}
