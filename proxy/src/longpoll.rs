//! Long polls: requests that ask the metadata service to hold them until a value changes.
//!
//! GCE's metadata server holds `GET ...?wait_for_change=true` until the value's ETag differs from
//! `last_etag` (or from the ETag the value had when the request arrived), or until `timeout_sec`
//! seconds have passed, and then answers 200 with the value and its `ETag`. The guest agent polls
//! this way all the time (`timeout_sec=60`, with a 70 s client timeout), and so does the OS Config
//! agent (without `timeout_sec`). Under the ordinary `upstream.response_timeout_ms` (5 s) every
//! one of them would end in a 504. So, for a request the policy allowed:
//!
//! - [`LongPolls::deadline`]: a request that asks to wait gets an upstream deadline of its
//!   `timeout_sec` (at most `long_poll.max_wait_ms`; that maximum when `timeout_sec` is absent or
//!   not a positive number) plus `long_poll.slack_ms`, and never less than the response timeout.
//! - [`LongPolls::begin`]: while it waits it holds a slot; one source address holds at most
//!   `long_poll.max_per_source`, all of them together `long_poll.max_total`. Beyond either cap the
//!   request is refused (429 with `Retry-After`, decision `long-poll-limited`) before anything is
//!   forwarded, so a pod cannot park an unbounded number of upstream connections.
//! - [`LongPolls::close`]: shutdown ends every long poll in flight at once (the pod gets a 503 and
//!   asks again, after the restart) instead of holding the drain for the whole grace period, and
//!   refuses new ones. A policy reload does not touch them: a long poll finishes under the policy it
//!   was decided under, like every request.
//!
//! Which requests ask to wait: those whose query has the key `wait_for_change` (exact case, decoded
//! once, like the policy's `query` lists) with a value that is not false (`false`, `f`, `0` in any
//! case). Any other value counts as asking, on purpose: a value the proxy took for "no" while GCE
//! took it for "yes" would turn a working long poll into a 504, while the opposite costs one slot
//! for a moment. The key is recognised whatever the endpoint, but only GCE has long polls, and only
//! a policy that allows the key lets such a request through (the gcp preset does). AWS IMDS and
//! Azure IMDS have no request that waits (AWS's instance-action and spot notices, Azure's Scheduled
//! Events are polled), so nothing of theirs is treated as a long poll; their presets do not allow a
//! `wait_for_change` key, so such a request is refused by the policy before this module sees it.
//!
//! The request is forwarded exactly as received (the canonical target): a `timeout_sec` above the
//! maximum is not rewritten, so such a request ends in a 504 at the maximum plus slack, and the
//! client asks again. No documented figure was found for how long GCE holds a request that has no
//! `timeout_sec`; the proxy gives it the maximum.

use crate::canon::CanonicalTarget;
use crate::config::LongPollConfig;
use crate::outcome::LongPollRefusal;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// The query key that asks GCE's metadata server to wait for a change.
pub const WAIT_KEY: &str = "wait_for_change";
/// The query key with the longest wait, in seconds.
pub const TIMEOUT_KEY: &str = "timeout_sec";
/// `Retry-After` (seconds) of a long poll refused by a cap: a slot frees when one of the caller's
/// long polls ends, which the proxy cannot predict; a few seconds keeps a looping client cheap.
pub const RETRY_AFTER_CAP: u32 = 5;
/// `Retry-After` (seconds) of a long poll ended by shutdown: the next daemon is moments away.
pub const RETRY_AFTER_SHUTDOWN: u32 = 1;

/// What a request's query asks of the upstream's patience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// An ordinary request: the response timeout applies.
    No,
    /// A long poll, with its `timeout_sec` when that is a positive number.
    Yes { timeout_sec: Option<u64> },
}

/// Whether `target` asks to wait for a change, and how long.
pub fn requested_wait(target: &CanonicalTarget<'_>) -> Wait {
    let Some(value) = query_value(target, WAIT_KEY) else {
        return Wait::No;
    };
    let value = decode_once(value);
    if [&b"false"[..], &b"f"[..], &b"0"[..]]
        .iter()
        .any(|no| value.eq_ignore_ascii_case(no))
    {
        return Wait::No;
    }
    let timeout_sec = query_value(target, TIMEOUT_KEY).and_then(|v| seconds(&decode_once(v)));
    Wait::Yes { timeout_sec }
}

/// The raw value of query key `key` (exact case, as `CanonicalTarget::query_keys` has it decoded):
/// `""` for a key without `=`.
fn query_value<'t>(target: &CanonicalTarget<'t>, key: &str) -> Option<&'t str> {
    let raw = target.raw_query?;
    // The canonicaliser splits the query on `&` and keeps every parameter's key, decoded once, in
    // order (and refuses duplicates), so the n-th key is the n-th parameter's.
    target
        .query_keys
        .iter()
        .zip(raw.split('&'))
        .find(|(k, _)| *k == key)
        .map(|(_, param)| param.split_once('=').map_or("", |(_, v)| v))
}

/// `%XX` decoded once (the canonicaliser refused any malformed escape in a value).
fn decode_once(v: &str) -> Vec<u8> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok()),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// A positive whole number of seconds (digits only; too many digits is "very long").
fn seconds(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(v)
        .ok()
        .map(|s| s.parse::<u64>().unwrap_or(u64::MAX))?;
    (n > 0).then_some(n)
}

/// Why a long poll was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A cap is reached: 429.
    Cap(LongPollRefusal),
    /// Shutdown has begun: 503.
    Closing,
}

#[derive(Debug, Default)]
struct Slots {
    per_source: HashMap<IpAddr, usize>,
    total: usize,
    closed: bool,
}

/// The long-poll settings and the slots held now, shared by every worker.
#[derive(Debug)]
pub struct LongPolls {
    max_wait: Duration,
    slack: Duration,
    /// The ordinary response timeout: no long poll gets less.
    floor: Duration,
    pub max_per_source: usize,
    pub max_total: usize,
    slots: Mutex<Slots>,
    closing: watch::Sender<bool>,
}

/// One long poll's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot<'a> {
    polls: &'a LongPolls,
    source: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.polls.end(self.source);
    }
}

impl LongPolls {
    pub fn new(cfg: &LongPollConfig, response_timeout: Duration) -> LongPolls {
        LongPolls {
            max_wait: Duration::from_millis(cfg.max_wait_ms),
            slack: Duration::from_millis(cfg.slack_ms),
            floor: response_timeout,
            max_per_source: cfg.max_per_source,
            max_total: cfg.max_total,
            slots: Mutex::new(Slots::default()),
            closing: watch::Sender::new(false),
        }
    }

    /// The upstream deadline of a request that asks to wait; `None` for an ordinary request.
    pub fn deadline(&self, wait: Wait) -> Option<Duration> {
        let Wait::Yes { timeout_sec } = wait else {
            return None;
        };
        let wait = timeout_sec.map_or(self.max_wait, |s| Duration::from_secs(s).min(self.max_wait));
        Some((wait + self.slack).max(self.floor))
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a long poll from `source`, or says why not. The per-source cap is checked
    /// first, so a pod at its cap never takes a slot from the total.
    pub fn begin(&self, source: IpAddr) -> Result<Slot<'_>, Refused> {
        let mut s = self.slots();
        if s.closed {
            return Err(Refused::Closing);
        }
        if s.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            return Err(Refused::Cap(LongPollRefusal::PerSource));
        }
        if s.total >= self.max_total {
            return Err(Refused::Cap(LongPollRefusal::Total));
        }
        *s.per_source.entry(source).or_insert(0) += 1;
        s.total += 1;
        Ok(Slot {
            polls: self,
            source,
        })
    }

    fn end(&self, source: IpAddr) {
        let mut s = self.slots();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                s.per_source.remove(&source);
            }
        }
    }

    /// Long polls in flight (for /metrics).
    pub fn open(&self) -> usize {
        self.slots().total
    }

    /// Shutdown: every long poll in flight ends now ([`LongPolls::unless_closed`]) and no new one
    /// starts.
    pub fn close(&self) {
        self.slots().closed = true;
        self.closing.send_replace(true);
    }

    /// Runs `f` to its end, or until [`LongPolls::close`] (then `None`; `f` is dropped, which
    /// closes its upstream connection).
    pub async fn unless_closed<F: Future>(&self, f: F) -> Option<F::Output> {
        let mut closing = self.closing.subscribe();
        tokio::select! {
            biased;
            r = f => Some(r),
            // The guard `wait_for` returns is dropped at once (it must not live across an await).
            _ = async { let _ = closing.wait_for(|c| *c).await; } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canon::canonicalize_str;
    use http::Method;

    fn wait(target: &str) -> Wait {
        requested_wait(&canonicalize_str(&Method::GET, target).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn polls(max_per_source: usize, max_total: usize) -> LongPolls {
        let cfg = LongPollConfig {
            max_wait_ms: 300_000,
            slack_ms: 5_000,
            max_per_source,
            max_total,
        };
        LongPolls::new(&cfg, Duration::from_secs(5))
    }

    #[test]
    fn what_asks_to_wait() {
        let yes = |t| Wait::Yes { timeout_sec: t };
        for (target, want) in [
            ("/computeMetadata/v1/instance/id", Wait::No),
            ("/x?timeout_sec=60", Wait::No),
            ("/x?wait_for_change=true", yes(None)),
            ("/x?wait_for_change=True&timeout_sec=60", yes(Some(60))),
            // What the guest agent sends.
            (
                "/computeMetadata/v1/?recursive=true&alt=json&wait_for_change=true&last_etag=NONE&timeout_sec=60",
                yes(Some(60)),
            ),
            ("/x?timeout_sec=7&wait_for_change=1", yes(Some(7))),
            // Encoded key and value are decoded once, like the policy reads keys.
            ("/x?wait%5Ffor%5Fchange=%74rue&timeout%5Fsec=%33", yes(Some(3))),
            // Not false: counts as asking.
            ("/x?wait_for_change", yes(None)),
            ("/x?wait_for_change=&timeout_sec=2", yes(Some(2))),
            ("/x?wait_for_change=yes", yes(None)),
            ("/x?wait_for_change=false&timeout_sec=60", Wait::No),
            ("/x?wait_for_change=FALSE", Wait::No),
            ("/x?wait_for_change=F", Wait::No),
            ("/x?wait_for_change=0", Wait::No),
            ("/x?wait_for_change=%66alse", Wait::No),
            // Another key's case is another key (GCE's is exact, so is the policy's list).
            ("/x?Wait_For_Change=true", Wait::No),
            // A timeout that is not a positive number is no timeout.
            ("/x?wait_for_change=true&timeout_sec=0", yes(None)),
            ("/x?wait_for_change=true&timeout_sec=-5", yes(None)),
            ("/x?wait_for_change=true&timeout_sec=1.5", yes(None)),
            ("/x?wait_for_change=true&timeout_sec=", yes(None)),
            (
                "/x?wait_for_change=true&timeout_sec=99999999999999999999999",
                yes(Some(u64::MAX)),
            ),
        ] {
            assert_eq!(wait(target), want, "{target}");
        }
    }

    #[test]
    fn deadlines_are_the_wait_clamped_plus_slack_never_below_the_response_timeout() {
        let p = polls(8, 512);
        let d = |w| p.deadline(w).map(|d| d.as_secs());
        assert_eq!(d(Wait::No), None);
        assert_eq!(
            d(Wait::Yes {
                timeout_sec: Some(60)
            }),
            Some(65)
        );
        assert_eq!(
            d(Wait::Yes {
                timeout_sec: Some(301)
            }),
            Some(305)
        );
        assert_eq!(
            d(Wait::Yes {
                timeout_sec: Some(u64::MAX)
            }),
            Some(305)
        );
        assert_eq!(d(Wait::Yes { timeout_sec: None }), Some(305));
        let cfg = LongPollConfig {
            slack_ms: 0,
            ..LongPollConfig::default()
        };
        let p = LongPolls::new(&cfg, Duration::from_secs(5));
        assert_eq!(
            p.deadline(Wait::Yes {
                timeout_sec: Some(1)
            }),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn caps_per_source_then_in_total_and_slots_come_back() {
        let p = polls(2, 3);
        let a1 = p.begin(ip("10.0.0.1")).unwrap();
        let a2 = p.begin(ip("10.0.0.1")).unwrap();
        assert_eq!(
            p.begin(ip("10.0.0.1")).err(),
            Some(Refused::Cap(LongPollRefusal::PerSource))
        );
        let b1 = p.begin(ip("10.0.0.2")).unwrap();
        assert_eq!(p.open(), 3);
        assert_eq!(
            p.begin(ip("10.0.0.2")).err(),
            Some(Refused::Cap(LongPollRefusal::Total))
        );
        // A refused attempt holds nothing.
        assert_eq!(p.slots().per_source.get(&ip("10.0.0.2")), Some(&1));
        drop(a1);
        assert_eq!(p.open(), 2);
        let a3 = p.begin(ip("10.0.0.1")).unwrap();
        drop((a2, a3, b1));
        assert_eq!(p.open(), 0);
        assert!(p.slots().per_source.is_empty());
    }

    #[tokio::test]
    async fn close_ends_long_polls_in_flight_and_refuses_new_ones() {
        let p = std::sync::Arc::new(polls(8, 512));
        let slot = p.begin(ip("10.0.0.1")).unwrap();
        // Finished work is returned as it is.
        assert_eq!(p.unless_closed(async { 7 }).await, Some(7));
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move { p.unless_closed(std::future::pending::<()>()).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        p.close();
        assert_eq!(waiting.await.unwrap(), None);
        // After close: at once, and no new slot.
        assert_eq!(p.unless_closed(std::future::pending::<()>()).await, None);
        assert_eq!(p.begin(ip("10.0.0.2")).err(), Some(Refused::Closing));
        drop(slot);
        assert_eq!(p.open(), 0);
    }
}
