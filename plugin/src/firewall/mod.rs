//! The packet filter the commands program: the pod's rules inside its network namespace and the
//! host guard on the host side of its link, behind one trait.
//!
//! Shaped after netavark's `src/firewall` (a `FirewallDriver` trait, one driver per backend): the
//! commands decide what to install, in which order, and what to undo when a step fails; a
//! [`Firewall`] does one step at a time and never decides. Implementations:
//! - [`nftables::NfTables`]: nf_tables over netlink, a thin adapter over [`crate::nft`];
//! - `fake::FakeFirewall` (tests only): tables in memory, failures injected at step N, so ADD's
//!   rollback and DEL's and GC's error gathering have unit tests.
//!
//! Tags: every table carries its attachment key as a tag. Table names are a 64-bit hash of that
//! key, and whoever chooses container IDs could find a collision, so a table of the right name
//! with another tag (or none) is another attachment's or not metaguard's at all: `remove_*`
//! report it as [`Deleted::NotOurs`] and leave it, `apply_*` refuse it with
//! [`NftError::NotOurs`]. The nf_tables implementation gets this from `nft::delete_table` and
//! `nft::apply`; the fake mirrors it.
//!
//! Errors are nf_tables' own ([`NftError`]): they are what CNI errors carry in `details`, word for
//! word, and nf_tables is the only backend.

pub mod nftables;

#[cfg(test)]
pub(crate) mod fake;

use crate::netns::NetnsError;
use crate::rules::{self, HostGuard, PodRuleset};
use std::path::Path;

pub use crate::nft::{Deleted, NftError, TableInfo};

/// One step of installing, checking or removing an attachment's rules. See the module docs.
pub trait Firewall {
    /// A pod's network namespace, opened once per command so every pod-rule step of that command
    /// reaches the same namespace (the nf_tables one is an open namespace file; the fake's, a
    /// path).
    type Netns;

    /// Opens the network namespace at `path` (CNI_NETNS, or the one a record names).
    fn open_netns(&self, path: &Path) -> Result<Self::Netns, NetnsError>;

    /// Installs or replaces the pod's table in `ns`, all at once: after an error nothing of it
    /// changed.
    fn apply_pod_rules(&self, ns: &Self::Netns, rs: &PodRuleset) -> Result<(), NftError>;

    /// Compares the pod's table in `ns` with `rs`: `NftError::Mismatch` or a not-found error says
    /// it differs.
    fn check_pod_rules(&self, ns: &Self::Netns, rs: &PodRuleset) -> Result<(), NftError>;

    /// Deletes the pod's table `table` in `ns` if its tag is `tag`.
    fn remove_pod_rules(
        &self,
        ns: &Self::Netns,
        table: &str,
        tag: &str,
    ) -> Result<Deleted, NftError>;

    /// Installs or replaces the host guard, in the plugin's own namespace, all at once.
    fn apply_host_guard(&self, g: &HostGuard) -> Result<(), NftError>;

    /// Compares the host guard with `g`, the device its chain is bound to included.
    fn check_host_guard(&self, g: &HostGuard) -> Result<(), NftError>;

    /// Deletes the host guard table `table` if its tag is `tag` (also when its device is gone).
    fn remove_host_guard(&self, table: &str, tag: &str) -> Result<Deleted, NftError>;

    /// Every table of the host guards' kind (nf_tables: the `netdev` family) in the plugin's
    /// namespace, with its tag when it carries metaguard's; [`Firewall::owned_host_guards`] keeps
    /// metaguard's.
    fn list_host_guards(&self) -> Result<Vec<TableInfo>, NftError>;

    /// The host guards metaguard owns: tagged, and named what metaguard names a table for that
    /// tag. Anything else (no tag, or a tag under another name) was not made by metaguard for
    /// that attachment and is never touched.
    fn owned_host_guards(&self) -> Result<Vec<OwnedTable>, NftError> {
        Ok(self
            .list_host_guards()?
            .into_iter()
            .filter_map(|t| {
                let key = t.tag?;
                (t.name == rules::table_name(&key)).then_some(OwnedTable { name: t.name, key })
            })
            .collect())
    }
}

/// A table [`Firewall::owned_host_guards`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedTable {
    pub name: String,
    /// The attachment key from the table's tag.
    pub key: String,
}
