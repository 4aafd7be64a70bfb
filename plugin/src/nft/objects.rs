//! nf_tables objects on the wire: the messages that create tables, chains and rules, and the
//! records parsed back from dumps.

use super::msg::{comment_udata, MsgBuf, NlMsg};
use super::ruleset::{family_proto, TableSpec};
use super::socket::{Batch, Obj};
use super::sys::*;
use super::{Family, NftError};

/// NEWTABLE (create if absent) with the tag comment.
pub fn add_table(b: &mut Batch, spec: &TableSpec) -> Result<(), NftError> {
    let udata = comment_udata(&spec.comment)?;
    let m = b.begin(
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE,
        family_proto(spec.family),
        "create table",
        Obj::Table,
    );
    b.buf().attr_str(NFTA_TABLE_NAME, &spec.name);
    b.buf().attr(NFTA_TABLE_USERDATA, &udata);
    b.end(m);
    Ok(())
}

pub fn del_table(b: &mut Batch, family: Family, name: &str) {
    b.mark_deletes();
    let m = b.begin(
        NFT_MSG_DELTABLE,
        0,
        family_proto(family),
        "delete table",
        Obj::Table,
    );
    b.buf().attr_str(NFTA_TABLE_NAME, name);
    b.end(m);
}

/// NEWCHAIN (create if absent) for base chain `i` of the spec.
pub fn add_chain(b: &mut Batch, spec: &TableSpec, i: usize) {
    let c = &spec.chains[i];
    let m = b.begin(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        family_proto(spec.family),
        "create chain",
        Obj::Chain(i),
    );
    let buf = b.buf();
    buf.attr_str(NFTA_CHAIN_TABLE, &spec.name);
    buf.attr_str(NFTA_CHAIN_NAME, c.name);
    let h = buf.nest_begin(NFTA_CHAIN_HOOK);
    buf.attr_u32_be(NFTA_HOOK_HOOKNUM, c.hook);
    buf.attr_u32_be(NFTA_HOOK_PRIORITY, c.prio as u32);
    if let Some(dev) = &c.device {
        buf.attr_str(NFTA_HOOK_DEV, dev);
    }
    buf.nest_end(h);
    buf.attr_u32_be(NFTA_CHAIN_POLICY, c.policy);
    buf.attr_str(NFTA_CHAIN_TYPE, c.kind);
    b.end(m);
}

/// DELRULE naming only the table: removes every rule of every chain in it.
pub fn flush_table(b: &mut Batch, spec: &TableSpec) {
    let m = b.begin(
        NFT_MSG_DELRULE,
        0,
        family_proto(spec.family),
        "flush table",
        Obj::Flush,
    );
    b.buf().attr_str(NFTA_RULE_TABLE, &spec.name);
    b.end(m);
}

/// NEWRULE (append) for rule `i`, with its identifying comment.
pub fn add_rule(b: &mut Batch, spec: &TableSpec, i: usize) -> Result<(), NftError> {
    let r = &spec.rules[i];
    let flags = NLM_F_CREATE | NLM_F_APPEND;
    let m = b.begin(
        NFT_MSG_NEWRULE,
        flags,
        family_proto(spec.family),
        "add rule",
        Obj::Rule(i),
    );
    let buf = b.buf();
    buf.attr_str(NFTA_RULE_TABLE, &spec.name);
    buf.attr_str(NFTA_RULE_CHAIN, spec.chains[r.chain].name);
    let start = buf.len();
    encode_exprs(buf, spec, i);
    let comment = spec.rule_comment(i, buf.since(start));
    buf.attr(NFTA_RULE_USERDATA, &comment_udata(&comment)?);
    b.end(m);
    Ok(())
}

fn encode_exprs(buf: &mut MsgBuf, spec: &TableSpec, i: usize) {
    let n = buf.nest_begin(NFTA_RULE_EXPRESSIONS);
    for e in spec.rules[i].exprs() {
        e.encode(buf);
    }
    buf.nest_end(n);
}

/// The comments every rule of `spec` carries, in rule order (what CHECK expects to find).
pub fn rule_comments(spec: &TableSpec) -> Vec<String> {
    let mut scratch = MsgBuf::with_capacity(512);
    (0..spec.rules.len())
        .map(|i| {
            let start = scratch.len();
            encode_exprs(&mut scratch, spec, i);
            spec.rule_comment(i, scratch.since(start))
        })
        .collect()
}

/// A table as dumped by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRec {
    pub name: String,
    pub comment: Option<String>,
}

/// A chain as dumped by the kernel (base-chain fields are `None` for regular chains).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainRec {
    pub table: String,
    pub name: String,
    pub hook: Option<u32>,
    pub prio: Option<i32>,
    pub devices: Vec<String>,
    pub policy: Option<u32>,
    pub kind: Option<String>,
}

/// A rule as dumped by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRec {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

fn comment_of(data: &[u8]) -> Option<String> {
    super::msg::udata_comment(data).map(str::to_owned)
}

pub fn parse_table(m: NlMsg<'_>) -> Result<Option<TableRec>, NftError> {
    if m.nft_type() != Some(NFT_MSG_NEWTABLE) {
        return Ok(None);
    }
    let mut t = TableRec {
        name: String::new(),
        comment: None,
    };
    for a in m.nfnl_attrs()? {
        let a = a?;
        match a.ty {
            NFTA_TABLE_NAME => t.name = a.str()?.to_owned(),
            NFTA_TABLE_USERDATA => t.comment = comment_of(a.data),
            _ => {}
        }
    }
    Ok(Some(t))
}

pub fn parse_chain(m: NlMsg<'_>) -> Result<Option<ChainRec>, NftError> {
    if m.nft_type() != Some(NFT_MSG_NEWCHAIN) {
        return Ok(None);
    }
    let mut c = ChainRec::default();
    // Kernels list a chain's devices as NFTA_HOOK_DEV (one device), NFTA_HOOK_DEVS { NFTA_DEVICE_NAME,
    // ... }, or both for one device (recent kernels, for old userspace): DEVS wins when present.
    let (mut dev, mut devs) = (None, Vec::new());
    for a in m.nfnl_attrs()? {
        let a = a?;
        match a.ty {
            NFTA_CHAIN_TABLE => c.table = a.str()?.to_owned(),
            NFTA_CHAIN_NAME => c.name = a.str()?.to_owned(),
            NFTA_CHAIN_POLICY => c.policy = Some(a.u32_be()?),
            NFTA_CHAIN_TYPE => c.kind = Some(a.str()?.to_owned()),
            NFTA_CHAIN_HOOK => {
                for h in a.nested() {
                    let h = h?;
                    match h.ty {
                        NFTA_HOOK_HOOKNUM => c.hook = Some(h.u32_be()?),
                        NFTA_HOOK_PRIORITY => c.prio = Some(h.u32_be()? as i32),
                        NFTA_HOOK_DEV => dev = Some(h.str()?.to_owned()),
                        NFTA_HOOK_DEVS => {
                            for d in h.nested() {
                                let d = d?;
                                if d.ty == NFTA_DEVICE_NAME {
                                    devs.push(d.str()?.to_owned());
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    c.devices = if devs.is_empty() {
        dev.into_iter().collect()
    } else {
        devs
    };
    Ok(Some(c))
}

pub fn parse_rule(m: NlMsg<'_>) -> Result<Option<RuleRec>, NftError> {
    if m.nft_type() != Some(NFT_MSG_NEWRULE) {
        return Ok(None);
    }
    let mut r = RuleRec {
        chain: String::new(),
        handle: 0,
        comment: None,
    };
    for a in m.nfnl_attrs()? {
        let a = a?;
        match a.ty {
            NFTA_RULE_CHAIN => r.chain = a.str()?.to_owned(),
            NFTA_RULE_HANDLE => {
                let b: [u8; 8] = a
                    .data
                    .try_into()
                    .map_err(|_| NftError::Parse("rule handle is not a u64".into()))?;
                r.handle = u64::from_be_bytes(b);
            }
            NFTA_RULE_USERDATA => r.comment = comment_of(a.data),
            _ => {}
        }
    }
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::msg::messages;
    use crate::nft::ruleset::pod_spec;

    #[test]
    fn comments_are_stable_and_distinct() {
        let spec = pod_spec(&crate::nft::ruleset::tests::pod()).unwrap();
        let a = rule_comments(&spec);
        assert_eq!(a, rule_comments(&spec));
        assert_eq!(a.len(), spec.rules.len());
        let mut uniq = a.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), a.len());
    }

    #[test]
    fn chain_messages_parse_back() {
        // A NEWCHAIN we encode is also a valid dump record: parse it back.
        let spec = pod_spec(&crate::nft::ruleset::tests::pod()).unwrap();
        let mut sock_seq = 1;
        let mut b = crate::nft::socket::Batch::for_test(&mut sock_seq);
        add_chain(&mut b, &spec, 1);
        let bytes = b.bytes_for_test();
        let recs: Vec<_> = messages(bytes)
            .filter_map(|m| parse_chain(m.unwrap()).unwrap())
            .collect();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].name, "nat-prerouting");
        assert_eq!(recs[0].table, spec.name);
        assert_eq!(recs[0].hook, Some(NF_INET_PRE_ROUTING));
        assert_eq!(recs[0].prio, Some(-100));
        assert_eq!(recs[0].kind.as_deref(), Some("nat"));
        assert_eq!(recs[0].policy, Some(NF_ACCEPT));
    }
}
