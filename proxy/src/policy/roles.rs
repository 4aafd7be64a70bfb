//! Which AWS role a pod gets (docs/identity.md, "The mapping").
//!
//! Order: the operator's `[[role]]` entries first (first match wins); else the pod's role
//! annotation (`role_annotation_key`, kube2iam's and kiam's `iam.amazonaws.com/role` by default),
//! honoured only when a `[[role_annotation]]` entry for the pod's namespace allows that role's
//! ARN; else no role. Tenants write annotations, so an annotation can never name a role the
//! operator did not allow for its namespace: anything else gives the pod no role (and a note).

use super::glob::NameGlob;
use super::schema::{FileDoc, RoleDoc};
use super::select::{ErrAt, PodMatch};
use super::PolicyError;
use metaguard_common::record::PodRecord;
use std::sync::Arc;
use toml::Spanned;

/// The annotation read when the file does not set `role_annotation_key`.
pub const DEFAULT_ROLE_ANNOTATION_KEY: &str = "iam.amazonaws.com/role";

/// What a pod is granted: the role, and the mapping's optional ExternalId and session policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleGrant {
    pub role_arn: Arc<str>,
    /// The last segment of the ARN's resource (`role/path/NAME`): what IMDS lists.
    pub role_name: Arc<str>,
    pub external_id: Option<Arc<str>>,
    pub session_policy: Option<Arc<str>>,
}

/// The result of [`RoleMap::choose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChoice {
    /// No `[[role]]` matched and the pod has no role annotation.
    None,
    Granted(Arc<RoleGrant>),
    /// The annotation named a role its namespace may not use (or no role at all): no role.
    Refused(String),
}

struct RoleRule {
    cond: PodMatch,
    grant: Arc<RoleGrant>,
}

struct AnnotationAllow {
    namespace: NameGlob,
    /// Globs over the whole role ARN.
    allow: Vec<NameGlob>,
}

/// The compiled role mapping of a policy file.
pub struct RoleMap {
    rules: Vec<RoleRule>,
    annotation_key: String,
    base_arn: Option<String>,
    annotation_allow: Vec<AnnotationAllow>,
}

impl Default for RoleMap {
    fn default() -> Self {
        RoleMap {
            rules: Vec::new(),
            annotation_key: DEFAULT_ROLE_ANNOTATION_KEY.to_owned(),
            base_arn: None,
            annotation_allow: Vec::new(),
        }
    }
}

impl std::fmt::Debug for RoleMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleMap")
            .field("rules", &self.rules.len())
            .field("annotation_key", &self.annotation_key)
            .field("annotation_allow", &self.annotation_allow.len())
            .finish()
    }
}

impl RoleMap {
    /// Whether the file maps any pod to a role.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.annotation_allow.is_empty()
    }

    pub fn annotation_key(&self) -> &str {
        &self.annotation_key
    }

    /// The role of a pod: see the module docs for the order.
    pub fn choose(&self, rec: &PodRecord) -> RoleChoice {
        if let Some(r) = self.rules.iter().find(|r| r.cond.matches(rec)) {
            return RoleChoice::Granted(r.grant.clone());
        }
        let Some(asked) = rec.annotations.get(&self.annotation_key) else {
            return RoleChoice::None;
        };
        let refused = |why: &str| {
            RoleChoice::Refused(format!(
                "annotation {}={asked:?}: {why}; the pod has no role",
                self.annotation_key
            ))
        };
        let arn = if asked.starts_with("arn:") {
            asked.clone()
        } else {
            match &self.base_arn {
                Some(base) => format!("{base}{}", asked.trim_start_matches('/')),
                None => return refused("a role name needs role_base_arn in the policy file"),
            }
        };
        let Some(name) = role_name(&arn) else {
            return refused("not an IAM role ARN");
        };
        let Some(ns) = &rec.namespace else {
            return refused("the pod has no namespace");
        };
        let allowed = self
            .annotation_allow
            .iter()
            .filter(|a| a.namespace.matches(ns))
            .any(|a| a.allow.iter().any(|g| g.matches(&arn)));
        if !allowed {
            return refused(&format!(
                "no [[role_annotation]] allows this role in namespace {ns:?}"
            ));
        }
        RoleChoice::Granted(Arc::new(RoleGrant {
            role_name: name.into(),
            role_arn: arn.into(),
            external_id: None,
            session_policy: None,
        }))
    }

    /// Lines for `check-policy`'s summary.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rules {
            out.push(format!("role {}", r.grant.role_arn));
        }
        if !self.annotation_allow.is_empty() {
            out.push(format!(
                "role annotation {}: honoured in {} namespace pattern(s)",
                self.annotation_key,
                self.annotation_allow.len()
            ));
        }
        out
    }
}

/// The role name of an IAM role ARN (`arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`), or `None`
/// when `arn` is not one.
pub fn role_name(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if !partition.starts_with("aws") || account.len() != 12 {
        return None;
    }
    if !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let path = resource.strip_prefix("role/")?;
    let name = path.rsplit('/').next()?;
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    let path_ok = path.len() <= 512
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b));
    (name_ok && path_ok).then_some(name)
}

/// Compiles the file's role mapping.
pub(super) fn compile(err: &ErrAt<'_>, doc: &FileDoc) -> Result<RoleMap, PolicyError> {
    let mut map = RoleMap::default();
    if let Some(k) = &doc.role_annotation_key {
        let v = k.get_ref();
        if v.is_empty() || v.trim() != v {
            return Err(err(
                k.span(),
                "role_annotation_key must be a non-empty key without spaces".into(),
            ));
        }
        map.annotation_key = v.clone();
    }
    if let Some(b) = &doc.role_base_arn {
        let v = b.get_ref();
        // The base with a name appended must be a role ARN.
        if !v.ends_with('/') || role_name(&format!("{v}x")).is_none() {
            return Err(err(
                b.span(),
                "role_base_arn must be a role ARN prefix ending in '/', e.g. \
                 \"arn:aws:iam::123456789012:role/\""
                    .into(),
            ));
        }
        map.base_arn = Some(v.clone());
    }
    for r in &doc.role {
        map.rules.push(compile_rule(err, r)?);
    }
    for a in &doc.role_annotation {
        let ad = a.get_ref();
        if ad.allow.get_ref().is_empty() {
            return Err(err(
                ad.allow.span(),
                "allow lists no role (write ARNs or ARN globs)".into(),
            ));
        }
        let mut allow = Vec::new();
        for g in ad.allow.get_ref() {
            if !g.get_ref().starts_with("arn:") {
                return Err(err(
                    g.span(),
                    "allow entries are role ARNs or ARN globs (starting with \"arn:\")".into(),
                ));
            }
            allow.push(NameGlob::new(g.get_ref()));
        }
        map.annotation_allow.push(AnnotationAllow {
            namespace: NameGlob::new(ad.namespace.get_ref()),
            allow,
        });
    }
    Ok(map)
}

fn compile_rule(err: &ErrAt<'_>, r: &Spanned<RoleDoc>) -> Result<RoleRule, PolicyError> {
    let rd = r.get_ref();
    let cond = PodMatch::compile(
        err,
        rd.namespace.as_ref(),
        rd.pod.as_ref(),
        rd.annotations.as_ref(),
    )?
    .ok_or_else(|| {
        err(
            r.span(),
            "role has no condition (namespace, pod or annotations): it would give every pod \
             the role"
                .into(),
        )
    })?;
    let arn = rd.role_arn.get_ref();
    let Some(name) = role_name(arn) else {
        return Err(err(
            rd.role_arn.span(),
            format!("{arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        ));
    };
    let external_id = match &rd.external_id {
        None => None,
        Some(e) => {
            let v = e.get_ref();
            let ok = (2..=1224).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&b));
            if !ok {
                return Err(err(
                    e.span(),
                    "external_id must be 2 to 1224 characters of [A-Za-z0-9+=,.@:/_-]".into(),
                ));
            }
            Some(Arc::from(v.as_str()))
        }
    };
    let session_policy = match &rd.session_policy {
        None => None,
        Some(p) => {
            let v = p.get_ref();
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(v);
            if !matches!(parsed, Ok(serde_json::Value::Object(_))) || v.len() > 2048 {
                return Err(err(
                    p.span(),
                    "session_policy must be a JSON policy document of at most 2048 characters"
                        .into(),
                ));
            }
            Some(Arc::from(v.as_str()))
        }
    };
    Ok(RoleRule {
        cond,
        grant: Arc::new(RoleGrant {
            role_name: name.into(),
            role_arn: arn.as_str().into(),
            external_id,
            session_policy,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;
    use crate::testing::pod_record;

    const A: &str = "arn:aws:iam::123456789012:role/team-a";

    fn set(text: &str) -> PolicySet {
        PolicySet::from_toml(text).unwrap()
    }

    fn pod(ns: &str, name: &str, ann: &[(&str, &str)]) -> PodRecord {
        let mut r = pod_record(name, &["10.0.0.9"], ns);
        r.annotations = ann
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    }

    fn granted(c: RoleChoice) -> String {
        match c {
            RoleChoice::Granted(g) => g.role_arn.to_string(),
            other => panic!("expected a role, got {other:?}"),
        }
    }

    #[test]
    fn role_names_come_from_arns() {
        assert_eq!(role_name(A), Some("team-a"));
        assert_eq!(
            role_name("arn:aws-cn:iam::123456789012:role/path/to/r"),
            Some("r")
        );
        for bad in [
            "arn:aws:iam::123456789012:user/team-a",
            "arn:aws:iam::12345:role/x",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
            "team-a",
        ] {
            assert_eq!(role_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn operator_roles_match_in_order() {
        let s = set(&format!(
            "[[role]]\nnamespace = \"team-a\"\npod = \"api-*\"\nrole_arn = \"{A}\"\n\
             external_id = \"ext-1\"\n\
             [[role]]\nnamespace = \"team-a\"\nrole_arn = \"arn:aws:iam::123456789012:role/other\"\n"
        ));
        let c = s.role(&pod("team-a", "api-1", &[]));
        let RoleChoice::Granted(g) = c else {
            panic!("granted")
        };
        assert_eq!(&*g.role_arn, A);
        assert_eq!(&*g.role_name, "team-a");
        assert_eq!(g.external_id.as_deref(), Some("ext-1"));
        assert!(granted(s.role(&pod("team-a", "web", &[]))).ends_with("/other"));
        assert_eq!(s.role(&pod("team-b", "api-1", &[])), RoleChoice::None);
    }

    #[test]
    fn annotations_are_honoured_only_where_allowed() {
        let s = set(
            "role_base_arn = \"arn:aws:iam::123456789012:role/\"\n\
             [[role_annotation]]\nnamespace = \"team-a\"\nallow = [\"arn:aws:iam::123456789012:role/team-a*\"]\n",
        );
        let key = DEFAULT_ROLE_ANNOTATION_KEY;
        // By ARN and by name (kube2iam's base ARN), within the allow-list.
        assert_eq!(granted(s.role(&pod("team-a", "p", &[(key, A)]))), A);
        assert_eq!(granted(s.role(&pod("team-a", "p", &[(key, "team-a")]))), A);
        // Another namespace, a role outside the list, a non-role ARN: refused, with a reason.
        for (ns, asked) in [
            ("team-b", A),
            ("team-a", "arn:aws:iam::123456789012:role/admin"),
            ("team-a", "admin"),
            ("team-a", "arn:aws:iam::123456789012:user/team-a"),
        ] {
            match s.role(&pod(ns, "p", &[(key, asked)])) {
                RoleChoice::Refused(why) => assert!(why.contains(key), "{why}"),
                other => panic!("{ns} {asked}: {other:?}"),
            }
        }
        assert_eq!(s.role(&pod("team-a", "p", &[])), RoleChoice::None);
    }

    #[test]
    fn an_operator_role_wins_over_the_annotation() {
        let s = set(&format!(
            "[[role]]\nnamespace = \"team-a\"\nrole_arn = \"{A}\"\n\
             [[role_annotation]]\nnamespace = \"*\"\nallow = [\"arn:aws:iam::*\"]\n"
        ));
        let asked = "arn:aws:iam::123456789012:role/admin";
        let p = pod("team-a", "p", &[(DEFAULT_ROLE_ANNOTATION_KEY, asked)]);
        assert_eq!(granted(s.role(&p)), A);
    }

    #[test]
    fn bad_role_mappings_are_refused_with_their_place() {
        for (text, want) in [
            (format!("[[role]]\nrole_arn = \"{A}\"\n"), "no condition"),
            (
                "[[role]]\nnamespace = \"a\"\nrole_arn = \"arn:aws:iam::1:role/x\"\n".into(),
                "not an IAM role ARN",
            ),
            (
                format!("[[role]]\nnamespace = \"a\"\nrole_arn = \"{A}\"\nexternal_id = \"x\"\n"),
                "external_id",
            ),
            (
                format!(
                    "[[role]]\nnamespace = \"a\"\nrole_arn = \"{A}\"\nsession_policy = \"[1]\"\n"
                ),
                "session_policy",
            ),
            (
                "role_base_arn = \"arn:aws:iam::123456789012:role\"\n".into(),
                "role_base_arn",
            ),
            (
                "[[role_annotation]]\nnamespace = \"a\"\nallow = []\n".into(),
                "lists no role",
            ),
            (
                "[[role_annotation]]\nnamespace = \"a\"\nallow = [\"admin\"]\n".into(),
                "ARN",
            ),
            (
                "[[policy]]\nname = \"p\"\ntoken_hop_limit = 0\n".into(),
                "token_hop_limit",
            ),
        ] {
            let e = PolicySet::from_toml(&text).unwrap_err();
            assert!(e.message.contains(want), "{text}: {e}");
            assert!(e.line >= 1, "{text}: {e} has a position");
        }
    }

    #[test]
    fn imds_settings_are_per_policy() {
        let s = set("[[policy]]\nname = \"strict\"\nrequire_imdsv2 = true\ntoken_hop_limit = 1\n");
        let p = s.policy("strict").unwrap();
        assert!(p.require_imdsv2());
        assert_eq!(p.token_hop_limit(), Some(1));
        let aws = s.policy("aws").unwrap();
        assert!(!aws.require_imdsv2());
        assert_eq!(aws.token_hop_limit(), None);
    }
}
