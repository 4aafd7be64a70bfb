//! The aws preset, path by path, and the IMDSv2 token flow.

use super::*;

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
