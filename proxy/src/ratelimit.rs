//! Per-pod rate limits: one token bucket per source address with a pod record, shared by every
//! worker (a pod's connections may land on any of them).
//!
//! Each bucket is one number, its "theoretical arrival time" (GCRA, the generic cell rate
//! algorithm, which is a token bucket kept as a time): a request at `now` is allowed when
//! `max(tat, now) + interval - now <= burst * interval`, and then `tat` moves on by one interval.
//! So a full bucket takes `burst` requests at once, tokens come back one per `interval` (1 / rate),
//! a refused request costs nothing, and the time until the next token is `tat + interval - burst *
//! interval - now`: the `Retry-After` of the refusal. A bucket whose `tat` is in the past is full,
//! exactly as if it did not exist, so idle buckets can be dropped without changing any answer.
//!
//! Memory is bounded:
//! - a bucket is made only for a caller the pipeline has identified (an address with a pod
//!   record), so an unknown or spoofed source never adds one;
//! - [`RateLimiter::sweep`] (run with the record cache's sweep) drops buckets that are full (idle)
//!   or whose address no longer has a record;
//! - a bucket remembers whose it is: an address reused by a new pod starts full, not with the old
//!   pod's debt;
//! - a hard cap ([`MAX_TRACKED`], far above any node's pod count) stops growth if everything
//!   else failed: past it, after dropping idle buckets, a new address is refused (fail closed).
//!
//! Cost on the hot path: one clock value the request already has, a shard picked from the address
//! bits, one uncontended mutex and one hash lookup. Shards are cache-line aligned, so the two
//! workers touch the same line only when their pods' addresses fall in the same shard at the same
//! moment.

use crate::policy::RateLimit;
use crate::records::Identity;
use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Shards of the bucket map (a power of two).
const SHARDS: usize = 64;
/// Buckets kept at most: 1024 per shard, 65,536 in all (a few MiB at worst; a node runs hundreds
/// of pods).
pub const MAX_TRACKED: usize = SHARDS * 1024;

/// What [`RateLimiter::check`] says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit (a token was taken).
    Allowed,
    /// Over the limit: the next token comes after this long.
    Limited { retry_after: Duration },
    /// No bucket could be made (the hard cap): refused, fail closed.
    Full,
}

impl Verdict {
    /// `Retry-After` in whole seconds: the wait rounded up, at least 1 (0 would invite an
    /// immediate retry that is still refused). `Full` says 1.
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Verdict::Limited { retry_after } => {
                let s = retry_after.as_secs();
                let s = if retry_after.subsec_nanos() > 0 {
                    s + 1
                } else {
                    s
                };
                s.max(1)
            }
            Verdict::Allowed | Verdict::Full => 1,
        }
    }
}

struct Bucket {
    /// Theoretical arrival time: nanoseconds since the limiter's epoch.
    tat: u64,
    /// The pod it belongs to (compared by pointer first, then by container id).
    owner: Arc<Identity>,
}

#[repr(align(128))]
struct Shard(Mutex<FxHashMap<IpAddr, Bucket>>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, FxHashMap<IpAddr, Bucket>> {
        // A panic elsewhere cannot leave a bucket half-written (it is one plain store).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every pod address's bucket.
pub struct RateLimiter {
    shards: Box<[Shard]>,
    per_shard: usize,
    epoch: Instant,
}

impl Default for RateLimiter {
    fn default() -> RateLimiter {
        RateLimiter::new(MAX_TRACKED)
    }
}

impl RateLimiter {
    /// A limiter keeping at most about `max_tracked` buckets (rounded up to a multiple of the
    /// shard count).
    pub fn new(max_tracked: usize) -> RateLimiter {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Shard(Mutex::default())).collect(),
            per_shard: max_tracked.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The shard of an address: its bits folded, so consecutive addresses (what IPAM hands out)
    /// land in different shards.
    fn shard(&self, ip: &IpAddr) -> &Shard {
        let x = match ip {
            IpAddr::V4(a) => u64::from(u32::from(*a)),
            IpAddr::V6(a) => {
                let v = u128::from(*a);
                (v as u64) ^ ((v >> 64) as u64)
            }
        };
        let x = x ^ (x >> 32);
        let x = x ^ (x >> 16);
        let x = x ^ (x >> 8);
        &self.shards[(x as usize) & (SHARDS - 1)]
    }

    /// Takes a token for `owner` at `ip` under `limit`, at `now` (the request's start).
    pub fn check(
        &self,
        ip: IpAddr,
        owner: &Arc<Identity>,
        limit: &RateLimit,
        now: Instant,
    ) -> Verdict {
        let now = self.ns(now);
        let mut map = self.shard(&ip).lock();
        if map.len() >= self.per_shard && !map.contains_key(&ip) {
            map.retain(|_, b| b.tat > now);
            if map.len() >= self.per_shard {
                return Verdict::Full;
            }
        }
        let bucket = map.entry(ip).or_insert_with(|| Bucket {
            tat: 0,
            owner: owner.clone(),
        });
        if !Arc::ptr_eq(&bucket.owner, owner) {
            if bucket.owner.container_id != owner.container_id {
                // The address was reused by another pod: it starts full.
                bucket.tat = 0;
            }
            // The same pod under a re-read record keeps its bucket; the new pointer makes the
            // next comparison the fast one.
            bucket.owner = owner.clone();
        }
        let interval = limit.interval_ns();
        let next = bucket.tat.max(now).saturating_add(interval);
        let capacity = limit.capacity_ns();
        if next - now <= capacity {
            bucket.tat = next;
            Verdict::Allowed
        } else {
            Verdict::Limited {
                retry_after: Duration::from_nanos(next - capacity - now),
            }
        }
    }

    /// Drops the buckets that are full at `now` (idle: nothing to remember) and those whose
    /// address `known` no longer recognises (its record is gone). Returns how many were dropped.
    pub fn sweep(&self, now: Instant, known: impl Fn(&IpAddr) -> bool) -> usize {
        let now = self.ns(now);
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|ip, b| b.tat > now && known(ip));
            dropped += before - map.len();
        }
        dropped
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pod(id: &str) -> Arc<Identity> {
        Arc::new(Identity::new(id, Some(format!("ns/{id}"))))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Takes `n` requests at `at`; returns how many were allowed.
    fn take(
        l: &RateLimiter,
        a: &str,
        who: &Arc<Identity>,
        lim: &RateLimit,
        at: Instant,
        n: u32,
    ) -> u32 {
        (0..n)
            .filter(|_| l.check(ip(a), who, lim, at) == Verdict::Allowed)
            .count() as u32
    }

    #[test]
    fn a_full_bucket_takes_its_burst_then_refuses() {
        let l = RateLimiter::default();
        let p = pod("a");
        let lim = RateLimit::new(10.0, 5);
        let t0 = Instant::now();
        assert_eq!(take(&l, "10.0.0.1", &p, &lim, t0, 5), 5);
        let v = l.check(ip("10.0.0.1"), &p, &lim, t0);
        // The sixth request at the same instant: the next token comes one interval (100 ms) later.
        assert_eq!(
            v,
            Verdict::Limited {
                retry_after: ms(100)
            }
        );
        assert_eq!(v.retry_after_secs(), 1);
        // Refused requests cost nothing: still exactly one interval to wait.
        assert_eq!(l.check(ip("10.0.0.1"), &p, &lim, t0), v);
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let l = RateLimiter::default();
        let p = pod("a");
        let lim = RateLimit::new(10.0, 5);
        let t0 = Instant::now();
        assert_eq!(take(&l, "10.0.0.1", &p, &lim, t0, 10), 5);
        // 99 ms later: still nothing; 100 ms: one token; 350 ms: three more (not four).
        assert_eq!(take(&l, "10.0.0.1", &p, &lim, t0 + ms(99), 1), 0);
        assert_eq!(take(&l, "10.0.0.1", &p, &lim, t0 + ms(100), 3), 1);
        assert_eq!(take(&l, "10.0.0.1", &p, &lim, t0 + ms(400), 10), 3);
        // A long pause refills to the burst, never beyond it.
        assert_eq!(
            take(&l, "10.0.0.1", &p, &lim, t0 + Duration::from_secs(60), 20),
            5
        );
        // Sustained: one request every interval is always allowed.
        let t1 = t0 + Duration::from_secs(120);
        for i in 0..100 {
            assert_eq!(
                take(&l, "10.0.0.1", &p, &lim, t1 + ms(100 * i), 1),
                1,
                "i={i}"
            );
        }
    }

    #[test]
    fn retry_after_is_the_wait_for_one_token_rounded_up() {
        let l = RateLimiter::default();
        let p = pod("a");
        // One request per 2.5 s, burst 2.
        let lim = RateLimit::new(0.4, 2);
        let t0 = Instant::now();
        assert_eq!(take(&l, "10.0.0.1", &p, &lim, t0, 2), 2);
        let v = l.check(ip("10.0.0.1"), &p, &lim, t0);
        assert_eq!(
            v,
            Verdict::Limited {
                retry_after: ms(2500)
            }
        );
        assert_eq!(v.retry_after_secs(), 3);
        let v = l.check(ip("10.0.0.1"), &p, &lim, t0 + ms(500));
        assert_eq!(
            v,
            Verdict::Limited {
                retry_after: ms(2000)
            }
        );
        assert_eq!(v.retry_after_secs(), 2);
        // After waiting what it said, the request goes through.
        assert_eq!(take(&l, "10.0.0.1", &p, &lim, t0 + ms(2500), 1), 1);
        assert_eq!(
            Verdict::Limited {
                retry_after: Duration::from_nanos(1)
            }
            .retry_after_secs(),
            1
        );
    }

    #[test]
    fn addresses_have_their_own_buckets() {
        let l = RateLimiter::default();
        let (a, b) = (pod("a"), pod("b"));
        let lim = RateLimit::new(1.0, 3);
        let t0 = Instant::now();
        assert_eq!(take(&l, "10.0.0.1", &a, &lim, t0, 100), 3);
        assert_eq!(take(&l, "10.0.0.2", &b, &lim, t0, 100), 3);
        assert_eq!(take(&l, "fd00::2", &b, &lim, t0, 100), 3);
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn a_reused_address_starts_full_but_a_reread_record_keeps_its_debt() {
        let l = RateLimiter::default();
        let lim = RateLimit::new(1.0, 3);
        let t0 = Instant::now();
        let a = pod("a");
        assert_eq!(take(&l, "10.0.0.1", &a, &lim, t0, 3), 3);
        // The same pod, its record read again (a new Arc): still empty.
        let a_again = pod("a");
        assert_eq!(take(&l, "10.0.0.1", &a_again, &lim, t0, 1), 0);
        // Another pod on the same address: a full bucket of its own.
        let b = pod("b");
        assert_eq!(take(&l, "10.0.0.1", &b, &lim, t0, 10), 3);
    }

    #[test]
    fn idle_and_unknown_buckets_are_swept() {
        let l = RateLimiter::default();
        let p = pod("a");
        let lim = RateLimit::new(10.0, 5);
        let t0 = Instant::now();
        take(&l, "10.0.0.1", &p, &lim, t0, 5);
        take(&l, "10.0.0.2", &p, &lim, t0 + ms(300), 1);
        take(&l, "10.0.0.3", &p, &lim, t0 + ms(300), 5);
        assert_eq!(l.len(), 3);
        // At 400 ms: .2 is full again (idle), .1 and .3 still owe; .3's record is gone.
        assert_eq!(l.sweep(t0 + ms(400), |a| *a != ip("10.0.0.3")), 2);
        assert_eq!(l.len(), 1);
        // .1 owes until 500 ms; once full it goes too, and nothing is lost by that: a new bucket
        // answers the same.
        assert_eq!(l.sweep(t0 + ms(499), |_| true), 0);
        assert_eq!(l.sweep(t0 + ms(500), |_| true), 1);
        assert!(l.is_empty());
        assert_eq!(take(&l, "10.0.0.1", &p, &lim, t0 + ms(500), 10), 5);
    }

    #[test]
    fn the_map_is_bounded_and_fails_closed_when_full() {
        // One bucket per shard.
        let l = RateLimiter::new(SHARDS);
        let p = pod("a");
        let lim = RateLimit::new(1.0, 2);
        let t0 = Instant::now();
        // 64 consecutive addresses fill the 64 shards (one each).
        for i in 0..SHARDS {
            assert_eq!(take(&l, &format!("10.0.1.{i}"), &p, &lim, t0, 1), 1);
        }
        assert_eq!(l.len(), SHARDS);
        // A 65th address in a full shard whose bucket still owes: refused, nothing added.
        assert_eq!(l.check(ip("10.0.2.0"), &p, &lim, t0), Verdict::Full);
        assert_eq!(l.len(), SHARDS);
        // Once that bucket is full again (idle), it makes room.
        assert_eq!(
            l.check(ip("10.0.2.0"), &p, &lim, t0 + ms(1000)),
            Verdict::Allowed
        );
        assert_eq!(l.len(), SHARDS);
        assert_eq!(Verdict::Full.retry_after_secs(), 1);
    }

    #[test]
    fn many_addresses_never_exceed_the_cap() {
        let l = RateLimiter::new(1000);
        let p = pod("a");
        let lim = RateLimit::new(1.0, 1);
        let t0 = Instant::now();
        for i in 0..5000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.check(a, &p, &lim, t0);
        }
        assert!(
            l.len() <= 1000_usize.div_ceil(SHARDS) * SHARDS,
            "{}",
            l.len()
        );
    }

    #[test]
    fn two_threads_share_one_bucket() {
        let l = Arc::new(RateLimiter::default());
        let p = pod("a");
        let lim = RateLimit::new(1.0, 1000);
        let t0 = Instant::now();
        let allowed: u32 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| s.spawn(|| take(&l, "10.0.0.1", &p, &lim, t0, 1000)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 1000, "one bucket across threads, not one each");
    }
}
