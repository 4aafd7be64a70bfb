//! Built-in presets other than the clouds': compile, deny-all, the default-deny reason, audit.

use super::*;

#[test]
fn presets_all_compile() {
    let set = load::builtin_set().unwrap();
    let names: Vec<&str> = set.policy_names().collect();
    assert_eq!(names, ["deny-all", "aws", "gcp", "azure", "audit"]);
    assert_eq!(set.default_policy().name(), "deny-all");
    for p in &set.policies {
        assert!(p.is_builtin());
    }
}

#[test]
fn deny_all_preset() {
    let set = builtin("deny-all");
    let p = set.policy("deny-all").unwrap();
    check_table(
        p,
        &[
            ("GET", "/", NONE, Out::Deny(403), DEFAULT_DENY_ID),
            (
                "GET",
                "/latest/meta-data/instance-id",
                NONE,
                Out::Deny(403),
                DEFAULT_DENY_ID,
            ),
            (
                "PUT",
                "/latest/api/token",
                &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
                Out::Deny(403),
                DEFAULT_DENY_ID,
            ),
        ],
    );
}

#[test]
fn default_deny_reason_names_method_and_path() {
    let set = PolicySet::builtin_default();
    let p = set.policy("deny-all").unwrap();
    let t = canonicalize_str(&Method::POST, "/latest/meta-data/?x=1").unwrap();
    let h = HeaderMap::new();
    let view = RequestView {
        method: &Method::POST,
        target: &t,
        headers: &h,
    };
    let d = p.decide(&view);
    assert!(d.is_default_deny());
    assert_eq!(d.policy, "deny-all");
    assert_eq!(
        d.deny_body(&view).unwrap(),
        "no rule allows POST /latest/meta-data/\n"
    );
    assert!(matches!(d.action, Action::Deny { status: 403, .. }));
}

#[test]
fn audit_preset() {
    let set = builtin("audit");
    let p = set.policy("audit").unwrap();
    check_table(
        p,
        &[
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/role",
                NONE,
                Out::Allow,
                "audit-all",
            ),
            ("PUT", "/latest/api/token", TTL, Out::Allow, "audit-all"),
            ("POST", "/anything?x=1&y=2", NONE, Out::Allow, "audit-all"),
            ("DELETE", "/", NONE, Out::Allow, "audit-all"),
            ("GET", "/a/../b", NONE, Out::Refused(400), ""),
        ],
    );
    let t = canonicalize_str(&Method::GET, "/x").unwrap();
    let h = HeaderMap::new();
    let d = p.decide(&RequestView {
        method: &Method::GET,
        target: &t,
        headers: &h,
    });
    assert!(d.audit);
}
