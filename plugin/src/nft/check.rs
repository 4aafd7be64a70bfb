//! CHECK: compare what the kernel holds with a [`TableSpec`]. Rules are compared by the comment
//! each carries (chain, position, hash of the expressions metaguard encoded), in order; chains by
//! type, hook, priority, policy and device; the table by its tag comment.

use super::objects::{parse_chain, parse_rule, parse_table, rule_comments, ChainRec, RuleRec};
use super::ruleset::{family_name, family_proto, TableSpec};
use super::socket::NlSocket;
use super::sys::*;
use super::NftError;

pub fn check(sock: &mut NlSocket, spec: &TableSpec) -> Result<(), NftError> {
    let fam = family_proto(spec.family);
    let what = format!("table {} {}", family_name(spec.family), spec.name);
    let tables = sock.dump(NFT_MSG_GETTABLE, fam, |_| {}, parse_table)?;
    let table = tables
        .iter()
        .find(|t| t.name == spec.name)
        .ok_or_else(|| NftError::Mismatch(format!("{what} is missing")))?;
    if table.comment.as_deref() != Some(spec.comment.as_str()) {
        return Err(NftError::Mismatch(format!(
            "{what} has comment {:?}, expected {:?}",
            table.comment, spec.comment
        )));
    }
    let chains: Vec<ChainRec> = sock
        .dump(NFT_MSG_GETCHAIN, fam, |_| {}, parse_chain)?
        .into_iter()
        .filter(|c| c.table == spec.name)
        .collect();
    check_chains(&what, spec, &chains)?;
    let rules = sock.dump(
        NFT_MSG_GETRULE,
        fam,
        |b| b.attr_str(NFTA_RULE_TABLE, &spec.name),
        parse_rule,
    )?;
    check_rules(&what, spec, &rules)
}

pub fn check_chains(what: &str, spec: &TableSpec, found: &[ChainRec]) -> Result<(), NftError> {
    for c in found {
        if !spec.chains.iter().any(|s| s.name == c.name) {
            return Err(NftError::Mismatch(format!(
                "{what} has an unexpected chain {}",
                c.name
            )));
        }
    }
    for s in &spec.chains {
        let c = found
            .iter()
            .find(|c| c.name == s.name)
            .ok_or_else(|| NftError::Mismatch(format!("{what}: chain {} is missing", s.name)))?;
        let want_devices: Vec<String> = s.device.iter().cloned().collect();
        let differs = |field: &str, got: String, want: String| {
            NftError::Mismatch(format!(
                "{what}: chain {} has {field} {got}, expected {want}",
                s.name
            ))
        };
        if c.kind.as_deref() != Some(s.kind) {
            return Err(differs("type", format!("{:?}", c.kind), s.kind.into()));
        }
        if c.hook != Some(s.hook) {
            return Err(differs(
                "hook",
                format!("{:?}", c.hook),
                s.hook_name(spec.family).into(),
            ));
        }
        if c.prio != Some(s.prio) {
            return Err(differs(
                "priority",
                format!("{:?}", c.prio),
                s.prio.to_string(),
            ));
        }
        if c.policy != Some(s.policy) {
            let name = |p: u32| if p == NF_ACCEPT { "accept" } else { "drop" };
            return Err(differs(
                "policy",
                format!("{:?}", c.policy.map(name)),
                name(s.policy).into(),
            ));
        }
        if c.devices != want_devices {
            return Err(differs(
                "devices",
                format!("{:?}", c.devices),
                format!("{want_devices:?}"),
            ));
        }
    }
    Ok(())
}

fn check_rules(what: &str, spec: &TableSpec, found: &[RuleRec]) -> Result<(), NftError> {
    let want = rule_comments(spec);
    for (ci, chain) in spec.chains.iter().enumerate() {
        let want: Vec<&str> = spec
            .rules
            .iter()
            .zip(&want)
            .filter(|(r, _)| r.chain == ci)
            .map(|(_, c)| c.as_str())
            .collect();
        let got: Vec<&RuleRec> = found.iter().filter(|r| r.chain == chain.name).collect();
        for (i, w) in want.iter().enumerate() {
            match got.get(i) {
                None => {
                    return Err(NftError::Mismatch(format!(
                        "{what}: chain {} has {} rules, expected {} (missing {w})",
                        chain.name,
                        got.len(),
                        want.len()
                    )))
                }
                Some(r) if r.comment.as_deref() != Some(*w) => {
                    return Err(NftError::Mismatch(format!(
                        "{what}: chain {} rule {i} (handle {}) is {:?}, expected {w}",
                        chain.name, r.handle, r.comment
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = got.get(want.len()) {
            return Err(NftError::Mismatch(format!(
                "{what}: chain {} has an unexpected rule (handle {}, comment {:?})",
                chain.name, extra.handle, extra.comment
            )));
        }
    }
    Ok(())
}
