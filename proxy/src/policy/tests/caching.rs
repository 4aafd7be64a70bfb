//! cache_ttl_ms: an allow-only, bounded option; what the aws preset caches.

use super::*;

fn decide_ttl(p: &Policy, method: Method, target: &str) -> (String, Option<std::time::Duration>) {
    let t = canonicalize_str(&method, target).unwrap();
    let h = HeaderMap::new();
    let view = RequestView {
        method: &method,
        target: &t,
        headers: &h,
    };
    let d = p.decide(&view);
    (d.rule_id.to_owned(), d.cache_ttl)
}

#[test]
fn cache_ttl_is_an_allow_only_bounded_option() {
    let ok = PolicySet::from_toml(
        "default = \"p\"\n[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"a\"\npath = \"/x\"\naction = \"allow\"\ncache_ttl_ms = 1500\n",
    )
    .unwrap();
    let (id, ttl) = decide_ttl(ok.default_policy(), Method::GET, "/x");
    assert_eq!(id, "a");
    assert_eq!(ttl, Some(std::time::Duration::from_millis(1500)));
    for (extra, want) in [
        ("cache_ttl_ms = 0", "between 1 and 3600000"),
        ("cache_ttl_ms = 3600001", "between 1 and 3600000"),
        ("cache_ttl_ms = -5", "between 1 and 3600000"),
    ] {
        let text = format!(
            "[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"a\"\npath = \"/x\"\naction = \"allow\"\n{extra}\n"
        );
        let e = PolicySet::from_toml(&text).unwrap_err();
        assert!(e.message.contains(want), "{extra}: {e}");
        assert_eq!(e.line, 7, "{extra}: {e}");
    }
    for action in ["deny", "respond"] {
        let text = format!(
            "[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"a\"\npath = \"/x\"\naction = \"{action}\"\ncache_ttl_ms = 100\n"
        );
        let e = PolicySet::from_toml(&text).unwrap_err();
        assert!(e.message.contains("cache_ttl_ms"), "{action}: {e}");
    }
}

/// The aws preset caches only items fixed for the instance's life; never credentials, the token
/// PUT, user-data, or what changes while the instance runs.
#[test]
fn aws_preset_caches_only_static_items() {
    let set = PolicySet::builtin_default();
    let aws = set.policy("aws").unwrap();
    for path in [
        "/latest/meta-data/instance-id",
        "/latest/meta-data/ami-id",
        "/latest/meta-data/instance-type",
        "/2009-04-04/meta-data/local-ipv4",
        "/latest/meta-data/placement/availability-zone",
        "/latest/meta-data/placement/region",
        "/latest/dynamic/instance-identity/document",
        "/latest/dynamic/instance-identity/pkcs7",
    ] {
        let (_, ttl) = decide_ttl(aws, Method::GET, path);
        assert_eq!(ttl, Some(std::time::Duration::from_secs(60)), "{path}");
    }
    for (method, path) in [
        (Method::PUT, "/latest/api/token"),
        (Method::GET, "/latest/meta-data/iam/security-credentials/"),
        (
            Method::GET,
            "/latest/meta-data/iam/security-credentials/role",
        ),
        (Method::GET, "/latest/user-data"),
        (Method::GET, "/latest/meta-data/spot/instance-action"),
        (Method::GET, "/latest/meta-data/spot/termination-time"),
        (Method::GET, "/latest/meta-data/instance-action"),
        (
            Method::GET,
            "/latest/meta-data/events/maintenance/scheduled",
        ),
        (Method::GET, "/latest/meta-data/public-ipv4"),
        (Method::GET, "/latest/meta-data/security-groups"),
        (Method::GET, "/latest/meta-data/network/interfaces/macs/"),
        (Method::GET, "/latest/meta-data/"),
    ] {
        let (id, ttl) = decide_ttl(aws, method.clone(), path);
        assert_eq!(ttl, None, "{method} {path} (rule {id})");
    }
    for p in ["deny-all", "gcp", "azure", "audit"] {
        let (_, ttl) = decide_ttl(
            set.policy(p).unwrap(),
            Method::GET,
            "/latest/meta-data/instance-id",
        );
        assert_eq!(ttl, None, "{p}");
    }
}
