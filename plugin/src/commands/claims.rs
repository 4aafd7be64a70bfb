//! Whether an attachment may take its addresses: ADD's answer to overlapping networks.
//!
//! An address is one identity at the proxy: `ips/<address>` names one record. Two attachments
//! with the same address (two networks whose IPAM ranges overlap, such as a Multus secondary
//! network and the primary one, or one pod joined to both) cannot both have it: whichever ADD ran
//! last would get the identity, and the DEL of either would leave the other unknown. So ADD
//! refuses an address that another attachment's record lists (code 103, naming the address and
//! the holder), unless that attachment's network namespace no longer exists: then its pod went
//! away without a DEL, and the address is taken over (logged as a warning). The same attachment
//! (network, container ID and ifname) repeating ADD holds its own addresses, so a repeat ADD
//! passes.
//!
//! ADD asks twice: before it installs anything (a refused ADD changes nothing), and again under
//! the state directory's lock right before it writes the record, so of two ADDs racing for one
//! address the second finds the first's record and undoes its own rules. A holder whose record
//! cannot be read, or whose namespace cannot be looked at, is not taken over: fail closed (the
//! pod does not start, and the error names the file).

use crate::cni::error::{code, CniError};
use crate::firewall::Firewall;
use crate::netns::NetnsError;
use metaguard_common::ids::split_attachment_key;
use metaguard_common::record::PodRecord;
use metaguard_common::state::{Holder, StateDir, StateError};
use std::net::IpAddr;
use std::path::Path;

/// What [`claim`] found when every address may be taken.
#[derive(Debug, Default)]
pub struct Claims {
    /// Addresses whose holder's namespace is gone: writing the record takes them over.
    pub takeovers: Vec<Takeover>,
    /// Every address entry already names this attachment (a repeat ADD).
    pub all_ours: bool,
}

/// An address held by an attachment whose network namespace no longer exists.
#[derive(Debug)]
pub struct Takeover {
    pub ip: IpAddr,
    pub from: Box<PodRecord>,
}

impl Takeover {
    /// The warning ADD logs when it writes the record.
    pub fn describe(&self) -> String {
        format!(
            "address {} taken over from {} (pod {:?}): its network namespace {:?} no longer exists (the pod went away without a CNI DEL)",
            self.ip,
            self.from.key(),
            self.from.display_name(),
            self.from.netns
        )
    }
}

/// An address this ADD may not take.
struct Conflict {
    ip: IpAddr,
    /// The holder as "container C on network N (interface I)".
    holder: String,
    /// Why it counts as held.
    why: String,
}

/// Checks every address of `rec` against the state directory. `Err` (code 103, or 5 when the
/// directory cannot be read) when another attachment holds one of them.
pub fn claim<F: Firewall>(fw: &F, state: &StateDir, rec: &PodRecord) -> Result<Claims, CniError> {
    let key = rec.key();
    let mut claims = Claims {
        takeovers: Vec::new(),
        all_ours: true,
    };
    let mut conflicts = Vec::new();
    for ip in &rec.ips {
        let holder = match state.holder_of(ip, &key) {
            Ok(h) => h,
            Err(e) => {
                conflicts.push(unreadable(state, ip, e)?);
                continue;
            }
        };
        if holder != Holder::Ours {
            claims.all_ours = false;
        }
        match holder {
            Holder::Free | Holder::Ours => {}
            Holder::Stale { key: old } => {
                log::debug!("address {ip}: entry names {old}, whose record does not list it: replaced")
            }
            Holder::Junk { reason } => {
                log::warn!("address {ip}: entry not written by metaguard, replaced: {reason}")
            }
            Holder::Other(h) => match netns_state(fw, &h.netns) {
                NetnsState::Gone => claims.takeovers.push(Takeover { ip: *ip, from: h }),
                NetnsState::Alive => conflicts.push(Conflict {
                    ip: *ip,
                    holder: describe(&h.network, &h.container_id, &h.ifname),
                    why: format!(
                        "pod {:?} (record {}) holds it and its network namespace {:?} still exists",
                        h.display_name(),
                        state.record_path(&h.key()).display(),
                        h.netns
                    ),
                }),
                NetnsState::Unknown(e) => conflicts.push(Conflict {
                    ip: *ip,
                    holder: describe(&h.network, &h.container_id, &h.ifname),
                    why: format!(
                        "pod {:?} holds it, and whether its network namespace {:?} still exists cannot be told: {e}",
                        h.display_name(),
                        h.netns
                    ),
                }),
            },
        }
    }
    match refusal(&key, conflicts) {
        Some(e) => Err(e),
        None => Ok(claims),
    }
}

/// A conflict for an address whose entry names an attachment whose record cannot be read. A
/// failure to read the entry itself is an I/O error of this ADD, not a conflict.
fn unreadable(state: &StateDir, ip: &IpAddr, e: StateError) -> Result<Conflict, CniError> {
    let owner = state.owner_of(ip).ok().flatten();
    let Some((net, cid, ifname)) = owner.as_deref().and_then(split_attachment_key) else {
        return Err(super::state_error(
            &format!("reading the address entry of {ip}"),
            e,
        ));
    };
    Ok(Conflict {
        ip: *ip,
        holder: describe(net, cid, ifname),
        why: format!(
            "its record cannot be read ({e}), so whether that pod still exists cannot be told; if it is gone, CNI DEL it or remove the record and {}",
            state.ip_path(ip).display()
        ),
    })
}

fn describe(network: &str, container_id: &str, ifname: &str) -> String {
    format!("container {container_id} on network {network} (interface {ifname})")
}

/// The CNI error for every conflict found, or `None`.
fn refusal(key: &str, conflicts: Vec<Conflict>) -> Option<CniError> {
    let first = conflicts.first()?;
    let mut msg = format!("address {} is in use by {}", first.ip, first.holder);
    if conflicts.len() > 1 {
        msg.push_str(&format!(" (and {} more)", conflicts.len() - 1));
    }
    let each = conflicts
        .iter()
        .map(|c| format!("{} is in use by {}: {}", c.ip, c.holder, c.why))
        .collect::<Vec<_>>()
        .join("; ");
    Some(CniError::new(
        code::ADDRESS_IN_USE,
        msg,
        format!(
            "{each}. {key} was not set up: the proxy tells pods apart by source address, so two live attachments cannot share one. Give networks whose pods share a node disjoint IPAM ranges (docs/plugin.md, \"Overlapping addresses\")"
        ),
    ))
}

enum NetnsState {
    Alive,
    Gone,
    Unknown(String),
}

/// Whether a holder's namespace still exists. "Gone" is what DEL also takes for gone: the path
/// does not exist, or is no namespace any more (the empty mount point a removed one leaves).
fn netns_state<F: Firewall>(fw: &F, path: &str) -> NetnsState {
    // The runtime's CNI_NETNS is always absolute; anything else was not written by ADD.
    if !path.starts_with('/') {
        return NetnsState::Unknown(format!("{path:?} is not an absolute path"));
    }
    match fw.open_netns(Path::new(path)) {
        Ok(_) => NetnsState::Alive,
        Err(e) if e.is_not_found() || matches!(e, NetnsError::NotNetns { .. }) => NetnsState::Gone,
        Err(e) => NetnsState::Unknown(e.to_string()),
    }
}
