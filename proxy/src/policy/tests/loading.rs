//! Loading a policy file: errors point at the line, check-policy, sharing across threads.

use super::selection::FALLBACK;
use super::*;

/// (file text, expected line, expected column or 0 for "don't care", message fragment)
#[test]
fn errors_point_at_the_offending_line() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("defualt = \"aws\"\n", 1, 1, "unknown field"),
        ("default = \"nope\"\n", 1, 11, "unknown policy"),
        ("\n\ndefault = 3\n", 3, 0, "invalid type"),
        ("[[policy]]\nname = \"p\"\nbogus = 1\n", 3, 1, "unknown field"),
        ("[[policy]]\nname = \"aws\"\n", 2, 8, "built-in preset"),
        ("[[policy]]\nname = \"p\"\n[[policy]]\nname = \"p\"\n", 4, 8, "duplicate policy name"),
        ("[[policy]]\nname = \"bad name\"\n", 2, 8, "policy name"),
        ("[[policy]]\nname = \"p\"\nfallback = \"ghost\"\n", 3, 12, "unknown fallback"),
        (
            "[[policy]]\nname = \"a\"\nfallback = \"b\"\n[[policy]]\nname = \"b\"\nfallback = \"a\"\n",
            3,
            12,
            "fallback cycle: a -> b -> a",
        ),
        ("[[policy]]\nname = \"a\"\nfallback = \"a\"\n", 3, 12, "fallback cycle"),
        (
            "[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\n[[policy.rule]]\nid = \"r\"\naction = \"deny\"\n",
            7,
            6,
            "duplicate rule id",
        ),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\nwhat = 1\n", 6, 1, "unknown field"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\n", 3, 0, "missing field `action`"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\naction = \"allow\"\n", 3, 0, "missing field `id`"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"permit\"\n", 5, 10, "unknown action"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\nglob = \"/a/**/**\"\naction = \"allow\"\n", 5, 8, "bad glob"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\nglob = \"/a/b**\"\naction = \"allow\"\n", 5, 8, "bad glob"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\nglob = \"a/b\"\naction = \"allow\"\n", 5, 8, "bad glob"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\npath = \"/a/../b\"\naction = \"allow\"\n", 5, 8, "can never match"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\npath = \"/a%2fb\"\naction = \"allow\"\n", 5, 8, "can never match"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\npath = \"/a?x=1\"\naction = \"allow\"\n", 5, 8, "query"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\nprefix = \"a\"\naction = \"allow\"\n", 5, 10, "prefix"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\npath = \"/a\"\nglob = \"/b\"\naction = \"allow\"\n", 3, 0, "at most one of path, prefix, glob"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\nmethods = [\"get\"]\naction = \"allow\"\n", 5, 12, "upper-case"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\nmethods = [\"GET\", \"*\"]\naction = \"allow\"\n", 5, 19, "alone"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\nmethods = [\"TRACE\"]\naction = \"allow\"\n", 5, 12, "refused"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\nmethods = []\naction = \"allow\"\n", 5, 11, "empty"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"deny\"\nstatus = 404\n", 6, 10, "not 404"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"deny\"\nstatus = 200\n", 6, 10, "4xx"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"respond\"\nstatus = 99999\n", 6, 10, "200-599"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\nstatus = 200\n", 6, 10, "status is not used"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\nreason = \"x\"\n", 6, 10, "reason"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"deny\"\nbody = \"x\"\n", 6, 8, "body"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\nquery = [\"a\"]\nrequire_query = [\"b\"]\n", 7, 18, "never match"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\nquery = [\"a\", \"*\"]\n", 6, 15, "alone"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\nquery = [\"a=b\"]\n", 6, 10, "not a query parameter"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\nheaders = { \"bad name\" = \"x\" }\n", 6, 13, "invalid header name"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\nheaders = { \"A\" = \"x\", \"a\" = \"y\" }\n", 6, 0, "listed twice"),
        ("[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"default-deny\"\naction = \"allow\"\n", 4, 6, "reserved"),
        ("[[policy]]\nname = \"p\"\nresponse_headers = { \"Content-Length\" = \"1\" }\n", 3, 22, "set by the proxy"),
        ("[[selector]]\npolicy = \"aws\"\n", 1, 0, "no condition"),
        ("[[selector]]\nnamespace = \"x\"\npolicy = \"ghost\"\n", 3, 10, "unknown policy"),
        ("annotation_policies = [\"aws\", \"ghost\"]\n", 1, 31, "unknown policy"),
        ("annotation_key = \"\"\n", 1, 18, "annotation_key"),
        ("[policy]\nname = \"p\"\n", 1, 0, "invalid type"),
        ("default = \"aws\"\ndefault = \"gcp\"\n", 2, 0, "duplicate key"),
        ("[[policy]\n", 1, 0, ""),
    ];
    assert_refused_at(cases);
}

#[test]
fn check_policy_file_reports() {
    let dir = std::env::temp_dir().join(format!("mg-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, FALLBACK).unwrap();
    let check = check_policy_file(&good).unwrap();
    let summary = check.summary;
    assert!(summary.contains("ok"), "{summary}");
    assert!(summary.contains("default policy: strict"), "{summary}");
    assert!(
        summary.contains("strict: 1 rules, fallback middle"),
        "{summary}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[policy]]\nname = \"p\"\nfallback = \"ghost\"\n").unwrap();
    let e = check_policy_file(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3, column 12: unknown fallback policy \"ghost\""
    );
    let e = check_policy_file(&dir.join("missing.toml")).unwrap_err();
    assert_eq!(e.line, 0);
    assert!(e.to_string().starts_with("cannot read"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn policy_set_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicySet>();
    assert_send_sync::<Arc<PolicySet>>();
}
