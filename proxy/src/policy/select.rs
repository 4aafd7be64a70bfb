//! Choosing a pod's policy from its record.
//!
//! Order: explicit `[[selector]]`s first (operators write them; first match wins), then the pod's
//! annotation (tenants write it, so it may only name a policy listed in `annotation_policies`; any
//! other name gives the pod `deny-all`), then the file's `default`.

use super::glob::NameGlob;
use super::schema::SpannedMap;
use super::PolicyError;
use metaguard_common::record::PodRecord;
use std::ops::Range;
use toml::Spanned;

/// The conditions of a `[[selector]]` or a `[[role]]`: every one given must hold.
#[derive(Debug, Clone)]
pub struct PodMatch {
    pub namespace: Option<NameGlob>,
    pub pod: Option<NameGlob>,
    /// Annotation key -> value glob; the annotation must be present and match.
    pub annotations: Vec<(String, NameGlob)>,
}

impl PodMatch {
    pub fn matches(&self, rec: &PodRecord) -> bool {
        // A condition on a field the record lacks (no K8S_* args) does not hold, even `*`.
        fn field(glob: &Option<NameGlob>, value: &Option<String>) -> bool {
            match (glob, value) {
                (None, _) => true,
                (Some(g), Some(v)) => g.matches(v),
                (Some(_), None) => false,
            }
        }
        field(&self.namespace, &rec.namespace)
            && field(&self.pod, &rec.pod_name)
            && self
                .annotations
                .iter()
                .all(|(k, g)| rec.annotations.get(k).is_some_and(|v| g.matches(v)))
    }

    /// Compiles `namespace`, `pod` and `annotations` as written; `None` when none is given (the
    /// caller says why that is refused).
    pub(super) fn compile(
        err: &ErrAt<'_>,
        namespace: Option<&Spanned<String>>,
        pod: Option<&Spanned<String>>,
        annotations: Option<&Spanned<SpannedMap>>,
    ) -> Result<Option<PodMatch>, PolicyError> {
        if namespace.is_none() && pod.is_none() && annotations.is_none() {
            return Ok(None);
        }
        let mut globs = Vec::new();
        for (k, v) in annotations
            .map(|m| m.get_ref().iter())
            .into_iter()
            .flatten()
        {
            if k.get_ref().is_empty() {
                return Err(err(k.span(), "empty annotation key".into()));
            }
            globs.push((k.get_ref().clone(), NameGlob::new(v.get_ref())));
        }
        Ok(Some(PodMatch {
            namespace: namespace.map(|g| NameGlob::new(g.get_ref())),
            pod: pod.map(|g| NameGlob::new(g.get_ref())),
            annotations: globs,
        }))
    }
}

/// An error at a span of the file (the loader's `Src::err`).
pub(super) type ErrAt<'a> = dyn Fn(Range<usize>, String) -> PolicyError + 'a;

/// A compiled `[[selector]]`.
#[derive(Debug, Clone)]
pub struct Selector {
    pub cond: PodMatch,
    /// Index into `PolicySet::policies`.
    pub policy: usize,
}

impl Selector {
    pub fn matches(&self, rec: &PodRecord) -> bool {
        self.cond.matches(rec)
    }
}

/// The annotation rule: which key to read and which policies it may pick.
#[derive(Debug, Clone)]
pub struct AnnotationRule {
    pub key: String,
    /// (name, index into `PolicySet::policies`).
    pub allowed: Vec<(String, usize)>,
}

/// What the annotation said.
#[derive(Debug, PartialEq, Eq)]
pub enum AnnotationChoice {
    /// No annotation with the key.
    Absent,
    /// Allowed: index into `PolicySet::policies`.
    Allowed(usize),
    /// Named something not in `annotation_policies`.
    Rejected,
}

impl AnnotationRule {
    pub fn choose(&self, rec: &PodRecord) -> AnnotationChoice {
        match rec.annotations.get(&self.key) {
            None => AnnotationChoice::Absent,
            Some(v) => match self.allowed.iter().find(|(n, _)| n == v) {
                Some((_, i)) => AnnotationChoice::Allowed(*i),
                None => AnnotationChoice::Rejected,
            },
        }
    }
}
