//! The real [`Firewall`]: nf_tables over netlink, through [`crate::nft`]. The pod's rules are an
//! `inet` table inside the pod's namespace, the host guard a `netdev` table in the plugin's own
//! (the namespace the runtime runs plugins in, where the host end of the pod's link is).

use super::{Deleted, Firewall, NftError, TableInfo};
use crate::netns::{Netns, NetnsError};
use crate::nft::{self, Family, Where};
use crate::rules::{HostGuard, PodRuleset};
use std::path::Path;

/// nf_tables, the only backend (see the module docs).
pub struct NfTables;

impl Firewall for NfTables {
    type Netns = Netns;

    fn open_netns(&self, path: &Path) -> Result<Netns, NetnsError> {
        Netns::open(path)
    }

    fn apply_pod_rules(&self, ns: &Netns, rs: &PodRuleset) -> Result<(), NftError> {
        nft::apply_pod_rules(Where::In(ns), rs)
    }

    fn check_pod_rules(&self, ns: &Netns, rs: &PodRuleset) -> Result<(), NftError> {
        nft::check_pod_rules(Where::In(ns), rs)
    }

    fn remove_pod_rules(&self, ns: &Netns, table: &str, tag: &str) -> Result<Deleted, NftError> {
        nft::delete_table(Where::In(ns), Family::Inet, table, tag)
    }

    fn apply_host_guard(&self, g: &HostGuard) -> Result<(), NftError> {
        nft::apply_host_guard(Where::Current, g)
    }

    fn check_host_guard(&self, g: &HostGuard) -> Result<(), NftError> {
        nft::check_host_guard(Where::Current, g)
    }

    fn remove_host_guard(&self, table: &str, tag: &str) -> Result<Deleted, NftError> {
        nft::delete_table(Where::Current, Family::Netdev, table, tag)
    }

    fn list_host_guards(&self) -> Result<Vec<TableInfo>, NftError> {
        nft::list_tables(Where::Current, Family::Netdev)
    }
}
