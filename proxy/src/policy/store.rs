//! The policy in force, swapped atomically on reload.
//!
//! Requests take a read lock just long enough to clone an `Arc`, then decide on that snapshot
//! without any lock (a request that started before a reload finishes under the old policy). A
//! reload parses the whole file first and swaps only on success: a bad file keeps the old policy.
//!
//! Each snapshot has a generation number. The record cache stores, per address, which policy the
//! pod's record selects *under a given generation*, so requests skip selection (and the cache does
//! not have to keep every annotation of every pod); a new generation makes it select again.

use super::{Policy, PolicyError, PolicySet};
use metaguard_common::record::PodRecord;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

/// Used only if a selected policy could not be found again by name (it always can: names are
/// unique within a set); its default is `deny-all`, so the impossible case fails closed.
static FAIL_CLOSED: LazyLock<PolicySet> = LazyLock::new(PolicySet::builtin_default);

/// One loaded policy file.
pub struct Snapshot {
    pub set: PolicySet,
    pub generation: u64,
    /// Policy names in the set's order; a selection is an index into this.
    names: Vec<Box<str>>,
}

impl Snapshot {
    pub fn new(set: PolicySet, generation: u64) -> Snapshot {
        let names = set.policy_names().map(Box::from).collect();
        Snapshot {
            set,
            generation,
            names,
        }
    }

    /// Which policy `rec` gets, as an index for [`Snapshot::policy`].
    pub fn select(&self, rec: &PodRecord) -> u32 {
        let name = self.set.select(rec).name();
        let i = self
            .names
            .iter()
            .position(|n| &**n == name)
            .unwrap_or(usize::MAX);
        u32::try_from(i).unwrap_or(u32::MAX)
    }

    /// The policy behind an index from [`Snapshot::select`] of this same snapshot.
    pub fn policy(&self, index: u32) -> &Policy {
        self.names
            .get(index as usize)
            .and_then(|n| self.set.policy(n))
            .unwrap_or_else(|| FAIL_CLOSED.default_policy())
    }

    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    /// The AWS role `rec` gets under this snapshot's mapping.
    pub fn role(&self, rec: &PodRecord) -> crate::policy::RoleChoice {
        self.set.role(rec)
    }
}

pub struct PolicyStore {
    current: RwLock<Arc<Snapshot>>,
    generation: AtomicU64,
    /// `None`: the built-in default policy, nothing to reload.
    path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("policy {path}: {source}")]
pub struct LoadError {
    pub path: String,
    pub source: PolicyError,
}

/// Reads and validates the policy file, or the built-in default when there is none.
pub fn load(path: Option<&Path>) -> Result<PolicySet, LoadError> {
    match path {
        Some(p) => {
            let set = PolicySet::load(p).map_err(|source| LoadError {
                path: p.display().to_string(),
                source,
            })?;
            // Valid but probably not meant (near-miss names): in force, and said once per load.
            for w in set.warnings() {
                log::warn!("policy {}: {w}", p.display());
            }
            Ok(set)
        }
        None => Ok(PolicySet::builtin_default()),
    }
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The file was read and is now in force; the policy names it defines.
    Swapped(Vec<String>),
    /// No policy file is configured (built-in default): nothing to do.
    NoFile,
}

impl PolicyStore {
    pub fn new(initial: PolicySet, path: Option<PathBuf>) -> PolicyStore {
        PolicyStore {
            current: RwLock::new(Arc::new(Snapshot::new(initial, 1))),
            generation: AtomicU64::new(1),
            path,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the file (blocking I/O: call from a blocking thread) and swaps it in if valid.
    pub fn reload(&self) -> Result<Reloaded, LoadError> {
        let Some(path) = &self.path else {
            return Ok(Reloaded::NoFile);
        };
        let set = load(Some(path))?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let snap = Snapshot::new(set, generation);
        let names = snap.policy_names().map(str::to_owned).collect();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
        Ok(Reloaded::Swapped(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod_record;

    /// A pod in namespace `ns`.
    fn rec(ns: &str) -> PodRecord {
        pod_record("c", &[], ns)
    }

    #[test]
    fn selection_round_trips_through_the_index() {
        let set = PolicySet::from_toml(
            "default = \"deny-all\"\n[[selector]]\nnamespace = \"team-b\"\npolicy = \"aws\"\n",
        )
        .unwrap();
        let s = Snapshot::new(set, 7);
        assert_eq!(s.policy(s.select(&rec("team-b"))).name(), "aws");
        assert_eq!(s.policy(s.select(&rec("team-a"))).name(), "deny-all");
        // An index that does not exist fails closed.
        assert_eq!(s.policy(u32::MAX).name(), "deny-all");
    }

    #[test]
    fn reload_bumps_the_generation_and_keeps_the_old_set_on_error() {
        let p = std::env::temp_dir().join(format!("mg-store-{}.toml", std::process::id()));
        std::fs::write(&p, "default = \"aws\"\n").unwrap();
        let store = PolicyStore::new(load(Some(&p)).unwrap(), Some(p.clone()));
        assert_eq!(store.current().generation, 1);
        std::fs::write(&p, "default = \"gcp\"\n").unwrap();
        assert!(matches!(store.reload(), Ok(Reloaded::Swapped(_))));
        let cur = store.current();
        assert_eq!(cur.generation, 2);
        assert_eq!(cur.set.default_policy().name(), "gcp");
        std::fs::write(&p, "default = \"nope\"\n").unwrap();
        let e = store.reload().unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert_eq!(store.current().generation, 2);
        assert_eq!(store.current().set.default_policy().name(), "gcp");
        std::fs::remove_file(&p).unwrap();
        assert!(store.reload().is_err(), "a missing file is a failed reload");
        let none = PolicyStore::new(PolicySet::builtin_default(), None);
        assert_eq!(none.reload().unwrap(), Reloaded::NoFile);
    }
}
