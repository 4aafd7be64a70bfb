//! Policy language, selection and preset tests. Presets are checked path by path: each table
//! row is (method, target, headers, expected outcome, expected rule id).

use super::*;
use crate::canon::canonicalize_str;
use crate::headers::check_request_headers;
use std::collections::BTreeMap;

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

// ---------------------------------------------------------------- presets

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

const TTL: &[(&str, &str)] = &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")];
const TOKEN: &[(&str, &str)] = &[("X-aws-ec2-metadata-token", "AQAEAB==")];

#[test]
fn aws_preset_allowed() {
    let set = builtin("aws");
    let p = set.policy("aws").unwrap();
    let mut rows: Vec<Row<'_>> = vec![
        ("GET", "/", NONE, Out::Allow, "root"),
        ("GET", "/latest", NONE, Out::Allow, "latest"),
        ("GET", "/latest/", NONE, Out::Allow, "version-index"),
        ("GET", "/2009-04-04/", NONE, Out::Allow, "version-index"),
        ("GET", "/2021-03-23/", NONE, Out::Allow, "version-index"),
        (
            "GET",
            "/latest/meta-data/",
            NONE,
            Out::Allow,
            "meta-data-index",
        ),
        (
            "GET",
            "/2009-04-04/meta-data/",
            NONE,
            Out::Allow,
            "meta-data-index",
        ),
        (
            "HEAD",
            "/latest/meta-data/",
            NONE,
            Out::Allow,
            "meta-data-index",
        ),
        ("GET", "/latest/dynamic/", NONE, Out::Allow, "dynamic-index"),
        (
            "GET",
            "/latest/dynamic/instance-identity/",
            NONE,
            Out::Allow,
            "instance-identity-index",
        ),
    ];
    let items = [
        "ami-id",
        "ami-launch-index",
        "ami-manifest-path",
        "hostname",
        "instance-action",
        "instance-id",
        "instance-life-cycle",
        "instance-type",
        "local-hostname",
        "local-ipv4",
        "mac",
        "public-hostname",
        "public-ipv4",
        "reservation-id",
        "security-groups",
    ];
    let paths: Vec<String> = items
        .iter()
        .flat_map(|i| {
            [
                format!("/latest/meta-data/{i}"),
                format!("/2009-04-04/meta-data/{i}"),
            ]
        })
        .collect();
    for path in &paths {
        // Items that can change while the instance runs have their own (uncached) rule.
        let id = if [
            "instance-action",
            "public-hostname",
            "public-ipv4",
            "security-groups",
        ]
        .iter()
        .any(|i| path.ends_with(&format!("/{i}")))
        {
            "meta-data-dynamic"
        } else {
            "meta-data"
        };
        rows.push(("GET", path, NONE, Out::Allow, id));
        rows.push(("HEAD", path, NONE, Out::Allow, id));
        rows.push(("GET", path, TOKEN, Out::Allow, id));
    }
    let trees = [
        "/latest/meta-data/block-device-mapping/",
        "/latest/meta-data/block-device-mapping/ami",
        "/latest/meta-data/block-device-mapping/ebs1",
        "/latest/meta-data/events/maintenance/scheduled",
        "/latest/meta-data/network/interfaces/macs/",
        "/latest/meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/vpc-id",
        "/latest/meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/subnet-ipv4-cidr-block",
        "/latest/meta-data/placement/availability-zone",
        "/latest/meta-data/placement/region",
        "/latest/meta-data/placement",
        "/2009-04-04/meta-data/placement/availability-zone",
        "/latest/meta-data/public-keys/",
        "/latest/meta-data/public-keys/0/openssh-key",
        "/latest/meta-data/services/domain",
        "/latest/meta-data/services/partition",
        "/latest/meta-data/spot/instance-action",
        "/latest/meta-data/spot/termination-time",
    ];
    for path in trees {
        let id = if path.contains("/placement") {
            "placement"
        } else {
            "meta-data-trees"
        };
        rows.push(("GET", path, NONE, Out::Allow, id));
    }
    rows.extend_from_slice(&[
        (
            "GET",
            "/latest/dynamic/instance-identity/document",
            NONE,
            Out::Allow,
            "instance-identity",
        ),
        (
            "GET",
            "/latest/dynamic/instance-identity/signature",
            NONE,
            Out::Allow,
            "instance-identity",
        ),
        (
            "GET",
            "/latest/dynamic/instance-identity/pkcs7",
            NONE,
            Out::Allow,
            "instance-identity",
        ),
        (
            "GET",
            "/latest/dynamic/instance-identity/rsa2048",
            TOKEN,
            Out::Allow,
            "instance-identity",
        ),
        (
            "GET",
            "/2009-04-04/dynamic/instance-identity/document",
            NONE,
            Out::Allow,
            "instance-identity",
        ),
    ]);
    check_table(p, &rows);
}

#[test]
fn aws_preset_denied() {
    let set = builtin("aws");
    let p = set.policy("aws").unwrap();
    let d = Out::Deny(403);
    check_table(
        p,
        &[
            // IAM credentials, with and without trailing slash, any version, any method, any query
            ("GET", "/latest/meta-data/iam", NONE, d, "iam"),
            ("GET", "/latest/meta-data/iam/", NONE, d, "iam"),
            ("GET", "/latest/meta-data/iam/info", NONE, d, "iam"),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials",
                NONE,
                d,
                "iam",
            ),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/",
                NONE,
                d,
                "iam",
            ),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/node-role",
                NONE,
                d,
                "iam",
            ),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/node-role",
                TOKEN,
                d,
                "iam",
            ),
            (
                "HEAD",
                "/latest/meta-data/iam/security-credentials/node-role",
                NONE,
                d,
                "iam",
            ),
            (
                "POST",
                "/latest/meta-data/iam/security-credentials/",
                NONE,
                d,
                "iam",
            ),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/?x=1",
                NONE,
                d,
                "iam",
            ),
            (
                "GET",
                "/2009-04-04/meta-data/iam/security-credentials/node-role",
                NONE,
                d,
                "iam",
            ),
            (
                "GET",
                "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
                NONE,
                d,
                "identity-credentials",
            ),
            (
                "GET",
                "/latest/meta-data/identity-credentials",
                NONE,
                d,
                "identity-credentials",
            ),
            ("GET", "/latest/user-data", NONE, d, "user-data"),
            ("GET", "/latest/user-data/", NONE, d, "user-data"),
            ("GET", "/2009-04-04/user-data", NONE, d, "user-data"),
            ("GET", "/latest/meta-data/tags/instance", NONE, d, "tags"),
            (
                "GET",
                "/latest/meta-data/tags/instance/Name",
                NONE,
                d,
                "tags",
            ),
            ("GET", "/latest/meta-data/tags", NONE, d, "tags"),
            // everything not allow-listed
            ("GET", "/latest/meta-data", NONE, d, DEFAULT_DENY_ID),
            // a case variant of a secret path is denied by the secret's own rule (ignore_case)
            (
                "GET",
                "/latest/meta-data/IAM/security-credentials/",
                NONE,
                d,
                "iam",
            ),
            ("GET", "/latest/User-Data", NONE, d, "user-data"),
            (
                "GET",
                "/latest/meta-data/instance-id/",
                NONE,
                d,
                DEFAULT_DENY_ID,
            ),
            (
                "GET",
                "/latest/meta-data/instance-id?x=1",
                NONE,
                d,
                DEFAULT_DENY_ID,
            ),
            (
                "POST",
                "/latest/meta-data/instance-id",
                NONE,
                d,
                DEFAULT_DENY_ID,
            ),
            (
                "DELETE",
                "/latest/meta-data/instance-id",
                NONE,
                d,
                DEFAULT_DENY_ID,
            ),
            (
                "GET",
                "/latest/meta-data/kernel-id",
                NONE,
                d,
                DEFAULT_DENY_ID,
            ),
            (
                "GET",
                "/latest/meta-data/elastic-inference/associations",
                NONE,
                d,
                DEFAULT_DENY_ID,
            ),
            (
                "GET",
                "/latest/dynamic/fws/instance-monitoring",
                NONE,
                d,
                DEFAULT_DENY_ID,
            ),
            (
                "GET",
                "/latest/dynamic/instance-identity/document/",
                NONE,
                d,
                DEFAULT_DENY_ID,
            ),
            (
                "GET",
                "/openstack/latest/meta_data.json",
                NONE,
                d,
                DEFAULT_DENY_ID,
            ),
            // tricks are refused before policy
            (
                "GET",
                "/latest/meta-data/iam%2fsecurity-credentials",
                NONE,
                Out::Refused(400),
                "",
            ),
            (
                "GET",
                "/latest/meta-data/instance-id/../iam/",
                NONE,
                Out::Refused(400),
                "",
            ),
            (
                "GET",
                "/latest/meta-data//iam/",
                NONE,
                Out::Refused(400),
                "",
            ),
            (
                "GET",
                "/latest/meta-data/iam;/",
                NONE,
                Out::Refused(400),
                "",
            ),
        ],
    );
}

#[test]
fn aws_imdsv2_flow() {
    let set = builtin("aws");
    let p = set.policy("aws").unwrap();
    let d = Out::Deny(403);
    check_table(
        p,
        &[
            ("PUT", "/latest/api/token", TTL, Out::Allow, "imdsv2-token"),
            (
                "PUT",
                "/latest/api/token",
                &[("x-aws-ec2-metadata-token-ttl-seconds", "1")],
                Out::Allow,
                "imdsv2-token",
            ),
            (
                "PUT",
                "/latest/api/token",
                &[
                    ("X-aws-ec2-metadata-token-ttl-seconds", "21600"),
                    ("content-length", "0"),
                ],
                Out::Allow,
                "imdsv2-token",
            ),
            (
                "PUT",
                "/latest/api/token",
                NONE,
                d,
                "imdsv2-token-ttl-required",
            ),
            (
                "GET",
                "/latest/api/token",
                TTL,
                d,
                "imdsv2-token-ttl-required",
            ),
            (
                "POST",
                "/latest/api/token",
                TTL,
                d,
                "imdsv2-token-ttl-required",
            ),
            (
                "PUT",
                "/latest/api/token?x=1",
                TTL,
                d,
                "imdsv2-token-ttl-required",
            ),
            ("PUT", "/2021-03-23/api/token", TTL, d, DEFAULT_DENY_ID),
            ("PUT", "/latest/api/token/", TTL, d, DEFAULT_DENY_ID),
            // a body, chunked framing or forwarding headers never reach policy
            (
                "PUT",
                "/latest/api/token",
                &[
                    ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
                    ("x-forwarded-for", "10.0.0.9"),
                ],
                Out::Refused(403),
                "",
            ),
            (
                "PUT",
                "/latest/api/token",
                &[
                    ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
                    ("content-length", "4"),
                ],
                Out::Refused(400),
                "",
            ),
            (
                "PUT",
                "/latest/api/token",
                &[
                    ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
                    ("transfer-encoding", "chunked"),
                ],
                Out::Refused(400),
                "",
            ),
            // then the token rides along on reads, and is not a key to credentials
            (
                "GET",
                "/latest/meta-data/instance-id",
                TOKEN,
                Out::Allow,
                "meta-data",
            ),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/",
                TOKEN,
                d,
                "iam",
            ),
        ],
    );
}

const FLAVOR: &[(&str, &str)] = &[("Metadata-Flavor", "Google")];

#[test]
fn gcp_preset() {
    let set = builtin("gcp");
    let p = set.policy("gcp").unwrap();
    let d = Out::Deny(403);
    check_table(
        p,
        &[
            ("GET", "/", FLAVOR, Out::Allow, "root"),
            ("GET", "/computeMetadata/", FLAVOR, Out::Allow, "compute-metadata-index"),
            ("GET", "/computeMetadata/v1/", FLAVOR, Out::Allow, "v1-index"),
            ("GET", "/computeMetadata/v1/instance/id", FLAVOR, Out::Allow, "v1"),
            ("HEAD", "/computeMetadata/v1/instance/id", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/zone", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/hostname?alt=text", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/?alt=json", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/attributes/", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/attributes/cluster-name", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/maintenance-event?wait_for_change=true&timeout_sec=60&last_etag=abc", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/project/project-id", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/network-interfaces/0/ip", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/", FLAVOR, Out::Allow, "service-accounts"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/email", FLAVOR, Out::Allow, "service-accounts"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/scopes", FLAVOR, Out::Allow, "service-accounts"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/?recursive=true", FLAVOR, Out::Allow, "service-accounts"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/?recursive=true&alt=json", FLAVOR, Out::Allow, "service-accounts"),
            // kube-env, any version, slash, query, method
            ("GET", "/computeMetadata/v1/instance/attributes/kube-env", FLAVOR, d, "kube-env"),
            ("GET", "/computeMetadata/v1/instance/attributes/kube-env/", FLAVOR, d, "kube-env"),
            ("GET", "/computeMetadata/v1/instance/attributes/kube-env?alt=text", FLAVOR, d, "kube-env"),
            ("GET", "/computeMetadata/v1beta1/instance/attributes/kube-env", NONE, d, "kube-env"),
            ("GET", "/computeMetadata/v1beta1/instance/attributes/kube-env", FLAVOR, d, "kube-env"),
            ("POST", "/computeMetadata/v1/instance/attributes/kube-env", FLAVOR, d, "kube-env"),
            // tokens
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/token", FLAVOR, d, "service-account-token"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/token?scopes=x", FLAVOR, d, "service-account-token"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/token", FLAVOR, d, "service-account-token"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://x", FLAVOR, d, "service-account-identity"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/identity", NONE, d, "service-account-identity"),
            ("GET", "/computeMetadata/v1beta1/instance/service-accounts/default/token", FLAVOR, d, "service-account-token"),
            // recursive outside the service-accounts tree, in any form
            ("GET", "/computeMetadata/v1/?recursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/?recursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?recursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?RECURSIVE=TRUE", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?ReCuRsIvE", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?%72ecursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?recursive", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?alt=json&recursive=false", FLAVOR, d, "recursive"),
            ("GET", "/?recursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/?RECURSIVE=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?%2572ecursive=true", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1/instance/attributes/?recursive=true;alt=json", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1/instance/?alt=json&recursive=true&recursive=false", FLAVOR, Out::Refused(400), ""),
            // Metadata-Flavor is required, exactly
            ("GET", "/computeMetadata/v1/instance/id", NONE, d, "metadata-flavor-required"),
            ("GET", "/", NONE, d, "metadata-flavor-required"),
            ("GET", "/computeMetadata/v1/instance/id", &[("Metadata-Flavor", "google")], d, "metadata-flavor-required"),
            ("GET", "/computeMetadata/v1/instance/id", &[("Metadata-Flavor", "Google "), ], d, "metadata-flavor-required"),
            ("GET", "/computeMetadata/v1/instance/id", &[("Metadata-Flavor", "Google"), ("Metadata-Flavor", "x")], d, "metadata-flavor-required"),
            ("GET", "/computeMetadata/v1/instance/id", &[("X-Google-Metadata-Request", "True")], d, "metadata-flavor-required"),
            // everything else
            ("GET", "/computeMetadata/v1beta1/instance/id", FLAVOR, d, DEFAULT_DENY_ID),
            ("GET", "/0.1/meta-data/attributes/kube-env", FLAVOR, d, DEFAULT_DENY_ID),
            ("GET", "/computeMetadata/v1/instance/id?foo=1", FLAVOR, d, DEFAULT_DENY_ID),
            ("GET", "/computeMetadata/v1/instance/id?ALT=json", FLAVOR, d, DEFAULT_DENY_ID),
            ("POST", "/computeMetadata/v1/instance/id", FLAVOR, d, DEFAULT_DENY_ID),
            ("PUT", "/computeMetadata/v1/instance/guest-attributes/x", FLAVOR, d, DEFAULT_DENY_ID),
            ("GET", "/computemetadata/v1/instance/id", FLAVOR, d, DEFAULT_DENY_ID),
            ("GET", "/computeMetadata/v1/instance/attributes/../attributes/kube-env", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1/instance/network-interfaces/0/external-ip/../../attributes/kube-env", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1//instance/attributes/kube-env", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1/instance/attributes//kube-env", FLAVOR, Out::Refused(400), ""),
        ],
    );
    let rh: Vec<(String, String)> = p
        .response_headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(rh, [("metadata-flavor".to_owned(), "Google".to_owned())]);
}

#[test]
fn gcp_missing_flavor_reason() {
    let set = builtin("gcp");
    let p = set.policy("gcp").unwrap();
    let t = canonicalize_str(&Method::GET, "/computeMetadata/v1/instance/id").unwrap();
    let h = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        target: &t,
        headers: &h,
    };
    let d = p.decide(&view);
    assert_eq!(
        d.deny_body(&view).unwrap(),
        "the Metadata-Flavor: Google header is required\n"
    );
    assert!(matches!(d.action, Action::Deny { reason, .. }
        if reason == "the Metadata-Flavor: Google header is required"));
}

const MD: &[(&str, &str)] = &[("Metadata", "true")];

#[test]
fn azure_preset() {
    let set = builtin("azure");
    let p = set.policy("azure").unwrap();
    let d = Out::Deny(403);
    check_table(
        p,
        &[
            ("GET", "/metadata/instance?api-version=2021-02-01", MD, Out::Allow, "instance"),
            ("HEAD", "/metadata/instance?api-version=2021-02-01", MD, Out::Allow, "instance"),
            ("GET", "/metadata/instance/?api-version=2021-02-01", MD, Out::Allow, "instance"),
            ("GET", "/metadata/instance/compute?api-version=2021-02-01", MD, Out::Allow, "instance"),
            ("GET", "/metadata/instance/compute/vmId?api-version=2017-08-01&format=text", MD, Out::Allow, "instance"),
            ("GET", "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?api-version=2017-08-01&format=text", MD, Out::Allow, "instance"),
            ("GET", "/metadata/attested/document?api-version=2020-09-01", MD, Out::Allow, "attested"),
            ("GET", "/metadata/attested/document?api-version=2020-09-01&nonce=1234567890", MD, Out::Allow, "attested"),
            ("GET", "/metadata/versions", MD, Out::Allow, "versions"),
            ("GET", "/metadata/loadbalancer?api-version=2020-10-01", MD, Out::Allow, "loadbalancer"),
            ("GET", "/metadata/scheduledevents?api-version=2020-07-01", MD, Out::Allow, "scheduledevents"),
            // managed identity: denied with or without the header, any method, any query
            ("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/", MD, d, "managed-identity"),
            ("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net", NONE, d, "managed-identity"),
            ("GET", "/metadata/identity", MD, d, "managed-identity"),
            ("GET", "/metadata/identity/", MD, d, "managed-identity"),
            ("POST", "/metadata/identity/oauth2/token", MD, d, "managed-identity"),
            ("GET", "/metadata/instance/compute/userData?api-version=2021-01-01&format=text", MD, d, "user-data"),
            // header and api-version required
            ("GET", "/metadata/instance?api-version=2021-02-01", NONE, d, "metadata-header-required"),
            ("GET", "/metadata/instance?api-version=2021-02-01", &[("Metadata", "True")], d, "metadata-header-required"),
            ("GET", "/metadata/versions", NONE, d, "metadata-header-required"),
            ("GET", "/metadata/instance", MD, d, "api-version-required"),
            ("GET", "/metadata/instance?format=json", MD, d, "api-version-required"),
            ("GET", "/metadata/instance?API-VERSION=2021-02-01", MD, d, "api-version-required"),
            ("GET", "/metadata/attested/document?nonce=1", MD, d, "api-version-required"),
            ("GET", "/metadata/scheduledevents", MD, d, "api-version-required"),
            // everything else
            ("GET", "/metadata/instance?api-version=2021-02-01&extra=1", MD, d, DEFAULT_DENY_ID),
            ("POST", "/metadata/scheduledevents?api-version=2020-07-01", MD, d, DEFAULT_DENY_ID),
            ("GET", "/metadata/attested/document?api-version=2020-09-01&format=json", MD, d, DEFAULT_DENY_ID),
            ("GET", "/metadata/versions?api-version=2020-07-01", MD, d, DEFAULT_DENY_ID),
            ("GET", "/Metadata/instance?api-version=2021-02-01", MD, d, DEFAULT_DENY_ID),
            ("GET", "/machine?comp=goalstate", MD, d, DEFAULT_DENY_ID),
            ("GET", "/metadata/instance?api-version=2021-02-01&api-version=2017-08-01", MD, Out::Refused(400), ""),
        ],
    );
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

// ---------------------------------------------------------------- the conf/ files

fn conf(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conf/policies")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each `conf/policies/preset-<name>.toml` is the preset spelled out under another name: it must
/// compile to exactly the same rules.
#[test]
fn conf_preset_expansions_match_builtins() {
    let builtins = PolicySet::builtin_default();
    for (name, _) in PRESETS {
        let text = conf(&format!("preset-{name}.toml"));
        let set = PolicySet::from_toml(&text).unwrap_or_else(|e| panic!("preset-{name}.toml: {e}"));
        let mine = set.default_policy();
        assert_eq!(mine.name(), format!("my-{name}"));
        let theirs = builtins.policy(name).unwrap();
        assert_eq!(mine.rules, theirs.rules, "{name}");
        assert_eq!(mine.response_headers, theirs.response_headers, "{name}");
        assert_eq!(mine.audit, theirs.audit, "{name}");
    }
}

#[test]
fn conf_example_compiles() {
    let text = conf("example.toml");
    let set = PolicySet::from_toml(&text).unwrap_or_else(|e| panic!("example.toml: {e}"));
    assert!(set.policy_names().count() > PRESETS.len());
}

/// The complete TOML examples in docs/policy.md compile (blocks with `# ...` placeholders are
/// fragments and are skipped).
#[test]
fn docs_examples_compile() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md");
    let md = std::fs::read_to_string(&path).unwrap();
    let mut checked = 0;
    for block in md.split("```toml\n").skip(1) {
        let text = block.split("```").next().unwrap();
        if text.contains("# ...") {
            continue;
        }
        PolicySet::from_toml(text).unwrap_or_else(|e| panic!("docs example: {e}\n{text}"));
        checked += 1;
    }
    assert!(checked >= 1);
}

// ---------------------------------------------------------------- language

fn rec(ns: Option<&str>, pod: Option<&str>, ann: &[(&str, &str)]) -> PodRecord {
    PodRecord {
        version: 1,
        container_id: "c0ffee".into(),
        network: "net".into(),
        ifname: "eth0".into(),
        netns: "/var/run/netns/x".into(),
        ips: vec!["10.0.0.2".parse().unwrap()],
        namespace: ns.map(str::to_owned),
        pod_name: pod.map(str::to_owned),
        pod_uid: None,
        annotations: ann
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        host_interface: None,
        host_guard: true,
        mac: None,
        layer2_guard: false,
        created_unix: 0,
    }
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

const FALLBACK: &str = r#"
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

#[test]
fn check_policy_file_reports() {
    let dir = std::env::temp_dir().join(format!("mg-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, FALLBACK).unwrap();
    let summary = check_policy_file(&good).unwrap();
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
