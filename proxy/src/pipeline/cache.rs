//! Cache of upstream answers for allow rules that opt in with `cache_ttl_ms`.
//!
//! Why: instance metadata that never changes during an instance's life (ami-id, instance-id,
//! placement, ...) is read over and over by agents and SDKs, and clouds throttle the metadata
//! service per instance (about 1024 packets/s on AWS): answering repeats locally spares that budget
//! and the round trip.
//!
//! What keeps it safe:
//! - The cache never decides. The pipeline evaluates the pod's policy on every request and looks
//!   here only after an allow rule with `cache_ttl_ms` matched; a request a policy denies is never
//!   answered from the cache, whatever the cache holds.
//! - Only GET, only upstream 200 answers are stored (HEAD and other methods always go upstream).
//!   Long polls (`crate::longpoll`) neither look here nor store: the pipeline skips the cache for
//!   them, since a stored answer would end the next long poll's wait at once.
//! - The key is the endpoint, the exact forwarded target (path and query) and every header that
//!   is forwarded upstream, name and value, in order (Host excluded: the proxy sets it from the
//!   endpoint). So an answer that needed an IMDSv2 token (`X-aws-ec2-metadata-token`),
//!   `Metadata-Flavor`, `Metadata` or `Authorization` is replayed only to a request carrying the
//!   very same values, and a tokenless request never gets an answer that required a token. Any
//!   difference, even in an unrelated header, is a miss: the cache errs on the side of asking.
//! - Entries expire after the rule's TTL (bounded by the policy loader to one hour); a token that
//!   expires upstream can therefore still be answered from an entry stored with it for at most the
//!   rule's TTL (the presets use 60 s), and only with the same data the token was granted moments
//!   before.
//! - A policy reload clears the cache: every entry carries the policy generation it was stored
//!   under, and the first lookup under a newer generation drops everything.
//! - Bounded in entries and bytes. When full, expired entries are dropped; if that frees nothing
//!   the new answer is simply not stored (the cache does not grow, and existing hot entries are not
//!   churned by a pod walking many paths).
//!
//! One cache per worker thread (in its `Worker`, `pipeline::worker`): a worker's connections never
//! leave its thread, so each cache is only ever touched by one thread and its mutex is always
//! uncontended (one atomic on a cache line that stays in that core's cache; see the alignment). A shared or sharded
//! cache would make both cores write to the same lines on every hit. The price is that each worker
//! fills its own copy (one upstream request per worker per path per TTL) and the configured bounds
//! are split between workers.

use crate::http1::relay::RelayedHead;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The longest an entry is kept, whatever its rule asks for (the policy loader refuses more).
pub const MAX_TTL: Duration = crate::policy::MAX_CACHE_TTL;

/// A stored upstream answer (always status 200; its headers as relayed to the pod). Cloning
/// one shares its buffers.
#[derive(Debug, Clone)]
pub struct Cached {
    pub head: RelayedHead,
    pub body: Bytes,
}

struct Slot {
    value: Cached,
    expires: Instant,
    /// What this entry counts against `max_bytes` (key, header names and values, body).
    bytes: usize,
}

/// One worker's cache.
pub struct ResponseCache {
    /// std's randomly seeded hasher, not the fast one used elsewhere: keys come from requests, so
    /// a pod could otherwise choose colliding keys (the bound on entries limits that anyway).
    map: HashMap<Box<[u8]>, Slot>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    /// Policy generation the entries were stored under.
    generation: u64,
}

impl ResponseCache {
    /// One of `workers` caches sharing the configured bounds evenly (each gets at least one
    /// entry's worth when the bounds are non-zero; zero disables caching).
    pub fn share(workers: usize, max_entries: usize, max_bytes: usize) -> ResponseCache {
        let n = workers.max(1);
        let per = |total: usize| if total == 0 { 0 } else { total.div_ceil(n) };
        ResponseCache::new(per(max_entries), per(max_bytes))
    }

    pub fn new(max_entries: usize, max_bytes: usize) -> ResponseCache {
        ResponseCache {
            map: HashMap::new(),
            bytes: 0,
            max_entries,
            max_bytes,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn enabled(&self) -> bool {
        self.max_entries > 0 && self.max_bytes > 0
    }

    /// Entries stored under an older policy are dropped (a reload clears the cache).
    fn sync_generation(&mut self, generation: u64) {
        if self.generation != generation {
            self.map.clear();
            self.bytes = 0;
            self.generation = generation;
        }
    }

    /// The live entry for `key`, if any. Drops it if it has expired.
    pub fn get(&mut self, generation: u64, key: &[u8], now: Instant) -> Option<Cached> {
        self.sync_generation(generation);
        let slot = self.map.get(key)?;
        if slot.expires > now {
            return Some(slot.value.clone());
        }
        if let Some(old) = self.map.remove(key) {
            self.bytes -= old.bytes;
        }
        None
    }

    /// Stores an answer for `ttl`; returns whether it was stored (false when the cache is full of
    /// live entries or the answer alone exceeds the byte bound).
    pub fn insert(
        &mut self,
        generation: u64,
        key: &[u8],
        value: Cached,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        self.sync_generation(generation);
        if !self.enabled() || ttl.is_zero() {
            return false;
        }
        let bytes = key.len() + value.body.len() + value.head.byte_len();
        if let Some(old) = self.map.remove(key) {
            self.bytes -= old.bytes;
        }
        if self.map.len() >= self.max_entries || self.bytes + bytes > self.max_bytes {
            self.drop_expired(now);
        }
        if self.map.len() >= self.max_entries || self.bytes + bytes > self.max_bytes {
            return false;
        }
        self.bytes += bytes;
        self.map.insert(
            key.into(),
            Slot {
                value,
                expires: now + ttl.min(MAX_TTL),
                bytes,
            },
        );
        true
    }

    fn drop_expired(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|_, s| {
            let live = s.expires > now;
            if !live {
                freed += s.bytes;
            }
            live
        });
        self.bytes -= freed;
    }
}

/// Appends the cache key of a request to `out` (see the module comment for what it contains):
/// `forwarded` are the headers the request would carry upstream (`http1::rules::forwarded`; Host is
/// skipped here too). Fields are separated by bytes that cannot occur inside them (NUL never
/// appears in a canonical target or a header value; `\n` never in a header name or value), so two
/// different requests never produce the same key.
pub fn key<'h>(
    out: &mut Vec<u8>,
    endpoint: usize,
    path: &str,
    query: Option<&str>,
    forwarded: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
) {
    out.extend_from_slice(&(endpoint as u64).to_le_bytes());
    out.extend_from_slice(path.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.push(0);
    for (n, v) in forwarded {
        if n == http::header::HOST {
            continue;
        }
        out.extend_from_slice(n.as_str().as_bytes());
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
}

/// Whether an upstream answer may be stored.
pub fn storable(status: StatusCode) -> bool {
    status == StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn hdrs(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    fn k(target: &str, h: &HeaderMap) -> Vec<u8> {
        let mut v = Vec::new();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        key(&mut v, 0, path, query, h.iter());
        v
    }

    fn val(body: &'static str) -> Cached {
        Cached {
            head: RelayedHead::from_parsed(&[httparse::Header {
                name: "content-type",
                value: b"text/plain",
            }]),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn key_includes_the_token_and_other_headers() {
        let tok_a = hdrs(&[("x-aws-ec2-metadata-token", "AAA"), ("host", "x")]);
        let tok_b = hdrs(&[("x-aws-ec2-metadata-token", "BBB"), ("host", "x")]);
        let none = hdrs(&[("host", "x")]);
        let t = "/latest/meta-data/instance-id";
        assert_ne!(k(t, &tok_a), k(t, &tok_b));
        assert_ne!(k(t, &tok_a), k(t, &none));
        for h in ["metadata-flavor", "metadata", "authorization"] {
            let mut with = none.clone();
            with.insert(h, HeaderValue::from_static("x"));
            assert_ne!(k(t, &with), k(t, &none), "{h}");
        }
        // Host is the proxy's own (from the endpoint), not the pod's.
        assert_eq!(k(t, &none), k(t, &HeaderMap::new()));
        // Target and endpoint are part of the key; a separator keeps fields apart.
        assert_ne!(k(t, &none), k("/latest/meta-data/ami-id", &none));
        assert_ne!(k("/a?x=1", &none), k("/a?x=2", &none));
        let mut e1 = Vec::new();
        key(&mut e1, 1, t, None, none.iter());
        assert_ne!(e1, k(t, &none));

        let mut c = ResponseCache::new(10, 1 << 20);
        let now = Instant::now();
        assert!(c.insert(1, &k(t, &tok_a), val("i-1"), TTL, now));
        assert!(c.get(1, &k(t, &tok_a), now).is_some());
        assert!(c.get(1, &k(t, &tok_b), now).is_none());
        assert!(c.get(1, &k(t, &none), now).is_none());
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let mut c = ResponseCache::new(10, 1 << 20);
        let now = Instant::now();
        let key = k("/x", &HeaderMap::new());
        assert!(c.insert(1, &key, val("v"), Duration::from_millis(500), now));
        assert_eq!(
            c.get(1, &key, now + Duration::from_millis(499))
                .unwrap()
                .body,
            "v"
        );
        assert!(c.get(1, &key, now + Duration::from_millis(500)).is_none());
        assert!(c.is_empty(), "an expired entry is dropped when seen");
        assert_eq!(c.bytes(), 0);
        // The TTL is capped.
        assert!(c.insert(1, &key, val("v"), Duration::from_secs(100_000), now));
        assert!(c.get(1, &key, now + MAX_TTL).is_none());
    }

    #[test]
    fn bounded_in_entries_and_bytes() {
        let now = Instant::now();
        let mut c = ResponseCache::new(2, 1 << 20);
        assert!(c.insert(1, b"a", val("1"), TTL, now));
        assert!(c.insert(1, b"b", val("2"), TTL, now));
        assert!(
            !c.insert(1, b"c", val("3"), TTL, now),
            "full of live entries"
        );
        assert_eq!(c.len(), 2);
        assert!(c.get(1, b"a", now).is_some(), "live entries are kept");
        // Replacing an existing key is not growth.
        assert!(c.insert(1, b"a", val("1b"), TTL, now));
        // Once entries expire, they make room.
        let later = now + TTL;
        assert!(c.insert(1, b"c", val("3"), TTL, later));
        assert_eq!(c.len(), 1);

        let mut small = ResponseCache::new(100, 64);
        let big: &'static str = Box::leak("y".repeat(100).into_boxed_str());
        assert!(
            !small.insert(1, b"big", val(big), TTL, now),
            "over max_bytes"
        );
        assert!(small.bytes() <= 64);

        let mut off = ResponseCache::new(0, 0);
        assert!(!off.insert(1, b"a", val("1"), TTL, now));
    }

    #[test]
    fn a_new_policy_generation_clears_the_cache() {
        let now = Instant::now();
        let mut c = ResponseCache::new(10, 1 << 20);
        assert!(c.insert(1, b"a", val("1"), TTL, now));
        assert!(c.get(1, b"a", now).is_some());
        assert!(c.get(2, b"a", now).is_none(), "reload clears");
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn only_200_is_storable() {
        assert!(storable(StatusCode::OK));
        for s in [201, 203, 204, 206, 301, 304, 401, 403, 404, 500, 502, 503] {
            assert!(!storable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn workers_split_the_bounds() {
        let c = ResponseCache::share(2, 3, 1000);
        assert_eq!(c.max_entries, 2);
        assert_eq!(c.max_bytes, 500);
        assert!(!ResponseCache::share(2, 0, 1000).enabled());
        assert!(!ResponseCache::share(0, 0, 0).enabled());
        assert_eq!(ResponseCache::share(0, 3, 1000).max_entries, 3);
    }
}
