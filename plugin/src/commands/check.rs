//! CHECK: the pod's table, the host guard and the record must all be exactly what ADD would
//! install now, and every address entry must name this attachment. Any difference is code 101 listing every problem found.
//!
//! CHECK exists from spec 0.4.0; an older cniVersion gets code 1, as in the reference `skel`.

use super::{nft_error, open_netns, plan, same_record, state_error};
use crate::cni::error::{code, CniError};
use crate::cni::Env;
use crate::config::Config;
use crate::firewall::{Firewall, NftError};
use crate::hostif::LinkProbe;
use metaguard_common::state::{StateDir, StateError};

fn mismatch(what: &str, details: String) -> CniError {
    CniError::new(code::CHECK_FAILED, format!("CHECK failed: {what}"), details)
}

/// Missing or different state is a CHECK failure; other nf_tables errors stay nf_tables errors.
fn classify(what: &str, e: NftError) -> CniError {
    if e.is_not_found() || matches!(e, NftError::Mismatch(_)) {
        mismatch(what, e.to_string())
    } else {
        nft_error(what, e)
    }
}

pub fn check<F: Firewall>(
    env: &Env,
    cfg: &Config,
    state: &StateDir,
    probe: &dyn LinkProbe,
    fw: &F,
) -> Result<(), CniError> {
    if !cfg.cni_version.allows_check() {
        return Err(CniError::incompatible_version(
            "config version does not allow CHECK",
            format!(
                "CHECK needs cniVersion 0.4.0 or later, got {}",
                cfg.cni_version
            ),
        ));
    }
    let prev = cfg.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config(
            "prevResult",
            "missing: CHECK needs the result of the ADD it checks",
        )
    })?;
    let plan = plan(env, cfg, prev, probe)?;
    let (_, ns) = open_netns(fw, env.netns.as_deref())?;
    let mut problems = Vec::new();
    if let Err(e) = fw.check_pod_rules(&ns, &plan.pod) {
        problems.push(classify("pod rules", e));
    }
    if let Some(g) = &plan.guard {
        if let Err(e) = fw.check_host_guard(g) {
            problems.push(classify("host guard", e));
        }
    }
    match state.read_record(&plan.key) {
        Ok(Some(rec)) if same_record(&rec, &plan.record) => {}
        Ok(Some(rec)) => problems.push(mismatch(
            "pod record",
            format!(
                "record {} differs: found {rec:?}, expected {:?}",
                plan.key, plan.record
            ),
        )),
        Ok(None) => problems.push(mismatch(
            "pod record",
            format!("record {} is missing", plan.key),
        )),
        Err(e) => problems.push(state_error("reading the pod record", e)),
    }
    // The entries are what the proxy looks up: a record whose address another attachment's
    // entry names does not identify this pod.
    for ip in &plan.record.ips {
        match state.owner_of(ip) {
            Ok(Some(owner)) if owner == plan.key => {}
            Ok(owner) => problems.push(mismatch(
                "address entry",
                format!(
                    "{} names {}, not {}: the proxy does not know this pod at {ip}",
                    state.ip_path(ip).display(),
                    owner.as_deref().unwrap_or("nothing (missing)"),
                    plan.key
                ),
            )),
            Err(e @ (StateError::NotRegularFile { .. } | StateError::Invalid { .. })) => {
                problems.push(mismatch("address entry", e.to_string()))
            }
            Err(e) => problems.push(state_error("reading an address entry", e)),
        }
    }
    match CniError::combine("CHECK failed", problems) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
