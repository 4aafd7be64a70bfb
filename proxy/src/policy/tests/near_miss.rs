//! Near-miss names (issue 14): names that differ from a denied one only by trailing characters
//! are denied under every preset, the old gcp shape let them through (the control), and
//! `check-policy` warns about the pattern that did it, with the line and a fix.

use super::*;

const FLAVOR: &[(&str, &str)] = &[("Metadata-Flavor", "Google")];
const MD: &[(&str, &str)] = &[("Metadata", "true")];

/// The gcp preset as it was before issue 14, as a user policy: the same rules, with the three
/// denials naming exact segments under the broad `v1` allow (the shape that let near misses
/// through). Derived from the current preset so the two differ in nothing else.
fn old_gcp() -> String {
    let old = crate::policy::presets::GCP
        .replace("name = \"gcp\"", "name = \"old-gcp\"")
        .replace(
            "glob = \"/**/kube-env*/**\"",
            "glob = \"/computeMetadata/*/instance/attributes/kube-env/**\"",
        )
        .replace(
            "glob = \"/**/service-accounts*/*/token*/**\"",
            "glob = \"/**/service-accounts/*/token/**\"",
        )
        .replace(
            "glob = \"/**/service-accounts*/*/identity*/**\"",
            "glob = \"/**/service-accounts/*/identity/**\"",
        );
    format!("default = \"old-gcp\"\n{old}")
}

/// Trailing characters a lenient server might drop or a sloppy one might match.
const TAILS: &[&str] = &[".", "x", "~", "-", "_", "..", ".json", "0"];

/// Every near miss of every denied leaf in the gcp preset, plus near misses of the segments on
/// the way to them, and case variants: each denied by the leaf's own rule.
#[test]
fn gcp_near_misses_are_denied() {
    let set = builtin("gcp");
    let p = set.policy("gcp").unwrap();
    let mut rows: Vec<(String, &str)> = Vec::new();
    for t in TAILS {
        rows.push((
            format!("/computeMetadata/v1/instance/attributes/kube-env{t}"),
            "kube-env",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance/attributes/KUBE-ENV{t}"),
            "kube-env",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance/attributes/kube-env{t}/"),
            "kube-env",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance/attributes{t}/kube-env"),
            "kube-env",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance{t}/attributes/kube-env"),
            "kube-env",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance/service-accounts/default/token{t}"),
            "service-account-token",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance/service-accounts/default/Token{t}"),
            "service-account-token",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance/service-accounts{t}/default/token"),
            "service-account-token",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance/service-accounts/default{t}/token"),
            "service-account-token",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance/service-accounts/default/identity{t}"),
            "service-account-identity",
        ));
        rows.push((
            format!("/computeMetadata/v1/instance/service-accounts{t}/default/identity"),
            "service-account-identity",
        ));
    }
    let table: Vec<Row<'_>> = rows
        .iter()
        .map(|(t, id)| ("GET", t.as_str(), FLAVOR, Out::Deny(403), *id))
        .collect();
    check_table(p, &table);
    // What canon refuses stays refused: escapes and matrix parameters never reach policy.
    check_table(
        p,
        &[
            (
                "GET",
                "/computeMetadata/v1/instance/attributes/kube-env%2e",
                FLAVOR,
                Out::Refused(400),
                "",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/attributes/kube-env%2E",
                FLAVOR,
                Out::Refused(400),
                "",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/attributes/kube-env%7e",
                FLAVOR,
                Out::Refused(400),
                "",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/attributes/kube-env;x",
                FLAVOR,
                Out::Refused(400),
                "",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/service-accounts/default/token%2e",
                FLAVOR,
                Out::Refused(400),
                "",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/service-accounts/default/token;x=1",
                FLAVOR,
                Out::Refused(400),
                "",
            ),
        ],
    );
}

/// What real clients fetch stays allowed (google-auth: email, scopes, the recursive listing;
/// the guest agent's attributes; names that merely start like a secret's parent).
#[test]
fn gcp_client_paths_stay_allowed() {
    let set = builtin("gcp");
    let p = set.policy("gcp").unwrap();
    check_table(
        p,
        &[
            (
                "GET",
                "/computeMetadata/v1/instance/service-accounts/default/email",
                FLAVOR,
                Out::Allow,
                "service-accounts",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/service-accounts/default/scopes",
                FLAVOR,
                Out::Allow,
                "service-accounts",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/service-accounts/default/aliases",
                FLAVOR,
                Out::Allow,
                "service-accounts",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/service-accounts/?recursive=true",
                FLAVOR,
                Out::Allow,
                "service-accounts",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/service-accounts/default/?recursive=true",
                FLAVOR,
                Out::Allow,
                "service-accounts",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/attributes/kube-labels",
                FLAVOR,
                Out::Allow,
                "v1",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/attributes/kubelet-config",
                FLAVOR,
                Out::Allow,
                "v1",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/attributes/cluster-name",
                FLAVOR,
                Out::Allow,
                "v1",
            ),
            (
                "GET",
                "/computeMetadata/v1/project/project-id",
                FLAVOR,
                Out::Allow,
                "v1",
            ),
            (
                "GET",
                "/computeMetadata/v1/instance/?alt=json",
                FLAVOR,
                Out::Allow,
                "v1",
            ),
        ],
    );
}

#[test]
fn azure_and_aws_near_misses_are_denied() {
    let set = PolicySet::builtin_default();
    let azure = set.policy("azure").unwrap();
    let aws = set.policy("aws").unwrap();
    let mut az: Vec<(String, &str)> = Vec::new();
    let mut aw: Vec<(String, &str)> = Vec::new();
    for t in TAILS {
        az.push((
            format!("/metadata/instance/compute/userData{t}?api-version=2021-01-01"),
            "user-data",
        ));
        az.push((
            format!("/metadata/instance/compute{t}/userData?api-version=2021-01-01"),
            "user-data",
        ));
        az.push((
            format!("/metadata/instance/compute/USERDATA{t}?api-version=2021-01-01"),
            "user-data",
        ));
        az.push((
            format!("/metadata/identity{t}/oauth2/token?api-version=2018-02-01&resource=x"),
            "managed-identity",
        ));
        aw.push((format!("/latest/meta-data/iam{t}"), "iam"));
        aw.push((
            format!("/latest/meta-data/iam{t}/security-credentials/"),
            "iam",
        ));
        aw.push((format!("/latest/meta-data/IAM{t}/info"), "iam"));
        aw.push((
            format!("/latest/meta-data/identity-credentials{t}"),
            "identity-credentials",
        ));
        aw.push((format!("/latest/user-data{t}"), "user-data"));
        aw.push((format!("/2009-04-04/user-data{t}"), "user-data"));
        aw.push((format!("/latest/meta-data/tags{t}/instance"), "tags"));
    }
    let az: Vec<Row<'_>> = az
        .iter()
        .map(|(t, id)| ("GET", t.as_str(), MD, Out::Deny(403), *id))
        .collect();
    let aw: Vec<Row<'_>> = aw
        .iter()
        .map(|(t, id)| ("GET", t.as_str(), NONE, Out::Deny(403), *id))
        .collect();
    check_table(azure, &az);
    check_table(aws, &aw);
    // Clients' paths stay allowed.
    check_table(
        azure,
        &[
            (
                "GET",
                "/metadata/instance/compute/vmId?api-version=2017-08-01&format=text",
                MD,
                Out::Allow,
                "instance",
            ),
            (
                "GET",
                "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
                MD,
                Out::Allow,
                "instance",
            ),
        ],
    );
}

/// The control: under the old gcp shape the near misses are allowed (forwarded), so the tests
/// above can fail; under the preset they are denied.
#[test]
fn old_gcp_shape_forwards_near_misses() {
    let old = PolicySet::from_toml(&old_gcp()).unwrap();
    let old = old.policy("old-gcp").unwrap();
    let new = builtin("gcp");
    let new = new.policy("gcp").unwrap();
    // (target, the old shape's allow rule, the preset's deny rule)
    for (target, allowed_by, denied_by) in [
        (
            "/computeMetadata/v1/instance/attributes/kube-env.",
            "v1",
            "kube-env",
        ),
        (
            "/computeMetadata/v1/instance/attributes/kube-envx",
            "v1",
            "kube-env",
        ),
        (
            "/computeMetadata/v1/instance/attributes/kube-env~",
            "v1",
            "kube-env",
        ),
        (
            "/computeMetadata/v1/instance/attributes./kube-env",
            "v1",
            "kube-env",
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/default/token.",
            "service-accounts",
            "service-account-token",
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/default/identity.",
            "service-accounts",
            "service-account-identity",
        ),
    ] {
        assert_eq!(
            run(old, "GET", target, FLAVOR),
            (Out::Allow, allowed_by.to_owned()),
            "old shape: {target}"
        );
        assert_eq!(
            run(new, "GET", target, FLAVOR),
            (Out::Deny(403), denied_by.to_owned()),
            "preset: {target}"
        );
    }
    // The exact names were denied before as now.
    assert_eq!(
        run(
            old,
            "GET",
            "/computeMetadata/v1/instance/attributes/kube-env",
            FLAVOR
        )
        .0,
        Out::Deny(403)
    );
}

/// 1-based line and column of the first line containing `needle`, column at its first `"`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"));
    (i + 1, line.find('"').unwrap() + 1)
}

#[test]
fn check_policy_warns_about_the_old_gcp_shape() {
    let old = old_gcp();
    let set = PolicySet::from_toml(&old).unwrap();
    let w = set.warnings();
    assert_eq!(w.len(), 3, "{w:#?}");
    let v1_line = position(&old, "id = \"v1\"").0;

    let (line, column) = position(
        &old,
        "glob = \"/computeMetadata/*/instance/attributes/kube-env/**\"",
    );
    assert_eq!((w[0].line, w[0].column), (line, column));
    assert_eq!(
        w[0].message,
        format!(
            "deny rule `kube-env` names `instance`, `attributes`, `kube-env` exactly, but allow rule \
             `v1` (line {v1_line}) lets through near-miss names (the name plus trailing characters) \
             such as `GET /computeMetadata/v1/instance/attributes/kube-env.`; a metadata server may \
             read them as the name (or make `v1` allow named leaves, not a whole tree)"
        )
    );
    assert_eq!(
        w[0].suggestion,
        "glob = \"/computeMetadata/*/instance*/attributes*/kube-env*/**\""
    );

    let (line, _) = position(&old, "glob = \"/**/service-accounts/*/token/**\"");
    assert_eq!(w[1].line, line);
    assert!(
        w[1].message.starts_with(
            "deny rule `service-account-token` names `service-accounts`, `token` exactly"
        ),
        "{}",
        w[1].message
    );
    assert_eq!(
        w[1].suggestion,
        "glob = \"/**/service-accounts*/*/token*/**\""
    );
    let (line, _) = position(&old, "glob = \"/**/service-accounts/*/identity/**\"");
    assert_eq!(w[2].line, line);
    assert_eq!(
        w[2].suggestion,
        "glob = \"/**/service-accounts*/*/identity*/**\""
    );
    assert!(w[0].to_string().starts_with(&format!(
        "line {}, column {}: deny rule",
        w[0].line, w[0].column
    )));

    // The suggested fixes, applied, silence the warnings and deny the near misses.
    let fixed = old
        .replace(
            "/computeMetadata/*/instance/attributes/kube-env/**",
            "/computeMetadata/*/instance*/attributes*/kube-env*/**",
        )
        .replace(
            "/**/service-accounts/*/token/**",
            "/**/service-accounts*/*/token*/**",
        )
        .replace(
            "/**/service-accounts/*/identity/**",
            "/**/service-accounts*/*/identity*/**",
        );
    let fixed = PolicySet::from_toml(&fixed).unwrap();
    assert!(fixed.warnings().is_empty(), "{:#?}", fixed.warnings());
    let p = fixed.policy("old-gcp").unwrap();
    assert_eq!(
        run(
            p,
            "GET",
            "/computeMetadata/v1/instance/attributes/kube-env.",
            FLAVOR
        )
        .0,
        Out::Deny(403)
    );
}

#[test]
fn presets_and_conf_files_have_no_warnings() {
    assert!(
        PolicySet::builtin_default().warnings().is_empty(),
        "{:#?}",
        PolicySet::builtin_default().warnings()
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let set = PolicySet::load(&path).unwrap();
            assert!(
                set.warnings().is_empty(),
                "{}: {:#?}",
                path.display(),
                set.warnings()
            );
            n += 1;
        }
    }
    assert!(n >= 6);
}

fn warnings(text: &str) -> Vec<PolicyWarning> {
    PolicySet::from_toml(text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .warnings()
        .to_vec()
}

/// A policy `p` with these rules (TOML), for the lint cases.
fn policy(rules: &str, fallback: Option<&str>) -> String {
    let fb = fallback.map_or(String::new(), |f| format!("fallback = \"{f}\"\n"));
    format!("default = \"p\"\n[[policy]]\nname = \"p\"\n{fb}{rules}")
}

const BROAD_ALLOW: &str =
    "[[policy.rule]]\nid = \"tree\"\nglob = \"/data/**\"\naction = \"allow\"\n";

#[test]
fn lint_exact_path_and_prefix_denials() {
    // An exact path under a broad allow: warned, with a subtree glob as the fix.
    let text = policy(&format!("[[policy.rule]]\nid = \"secret\"\npath = \"/data/secret\"\naction = \"deny\"\n{BROAD_ALLOW}"), None);
    let w = warnings(&text);
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].line, w[0].column), (6, 8));
    assert!(
        w[0].message.contains("allow rule `tree` (line 9)"),
        "{}",
        w[0].message
    );
    assert!(
        w[0].message.contains("`GET /data/secret.`"),
        "{}",
        w[0].message
    );
    assert_eq!(w[0].suggestion, "glob = \"/data/secret*/**\"");
    // A prefix ending in `/` leaves `secret.` out; one without covers it.
    let text = policy(&format!("[[policy.rule]]\nid = \"secret\"\nprefix = \"/data/secret/\"\naction = \"deny\"\n{BROAD_ALLOW}"), None);
    assert_eq!(warnings(&text)[0].suggestion, "glob = \"/data/secret*/**\"");
    let text = policy(&format!("[[policy.rule]]\nid = \"secret\"\nprefix = \"/data/secret\"\naction = \"deny\"\n{BROAD_ALLOW}"), None);
    assert!(warnings(&text).is_empty());
    // A respond rule conceals too.
    let text = policy(&format!("[[policy.rule]]\nid = \"secret\"\nglob = \"/data/secret/**\"\naction = \"respond\"\nbody = \"\"\n{BROAD_ALLOW}"), None);
    assert!(warnings(&text)[0]
        .message
        .starts_with("respond rule `secret`"));
}

#[test]
fn lint_stays_quiet_when_nothing_gets_through() {
    for rules in [
        // Already a segment prefix.
        format!("[[policy.rule]]\nid = \"secret\"\nglob = \"/data/secret*/**\"\naction = \"deny\"\n{BROAD_ALLOW}"),
        // Named leaves only: nothing allows `secret.`.
        "[[policy.rule]]\nid = \"secret\"\nglob = \"/data/secret/**\"\naction = \"deny\"\n[[policy.rule]]\nid = \"leaf\"\nglob = \"/data/{a,b}\"\naction = \"allow\"\n".to_owned(),
        // Another denial covers the near misses before the allow.
        format!("[[policy.rule]]\nid = \"secret\"\npath = \"/data/secret\"\naction = \"deny\"\n[[policy.rule]]\nid = \"near\"\nglob = \"/data/secret*/**\"\naction = \"deny\"\n{BROAD_ALLOW}"),
    ] {
        let w = warnings(&policy(&rules, None));
        assert!(w.is_empty(), "{rules}\n{w:#?}");
    }
    // A denial that holds only with a header does not cover anything for a client without it.
    let rules = format!("[[policy.rule]]\nid = \"secret\"\npath = \"/data/secret\"\naction = \"deny\"\n[[policy.rule]]\nid = \"near\"\nglob = \"/data/secret*/**\"\nheaders = {{ \"X-A\" = \"1\" }}\naction = \"deny\"\n{BROAD_ALLOW}");
    assert_eq!(warnings(&policy(&rules, None)).len(), 1);
}

#[test]
fn lint_follows_fallbacks_globs_and_alternatives() {
    // A user denial in front of the gcp preset: the preset's `v1` lets the near miss through.
    let text = policy("[[policy.rule]]\nid = \"startup\"\npath = \"/computeMetadata/v1/instance/attributes/startup-script\"\naction = \"deny\"\n", Some("gcp"));
    let w = warnings(&text);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].message
            .contains("allow rule `v1` of fallback policy `gcp`"),
        "{}",
        w[0].message
    );
    // `instance.` and `attributes.` get through `v1` as well as `startup-script.`.
    assert_eq!(
        w[0].suggestion,
        "glob = \"/computeMetadata/v1/instance*/attributes*/startup-script*/**\""
    );
    // An allow glob inside a segment (`*.json`) is found too.
    let text = policy("[[policy.rule]]\nid = \"secret\"\nglob = \"/data/config/**\"\naction = \"deny\"\n[[policy.rule]]\nid = \"json\"\nglob = \"/data/*.json\"\naction = \"allow\"\n", None);
    let w = warnings(&text);
    assert!(
        w[0].message.contains("`GET /data/config.json`"),
        "{}",
        w[0].message
    );
    // Alternatives: one fix per exposed name.
    let text = policy(&format!("[[policy.rule]]\nid = \"secrets\"\nglob = \"/data/{{key,cert}}/**\"\naction = \"deny\"\n{BROAD_ALLOW}"), None);
    assert_eq!(
        warnings(&text)[0].suggestion,
        "glob = \"/data/key*/**\", glob = \"/data/cert*/**\""
    );
    // Case-insensitive denials against a mixed-case allow.
    let text = policy("[[policy.rule]]\nid = \"secret\"\nglob = \"/Data/Secret/**\"\nignore_case = true\naction = \"deny\"\n[[policy.rule]]\nid = \"tree\"\nglob = \"/Data/**\"\naction = \"allow\"\n", None);
    let w = warnings(&text);
    assert!(
        w[0].message.contains("`GET /Data/secret.`"),
        "{}",
        w[0].message
    );
    assert_eq!(w[0].suggestion, "glob = \"/Data/Secret*/**\"");
}
