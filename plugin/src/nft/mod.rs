//! nf_tables over netlink: program the kernel's packet filter without exec'ing `nft`, without
//! iptables and without the xtables lock. Each apply is one nfnetlink batch, which the kernel
//! commits as one transaction: the pod sees the old rules or the new ones, never a mix.
//!
//! Layout: `sys` (uapi constants), `msg` (netlink encoding/parsing), `expr` (rule expressions),
//! `ruleset` (metaguard's model -> tables, chains, rules), `objects` (those on the wire),
//! `socket` (batches and dumps), `check` (CHECK), `release` (closing sockets without waiting for
//! the kernel's deferred cleanup).

mod check;
mod expr;
mod msg;
mod objects;
mod release;
mod ruleset;
mod socket;
mod sys;

use crate::netns::{Netns, NetnsError};
use crate::rules::{HostGuard, PodRuleset};
use ruleset::{family_name, family_proto, TableSpec};
use socket::{NlSocket, Obj, Refused};

pub use ruleset::TAG_PREFIX;

/// Errors from talking to nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The kernel refused a message of a batch (the first refusal; `detail` has the kernel's
    /// text, if any, and the other refusals of the same batch).
    #[error("nf_tables: {what}: {errno}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Kernel {
        what: String,
        errno: nix::errno::Errno,
        detail: String,
    },
    /// The host guard's device does not exist in the target namespace.
    #[error("network device {0:?} does not exist")]
    NoDevice(String),
    /// CHECK found the installed rules differ from what was expected.
    #[error("nf_tables state differs: {0}")]
    Mismatch(String),
    /// A reply from the kernel we could not decode.
    #[error("malformed netlink message: {0}")]
    Parse(String),
    /// The input cannot be expressed (bad names, lengths, mixed address families).
    #[error("invalid nf_tables input: {0}")]
    Invalid(String),
    /// A table with the name metaguard derives for this attachment exists with another tag (or
    /// none): another attachment's whose key hashes to the same name, or not metaguard's at all.
    /// It is left alone.
    #[error("{family} table {table} exists with comment {comment:?}, not this attachment's tag: left alone")]
    NotOurs {
        family: &'static str,
        table: String,
        comment: Option<String>,
    },
}

impl NftError {
    /// True when the object (table, chain, namespace) does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            NftError::Kernel { errno, .. } => *errno == nix::errno::Errno::ENOENT,
            NftError::Netns(e) => e.is_not_found(),
            _ => false,
        }
    }
}

/// Which network namespace to talk to.
#[derive(Debug, Clone, Copy)]
pub enum Where<'a> {
    Current,
    In(&'a Netns),
}

/// nftables table family metaguard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Netdev,
}

/// A table as listed by [`list_tables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    /// The attachment tag from the table's comment, when it carries metaguard's prefix.
    pub tag: Option<String>,
}

/// Installs (or replaces) the pod's `inet` table in one transaction.
pub fn apply_pod_rules(at: Where, rs: &PodRuleset) -> Result<(), NftError> {
    let spec = ruleset::pod_spec(rs)?;
    let mut sock = open(at)?;
    apply(&mut sock, &spec)
}

/// Installs (or replaces) the host-side `netdev` guard in one transaction.
pub fn apply_host_guard(at: Where, g: &HostGuard) -> Result<(), NftError> {
    let spec = ruleset::host_spec(g)?;
    let (mut sock, exists) = open_with_device(at, &g.host_ifname)?;
    // Since Linux 6.16 a netdev chain may name a device that does not exist (it attaches when
    // the device appears), so the kernel would accept the batch and guard nothing: refuse here.
    if !exists {
        return Err(NftError::NoDevice(g.host_ifname.clone()));
    }
    apply(&mut sock, &spec).map_err(|e| match e {
        // Older kernels refuse a chain on a missing device with ENOENT/ENODEV.
        NftError::Kernel {
            ref what, errno, ..
        } if what.starts_with("create chain")
            && matches!(errno, nix::errno::Errno::ENOENT | nix::errno::Errno::ENODEV) =>
        {
            NftError::NoDevice(g.host_ifname.clone())
        }
        e => e,
    })
}

/// What [`delete_table`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Removed,
    Absent,
    /// A table of that name exists but is not this attachment's (its comment is not
    /// `TAG_PREFIX` + the expected tag): left alone. Names are a 64-bit hash of the attachment
    /// key, so whoever chooses container IDs could find a collision; the tag is the key itself.
    NotOurs {
        comment: Option<String>,
    },
}

impl Deleted {
    pub fn removed(&self) -> bool {
        *self == Deleted::Removed
    }
}

/// Deletes the table `name` if it carries the attachment tag `tag`.
pub fn delete_table(at: Where, family: Family, name: &str, tag: &str) -> Result<Deleted, NftError> {
    if name.is_empty() || name.len() > 255 || name.contains('\0') {
        return Err(NftError::Invalid(format!("table name {name:?}")));
    }
    let mut sock = open(at)?;
    // Look first: the tag must be checked before deleting, and a batch the kernel refuses is
    // rolled back synchronously, which waits for an RCU grace period (10+ ms here), while this
    // lookup costs microseconds. A table that vanishes between the two is reported as absent.
    let found = sock.get(
        sys::NFT_MSG_GETTABLE,
        family_proto(family),
        |b| b.attr_str(sys::NFTA_TABLE_NAME, name),
        objects::parse_table,
    )?;
    let Some(found) = found else {
        return Ok(Deleted::Absent);
    };
    let ours = found
        .comment
        .as_deref()
        .and_then(|c| c.strip_prefix(TAG_PREFIX))
        == Some(tag);
    if !ours {
        return Ok(Deleted::NotOurs {
            comment: found.comment,
        });
    }
    let mut b = sock.batch();
    objects::del_table(&mut b, family, name);
    let refused = sock.send_batch(b)?;
    match refused.first() {
        None => Ok(Deleted::Removed),
        Some(r) if r.errno == nix::errno::Errno::ENOENT => Ok(Deleted::Absent),
        Some(_) => Err(batch_error(&refused, |_, _| {
            format!("delete table {} {name}", family_name(family))
        })),
    }
}

/// Compares the pod's table with `rs`; `NftError::Mismatch` says what differs.
pub fn check_pod_rules(at: Where, rs: &PodRuleset) -> Result<(), NftError> {
    let spec = ruleset::pod_spec(rs)?;
    let mut sock = open(at)?;
    check::check(&mut sock, &spec)
}

/// Compares the host guard with `g`, including the device its chain is bound to.
pub fn check_host_guard(at: Where, g: &HostGuard) -> Result<(), NftError> {
    let spec = ruleset::host_spec(g)?;
    let (mut sock, exists) = open_with_device(at, &g.host_ifname)?;
    check::check(&mut sock, &spec)?;
    if !exists {
        return Err(NftError::Mismatch(format!(
            "host guard {} is bound to device {}, which does not exist",
            g.table, g.host_ifname
        )));
    }
    Ok(())
}

/// Every table of `family` with its tag (GC filters on `rules::TABLE_PREFIX`).
pub fn list_tables(at: Where, family: Family) -> Result<Vec<TableInfo>, NftError> {
    let mut sock = open(at)?;
    let tables = sock.dump(
        sys::NFT_MSG_GETTABLE,
        family_proto(family),
        |_| {},
        objects::parse_table,
    )?;
    Ok(tables
        .into_iter()
        .map(|t| TableInfo {
            tag: t
                .comment
                .as_deref()
                .and_then(|c| c.strip_prefix(TAG_PREFIX))
                .map(str::to_owned),
            name: t.name,
        })
        .collect())
}

/// Whether sockets that committed a deletion (DEL, a repeated ADD) are released by a short-lived
/// grandchild process (the default) instead of by the caller, which would wait for the kernel's
/// deferred cleanup (an RCU grace period, 10-50 ms here) in `close` or at process exit. See
/// `release.rs`.
pub fn set_background_release(on: bool) {
    release::set_enabled(on);
}

/// One batch that leaves exactly `spec` in the kernel, committed atomically.
///
/// - No table yet (the usual ADD): create table, chains and rules.
/// - The table is there with another tag, or none: not ours (a name collision, or someone
///   else's table); refused with [`NftError::NotOurs`] and left alone.
/// - The table is there with the right tag and base chains (a repeated ADD, or a repair): keep
///   table and chains, flush their rules and add ours. Packets see the old rules until the
///   commit, and the chains' hooks stay registered throughout.
/// - Our tag but other chains (other hooks or priorities, extra chains): create the table (so
///   the delete cannot fail), delete it with everything in it, create it again. Still one
///   transaction, but the new base chains are hooked in before the commit fills them, so for
///   that instant their policy applies (a drop-policy guard drops).
fn apply(sock: &mut NlSocket, spec: &TableSpec) -> Result<(), NftError> {
    let fam = family_proto(spec.family);
    let existing = sock.get(
        sys::NFT_MSG_GETTABLE,
        fam,
        |b| b.attr_str(sys::NFTA_TABLE_NAME, &spec.name),
        objects::parse_table,
    )?;
    let existing_found = existing.is_some();
    let replace = match existing {
        None => false,
        Some(t) if t.comment.as_deref() != Some(spec.comment.as_str()) => {
            return Err(NftError::NotOurs {
                family: family_name(spec.family),
                table: spec.name.clone(),
                comment: t.comment,
            })
        }
        Some(_) => {
            let chains: Vec<_> = sock
                .dump(sys::NFT_MSG_GETCHAIN, fam, |_| {}, objects::parse_chain)?
                .into_iter()
                .filter(|c| c.table == spec.name)
                .collect();
            check::check_chains("", spec, &chains).is_err()
        }
    };
    let mut b = sock.batch();
    if existing_found {
        b.mark_deletes(); // the flush (or the delete) removes rules that exist
    }
    objects::add_table(&mut b, spec)?;
    if replace {
        objects::del_table(&mut b, spec.family, &spec.name);
        objects::add_table(&mut b, spec)?;
    }
    for i in 0..spec.chains.len() {
        objects::add_chain(&mut b, spec, i);
    }
    if !replace {
        // Also when the table was absent: if it appeared since we looked, no rule is doubled.
        objects::flush_table(&mut b, spec);
    }
    for i in 0..spec.rules.len() {
        objects::add_rule(&mut b, spec, i)?;
    }
    let refused = sock.send_batch(b)?;
    if refused.is_empty() {
        return Ok(());
    }
    Err(batch_error(&refused, |op, obj| describe(spec, op, obj)))
}

fn describe(spec: &TableSpec, op: &str, obj: Option<Obj>) -> String {
    let table = format!("{} {}", family_name(spec.family), spec.name);
    match obj {
        None | Some(Obj::Table) | Some(Obj::Flush) => format!("{op} {table}"),
        Some(Obj::Chain(i)) => format!("{op} {table} {}", spec.chains[i].name),
        Some(Obj::Rule(i)) => {
            let r = &spec.rules[i];
            format!(
                "{op} {table} {} #{i} ({:?} -> {:?})",
                spec.chains[r.chain].name, r.matches, r.action
            )
        }
    }
}

/// The first refusal is the cause; later ones usually follow from it but are kept for the log.
fn batch_error(refused: &[Refused], describe: impl Fn(&str, Option<Obj>) -> String) -> NftError {
    let first = &refused[0];
    let mut detail = first.message.clone().unwrap_or_default();
    for r in &refused[1..] {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str(&format!("also {}: {}", describe(r.op, r.obj), r.errno));
    }
    NftError::Kernel {
        what: describe(first.op, first.obj),
        errno: first.errno,
        detail,
    }
}

/// Runs `f` in the target namespace: sockets created there stay bound to it.
fn in_ns<T>(at: Where, f: impl FnOnce() -> T) -> Result<T, NftError> {
    match at {
        Where::Current => Ok(f()),
        Where::In(ns) => Ok(ns.run(f)?),
    }
}

fn open(at: Where) -> Result<NlSocket, NftError> {
    in_ns(at, NlSocket::open)?
}

/// Opens the socket and looks the device up, both inside the namespace.
fn open_with_device(at: Where, ifname: &str) -> Result<(NlSocket, bool), NftError> {
    in_ns(at, || {
        let sock = NlSocket::open()?;
        let exists = std::ffi::CString::new(ifname)
            // SAFETY: if_nametoindex reads a valid NUL-terminated string.
            .map(|c| unsafe { libc::if_nametoindex(c.as_ptr()) } != 0)
            .unwrap_or(false);
        Ok((sock, exists))
    })?
}
