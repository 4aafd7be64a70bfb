//! Prometheus metrics, rendered as text on the admin listener's `/metrics`.
//!
//! Label values come only from closed sets (decision, endpoint name, reload result) or from the
//! policy file (policy names and rule ids): never from requests, paths or pod names, so the number
//! of series is bounded by the configuration. As a second guard, request series beyond
//! [`MAX_REQUEST_SERIES`] are counted under `policy="_overflow",rule="_overflow"`.
//!
//! Per-request counters are sharded by worker thread (see [`Shard`]): the request counter lookup
//! takes a read lock on its worker's own small map (a write lock only the first time the worker
//! sees a (policy, rule) pair), so the two cores never write the same cache line per request.

use crate::cache::CacheUse;
use crate::fasthash::FxHashMap;
use crate::outcome::Outcome;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::Duration;

pub const MAX_REQUEST_SERIES: usize = 4096;
const OVERFLOW: &str = "_overflow";

/// Upper bounds of the upstream latency histogram buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Why an upstream exchange failed (label `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    Connect,
    Timeout,
    Oversize,
    Reset,
}

impl UpstreamFailure {
    pub const ALL: [UpstreamFailure; 4] = [
        UpstreamFailure::Connect,
        UpstreamFailure::Timeout,
        UpstreamFailure::Oversize,
        UpstreamFailure::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Oversize => "oversize",
            UpstreamFailure::Reset => "reset",
        }
    }
}

/// Why a connection was refused at accept (label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    Total,
    PerSource,
}

impl ConnRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnRefusal::Total => "total",
            ConnRefusal::PerSource => "per_source",
        }
    }
}

struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    /// Observations above the last bucket.
    inf: AtomicU64,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            inf: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        match BUCKETS_US.iter().position(|b| us <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.inf.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

type RuleCounters = FxHashMap<Box<str>, AtomicU64>;

/// Counter shards: worker `w` counts in shard `w % SHARDS`, and /metrics sums them. Each shard is
/// on its own cache line, so two workers counting at once never write the same line (a shared
/// atomic bounces between cores on every request).
const SHARDS: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Shard {
    /// Indexed by `Outcome::index()`; then policy -> rule -> count.
    requests: [RwLock<FxHashMap<Box<str>, RuleCounters>>; Outcome::ALL.len()],
    cache: [AtomicU64; CacheUse::ALL.len()],
}

pub struct Metrics {
    /// Series created in any shard (a pair counted by two workers is two); bounds the maps.
    request_series: AtomicUsize,
    endpoints: Vec<String>,
    upstream_latency: Vec<Histogram>,
    upstream_failures: Vec<[AtomicU64; UpstreamFailure::ALL.len()]>,
    connections_open: AtomicI64,
    connections_accepted: AtomicU64,
    connections_refused: [AtomicU64; 2],
    header_timeouts: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    shards: [Shard; SHARDS],
}

/// Values owned elsewhere, read at render time.
pub struct Gauges {
    pub cache_entries: usize,
    pub cache_bytes: usize,
    pub records_loaded: usize,
    pub decision_log_dropped: u64,
    pub policy_loaded: bool,
}

impl Metrics {
    pub fn new(endpoints: Vec<String>) -> Metrics {
        let n = endpoints.len();
        Metrics {
            request_series: AtomicUsize::new(0),
            upstream_latency: (0..n).map(|_| Histogram::new()).collect(),
            upstream_failures: (0..n)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            endpoints,
            connections_open: AtomicI64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_refused: [AtomicU64::new(0), AtomicU64::new(0)],
            header_timeouts: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            shards: std::array::from_fn(|_| Shard::default()),
        }
    }

    /// Counts one request served by `worker`. `policy`/`rule` are "" when the request never
    /// reached policy.
    pub fn count_request(&self, worker: usize, outcome: Outcome, policy: &str, rule: &str) {
        let lock = &self.shards[worker % SHARDS].requests[outcome.index()];
        {
            let map = lock.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = map.get(policy).and_then(|rules| rules.get(rule)) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let (policy, rule) = if self.request_series.load(Ordering::Relaxed) >= MAX_REQUEST_SERIES {
            (OVERFLOW, OVERFLOW)
        } else {
            (policy, rule)
        };
        let mut map = lock.write().unwrap_or_else(|e| e.into_inner());
        let rules = map.entry(policy.into()).or_default();
        let c = rules.entry(rule.into()).or_insert_with(|| {
            self.request_series.fetch_add(1, Ordering::Relaxed);
            AtomicU64::new(0)
        });
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what the answer cache did for one request served by `worker`.
    pub fn count_cache(&self, worker: usize, r: CacheUse) {
        self.shards[worker % SHARDS].cache[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn cache_count(&self, r: CacheUse) -> u64 {
        self.shards
            .iter()
            .map(|s| s.cache[r.index()].load(Ordering::Relaxed))
            .sum()
    }

    pub fn observe_upstream(&self, endpoint: usize, d: Duration) {
        if let Some(h) = self.upstream_latency.get(endpoint) {
            h.observe(d);
        }
    }

    pub fn upstream_failed(&self, endpoint: usize, kind: UpstreamFailure) {
        if let Some(f) = self.upstream_failures.get(endpoint) {
            let i = UpstreamFailure::ALL
                .iter()
                .position(|k| *k == kind)
                .unwrap_or(0);
            f[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connections_open(&self) -> i64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    pub fn connection_refused(&self, why: ConnRefusal) {
        let i = match why {
            ConnRefusal::Total => 0,
            ConnRefusal::PerSource => 1,
        };
        self.connections_refused[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn header_timeout(&self) {
        self.header_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        header(
            o,
            "metaguard_proxy_requests_total",
            "counter",
            "Requests by decision, policy and rule.",
        );
        for outcome in Outcome::ALL {
            // Sum the workers' shards; sorted for a stable output.
            let mut rows: std::collections::BTreeMap<(Box<str>, Box<str>), u64> =
                std::collections::BTreeMap::new();
            for shard in &self.shards {
                let map = shard.requests[outcome.index()]
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                for (p, rules) in map.iter() {
                    for (r, c) in rules.iter() {
                        *rows.entry((p.clone(), r.clone())).or_default() +=
                            c.load(Ordering::Relaxed);
                    }
                }
            }
            for ((p, r), c) in rows {
                let _ = writeln!(
                    o,
                    "metaguard_proxy_requests_total{{decision=\"{}\",policy=\"{}\",rule=\"{}\"}} {c}",
                    outcome.as_str(),
                    escape(&p),
                    escape(&r)
                );
            }
        }

        header(
            o,
            "metaguard_cache_total",
            "counter",
            "Requests by what the answer cache did: hit (answered from the cache, upstream not asked), miss (the allow rule caches; asked upstream), off (not cacheable: no cache_ttl_ms, not a GET, not allowed).",
        );
        for r in CacheUse::ALL {
            let _ = writeln!(
                o,
                "metaguard_cache_total{{result=\"{}\"}} {}",
                r.as_str(),
                self.cache_count(r)
            );
        }
        scalar(
            o,
            "metaguard_cache_entries",
            "gauge",
            "Answers held in the cache (all workers).",
            g.cache_entries,
        );
        scalar(
            o,
            "metaguard_cache_bytes",
            "gauge",
            "Bytes of answers held in the cache (all workers).",
            g.cache_bytes,
        );

        header(
            o,
            "metaguard_proxy_upstream_duration_seconds",
            "histogram",
            "Time from sending an allowed request upstream to the end of its response.",
        );
        for (name, h) in self.endpoints.iter().zip(&self.upstream_latency) {
            let name = escape(name);
            let mut cum = 0u64;
            for (b, c) in BUCKETS_US.iter().zip(&h.buckets) {
                cum += c.load(Ordering::Relaxed);
                let le = *b as f64 / 1e6;
                let _ = writeln!(
                    o,
                    "metaguard_proxy_upstream_duration_seconds_bucket{{endpoint=\"{name}\",le=\"{le}\"}} {cum}"
                );
            }
            cum += h.inf.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "metaguard_proxy_upstream_duration_seconds_bucket{{endpoint=\"{name}\",le=\"+Inf\"}} {cum}"
            );
            let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                o,
                "metaguard_proxy_upstream_duration_seconds_sum{{endpoint=\"{name}\"}} {sum}"
            );
            let _ = writeln!(
                o,
                "metaguard_proxy_upstream_duration_seconds_count{{endpoint=\"{name}\"}} {}",
                h.count.load(Ordering::Relaxed)
            );
        }

        header(
            o,
            "metaguard_proxy_upstream_failures_total",
            "counter",
            "Upstream exchanges that failed, by endpoint and kind (answered 502 or 504).",
        );
        for (name, f) in self.endpoints.iter().zip(&self.upstream_failures) {
            for (k, c) in UpstreamFailure::ALL.iter().zip(f) {
                let _ = writeln!(
                    o,
                    "metaguard_proxy_upstream_failures_total{{endpoint=\"{}\",kind=\"{}\"}} {}",
                    escape(name),
                    k.as_str(),
                    c.load(Ordering::Relaxed)
                );
            }
        }

        scalar(
            o,
            "metaguard_proxy_connections_open",
            "gauge",
            "Pod connections open now.",
            self.connections_open().max(0),
        );
        scalar(
            o,
            "metaguard_proxy_connections_accepted_total",
            "counter",
            "Pod connections accepted.",
            self.connections_accepted.load(Ordering::Relaxed),
        );
        header(
            o,
            "metaguard_proxy_connections_refused_total",
            "counter",
            "Pod connections closed at accept because a connection cap was reached.",
        );
        for (why, c) in [ConnRefusal::Total, ConnRefusal::PerSource]
            .iter()
            .zip(&self.connections_refused)
        {
            let _ = writeln!(
                o,
                "metaguard_proxy_connections_refused_total{{reason=\"{}\"}} {}",
                why.as_str(),
                c.load(Ordering::Relaxed)
            );
        }
        scalar(
            o,
            "metaguard_proxy_header_timeouts_total",
            "counter",
            "Connections closed because a request head did not arrive in time.",
            self.header_timeouts.load(Ordering::Relaxed),
        );

        scalar(
            o,
            "metaguard_proxy_records_loaded",
            "gauge",
            "Pod addresses with a cached record.",
            g.records_loaded,
        );
        scalar(
            o,
            "metaguard_proxy_policy_loaded",
            "gauge",
            "1 when a policy is in force.",
            u8::from(g.policy_loaded),
        );
        header(
            o,
            "metaguard_proxy_policy_reloads_total",
            "counter",
            "Policy reloads (SIGHUP) by result.",
        );
        let _ = writeln!(
            o,
            "metaguard_proxy_policy_reloads_total{{result=\"success\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "metaguard_proxy_policy_reloads_total{{result=\"failure\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        scalar(
            o,
            "metaguard_proxy_decision_log_dropped_total",
            "counter",
            "Decision log lines dropped because the writer fell behind.",
            g.decision_log_dropped,
        );
        header(
            o,
            "metaguard_proxy_build_info",
            "gauge",
            "Version of the running daemon.",
        );
        let _ = writeln!(
            o,
            "metaguard_proxy_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// A metric with one unlabelled sample: its HELP and TYPE lines, then `name value`.
fn scalar(o: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(o, name, kind, help);
    let _ = writeln!(o, "{name} {value}");
}

/// Label value escaping per the text format: backslash, double quote and newline.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    std::borrow::Cow::Owned(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges {
            cache_entries: 3,
            cache_bytes: 1234,
            records_loaded: 7,
            decision_log_dropped: 2,
            policy_loaded: true,
        }
    }

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::new(vec!["imds-v4".into(), "imds-v6".into()]);
        m.count_request(0, Outcome::Allow, "aws", "identity");
        m.count_request(1, Outcome::Allow, "aws", "identity");
        m.count_request(0, Outcome::Deny, "aws", "default-deny");
        m.count_request(0, Outcome::UnknownCaller, "", "");
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_refused(ConnRefusal::PerSource);
        m.reload(true);
        m.reload(false);
        m.reload(false);
        m.count_cache(0, CacheUse::Hit);
        m.count_cache(1, CacheUse::Hit);
        m.count_cache(17, CacheUse::Miss);
        let t = m.render(&gauges());
        for want in [
            "metaguard_cache_total{result=\"hit\"} 2",
            "metaguard_cache_total{result=\"miss\"} 1",
            "metaguard_cache_total{result=\"off\"} 0",
            "metaguard_cache_entries 3",
            "metaguard_cache_bytes 1234",
            "# TYPE metaguard_proxy_requests_total counter",
            "metaguard_proxy_requests_total{decision=\"allow\",policy=\"aws\",rule=\"identity\"} 2",
            "metaguard_proxy_requests_total{decision=\"deny\",policy=\"aws\",rule=\"default-deny\"} 1",
            "metaguard_proxy_requests_total{decision=\"unknown-caller\",policy=\"\",rule=\"\"} 1",
            "metaguard_proxy_connections_open 1",
            "metaguard_proxy_connections_accepted_total 2",
            "metaguard_proxy_connections_refused_total{reason=\"per_source\"} 1",
            "metaguard_proxy_connections_refused_total{reason=\"total\"} 0",
            "metaguard_proxy_records_loaded 7",
            "metaguard_proxy_policy_reloads_total{result=\"success\"} 1",
            "metaguard_proxy_policy_reloads_total{result=\"failure\"} 2",
            "metaguard_proxy_decision_log_dropped_total 2",
            "metaguard_proxy_policy_loaded 1",
        ] {
            assert!(t.lines().any(|l| l == want), "missing {want:?} in\n{t}");
        }
        // Every sample line is `name{labels} value` or `name value` with a numeric value.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let v = l.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "bad sample {l:?}");
        }
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new(vec!["e".into()]);
        m.observe_upstream(0, Duration::from_micros(300));
        m.observe_upstream(0, Duration::from_millis(3));
        m.observe_upstream(0, Duration::from_secs(60));
        m.observe_upstream(5, Duration::from_secs(1)); // unknown endpoint: ignored
        let t = m.render(&gauges());
        assert!(t.contains("metaguard_proxy_upstream_duration_seconds_bucket{endpoint=\"e\",le=\"0.0005\"} 1\n"), "{t}");
        assert!(
            t.contains(
                "metaguard_proxy_upstream_duration_seconds_bucket{endpoint=\"e\",le=\"0.005\"} 2\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "metaguard_proxy_upstream_duration_seconds_bucket{endpoint=\"e\",le=\"10\"} 2\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "metaguard_proxy_upstream_duration_seconds_bucket{endpoint=\"e\",le=\"+Inf\"} 3\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("metaguard_proxy_upstream_duration_seconds_count{endpoint=\"e\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("metaguard_proxy_upstream_duration_seconds_sum{endpoint=\"e\"} 60.0033\n"),
            "{t}"
        );
    }

    #[test]
    fn upstream_failures_by_kind() {
        let m = Metrics::new(vec!["e".into()]);
        m.upstream_failed(0, UpstreamFailure::Timeout);
        let t = m.render(&gauges());
        assert!(t.contains(
            "metaguard_proxy_upstream_failures_total{endpoint=\"e\",kind=\"timeout\"} 1\n"
        ));
        assert!(t.contains(
            "metaguard_proxy_upstream_failures_total{endpoint=\"e\",kind=\"connect\"} 0\n"
        ));
    }

    #[test]
    fn labels_are_escaped_and_series_bounded() {
        let m = Metrics::new(vec![]);
        m.count_request(0, Outcome::Deny, "p\"x", "r\\y\nz");
        let t = m.render(&gauges());
        assert!(t.contains("policy=\"p\\\"x\",rule=\"r\\\\y\\nz\""), "{t}");
        for i in 0..MAX_REQUEST_SERIES + 10 {
            m.count_request(0, Outcome::Allow, "p", &format!("r{i}"));
        }
        let t = m.render(&gauges());
        let n = t
            .lines()
            .filter(|l| l.starts_with("metaguard_proxy_requests_total{"))
            .count();
        assert_eq!(
            n,
            MAX_REQUEST_SERIES + 1,
            "capped, plus the overflow series"
        );
        assert!(
            t.contains("policy=\"_overflow\",rule=\"_overflow\"} 11"),
            "{}",
            n
        );
    }
}
