//! nf_tables expressions: the small virtual-machine instructions a rule is made of, and their
//! netlink encoding (`NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { ... } }`).
//!
//! Each rule loads a field into a register (`meta`, `payload`), compares it (`cmp`, after an
//! optional `bitwise` mask), and ends with an action (`immediate` verdict, `nat`, `reject`).

use super::msg::MsgBuf;
use super::sys::*;

/// Up to 16 bytes of register data (the size of one nf_tables register), kept inline so building
/// a rule does not allocate per expression.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Data {
    buf: [u8; 16],
    len: u8,
}

impl Data {
    /// Panics never: longer input is cut to 16 bytes, which no caller produces (addresses,
    /// ports, protocol numbers).
    pub fn new(bytes: &[u8]) -> Data {
        let len = bytes.len().min(16);
        let mut buf = [0u8; 16];
        buf[..len].copy_from_slice(&bytes[..len]);
        Data {
            buf,
            len: len as u8,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expr {
    /// `meta load <key> => reg`
    Meta { key: u32, dreg: u32 },
    /// `payload load <len>b @ <base> + <offset> => reg`
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `cmp eq reg <data>`: the rule stops here unless equal.
    CmpEq { sreg: u32, data: Data },
    /// `cmp neq reg <data>`: the rule stops here if equal.
    CmpNeq { sreg: u32, data: Data },
    /// `bitwise reg = (reg & mask) ^ 0`: used for address prefixes.
    Mask { sreg: u32, dreg: u32, mask: Data },
    /// `immediate reg <- data`
    Immediate { dreg: u32, data: Data },
    /// `immediate verdict <- accept/drop`
    Verdict(u32),
    /// `nat dnat <family> addr reg [proto reg]`
    Dnat {
        family: u8,
        reg_addr: u32,
        reg_proto: u32,
    },
    /// `reject type <type> [code <code>]`
    Reject { kind: u32, icmp_code: Option<u8> },
    /// `exthdr load <op> 1b @ <ty> + 0 present => reg`: 1 when the packet carries IPv6
    /// extension header `ty` (`op` IPv6) or IPv4 option `ty` (`op` IPv4) anywhere in its
    /// header chain, else 0. The kernel walks the chain, so padding or reordering cannot hide it.
    ExthdrPresent { op: u32, ty: u8, dreg: u32 },
}

impl Expr {
    pub fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::CmpEq { .. } | Expr::CmpNeq { .. } => "cmp",
            Expr::Mask { .. } => "bitwise",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Dnat { .. } => "nat",
            Expr::Reject { .. } => "reject",
            Expr::ExthdrPresent { .. } => "exthdr",
        }
    }

    /// Appends this expression as one element of an open `NFTA_RULE_EXPRESSIONS` nest.
    pub fn encode(&self, b: &mut MsgBuf) {
        let elem = b.nest_begin(NFTA_LIST_ELEM);
        b.attr_str(NFTA_EXPR_NAME, self.name());
        let data = b.nest_begin(NFTA_EXPR_DATA);
        match *self {
            Expr::Meta { key, dreg } => {
                b.attr_u32_be(NFTA_META_KEY, key);
                b.attr_u32_be(NFTA_META_DREG, dreg);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                b.attr_u32_be(NFTA_PAYLOAD_DREG, dreg);
                b.attr_u32_be(NFTA_PAYLOAD_BASE, base);
                b.attr_u32_be(NFTA_PAYLOAD_OFFSET, offset);
                b.attr_u32_be(NFTA_PAYLOAD_LEN, len);
            }
            Expr::CmpEq { sreg, data } | Expr::CmpNeq { sreg, data } => {
                let op = if matches!(self, Expr::CmpEq { .. }) {
                    NFT_CMP_EQ
                } else {
                    NFT_CMP_NEQ
                };
                b.attr_u32_be(NFTA_CMP_SREG, sreg);
                b.attr_u32_be(NFTA_CMP_OP, op);
                value(b, NFTA_CMP_DATA, data.bytes());
            }
            Expr::Mask { sreg, dreg, mask } => {
                b.attr_u32_be(NFTA_BITWISE_SREG, sreg);
                b.attr_u32_be(NFTA_BITWISE_DREG, dreg);
                b.attr_u32_be(NFTA_BITWISE_LEN, mask.bytes().len() as u32);
                value(b, NFTA_BITWISE_MASK, mask.bytes());
                value(b, NFTA_BITWISE_XOR, &[0u8; 16][..mask.bytes().len()]);
            }
            Expr::Immediate { dreg, data } => {
                b.attr_u32_be(NFTA_IMMEDIATE_DREG, dreg);
                value(b, NFTA_IMMEDIATE_DATA, data.bytes());
            }
            Expr::Verdict(code) => {
                b.attr_u32_be(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                let d = b.nest_begin(NFTA_IMMEDIATE_DATA);
                let v = b.nest_begin(NFTA_DATA_VERDICT);
                b.attr_u32_be(NFTA_VERDICT_CODE, code);
                b.nest_end(v);
                b.nest_end(d);
            }
            Expr::Dnat {
                family,
                reg_addr,
                reg_proto,
            } => {
                b.attr_u32_be(NFTA_NAT_TYPE, NFT_NAT_DNAT);
                b.attr_u32_be(NFTA_NAT_FAMILY, u32::from(family));
                b.attr_u32_be(NFTA_NAT_REG_ADDR_MIN, reg_addr);
                b.attr_u32_be(NFTA_NAT_REG_PROTO_MIN, reg_proto);
            }
            Expr::Reject { kind, icmp_code } => {
                b.attr_u32_be(NFTA_REJECT_TYPE, kind);
                if let Some(code) = icmp_code {
                    b.attr_u8(NFTA_REJECT_ICMP_CODE, code);
                }
            }
            Expr::ExthdrPresent { op, ty, dreg } => {
                b.attr_u32_be(NFTA_EXTHDR_DREG, dreg);
                b.attr_u8(NFTA_EXTHDR_TYPE, ty);
                b.attr_u32_be(NFTA_EXTHDR_OFFSET, 0);
                b.attr_u32_be(NFTA_EXTHDR_LEN, 1);
                b.attr_u32_be(NFTA_EXTHDR_FLAGS, NFT_EXTHDR_F_PRESENT);
                b.attr_u32_be(NFTA_EXTHDR_OP, op);
            }
        }
        b.nest_end(data);
        b.nest_end(elem);
    }
}

/// `ty { NFTA_DATA_VALUE bytes }`
fn value(b: &mut MsgBuf, ty: u16, bytes: &[u8]) {
    let n = b.nest_begin(ty);
    b.attr(NFTA_DATA_VALUE, bytes);
    b.nest_end(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::msg::Attrs;

    fn encode(e: Expr) -> Vec<u8> {
        let mut b = MsgBuf::default();
        e.encode(&mut b);
        b.as_bytes().to_vec()
    }

    #[test]
    fn cmp_encoding_matches_the_kernel_layout() {
        let bytes = encode(Expr::CmpEq {
            sreg: NFT_REG_1,
            data: Data::new(&[169, 254, 169, 254]),
        });
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[44u8, 0, 1, 0x80][..],                // LIST_ELEM, nested, 44 bytes
            &[8, 0, 1, 0], b"cmp\0",                // EXPR_NAME "cmp"
            &[32, 0, 2, 0x80],                      // EXPR_DATA, nested
            &[8, 0, 1, 0, 0, 0, 0, 1],              // CMP_SREG = 1 (big-endian)
            &[8, 0, 2, 0, 0, 0, 0, 0],              // CMP_OP = EQ
            &[12, 0, 3, 0x80],                      // CMP_DATA, nested
            &[8, 0, 1, 0, 169, 254, 169, 254],      // DATA_VALUE
        ]
        .concat();
        assert_eq!(bytes, want);
    }

    #[test]
    fn every_expression_parses_back() {
        let all = [
            Expr::Meta {
                key: NFT_META_NFPROTO,
                dreg: NFT_REG_1,
            },
            Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset: 16,
                len: 4,
                dreg: NFT_REG_1,
            },
            Expr::CmpEq {
                sreg: NFT_REG_1,
                data: Data::new(&[6]),
            },
            Expr::CmpNeq {
                sreg: NFT_REG_1,
                data: Data::new(&[6]),
            },
            Expr::Mask {
                sreg: NFT_REG_1,
                dreg: NFT_REG_1,
                mask: Data::new(&[255, 255, 0, 0]),
            },
            Expr::Immediate {
                dreg: NFT_REG_2,
                data: Data::new(&8169u16.to_be_bytes()),
            },
            Expr::Verdict(NF_ACCEPT),
            Expr::Dnat {
                family: NFPROTO_IPV4,
                reg_addr: NFT_REG_1,
                reg_proto: NFT_REG_2,
            },
            Expr::Reject {
                kind: NFT_REJECT_ICMPX_UNREACH,
                icmp_code: Some(NFT_REJECT_ICMPX_PORT_UNREACH),
            },
            Expr::ExthdrPresent {
                op: NFT_EXTHDR_OP_IPV4,
                ty: IPOPT_LSRR,
                dreg: NFT_REG_1,
            },
        ];
        for e in all {
            let bytes = encode(e);
            let elems: Vec<_> = Attrs::new(&bytes).collect::<Result<_, _>>().unwrap();
            assert_eq!(elems.len(), 1);
            let inner: Vec<_> = elems[0].nested().collect::<Result<_, _>>().unwrap();
            assert_eq!(inner[0].str().unwrap(), e.name());
            assert_eq!(inner[1].ty, NFTA_EXPR_DATA);
            assert!(inner[1].nested().all(|a| a.is_ok()));
        }
    }

    #[test]
    fn data_is_bounded() {
        assert_eq!(Data::new(&[1; 20]).bytes().len(), 16);
        assert_eq!(format!("{:?}", Data::new(&[0xab, 1])), "ab01");
    }
}
