//! An in-memory [`Firewall`] for unit tests of the commands.
//!
//! Tables live in maps; namespaces are paths the test declares. The tag rules are the ones of
//! `nft::delete_table` and `nft::apply`: a table of the right name with another tag is neither
//! removed nor replaced. Every call is a numbered step (from 1, in call order, `open_netns` and
//! `list_host_guards` included) and [`FakeFirewall::fail_at`] makes step N fail without changing
//! anything, as a refused nf_tables batch changes nothing.

use super::{Deleted, Firewall, NftError, TableInfo};
use crate::netns::NetnsError;
use crate::nft::TAG_PREFIX;
use crate::rules::{HostGuard, PodRuleset};
use nix::errno::Errno;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// A table as the kernel would hold it: its comment (`TAG_PREFIX` + tag, or anything else for a
/// table metaguard did not make) and its content, `None` for a foreign table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table<T> {
    pub comment: Option<String>,
    pub content: Option<T>,
}

#[derive(Debug, Default)]
struct State {
    netns: BTreeSet<PathBuf>,
    /// Pod tables by (namespace, table name).
    pod: BTreeMap<(PathBuf, String), Table<PodRuleset>>,
    /// Host guard tables by name.
    guards: BTreeMap<String, Table<HostGuard>>,
    /// Every step so far, described.
    steps: Vec<String>,
    fail: BTreeSet<usize>,
    fail_from: Option<usize>,
}

/// Code run just before a step: what another process does meanwhile.
#[derive(Default)]
struct Hooks(BTreeMap<usize, Box<dyn FnOnce()>>);

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, Default)]
pub struct FakeFirewall {
    state: RefCell<State>,
    hooks: RefCell<Hooks>,
}

fn comment(tag: &str) -> Option<String> {
    Some(format!("{TAG_PREFIX}{tag}"))
}

fn is_ours(comment: &Option<String>, tag: &str) -> bool {
    comment.as_deref().and_then(|c| c.strip_prefix(TAG_PREFIX)) == Some(tag)
}

fn injected(step: usize, what: &str) -> NftError {
    NftError::Kernel {
        what: format!("fake step {step} ({what})"),
        errno: Errno::EIO,
        detail: String::new(),
    }
}

fn missing(what: String) -> NftError {
    NftError::Mismatch(format!("{what} is missing"))
}

impl FakeFirewall {
    /// A firewall where the namespaces at `paths` exist.
    pub fn with_netns(paths: &[&str]) -> FakeFirewall {
        let fw = FakeFirewall::default();
        fw.state.borrow_mut().netns = paths.iter().map(PathBuf::from).collect();
        fw
    }

    /// Makes step `n` fail (steps count from 1, over the firewall's whole life).
    pub fn fail_at(&self, n: usize) {
        self.state.borrow_mut().fail.insert(n);
    }

    /// Runs `f` just before step `n` (another process acting between two steps of a command).
    pub fn before_step(&self, n: usize, f: impl FnOnce() + 'static) {
        self.hooks.borrow_mut().0.insert(n, Box::new(f));
    }

    /// Makes every step fail from step `n` on.
    pub fn fail_from(&self, n: usize) {
        self.state.borrow_mut().fail_from = Some(n);
    }

    /// The steps taken so far, described, in order.
    pub fn steps(&self) -> Vec<String> {
        self.state.borrow().steps.clone()
    }

    /// The namespace disappears, and the tables in it with it.
    pub fn remove_netns(&self, path: &str) {
        let mut s = self.state.borrow_mut();
        s.netns.remove(Path::new(path));
        s.pod.retain(|(ns, _), _| ns != Path::new(path));
    }

    /// Puts a table of someone else's (or another attachment's) in place.
    pub fn put_foreign_pod_table(&self, netns: &str, name: &str, comment: Option<&str>) {
        let t = Table {
            comment: comment.map(str::to_string),
            content: None,
        };
        let key = (PathBuf::from(netns), name.to_string());
        self.state.borrow_mut().pod.insert(key, t);
    }

    pub fn put_foreign_guard(&self, name: &str, comment: Option<&str>) {
        let t = Table {
            comment: comment.map(str::to_string),
            content: None,
        };
        self.state.borrow_mut().guards.insert(name.to_string(), t);
    }

    /// Installs a host guard as ADD would, without counting a step.
    pub fn put_guard(&self, g: &HostGuard) {
        let t = Table {
            comment: comment(&g.tag),
            content: Some(g.clone()),
        };
        self.state.borrow_mut().guards.insert(g.table.clone(), t);
    }

    pub fn pod_table(&self, netns: &str, name: &str) -> Option<Table<PodRuleset>> {
        let key = (PathBuf::from(netns), name.to_string());
        self.state.borrow().pod.get(&key).cloned()
    }

    pub fn guard(&self, name: &str) -> Option<Table<HostGuard>> {
        self.state.borrow().guards.get(name).cloned()
    }

    /// Names of every pod table, as `netns/name`.
    pub fn pod_tables(&self) -> Vec<String> {
        let s = self.state.borrow();
        s.pod
            .keys()
            .map(|(ns, name)| format!("{}/{name}", ns.display()))
            .collect()
    }

    pub fn guards(&self) -> Vec<String> {
        self.state.borrow().guards.keys().cloned().collect()
    }

    /// Records a step; `Err` when it is one told to fail.
    fn step(&self, what: String) -> Result<(), NftError> {
        let next = self.state.borrow().steps.len() + 1;
        // Taken out first: the hook may use this firewall too.
        let hook = self.hooks.borrow_mut().0.remove(&next);
        if let Some(f) = hook {
            f();
        }
        let mut s = self.state.borrow_mut();
        s.steps.push(what);
        let n = s.steps.len();
        if s.fail.contains(&n) || s.fail_from.is_some_and(|from| n >= from) {
            return Err(injected(n, &s.steps[n - 1]));
        }
        Ok(())
    }
}

impl Firewall for FakeFirewall {
    type Netns = PathBuf;

    fn open_netns(&self, path: &Path) -> Result<PathBuf, NetnsError> {
        let failed = self.step(format!("open netns {}", path.display())).is_err();
        let open_error = |source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        };
        if failed {
            return Err(open_error(io::Error::from_raw_os_error(libc::EIO)));
        }
        if !self.state.borrow().netns.contains(path) {
            return Err(open_error(io::ErrorKind::NotFound.into()));
        }
        Ok(path.to_path_buf())
    }

    fn apply_pod_rules(&self, ns: &PathBuf, rs: &PodRuleset) -> Result<(), NftError> {
        self.step(format!("apply pod rules {} in {}", rs.table, ns.display()))?;
        let key = (ns.clone(), rs.table.clone());
        let mut s = self.state.borrow_mut();
        if let Some(t) = s.pod.get(&key).filter(|t| !is_ours(&t.comment, &rs.tag)) {
            return Err(NftError::NotOurs {
                family: "inet",
                table: rs.table.clone(),
                comment: t.comment.clone(),
            });
        }
        let t = Table {
            comment: comment(&rs.tag),
            content: Some(rs.clone()),
        };
        s.pod.insert(key, t);
        Ok(())
    }

    fn check_pod_rules(&self, ns: &PathBuf, rs: &PodRuleset) -> Result<(), NftError> {
        self.step(format!("check pod rules {} in {}", rs.table, ns.display()))?;
        let what = format!("table inet {}", rs.table);
        let found = self
            .state
            .borrow()
            .pod
            .get(&(ns.clone(), rs.table.clone()))
            .cloned();
        match found {
            None => Err(missing(what)),
            Some(t) if t.comment == comment(&rs.tag) && t.content.as_ref() == Some(rs) => Ok(()),
            Some(_) => Err(NftError::Mismatch(format!("{what} differs"))),
        }
    }

    fn remove_pod_rules(&self, ns: &PathBuf, table: &str, tag: &str) -> Result<Deleted, NftError> {
        self.step(format!("remove pod rules {table} in {}", ns.display()))?;
        let key = (ns.clone(), table.to_string());
        let mut s = self.state.borrow_mut();
        Ok(match s.pod.get(&key) {
            None => Deleted::Absent,
            Some(t) if !is_ours(&t.comment, tag) => Deleted::NotOurs {
                comment: t.comment.clone(),
            },
            Some(_) => {
                s.pod.remove(&key);
                Deleted::Removed
            }
        })
    }

    fn apply_host_guard(&self, g: &HostGuard) -> Result<(), NftError> {
        self.step(format!("apply host guard {} on {}", g.table, g.host_ifname))?;
        if let Some(t) = self
            .guard(&g.table)
            .filter(|t| !is_ours(&t.comment, &g.tag))
        {
            return Err(NftError::NotOurs {
                family: "netdev",
                table: g.table.clone(),
                comment: t.comment,
            });
        }
        self.put_guard(g);
        Ok(())
    }

    fn check_host_guard(&self, g: &HostGuard) -> Result<(), NftError> {
        self.step(format!("check host guard {}", g.table))?;
        let what = format!("table netdev {}", g.table);
        match self.guard(&g.table) {
            None => Err(missing(what)),
            Some(t) if t.comment == comment(&g.tag) && t.content.as_ref() == Some(g) => Ok(()),
            Some(_) => Err(NftError::Mismatch(format!("{what} differs"))),
        }
    }

    fn remove_host_guard(&self, table: &str, tag: &str) -> Result<Deleted, NftError> {
        self.step(format!("remove host guard {table}"))?;
        let mut s = self.state.borrow_mut();
        Ok(match s.guards.get(table) {
            None => Deleted::Absent,
            Some(t) if !is_ours(&t.comment, tag) => Deleted::NotOurs {
                comment: t.comment.clone(),
            },
            Some(_) => {
                s.guards.remove(table);
                Deleted::Removed
            }
        })
    }

    fn list_host_guards(&self) -> Result<Vec<TableInfo>, NftError> {
        self.step("list host guards".to_string())?;
        let s = self.state.borrow();
        Ok(s.guards
            .iter()
            .map(|(name, t)| TableInfo {
                name: name.clone(),
                tag: t
                    .comment
                    .as_deref()
                    .and_then(|c| c.strip_prefix(TAG_PREFIX))
                    .map(str::to_owned),
            })
            .collect())
    }
}
