//! Built-in presets, written in the policy language itself so they are compiled and validated by
//! the same code as user files (and `conf/policies/<preset>.toml` shows each one expanded).
//! docs/policy.md describes them path by path; the unit tests in `policy::tests` pin them down.

/// `(name, TOML text)` of every preset. Each text holds exactly one `[[policy]]` with that name.
pub const PRESETS: &[(&str, &str)] = &[
    ("deny-all", DENY_ALL),
    ("aws", AWS),
    ("gcp", GCP),
    ("azure", AZURE),
    ("audit", AUDIT),
];

/// Whether `name` is a built-in preset (user files may not redefine these).
pub fn is_preset(name: &str) -> bool {
    PRESETS.iter().any(|(n, _)| *n == name)
}

pub const DENY_ALL: &str = r#"
[[policy]]
name = "deny-all"
description = "No rules: every request gets 403."
"#;

pub const AWS: &str = r#"
[[policy]]
name = "aws"
description = "EC2 IMDS: identity, placement and network metadata; no credentials, no user-data; IMDSv1 and IMDSv2."

# Denials first, with reasons. `/**` also matches the path itself and its trailing-slash form
# (kube2iam leaked the role through `iam/security-credentials` without the slash). Each secret is
# named as a segment prefix (`iam*`), so near-miss names (`iam.`, `iamx`, `user-data~`) are
# denied by the secret's own rule too, whatever the allow rules below say (docs/policy.md,
# "Near-miss names").
[[policy.rule]]
id = "iam"
glob = "/*/meta-data/iam*/**"
ignore_case = true
action = "deny"
reason = "IAM role credentials are not available to pods"

[[policy.rule]]
id = "identity-credentials"
glob = "/*/meta-data/identity-credentials*/**"
ignore_case = true
action = "deny"
reason = "instance identity credentials are not available to pods"

[[policy.rule]]
id = "user-data"
glob = "/*/user-data*/**"
ignore_case = true
action = "deny"
reason = "user-data is not available to pods (it often holds secrets)"

[[policy.rule]]
id = "tags"
glob = "/*/meta-data/tags*/**"
ignore_case = true
action = "deny"
reason = "instance tags are not available to pods"

# IMDSv2: the token PUT must say how long the token lives (AWS checks 1..21600 itself).
[[policy.rule]]
id = "imdsv2-token"
methods = ["PUT"]
path = "/latest/api/token"
headers = { "X-aws-ec2-metadata-token-ttl-seconds" = "*" }
action = "allow"

[[policy.rule]]
id = "imdsv2-token-ttl-required"
path = "/latest/api/token"
action = "deny"
reason = "the IMDSv2 token needs PUT with an X-aws-ec2-metadata-token-ttl-seconds header"

# Listings. `*` is the API version: `latest` or a date such as `2009-04-04` (cloud-init).
[[policy.rule]]
id = "root"
path = "/"
action = "allow"

[[policy.rule]]
id = "latest"
path = "/latest"
action = "allow"

[[policy.rule]]
id = "version-index"
glob = "/*/"
action = "allow"

[[policy.rule]]
id = "meta-data-index"
glob = "/*/meta-data/"
action = "allow"

# Items fixed for the instance's life: GET answers may be served from the proxy's cache for
# 60 s (sparing the per-instance metadata throttle). Only GET 200 answers are cached, keyed by
# the exact request headers (an IMDSv2 token answer is replayed only with the same token).
[[policy.rule]]
id = "meta-data"
glob = "/*/meta-data/{ami-id,ami-launch-index,ami-manifest-path,hostname,instance-id,instance-life-cycle,instance-type,local-hostname,local-ipv4,mac,reservation-id}"
action = "allow"
cache_ttl_ms = 60000

# Items that can change while the instance runs (scheduled actions, addresses, security groups):
# always asked upstream.
[[policy.rule]]
id = "meta-data-dynamic"
glob = "/*/meta-data/{instance-action,public-hostname,public-ipv4,security-groups}"
action = "allow"

[[policy.rule]]
id = "placement"
glob = "/*/meta-data/placement/**"
action = "allow"
cache_ttl_ms = 60000

[[policy.rule]]
id = "meta-data-trees"
glob = "/*/meta-data/{block-device-mapping,events,network,public-keys,services,spot}/**"
action = "allow"

[[policy.rule]]
id = "dynamic-index"
glob = "/*/dynamic/"
action = "allow"

[[policy.rule]]
id = "instance-identity-index"
glob = "/*/dynamic/instance-identity/"
action = "allow"

[[policy.rule]]
id = "instance-identity"
glob = "/*/dynamic/instance-identity/{document,signature,pkcs7,rsa2048}"
action = "allow"
cache_ttl_ms = 60000
"#;

pub const GCP: &str = r#"
[[policy]]
name = "gcp"
description = "GCE metadata with the GKE metadata-concealment set: no kube-env, no tokens, no recursive listings outside the service-accounts tree."
# google-auth decides "am I on GCE" from this header, so the proxy's own answers carry it too.
response_headers = { "Metadata-Flavor" = "Google" }

# Denials first. The `v1` rule below allows the whole tree, so each secret is named as a segment
# prefix and anywhere on the path: near-miss names (`kube-env.`, `kube-envx`, `token~`,
# `attributes./kube-env`, `service-accounts./default/token`) are denied, not forwarded
# (docs/policy.md, "Near-miss names").
[[policy.rule]]
id = "kube-env"
glob = "/**/kube-env*/**"
ignore_case = true
action = "deny"
reason = "kube-env holds the node's credentials"

[[policy.rule]]
id = "service-account-token"
glob = "/**/service-accounts*/*/token*/**"
ignore_case = true
action = "deny"
reason = "service-account access tokens (the node's credentials) are not available to pods"

[[policy.rule]]
id = "service-account-identity"
glob = "/**/service-accounts*/*/identity*/**"
ignore_case = true
action = "deny"
reason = "service-account identity tokens (the node's identity) are not available to pods"

[[policy.rule]]
id = "metadata-flavor-required"
lacks_headers = { "Metadata-Flavor" = "Google" }
action = "deny"
reason = "the Metadata-Flavor: Google header is required"

[[policy.rule]]
id = "service-accounts"
glob = "/computeMetadata/v1/instance/service-accounts/**"
query = ["alt", "wait_for_change", "timeout_sec", "last_etag", "recursive"]
headers = { "Metadata-Flavor" = "Google" }
action = "allow"

# `recursive` in any case, value or encoding (keys are decoded once, compared ignoring case).
[[policy.rule]]
id = "recursive"
has_query = ["recursive"]
action = "deny"
reason = "recursive listings are only allowed under /computeMetadata/v1/instance/service-accounts/"

[[policy.rule]]
id = "root"
path = "/"
headers = { "Metadata-Flavor" = "Google" }
action = "allow"

[[policy.rule]]
id = "compute-metadata-index"
path = "/computeMetadata/"
headers = { "Metadata-Flavor" = "Google" }
action = "allow"

[[policy.rule]]
id = "v1-index"
path = "/computeMetadata/v1/"
query = ["alt", "wait_for_change", "timeout_sec", "last_etag"]
headers = { "Metadata-Flavor" = "Google" }
action = "allow"

[[policy.rule]]
id = "v1"
glob = "/computeMetadata/v1/**"
query = ["alt", "wait_for_change", "timeout_sec", "last_etag"]
headers = { "Metadata-Flavor" = "Google" }
action = "allow"
"#;

pub const AZURE: &str = r#"
[[policy]]
name = "azure"
description = "Azure IMDS: instance metadata with Metadata: true and api-version; no managed-identity tokens, no userData."

# Denials first, each secret named as a segment prefix (`identity*`, `userData*`): the `instance`
# rule below allows a whole tree, and near-miss names (`userData.`, `compute./userData`) must not
# get through it (docs/policy.md, "Near-miss names").
[[policy.rule]]
id = "managed-identity"
glob = "/metadata/identity*/**"
ignore_case = true
action = "deny"
reason = "managed identity tokens are not available to pods"

[[policy.rule]]
id = "user-data"
glob = "/metadata/**/userData*/**"
ignore_case = true
action = "deny"
reason = "userData is not available to pods (it often holds secrets)"

[[policy.rule]]
id = "metadata-header-required"
lacks_headers = { "Metadata" = "true" }
action = "deny"
reason = "the Metadata: true header is required"

[[policy.rule]]
id = "versions"
path = "/metadata/versions"
headers = { "Metadata" = "true" }
action = "allow"

[[policy.rule]]
id = "api-version-required"
glob = "/metadata/**"
lacks_query = ["api-version"]
action = "deny"
reason = "the api-version query parameter is required"

[[policy.rule]]
id = "instance"
glob = "/metadata/instance/**"
query = ["api-version", "format"]
require_query = ["api-version"]
headers = { "Metadata" = "true" }
action = "allow"

[[policy.rule]]
id = "attested"
path = "/metadata/attested/document"
query = ["api-version", "nonce"]
require_query = ["api-version"]
headers = { "Metadata" = "true" }
action = "allow"

[[policy.rule]]
id = "loadbalancer"
path = "/metadata/loadbalancer"
query = ["api-version", "format"]
require_query = ["api-version"]
headers = { "Metadata" = "true" }
action = "allow"

[[policy.rule]]
id = "scheduledevents"
methods = ["GET"]
path = "/metadata/scheduledevents"
query = ["api-version"]
require_query = ["api-version"]
headers = { "Metadata" = "true" }
action = "allow"
"#;

pub const AUDIT: &str = r#"
[[policy]]
name = "audit"
description = "Everything allowed and logged with decision \"audit\": for rolling out, never for production."
audit = true

[[policy.rule]]
id = "audit-all"
methods = ["*"]
query = ["*"]
action = "allow"
audit = true
"#;
