//! GC (spec 1.1): remove what metaguard holds for attachments of this network that the runtime
//! no longer lists as valid.
//!
//! The valid list is the union of `cni.dev/valid-attachments` and `cni.dev/attachments` (libcni
//! sends both; the 1.1.0 text names the second). Stale attachments are found in two places:
//! - pod records of this network (`<stateDir>/pods/<network>:...`): the record's netns is used to
//!   delete the pod's table when that netns still exists, then the guard and the record go;
//! - host guard tables in the current netns whose tag (the attachment key) names this network:
//!   guards whose record was lost are found here.
//!
//! Attachments of other networks, tables without a metaguard tag and tables not named after their
//! tag (see [`Firewall::owned_host_guards`]) are never touched.

use super::{nft_error, state_error, teardown};
use crate::cni::error::CniError;
use crate::config::Config;
use crate::firewall::Firewall;
use metaguard_common::ids::{attachment_key, split_attachment_key};
use metaguard_common::state::StateDir;
use std::collections::BTreeSet;

pub fn gc<F: Firewall>(cfg: &Config, state: &StateDir, fw: &F) -> Result<(), CniError> {
    if !cfg.cni_version.allows_gc_and_status() {
        return Err(CniError::incompatible_version(
            "config version does not allow GC",
            format!(
                "GC needs cniVersion 1.1.0 or later, got {}",
                cfg.cni_version
            ),
        ));
    }
    let valid: BTreeSet<String> = cfg
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| attachment_key(&cfg.name, &a.container_id, &a.ifname))
        .collect();
    let stale = |key: &str| -> bool {
        matches!(split_attachment_key(key), Some((net, _, _)) if net == cfg.name)
            && !valid.contains(key)
    };
    let mut errors = Vec::new();
    let mut removed = 0usize;

    match state.list_keys() {
        Ok(keys) => {
            for key in keys.iter().filter(|k| stale(k)) {
                log::info!("GC: removing stale attachment {key}");
                errors.extend(teardown(fw, state, key, None));
                removed += 1;
            }
        }
        Err(e) => errors.push(state_error("listing pod records", e)),
    }

    match fw.owned_host_guards() {
        Ok(tables) => {
            for t in tables.iter().filter(|t| stale(&t.key)) {
                log::info!("GC: removing orphaned host guard {} ({})", t.name, t.key);
                match fw.remove_host_guard(&t.name, &t.key) {
                    Ok(d) if d.removed() => removed += 1,
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => errors.push(nft_error("deleting a stale host guard", e)),
                }
            }
        }
        Err(e) => errors.push(nft_error("listing host guard tables", e)),
    }
    log::info!(
        "GC: {} valid, {removed} removed, {} errors",
        valid.len(),
        errors.len()
    );
    match CniError::combine("GC incomplete", errors) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
