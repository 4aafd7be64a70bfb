//! A policy's per-pod rate limit (`rate`, `burst`): the numbers, checked when the file is loaded,
//! and the refusal text built once. The buckets themselves are the proxy's (`crate::ratelimit`).
//!
//! The default is meant to be one no ordinary client reaches, only a runaway one:
//! - SDKs cache what they read. AWS SDKs fetch credentials once (IMDSv2 token, role name,
//!   credentials: three requests) and refresh them minutes before they expire (hours later);
//!   Google's and Azure's libraries fetch a token about once an hour. Agents that poll (spot
//!   interruption notices every 2 s, GCE's long polls) stay under one request a second.
//! - The largest ordinary burst is a pod starting many processes at once, each asking for a
//!   token, a role, credentials and a region or two: a hundred processes at six requests each fit
//!   in the default burst.
//! - The node's own budget is small: AWS throttles link-local traffic at about 1024 packets/s per
//!   network interface (a few hundred requests/s over the proxy's kept-alive upstream
//!   connections) and Azure IMDS allows about 5 requests/s per VM. A pod at the default rate takes
//!   a bounded share on AWS; on Azure, set `rate` lower (at the top of the policy file it applies
//!   to every policy, presets included).

use bytes::Bytes;

/// Requests per second a pod address may make when neither its policy nor the file says.
pub const DEFAULT_RATE: f64 = 100.0;
/// Without a `burst`, a bucket holds this many seconds of its rate.
pub const DEFAULT_BURST_SECONDS: f64 = 10.0;
/// The bounds `rate` is checked against: one request per 100 s, a million a second.
pub const MIN_RATE: f64 = 0.01;
pub const MAX_RATE: f64 = 1_000_000.0;
/// The largest `burst`.
pub const MAX_BURST: u32 = 1_000_000;

/// How many requests one pod address may make: `burst` at once, then `rate` per second.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    rate: f64,
    burst: u32,
    /// Nanoseconds between two tokens (1 / rate).
    interval_ns: u64,
    /// The refusal's reason (decision line) and its body (the reason and a newline).
    reason: Box<str>,
    body: Bytes,
}

impl RateLimit {
    /// `rate` requests per second, `burst` at once. Values outside the bounds (the policy loader
    /// refuses them) are clamped into them.
    pub fn new(rate: f64, burst: u32) -> RateLimit {
        let rate = if rate.is_finite() {
            rate.clamp(MIN_RATE, MAX_RATE)
        } else {
            DEFAULT_RATE
        };
        let burst = burst.clamp(1, MAX_BURST);
        // At most 1e11 ns (MIN_RATE), at least 1000 ns (MAX_RATE): the cast cannot overflow.
        let interval_ns = (1e9 / rate).round().max(1.0) as u64;
        let reason = format!(
            "rate limit exceeded: this pod address may make {rate} requests/s (bursts of {burst})"
        );
        let mut body = Vec::with_capacity(reason.len() + 1);
        body.extend_from_slice(reason.as_bytes());
        body.push(b'\n');
        RateLimit {
            rate,
            burst,
            interval_ns,
            reason: reason.into_boxed_str(),
            body: Bytes::from(body),
        }
    }

    /// The burst a policy gets when only its rate is known: [`DEFAULT_BURST_SECONDS`] of it.
    pub fn default_burst(rate: f64) -> u32 {
        let b = (rate * DEFAULT_BURST_SECONDS).ceil();
        if b.is_finite() {
            b.clamp(1.0, f64::from(MAX_BURST)) as u32
        } else {
            MAX_BURST
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Nanoseconds for one token to come back.
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// Nanoseconds of requests a full bucket holds (`burst` tokens).
    pub fn capacity_ns(&self) -> u64 {
        self.interval_ns.saturating_mul(u64::from(self.burst))
    }

    /// The refusal's reason, as logged.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The refusal's body: the reason and a newline, shared (no copy per refusal).
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit::new(DEFAULT_RATE, RateLimit::default_burst(DEFAULT_RATE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_ten_seconds_of_its_rate() {
        let d = RateLimit::default();
        assert_eq!((d.rate(), d.burst()), (100.0, 1000));
        assert_eq!(d.interval_ns(), 10_000_000);
        assert_eq!(d.capacity_ns(), 10_000_000_000);
        assert_eq!(RateLimit::default_burst(0.05), 1);
        assert_eq!(RateLimit::default_burst(2.5), 25);
        assert_eq!(RateLimit::default_burst(MAX_RATE), MAX_BURST);
    }

    #[test]
    fn the_refusal_is_one_line_built_once() {
        let l = RateLimit::new(2.5, 3);
        assert_eq!(
            l.reason(),
            "rate limit exceeded: this pod address may make 2.5 requests/s (bursts of 3)"
        );
        assert_eq!(&l.body()[..], format!("{}\n", l.reason()).as_bytes());
        assert_eq!(l.interval_ns(), 400_000_000);
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        assert_eq!(RateLimit::new(f64::NAN, 0).rate(), DEFAULT_RATE);
        assert_eq!(RateLimit::new(f64::NAN, 0).burst(), 1);
        assert_eq!(RateLimit::new(1e12, 1).interval_ns(), 1000);
        assert_eq!(RateLimit::new(0.0, 1).interval_ns(), 100_000_000_000);
        assert_eq!(RateLimit::new(1.0, u32::MAX).burst(), MAX_BURST);
    }
}
