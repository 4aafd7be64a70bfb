//! STATUS (spec 1.1): ready means ADD can succeed right now. metaguard checks the two things ADD
//! depends on that can break independently of any pod:
//! - nf_tables answers over netlink in the plugin's network namespace, for the `netdev` family
//!   (host guards) and the `inet` family (the pod's rules use the same kernel code);
//! - the state directory (`stateDir`, its `pods/` and `ips/`) exists or can be created, and a
//!   file can be written and removed in it.
//!
//! Failure is code 50 (cannot service ADD) with the reason. Existing pods keep their rules
//! whatever STATUS says, so 51 is never used. The proxy's health is not part of STATUS: pods do
//! not need it to start, and while it is down metadata requests are refused (fail closed).

use super::nft_error;
use crate::cni::error::{code, CniError};
use crate::config::Config;
use crate::nft::{self, Family, Where};
use metaguard_common::state::{write_atomic, StateDir};
use std::fs;

fn not_ready(details: String) -> CniError {
    CniError::new(code::NOT_AVAILABLE, "metaguard is not ready", details)
}

pub fn status(cfg: &Config, state: &StateDir) -> Result<(), CniError> {
    if !cfg.cni_version.allows_gc_and_status() {
        return Err(CniError::incompatible_version(
            "config version does not allow STATUS",
            format!(
                "STATUS needs cniVersion 1.1.0 or later, got {}",
                cfg.cni_version
            ),
        ));
    }
    for fam in [Family::Netdev, Family::Inet] {
        if let Err(e) = nft::list_tables(Where::Current, fam) {
            let e = nft_error(&format!("listing {fam:?} tables"), e);
            return Err(not_ready(format!("nf_tables is not usable: {}", e.details)));
        }
    }
    // Created with mode 0755 whatever the umask, like ADD does.
    if let Err(e) = state.create_dirs() {
        return Err(not_ready(format!("state directory: {e}")));
    }
    for dir in [state.pods_dir(), state.ips_dir()] {
        // Written the way records are (unpredictable temporary name, O_EXCL|O_NOFOLLOW, rename),
        // so a planted symlink cannot turn the probe into a write elsewhere.
        let probe = dir.join(".status-probe");
        if let Err(e) = write_atomic(&probe, b"ok") {
            return Err(not_ready(format!(
                "state directory {} is not writable: {e}",
                dir.display()
            )));
        }
        let _ = fs::remove_file(&probe);
    }
    Ok(())
}
