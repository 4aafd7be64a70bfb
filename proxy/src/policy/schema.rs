//! The policy file as written (serde view of the TOML), with source spans for error messages.
//! Nothing here is interpreted; `load.rs` validates and compiles it.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A `{ key = "value" }` table whose keys and values keep their positions.
pub type SpannedMap = BTreeMap<Spanned<String>, Spanned<String>>;
/// A list whose items keep their positions.
pub type SpannedList = Spanned<Vec<Spanned<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDoc {
    pub default: Option<Spanned<String>>,
    pub annotation_key: Option<Spanned<String>>,
    pub annotation_policies: Option<SpannedList>,
    /// Per-pod rate limit of every policy that sets none (presets included).
    pub rate: Option<Spanned<f64>>,
    pub burst: Option<Spanned<i64>>,
    #[serde(default)]
    pub selector: Vec<Spanned<SelectorDoc>>,
    #[serde(default)]
    pub policy: Vec<Spanned<PolicyDoc>>,
    /// The pod annotation that may name a role (kube2iam's and kiam's key by default).
    pub role_annotation_key: Option<Spanned<String>>,
    /// Prefix that turns a role name in the annotation into an ARN (kube2iam's `--base-role-arn`).
    pub role_base_arn: Option<Spanned<String>>,
    #[serde(default)]
    pub role: Vec<Spanned<RoleDoc>>,
    #[serde(default)]
    pub role_annotation: Vec<Spanned<RoleAnnotationDoc>>,
}

/// `[[role]]`: pods matching every condition given get `role_arn` (first match wins).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDoc {
    pub namespace: Option<Spanned<String>>,
    pub pod: Option<Spanned<String>>,
    pub annotations: Option<Spanned<SpannedMap>>,
    pub role_arn: Spanned<String>,
    pub external_id: Option<Spanned<String>>,
    pub session_policy: Option<Spanned<String>>,
}

/// `[[role_annotation]]`: in namespaces matching `namespace`, the role annotation is honoured
/// when the role's ARN matches one of `allow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleAnnotationDoc {
    pub namespace: Spanned<String>,
    pub allow: SpannedList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorDoc {
    pub namespace: Option<Spanned<String>>,
    pub pod: Option<Spanned<String>>,
    pub annotations: Option<Spanned<SpannedMap>>,
    pub policy: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub fallback: Option<Spanned<String>>,
    pub response_headers: Option<Spanned<SpannedMap>>,
    pub audit: Option<bool>,
    /// Per-pod rate limit: requests per second, and how many at once.
    pub rate: Option<Spanned<f64>>,
    pub burst: Option<Spanned<i64>>,
    /// On the AWS endpoints: refuse requests without a valid IMDSv2 token (401).
    pub require_imdsv2: Option<bool>,
    /// On the AWS endpoints: the IP TTL / hop limit of token answers (1 = the pod only).
    pub token_hop_limit: Option<Spanned<i64>>,
    #[serde(default)]
    pub rule: Vec<Spanned<RuleDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub id: Spanned<String>,
    pub description: Option<String>,
    pub methods: Option<SpannedList>,
    pub path: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub glob: Option<Spanned<String>>,
    pub ignore_case: Option<bool>,
    pub query: Option<SpannedList>,
    pub require_query: Option<SpannedList>,
    pub has_query: Option<SpannedList>,
    pub lacks_query: Option<SpannedList>,
    pub headers: Option<Spanned<SpannedMap>>,
    pub lacks_headers: Option<Spanned<SpannedMap>>,
    pub action: Spanned<String>,
    pub status: Option<Spanned<i64>>,
    pub reason: Option<Spanned<String>>,
    pub body: Option<Spanned<String>>,
    pub response_headers: Option<Spanned<SpannedMap>>,
    pub audit: Option<bool>,
    pub cache_ttl_ms: Option<Spanned<i64>>,
}
