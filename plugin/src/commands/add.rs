//! ADD: install the pod's rules, then the host guard, then the record; print prevResult.
//!
//! Order matters. The record is what gives a source address an identity at the proxy, so it is
//! written last, when enforcement is already in place. If any step fails, the steps already done
//! are undone before the error is returned: an attachment is fully guarded or not touched.
//! Repeating ADD re-applies the same tables (each apply is one atomic nf_tables batch that
//! replaces the table) and leaves an identical record alone.
//!
//! Before anything is installed, and again under the state directory's lock just before the
//! record is written, the pod's addresses are checked against other attachments
//! ([`super::claims`]): an address another live attachment holds is refused (code 103).

use super::claims::{self, claim};
use super::{nft_error, open_netns, plan, same_record, state_error, Plan};
use crate::cni::error::CniError;
use crate::cni::result::pass_through;
use crate::cni::Env;
use crate::config::Config;
use crate::firewall::Firewall;
use crate::hostif::LinkProbe;
use metaguard_common::state::StateDir;
use serde_json::Value;

pub fn add<F: Firewall>(
    env: &Env,
    cfg: &Config,
    state: &StateDir,
    probe: &dyn LinkProbe,
    fw: &F,
) -> Result<Value, CniError> {
    let prev = cfg.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config(
            "prevResult",
            "missing: metaguard is a chained plugin; list it after an interface plugin (bridge, ptp, ...) in a conflist",
        )
    })?;
    let plan = plan(env, cfg, prev, probe)?;
    // Refused here, nothing has been changed. The answer is asked again before the record is
    // written (another ADD may take an address meanwhile); this one spares the undo.
    claim(fw, state, &plan.record)?;
    let (path, ns) = open_netns(fw, env.netns.as_deref())?;

    fw.apply_pod_rules(&ns, &plan.pod)
        .map_err(|e| nft_error("installing the pod's rules", e))?;
    log::info!("installed inet {} in {}", plan.pod.table, path.display());

    let undo_pod = || {
        if let Err(e) = fw.remove_pod_rules(&ns, &plan.pod.table, &plan.key) {
            log::error!("undo: deleting inet {} failed: {e}", plan.pod.table);
        }
    };
    if let Some(g) = &plan.guard {
        if let Err(e) = fw.apply_host_guard(g) {
            undo_pod();
            return Err(nft_error("installing the host guard", e));
        }
        log::info!("installed netdev {} on {}", g.table, g.host_ifname);
    }
    let undo_guard = || {
        if let Some(g) = &plan.guard {
            if let Err(e) = fw.remove_host_guard(&g.table, &g.tag) {
                log::error!("undo: deleting netdev {} failed: {e}", g.table);
            }
        }
    };

    if let Err(e) = write_record(fw, state, &plan) {
        undo_guard();
        undo_pod();
        return Err(e);
    }
    log::info!(
        "guarded {} ips={:?} host_interface={:?} host_guard={} layer2_guard={}",
        plan.record.display_name(),
        plan.record.ips,
        plan.record.host_interface,
        plan.record.host_guard,
        plan.record.layer2_guard
    );
    Ok(pass_through(prev, cfg.cni_version))
}

/// Writes the record under the state directory's lock, after asking again who holds its
/// addresses: between ADD's first check and now another ADD may have taken one. A write that
/// fails leaves no record; on any error the caller undoes the tables.
fn write_record<F: Firewall>(fw: &F, state: &StateDir, plan: &Plan) -> Result<(), CniError> {
    let _lock = state
        .lock()
        .map_err(|e| state_error("locking the state directory", e))?;
    let claims::Claims {
        takeovers,
        all_ours,
    } = claim(fw, state, &plan.record)?;
    // An identical record whose addresses all point at it (repeat ADD) is left as it is,
    // creation time included.
    let unchanged = all_ours
        && matches!(state.read_record(&plan.key), Ok(Some(old)) if same_record(&old, &plan.record));
    if unchanged {
        return Ok(());
    }
    if let Err(e) = state.write_record(&plan.record) {
        for e in state.remove_record(&plan.key) {
            log::error!("undo: {e}");
        }
        return Err(state_error("writing the pod record", e));
    }
    for t in &takeovers {
        log::warn!("{}", t.describe());
    }
    Ok(())
}
