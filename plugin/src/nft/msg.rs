//! Netlink message and attribute encoding and parsing (no I/O).
//!
//! Netlink headers are in host byte order; nf_tables attribute values are in network byte order
//! (big-endian), which is what the `*_be` helpers write and read.

use super::sys::*;
use super::NftError;

/// Rounds up to netlink's 4-byte alignment.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A growing buffer of netlink messages, used to build one batch or one request.
#[derive(Debug, Default)]
pub struct MsgBuf {
    buf: Vec<u8>,
}

impl MsgBuf {
    pub fn with_capacity(n: usize) -> MsgBuf {
        MsgBuf {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Starts an nfnetlink message (nlmsghdr + nfgenmsg); returns its offset for [`end_msg`].
    ///
    /// [`end_msg`]: MsgBuf::end_msg
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched by end_msg
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel is 0
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    pub fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = NLA_HDRLEN + data.len();
        // Attribute lengths are u16; nothing metaguard sends comes near it (callers bound
        // user-supplied data), so a larger value is a bug we would rather see as a kernel EINVAL
        // than silently truncate.
        self.buf
            .extend_from_slice(&(len.min(u16::MAX as usize) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// A NUL-terminated string attribute (NLA_STRING as nf_tables expects it).
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let len = NLA_HDRLEN + s.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    pub fn attr_u32_be(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn attr_u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    /// Opens a nested attribute; returns its offset for [`nest_end`].
    ///
    /// [`nest_end`]: MsgBuf::nest_end
    pub fn nest_begin(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start).min(u16::MAX as usize) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// The bytes written since `start` (used to hash a rule's expressions).
    pub fn since(&self, start: usize) -> &[u8] {
        &self.buf[start..]
    }

    fn pad(&mut self) {
        let n = align4(self.buf.len()) - self.buf.len();
        self.buf.extend_from_slice(&[0u8; 3][..n]);
    }
}

/// One received netlink message.
#[derive(Debug, Clone, Copy)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte netlink header.
    pub payload: &'a [u8],
}

impl<'a> NlMsg<'a> {
    /// The nf_tables message type (low byte), when this is an nf_tables message.
    pub fn nft_type(&self) -> Option<u16> {
        (self.ty >> 8 == NFNL_SUBSYS_NFTABLES).then_some(self.ty & 0xff)
    }

    /// Attributes after the nfgenmsg header of an nfnetlink message.
    pub fn nfnl_attrs(&self) -> Result<Attrs<'a>, NftError> {
        let rest = self
            .payload
            .get(NFGENMSG_LEN..)
            .ok_or_else(|| NftError::Parse("nfnetlink message shorter than nfgenmsg".into()))?;
        Ok(Attrs { rest })
    }

    /// Decodes an NLMSG_ERROR payload.
    pub fn error(&self) -> Result<NlError, NftError> {
        let p = self.payload;
        if p.len() < 4 + NLMSG_HDRLEN {
            return Err(NftError::Parse("short NLMSG_ERROR".into()));
        }
        let code = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
        let orig_len = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]) as usize;
        let orig_seq = u32::from_ne_bytes([p[12], p[13], p[14], p[15]]);
        let mut message = None;
        if self.flags & NLM_F_ACK_TLVS != 0 {
            // The request is echoed unless the socket asked for capped acks.
            let skip = if self.flags & NLM_F_CAPPED != 0 {
                NLMSG_HDRLEN
            } else {
                align4(orig_len)
            };
            if let Some(tlvs) = p.get(4 + skip..) {
                for a in (Attrs { rest: tlvs }) {
                    let a = a?;
                    if a.ty == NLMSGERR_ATTR_MSG {
                        message = a.str().ok().map(str::to_owned);
                    }
                }
            }
        }
        Ok(NlError {
            errno: -code,
            seq: orig_seq,
            message,
        })
    }
}

/// An NLMSG_ERROR: `errno == 0` is an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlError {
    pub errno: i32,
    /// Sequence number of the request it answers.
    pub seq: u32,
    /// Extended-ack text, when the kernel gave one.
    pub message: Option<String>,
}

/// Iterates over the netlink messages in one datagram.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = Result<NlMsg<'_>, NftError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        if buf.len() < NLMSG_HDRLEN {
            buf = &[];
            return Some(Err(NftError::Parse("truncated netlink header".into())));
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            buf = &[];
            return Some(Err(NftError::Parse(format!(
                "bad netlink message length {len}"
            ))));
        }
        let msg = NlMsg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(msg))
    })
}

/// One attribute; `ty` has the NESTED and BYTEORDER flags masked off.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub ty: u16,
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    /// A NUL-terminated (or not) string attribute.
    pub fn str(&self) -> Result<&'a str, NftError> {
        let d = self.data.strip_suffix(&[0]).unwrap_or(self.data);
        std::str::from_utf8(d)
            .map_err(|_| NftError::Parse(format!("attribute {} is not UTF-8", self.ty)))
    }

    pub fn u32_be(&self) -> Result<u32, NftError> {
        let b: [u8; 4] = self
            .data
            .try_into()
            .map_err(|_| NftError::Parse(format!("attribute {} is not a u32", self.ty)))?;
        Ok(u32::from_be_bytes(b))
    }

    pub fn nested(&self) -> Attrs<'a> {
        Attrs { rest: self.data }
    }
}

/// Iterator over a run of attributes.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    #[cfg(test)]
    pub fn new(rest: &'a [u8]) -> Attrs<'a> {
        Attrs { rest }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, NftError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLA_HDRLEN {
            return None; // trailing padding
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]) as usize;
        let ty = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(NftError::Parse(format!("bad attribute length {len}"))));
        }
        let data = &self.rest[NLA_HDRLEN..len];
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(Attr { ty, data }))
    }
}

/// Encodes a libnftnl-style comment TLV (type, length, NUL-terminated text), the user-data format
/// `nft list` understands.
pub fn comment_udata(text: &str) -> Result<Vec<u8>, NftError> {
    let len = text.len() + 1;
    if len > u8::MAX as usize || 2 + len > NFT_USERDATA_MAXLEN {
        return Err(NftError::Invalid(format!(
            "user data too long ({} bytes): {text:?}",
            text.len()
        )));
    }
    let mut v = Vec::with_capacity(2 + len);
    v.push(NFTNL_UDATA_COMMENT);
    v.push(len as u8);
    v.extend_from_slice(text.as_bytes());
    v.push(0);
    Ok(v)
}

/// Reads the comment out of user data written by [`comment_udata`] (or by `nft ... comment`).
pub fn udata_comment(mut udata: &[u8]) -> Option<&str> {
    while udata.len() >= 2 {
        let (ty, len) = (udata[0], udata[1] as usize);
        let value = udata.get(2..2 + len)?;
        if ty == NFTNL_UDATA_COMMENT {
            let value = value.strip_suffix(&[0]).unwrap_or(value);
            return std::str::from_utf8(value).ok();
        }
        udata = &udata[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut b = MsgBuf::default();
        let m = b.begin_msg(0x0a00, NLM_F_ACK, 7, NFPROTO_INET, 0);
        b.attr_str(NFTA_TABLE_NAME, "abc"); // 4 + 4 bytes, no padding
        let n = b.nest_begin(NFTA_CHAIN_HOOK);
        b.attr_u32_be(NFTA_HOOK_HOOKNUM, 3);
        b.attr_u8(9, 1); // 5 bytes, padded to 8
        b.nest_end(n);
        b.end_msg(m);
        let bytes = b.as_bytes();
        assert_eq!(bytes.len(), 16 + 4 + 8 + 4 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(&bytes[16..20], &[NFPROTO_INET, 0, 0, 0]);
        assert_eq!(&bytes[20..28], &[8, 0, 1, 0, b'a', b'b', b'c', 0]);
        // nested header: len 20, type 4 | NLA_F_NESTED
        assert_eq!(&bytes[28..32], &[20, 0, 4, 0x80]);
        assert_eq!(&bytes[32..40], &[8, 0, 1, 0, 0, 0, 0, 3]);
        assert_eq!(&bytes[40..48], &[5, 0, 9, 0, 1, 0, 0, 0]);

        let msgs: Vec<_> = messages(bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(msgs[0].nft_type(), Some(0));
        let attrs: Vec<_> = msgs[0]
            .nfnl_attrs()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].str().unwrap(), "abc");
        assert_eq!(attrs[1].ty, NFTA_CHAIN_HOOK);
        let inner: Vec<_> = attrs[1].nested().collect::<Result<_, _>>().unwrap();
        assert_eq!(inner[0].u32_be().unwrap(), 3);
        assert_eq!(inner[1].data, &[1]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(messages(&[1, 2, 3]).next().unwrap().is_err());
        assert!(
            messages(&[200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .next()
                .unwrap()
                .is_err()
        );
        assert!(Attrs::new(&[40, 0, 1, 0, 0]).next().unwrap().is_err());
        assert!(udata_comment(&[0, 50, b'a']).is_none());
    }

    #[test]
    fn error_messages_decode() {
        // NLMSG_ERROR, capped, with an extack message.
        let mut p = Vec::new();
        p.extend_from_slice(&(-2i32).to_ne_bytes());
        p.extend_from_slice(&40u32.to_ne_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&9u32.to_ne_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&[8, 0, 1, 0, b'n', b'o', b'!', 0]);
        let m = NlMsg {
            ty: NLMSG_ERROR,
            flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
            seq: 9,
            payload: &p,
        };
        let e = m.error().unwrap();
        assert_eq!(
            e,
            NlError {
                errno: 2,
                seq: 9,
                message: Some("no!".into())
            }
        );
    }

    #[test]
    fn comments_round_trip() {
        let u = comment_udata("metaguard:v1:net:abc:eth0").unwrap();
        assert_eq!(u[0], 0);
        assert_eq!(u[1] as usize, u.len() - 2);
        assert_eq!(udata_comment(&u), Some("metaguard:v1:net:abc:eth0"));
        assert!(comment_udata(&"x".repeat(300)).is_err());
    }
}
