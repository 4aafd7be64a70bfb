//! DEL: remove the pod's table, the host guard and the record; best effort and idempotent.
//!
//! Needs no prevResult and no saved state: table names derive from the attachment key. Succeeds
//! when the netns is gone (its rules went with it), when ADD never ran, and when called twice.
//! Every step runs even if an earlier one failed, and all failures are reported together.

use super::{key_of, teardown};
use crate::cni::error::CniError;
use crate::cni::Env;
use crate::config::Config;
use crate::firewall::Firewall;
use metaguard_common::state::StateDir;

pub fn del<F: Firewall>(env: &Env, cfg: &Config, state: &StateDir, fw: &F) -> Result<(), CniError> {
    let key = key_of(env, cfg);
    let errors = teardown(fw, state, &key, env.netns.as_deref());
    match CniError::combine("DEL incomplete", errors) {
        Some(e) => Err(e),
        None => {
            log::info!("removed {key}");
            Ok(())
        }
    }
}
