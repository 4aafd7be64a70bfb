//! IMDSv2 tokens bound to one pod: what `PUT /latest/api/token` gets from the proxy instead of
//! the instance-wide token the real service would give.
//!
//! A token is `base64url(version, key id, expiry, HMAC-SHA256(key, version | key id | expiry |
//! attachment | address))`: it names nothing secret, and only a token minted for this attachment
//! (network, container, interface) *and* this source address checks out. So a token copied to
//! another pod, or kept by a pod whose address was since given to a new pod, gets 401.
//!
//! The key is random, held only in memory, and replaced every `token_key_rotation_ms` (at least
//! the longest TTL, 6 hours); the previous key stays valid for one more period, so every token
//! lives its full TTL. A restart of the proxy invalidates every token: clients (the AWS SDKs)
//! fetch a new one when a request gets 401.
//!
//! Expiry is measured on the monotonic clock from the key ring's creation, so a step of the wall
//! clock neither extends nor cuts a token's life.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

type HmacSha256 = Hmac<Sha256>;

/// The token format's version byte.
const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// version, key id (4), expiry in ms since the ring's epoch (8), MAC.
const RAW_LEN: usize = 1 + 4 + 8 + MAC_LEN;
/// Longer headers are not decoded at all.
const MAX_TOKEN_CHARS: usize = 128;

/// The TTL range the metadata service accepts, in seconds.
pub const MIN_TTL_SECS: u64 = 1;
pub const MAX_TTL_SECS: u64 = 21_600;

/// Why a presented token was refused (every one is answered 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the IMDSv2 token is malformed")]
    Malformed,
    #[error("the IMDSv2 token was not issued by this proxy (or its key has been retired)")]
    UnknownKey,
    #[error("the IMDSv2 token has expired")]
    Expired,
    #[error("the IMDSv2 token was issued to another pod or address")]
    OtherPod,
}

/// Why a token request was refused, and with which status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("X-aws-ec2-metadata-token-ttl-seconds must be a whole number from 1 to 21600")]
    Invalid,
}

/// Parses `X-aws-ec2-metadata-token-ttl-seconds` (what the real service accepts: 1 to 21600).
pub fn parse_ttl(v: &[u8]) -> Result<Duration, TtlError> {
    let s = std::str::from_utf8(v).map_err(|_| TtlError::Invalid)?;
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TtlError::Invalid);
    }
    let n: u64 = s.parse().map_err(|_| TtlError::Invalid)?;
    if (MIN_TTL_SECS..=MAX_TTL_SECS).contains(&n) {
        Ok(Duration::from_secs(n))
    } else {
        Err(TtlError::Invalid)
    }
}

struct Key {
    id: u32,
    bytes: [u8; 32],
}

struct Ring {
    current: Key,
    previous: Option<Key>,
    /// When `current` was made.
    since: Instant,
}

/// The key ring: mints and checks tokens. Shared by every worker.
pub struct TokenKeys {
    ring: RwLock<Ring>,
    rotation: Duration,
    epoch: Instant,
}

/// Who a token is for: the pod's attachment key and the address it called from.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub attachment: &'a str,
    pub address: IpAddr,
}

fn random_key(id: u32) -> Result<Key, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(Key { id, bytes })
}

impl TokenKeys {
    /// A ring with a fresh random key, replaced every `rotation` (at least [`MAX_TTL_SECS`]).
    pub fn new(rotation: Duration) -> Result<TokenKeys, getrandom::Error> {
        let rotation = rotation.max(Duration::from_secs(MAX_TTL_SECS));
        let mut first = [0u8; 4];
        getrandom::fill(&mut first)?;
        let now = Instant::now();
        Ok(TokenKeys {
            ring: RwLock::new(Ring {
                current: random_key(u32::from_le_bytes(first))?,
                previous: None,
                since: now,
            }),
            rotation,
            epoch: now,
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The ring at `now`: one read lock, unless the current key is `rotation` old, which is
    /// replaced first (the previous one is dropped).
    fn ring(&self, now: Instant) -> std::sync::RwLockReadGuard<'_, Ring> {
        let r = self.ring.read().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(r.since) < self.rotation {
            return r;
        }
        drop(r);
        self.rotate(now);
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    fn rotate(&self, now: Instant) {
        let mut r = self.ring.write().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(r.since) < self.rotation {
            return; // another thread rotated
        }
        let id = r.current.id.wrapping_add(1);
        match random_key(id) {
            Ok(k) => {
                let old = std::mem::replace(&mut r.current, k);
                r.previous = Some(old);
                r.since = now;
            }
            // Keep the current key (tokens keep working) and try again on the next call.
            Err(e) => log::error!("cannot make a new IMDSv2 token key: {e}"),
        }
    }

    /// A token for `holder`, valid for `ttl` from `now`.
    pub fn mint(&self, holder: Holder<'_>, ttl: Duration, now: Instant) -> String {
        let expires = self.ms(now).saturating_add(ttl.as_millis() as u64);
        let r = self.ring(now);
        let mut raw = [0u8; RAW_LEN];
        raw[0] = VERSION;
        raw[1..5].copy_from_slice(&r.current.id.to_be_bytes());
        raw[5..13].copy_from_slice(&expires.to_be_bytes());
        let mac = mac(&r.current, &raw[..13], holder).finalize().into_bytes();
        raw[13..].copy_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a presented token for `holder` at `now`.
    pub fn verify(&self, token: &[u8], holder: Holder<'_>, now: Instant) -> Result<(), TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let mut raw = [0u8; RAW_LEN + 3];
        let n = URL_SAFE_NO_PAD
            .decode_slice(token, &mut raw)
            .map_err(|_| TokenError::Malformed)?;
        if n != RAW_LEN || raw[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let id = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&raw[5..13]);
        let expires = u64::from_be_bytes(exp);
        let r = self.ring(now);
        let key = std::iter::once(&r.current)
            .chain(r.previous.as_ref())
            .find(|k| k.id == id)
            .ok_or(TokenError::UnknownKey)?;
        // The MAC first: an expiry read from a forged token means nothing.
        mac(key, &raw[..13], holder)
            .verify_slice(&raw[13..RAW_LEN])
            .map_err(|_| TokenError::OtherPod)?;
        if self.ms(now) >= expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

fn mac(key: &Key, head: &[u8], holder: Holder<'_>) -> HmacSha256 {
    // A 32-byte key is always accepted by HMAC.
    let mut m = <HmacSha256 as Mac>::new_from_slice(&key.bytes)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(head);
    // Lengths first, so (attachment, address) pairs cannot run into each other.
    m.update(&(holder.attachment.len() as u64).to_be_bytes());
    m.update(holder.attachment.as_bytes());
    match holder.address {
        IpAddr::V4(a) => {
            m.update(&[4]);
            m.update(&a.octets());
        }
        IpAddr::V6(a) => {
            m.update(&[6]);
            m.update(&a.octets());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(att: &str, ip: &str) -> (String, IpAddr) {
        (att.to_owned(), ip.parse().unwrap())
    }

    fn h(x: &(String, IpAddr)) -> Holder<'_> {
        Holder {
            attachment: &x.0,
            address: x.1,
        }
    }

    #[test]
    fn ttl_is_what_the_metadata_service_accepts() {
        assert_eq!(parse_ttl(b"1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_ttl(b"21600"), Ok(Duration::from_secs(21600)));
        for bad in [
            &b"0"[..],
            b"21601",
            b"",
            b"-1",
            b"1.5",
            b" 60",
            b"99999999999",
            b"6e1",
        ] {
            assert_eq!(parse_ttl(bad), Err(TtlError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn a_token_works_for_its_pod_and_address_only() {
        let keys = TokenKeys::new(Duration::from_secs(MAX_TTL_SECS)).unwrap();
        let now = Instant::now();
        let a = holder("net:ctr-a:eth0", "10.0.0.5");
        let t = keys.mint(h(&a), Duration::from_secs(60), now);
        assert!(t.len() < 80 && !t.contains('='), "{t}");
        assert_eq!(keys.verify(t.as_bytes(), h(&a), now), Ok(()));
        // Same address, another pod (the address was reused); same pod, another address.
        for other in [
            holder("net:ctr-b:eth0", "10.0.0.5"),
            holder("net:ctr-a:eth0", "10.0.0.6"),
            holder("net:ctr-a:eth0", "::ffff:10.0.0.5"),
        ] {
            assert_eq!(
                keys.verify(t.as_bytes(), h(&other), now),
                Err(TokenError::OtherPod),
                "{other:?}"
            );
        }
    }

    #[test]
    fn tokens_expire_and_forgeries_fail() {
        let keys = TokenKeys::new(Duration::from_secs(MAX_TTL_SECS)).unwrap();
        let now = Instant::now();
        let a = holder("k", "10.0.0.5");
        let t = keys.mint(h(&a), Duration::from_secs(1), now);
        let later = now + Duration::from_millis(999);
        assert_eq!(keys.verify(t.as_bytes(), h(&a), later), Ok(()));
        let after = now + Duration::from_secs(1);
        assert_eq!(
            keys.verify(t.as_bytes(), h(&a), after),
            Err(TokenError::Expired)
        );
        // Extending the expiry breaks the MAC.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[12] = raw[12].wrapping_add(100);
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            keys.verify(forged.as_bytes(), h(&a), now),
            Err(TokenError::OtherPod)
        );
        for junk in [&b""[..], b"abc", b"!!!!", &[b'A'; 200][..]] {
            assert_eq!(
                keys.verify(junk, h(&a), now),
                Err(TokenError::Malformed),
                "{junk:?}"
            );
        }
        // Another proxy's (or a restarted proxy's) token: its key id is unknown here.
        let other = TokenKeys::new(Duration::from_secs(MAX_TTL_SECS)).unwrap();
        let t2 = other.mint(h(&a), Duration::from_secs(60), now);
        assert!(matches!(
            keys.verify(t2.as_bytes(), h(&a), now),
            Err(TokenError::UnknownKey | TokenError::OtherPod)
        ));
    }

    #[test]
    fn rotation_keeps_tokens_valid_for_their_whole_ttl() {
        let rot = Duration::from_secs(MAX_TTL_SECS);
        let keys = TokenKeys::new(rot).unwrap();
        let now = Instant::now();
        let a = holder("k", "fd00::5");
        // Minted just before the rotation, with the longest TTL.
        let t = keys.mint(h(&a), rot, now + rot - Duration::from_secs(1));
        let after_rotation = now + rot + Duration::from_secs(10);
        let fresh = keys.mint(h(&a), Duration::from_secs(60), after_rotation);
        assert_ne!(t[..8], fresh[..8], "a new key id after the rotation");
        assert_eq!(keys.verify(t.as_bytes(), h(&a), after_rotation), Ok(()));
        // Past its TTL it is refused (a second rotation would retire its key as well).
        let much_later = now + rot * 2 + Duration::from_secs(1);
        assert!(keys.verify(t.as_bytes(), h(&a), much_later).is_err());
        assert_eq!(keys.verify(fresh.as_bytes(), h(&a), after_rotation), Ok(()));
    }
}
