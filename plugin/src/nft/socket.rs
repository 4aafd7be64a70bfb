//! The NETLINK_NETFILTER socket: send one batch and collect one ack or error per message, or run
//! one dump request.
//!
//! The kernel handles a batch synchronously inside `sendmsg`, so every reply is queued by the time
//! `send` returns; the receive timeout is only a guard against a reply that never comes (a batch
//! the kernel found malformed as a whole is dropped without an answer).

use super::msg::{messages, MsgBuf, NlMsg};
use super::sys::*;
use super::NftError;
use nix::errno::Errno;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// Netlink dumps are sent in chunks of at most 32 KiB (the kernel caps them there); acks are
/// tiny. One buffer of this size serves every reply.
const RECV_BUF: usize = 32 * 1024;
/// How long to wait for a reply the kernel owes us.
const RECV_TIMEOUT_SECS: libc::time_t = 5;
/// A dump interrupted by a concurrent ruleset change (NLM_F_DUMP_INTR) is retried this often.
const DUMP_RETRIES: usize = 3;

pub struct NlSocket {
    /// `None` only after drop has released it.
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
    seq: u32,
    /// A batch that deleted something was committed through this socket: releasing the socket
    /// would wait for the kernel's deferred cleanup of the deleted objects (see `release`).
    /// Creating objects leaves nothing to clean up.
    deleted: bool,
}

impl Drop for NlSocket {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            if self.deleted {
                super::release::close_without_waiting(fd.into_raw_fd());
            }
        }
    }
}

/// What one message of a batch does, to name it in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obj {
    Table,
    Chain(usize),
    /// Flush of every rule in the table.
    Flush,
    Rule(usize),
}

/// A batch under construction: BEGIN, messages, END, one transaction in the kernel.
pub struct Batch {
    buf: MsgBuf,
    first_seq: u32,
    next_seq: u32,
    ops: Vec<(&'static str, Obj)>,
    /// The batch deletes existing objects (set by the caller, who knows whether a flush or
    /// delete will find anything).
    deletes: bool,
}

impl Batch {
    /// Starts a batch whose messages get sequence numbers from `first_seq` on.
    fn new(first_seq: u32) -> Batch {
        let mut buf = MsgBuf::with_capacity(4096);
        let m = buf.begin_msg(
            NFNL_MSG_BATCH_BEGIN,
            0,
            first_seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        buf.end_msg(m);
        Batch {
            buf,
            first_seq,
            next_seq: first_seq + 1,
            ops: Vec::with_capacity(32),
            deletes: false,
        }
    }

    /// Starts one nf_tables message that asks for an ack; finish it with [`Batch::end`].
    pub fn begin(
        &mut self,
        nft_msg: u16,
        flags: u16,
        family: u8,
        op: &'static str,
        obj: Obj,
    ) -> usize {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ops.push((op, obj));
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | nft_msg;
        self.buf.begin_msg(ty, flags | NLM_F_ACK, seq, family, 0)
    }

    pub fn end(&mut self, start: usize) {
        self.buf.end_msg(start)
    }

    /// Records that this batch removes existing objects.
    pub fn mark_deletes(&mut self) {
        self.deletes = true;
    }

    pub fn buf(&mut self) -> &mut MsgBuf {
        &mut self.buf
    }

    fn finish(&mut self) {
        let m = self.buf.begin_msg(
            NFNL_MSG_BATCH_END,
            0,
            self.next_seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        self.buf.end_msg(m);
    }
}

/// A message of a batch the kernel refused.
#[derive(Debug, Clone)]
pub struct Refused {
    pub op: &'static str,
    pub obj: Option<Obj>,
    pub errno: Errno,
    pub message: Option<String>,
}

impl NlSocket {
    /// Opens a socket in the calling thread's network namespace (it stays bound to it).
    pub fn open() -> Result<NlSocket, NftError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(NftError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // Capped acks keep each ack at 36 bytes instead of echoing the request; extended acks
        // bring the kernel's error text when it has one. Both are optional, so failures are
        // ignored (older kernels).
        for opt in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
            // SAFETY: setsockopt with a pointer to a live c_int and its size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a pointer to a live timeval and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NftError::Socket(io::Error::last_os_error()));
        }
        Ok(NlSocket {
            fd: Some(fd),
            buf: vec![0u8; RECV_BUF],
            seq: 1,
            deleted: false,
        })
    }

    /// A new batch with fresh sequence numbers.
    pub fn batch(&mut self) -> Batch {
        let b = Batch::new(self.seq);
        // Leave room for up to 2^16 messages per batch; far more than metaguard sends.
        self.seq = self.seq.wrapping_add(1 << 16);
        b
    }

    /// Sends the batch and waits for one reply per message. Returns the refused messages in
    /// order (empty: the transaction was committed).
    pub fn send_batch(&mut self, mut batch: Batch) -> Result<Vec<Refused>, NftError> {
        batch.finish();
        self.send(batch.buf.as_bytes())?;
        let expected = batch.ops.len();
        let (lo, hi) = (batch.first_seq + 1, batch.first_seq + expected as u32);
        let mut answered = vec![false; expected];
        let mut left = expected;
        let mut refused = Vec::new();
        while left > 0 {
            let n = self.recv()?;
            for m in messages(&self.buf[..n]) {
                let m = m?;
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let e = m.error()?;
                if e.seq == batch.first_seq && e.errno != 0 {
                    // The batch as a whole failed (commit error, or the kernel could not parse it).
                    refused.push(Refused {
                        op: "commit batch",
                        obj: None,
                        errno: Errno::from_raw(e.errno),
                        message: e.message,
                    });
                    return Ok(refused);
                }
                if e.seq == batch.first_seq {
                    continue;
                }
                if e.seq < lo || e.seq > hi {
                    continue;
                }
                let i = (e.seq - lo) as usize;
                if !answered[i] {
                    answered[i] = true;
                    left -= 1;
                }
                if e.errno != 0 {
                    let (op, obj) = batch.ops[i];
                    refused.push(Refused {
                        op,
                        obj: Some(obj),
                        errno: Errno::from_raw(e.errno),
                        message: e.message,
                    });
                }
            }
        }
        self.deleted |= refused.is_empty() && batch.deletes;
        Ok(refused)
    }

    /// Runs one dump request (`nft_msg` is a GET type) and returns what `parse` makes of each
    /// reply message (`None`s are skipped). `attrs` writes the request's filter attributes.
    pub fn dump<T>(
        &mut self,
        nft_msg: u16,
        family: u8,
        attrs: impl Fn(&mut MsgBuf),
        parse: impl Fn(NlMsg<'_>) -> Result<Option<T>, NftError>,
    ) -> Result<Vec<T>, NftError> {
        for _ in 0..DUMP_RETRIES {
            let mut out = Vec::new();
            if !self.dump_once(nft_msg, family, &attrs, &mut |m| {
                if let Some(t) = parse(m)? {
                    out.push(t);
                }
                Ok(())
            })? {
                return Ok(out);
            }
        }
        Err(NftError::Parse(
            "dump kept being interrupted by concurrent ruleset changes".into(),
        ))
    }

    /// Runs one GET request for a single object; `Ok(None)` when the kernel says ENOENT.
    pub fn get<T>(
        &mut self,
        nft_msg: u16,
        family: u8,
        attrs: impl Fn(&mut MsgBuf),
        parse: impl Fn(NlMsg<'_>) -> Result<Option<T>, NftError>,
    ) -> Result<Option<T>, NftError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut req = MsgBuf::with_capacity(256);
        let m = req.begin_msg((NFNL_SUBSYS_NFTABLES << 8) | nft_msg, 0, seq, family, 0);
        attrs(&mut req);
        req.end_msg(m);
        self.send(req.as_bytes())?;
        loop {
            let n = self.recv()?;
            for m in messages(&self.buf[..n]) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                if m.ty == NLMSG_ERROR {
                    let e = m.error()?;
                    return match Errno::from_raw(e.errno) {
                        Errno::ENOENT => Ok(None),
                        errno => Err(NftError::Kernel {
                            what: format!("get (nf_tables message type {nft_msg})"),
                            errno,
                            detail: e.message.unwrap_or_default(),
                        }),
                    };
                }
                if let Some(t) = parse(m)? {
                    return Ok(Some(t));
                }
            }
        }
    }

    /// One dump attempt; `Ok(true)` when the kernel flagged it as interrupted by a concurrent
    /// change (NLM_F_DUMP_INTR), so its result may be inconsistent and must be redone.
    fn dump_once(
        &mut self,
        nft_msg: u16,
        family: u8,
        attrs: &impl Fn(&mut MsgBuf),
        each: &mut impl FnMut(NlMsg<'_>) -> Result<(), NftError>,
    ) -> Result<bool, NftError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut req = MsgBuf::with_capacity(256);
        let m = req.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | nft_msg,
            NLM_F_DUMP,
            seq,
            family,
            0,
        );
        attrs(&mut req);
        req.end_msg(m);
        self.send(req.as_bytes())?;
        let mut interrupted = false;
        loop {
            let n = self.recv()?;
            for m in messages(&self.buf[..n]) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(interrupted),
                    NLMSG_ERROR => {
                        let e = m.error()?;
                        if e.errno != 0 {
                            return Err(NftError::Kernel {
                                what: format!("dump (nf_tables message type {nft_msg})"),
                                errno: Errno::from_raw(e.errno),
                                detail: e.message.unwrap_or_default(),
                            });
                        }
                    }
                    _ => {
                        if m.flags & NLM_F_DUMP_INTR != 0 {
                            interrupted = true;
                        }
                        each(m)?;
                    }
                }
            }
        }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NftError> {
        // SAFETY: zeroed sockaddr_nl is valid; we set the family, pid 0 = the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address outlive the call; lengths match.
        let n = unsafe {
            libc::sendto(
                self.raw(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(NftError::Socket(io::Error::last_os_error()));
        }
        if n as usize != bytes.len() {
            return Err(NftError::Socket(io::Error::other("short netlink send")));
        }
        Ok(())
    }

    /// Receives one datagram into `self.buf`; returns its length.
    fn recv(&mut self) -> Result<usize, NftError> {
        loop {
            // SAFETY: the buffer is valid for its length; MSG_TRUNC makes netlink report the
            // datagram's real size so truncation is detected.
            let n = unsafe {
                libc::recv(
                    self.raw(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {
                        return Err(NftError::Socket(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "timed out waiting for nf_tables to answer",
                        )))
                    }
                    _ => return Err(NftError::Socket(e)),
                }
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(NftError::Parse(format!(
                    "netlink reply of {n} bytes truncated"
                )));
            }
            return Ok(n);
        }
    }
}

#[cfg(test)]
impl Batch {
    pub fn for_test(seq: &mut u32) -> Batch {
        *seq += 1;
        Batch::new(*seq)
    }

    pub fn bytes_for_test(&self) -> &[u8] {
        self.buf.as_bytes()
    }
}
