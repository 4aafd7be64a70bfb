//! Rule conditions of the policy language.

use super::*;

const RULES: &str = r#"
default = "p"
[[policy]]
name = "p"

[[policy.rule]]
id = "deny-broad"
prefix = "/secret"
action = "deny"

[[policy.rule]]
id = "exact"
path = "/a"
action = "allow"

[[policy.rule]]
id = "any-query"
path = "/q"
query = ["*"]
action = "allow"

[[policy.rule]]
id = "some-query"
path = "/k"
query = ["a", "b"]
require_query = ["a"]
action = "allow"

[[policy.rule]]
id = "header-present"
path = "/h"
methods = ["PUT", "GET"]
headers = { "X-Token" = "*", "X-Mode" = "on" }
action = "allow"

[[policy.rule]]
id = "no-key"
glob = "/l/**"
lacks_query = ["key", "sig"]
action = "deny"
reason = "key and sig required"

[[policy.rule]]
id = "l"
glob = "/l/**"
query = ["key", "sig"]
action = "allow"

[[policy.rule]]
id = "teapot"
path = "/tea"
methods = ["*"]
action = "respond"
status = 418
"#;

#[test]
fn rule_conditions() {
    let set = PolicySet::from_toml(RULES).unwrap();
    let p = set.default_policy();
    let dd = DEFAULT_DENY_ID;
    check_table(
        p,
        &[
            // deny rules match any method and any query by default
            ("GET", "/secret", NONE, Out::Deny(403), "deny-broad"),
            (
                "DELETE",
                "/secrets/x?y=1",
                NONE,
                Out::Deny(403),
                "deny-broad",
            ),
            // allow rules: GET and HEAD, no query by default
            ("GET", "/a", NONE, Out::Allow, "exact"),
            ("HEAD", "/a", NONE, Out::Allow, "exact"),
            ("POST", "/a", NONE, Out::Deny(403), dd),
            ("GET", "/a?x=1", NONE, Out::Deny(403), dd),
            ("GET", "/a?", NONE, Out::Allow, "exact"),
            ("GET", "/a/", NONE, Out::Deny(403), dd),
            ("GET", "/A", NONE, Out::Deny(403), dd),
            ("GET", "/q?anything=1&else", NONE, Out::Allow, "any-query"),
            ("GET", "/k?a=1", NONE, Out::Allow, "some-query"),
            ("GET", "/k?b=1&a=2", NONE, Out::Allow, "some-query"),
            ("GET", "/k?b=1", NONE, Out::Deny(403), dd),
            ("GET", "/k?a=1&c=1", NONE, Out::Deny(403), dd),
            ("GET", "/k?A=1", NONE, Out::Deny(403), dd),
            ("GET", "/k", NONE, Out::Deny(403), dd),
            (
                "PUT",
                "/h",
                &[("x-token", "t"), ("x-mode", "on")],
                Out::Allow,
                "header-present",
            ),
            (
                "GET",
                "/h",
                &[("X-TOKEN", ""), ("X-MODE", "on")],
                Out::Allow,
                "header-present",
            ),
            (
                "GET",
                "/h",
                &[("x-token", "t"), ("x-mode", "ON")],
                Out::Deny(403),
                dd,
            ),
            ("GET", "/h", &[("x-mode", "on")], Out::Deny(403), dd),
            (
                "HEAD",
                "/h",
                &[("x-token", "t"), ("x-mode", "on")],
                Out::Deny(403),
                dd,
            ),
            ("GET", "/l/x", NONE, Out::Deny(403), "no-key"),
            ("GET", "/l/x?key=1", NONE, Out::Deny(403), "no-key"),
            ("GET", "/l/x?key=1&sig=2", NONE, Out::Allow, "l"),
            ("GET", "/l?sig=2&key=1", NONE, Out::Allow, "l"),
            ("GET", "/tea", NONE, Out::Respond(418), "teapot"),
            ("PATCH", "/tea?x", NONE, Out::Respond(418), "teapot"),
        ],
    );
}
