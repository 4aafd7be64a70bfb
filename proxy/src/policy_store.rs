//! The policy in force, swapped atomically on reload.
//!
//! Requests take a read lock just long enough to clone an `Arc`, then decide on that snapshot
//! without any lock (a request that started before a reload finishes under the old policy). A
//! reload parses the whole file first and swaps only on success: a bad file keeps the old policy.

use crate::policy::{PolicyError, PolicySet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub struct PolicyStore {
    current: RwLock<Arc<PolicySet>>,
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
        Some(p) => PolicySet::load(p).map_err(|source| LoadError {
            path: p.display().to_string(),
            source,
        }),
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
            current: RwLock::new(Arc::new(initial)),
            path,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<PolicySet> {
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
        let names = set.policy_names().map(str::to_owned).collect();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(Reloaded::Swapped(names))
    }
}
