//! A pod's whole AWS identity: the role the mapping grants it, and the session it is assumed
//! with (name, tags, ExternalId, session policy). This is the credential cache's key: two pods
//! share credentials only when every part is equal, so one pod's ExternalId or session policy
//! never carries over to another pod that happens to have the same role (kube2iam issue 98).

use crate::policy::RoleGrant;
use metaguard_common::record::PodRecord;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// `RoleSessionName`'s limit, and the characters STS accepts in it (`[\w+=,.@-]`).
pub const MAX_SESSION_NAME: usize = 64;
/// Hex digits of the hash that ends a session name that had to be cut.
const HASH_CHARS: usize = 10;

/// How session names and tags are made on this node (from `[aws.sts]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// Tag the sessions with the pod's namespace, name, UID and the node.
    pub session_tags: bool,
    pub node: String,
}

/// One pod's identity. Hash and Eq cover every field: the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRole {
    pub grant: Arc<RoleGrant>,
    pub session_name: Box<str>,
    /// `(key, value)` session tags, in a fixed order.
    pub tags: Vec<(String, String)>,
}

impl PodRole {
    pub fn new(grant: Arc<RoleGrant>, rec: &PodRecord, naming: &Naming) -> PodRole {
        let mut tags = Vec::new();
        if naming.session_tags {
            let mut tag = |k: &str, v: Option<&str>| {
                if let Some(v) = v.filter(|v| !v.is_empty()) {
                    tags.push((k.to_owned(), tag_value(v)));
                }
            };
            tag("metaguard:namespace", rec.namespace.as_deref());
            tag("metaguard:pod", rec.pod_name.as_deref());
            tag("metaguard:pod-uid", rec.pod_uid.as_deref());
            tag("metaguard:node", Some(naming.node.as_str()));
        }
        PodRole {
            grant,
            session_name: session_name(rec).into(),
            tags,
        }
    }

    pub fn role_arn(&self) -> &str {
        &self.grant.role_arn
    }

    pub fn role_name(&self) -> &str {
        &self.grant.role_name
    }
}

/// `namespace.pod` (a namespace holds no dot, so the first one splits), or `ctr-<container>`
/// when the record has no Kubernetes names; characters STS refuses become `-`; cut to 64
/// characters with a hash of the whole name at the end when longer, so two long names that
/// share a prefix still differ.
pub fn session_name(rec: &PodRecord) -> String {
    let full = match (&rec.namespace, &rec.pod_name) {
        (Some(ns), Some(p)) => format!("{ns}.{p}"),
        _ => format!("ctr-{}", rec.container_id),
    };
    let clean: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= MAX_SESSION_NAME && clean == full {
        return clean;
    }
    // Cut (or cleaned): a hash of the original keeps distinct names distinct.
    let digest = Sha256::digest(full.as_bytes());
    let hex: String = digest
        .iter()
        .take(HASH_CHARS / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let keep = MAX_SESSION_NAME - HASH_CHARS - 1;
    let prefix: String = clean.chars().take(keep).collect();
    format!("{prefix}-{hex}")
}

/// A session tag value: at most 256 characters of what STS accepts (`[\p{L}\p{Z}\p{N}_.:/=+\-@]`).
fn tag_value(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_alphanumeric() || " _.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

/// The host name, for the `metaguard:node` tag when `aws.sts.node_name` is empty.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod_record;

    fn grant() -> Arc<RoleGrant> {
        Arc::new(RoleGrant {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            role_name: "r".into(),
            external_id: None,
            session_policy: None,
        })
    }

    #[test]
    fn session_names_are_short_valid_and_distinct() {
        let r = pod_record("web-1", &["10.0.0.1"], "shop");
        assert_eq!(session_name(&r), "shop.web-1");
        let long_a = pod_record(&format!("{}-a", "x".repeat(80)), &[], "ns");
        let long_b = pod_record(&format!("{}-b", "x".repeat(80)), &[], "ns");
        let (a, b) = (session_name(&long_a), session_name(&long_b));
        assert_eq!(a.len(), MAX_SESSION_NAME);
        assert_ne!(a, b, "a hash suffix keeps cut names apart");
        let mut bare = pod_record("x", &[], "ns");
        bare.namespace = None;
        assert!(session_name(&bare).starts_with("ctr-"));
        let mut odd = pod_record("a b/c", &[], "ns");
        odd.pod_name = Some("a b/c".into());
        let n = session_name(&odd);
        assert!(n.starts_with("ns.a-b-c-"), "{n}");
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b)));
    }

    #[test]
    fn the_whole_identity_is_the_key() {
        let naming = Naming {
            session_tags: true,
            node: "node-1".into(),
        };
        let mut a = pod_record("web", &[], "shop");
        a.pod_uid = Some("uid-a".into());
        let mut b = a.clone();
        b.pod_uid = Some("uid-b".into());
        let (ra, rb) = (
            PodRole::new(grant(), &a, &naming),
            PodRole::new(grant(), &b, &naming),
        );
        assert_eq!(ra.session_name, rb.session_name);
        assert_ne!(ra, rb, "another pod UID is another identity");
        let keys: Vec<&str> = ra.tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "metaguard:namespace",
                "metaguard:pod",
                "metaguard:pod-uid",
                "metaguard:node"
            ]
        );
        let mut g2 = (*grant()).clone();
        g2.external_id = Some("other".into());
        assert_ne!(ra, PodRole::new(Arc::new(g2), &a, &naming));
        let untagged = Naming {
            session_tags: false,
            node: "node-1".into(),
        };
        assert!(PodRole::new(grant(), &a, &untagged).tags.is_empty());
    }
}
