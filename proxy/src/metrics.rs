//! Prometheus metrics, rendered as text on the admin listener's `/metrics`.
//!
//! Label values come only from closed sets (decision, endpoint name, reload result) or from the
//! policy file (policy names and rule ids): never from requests, paths or pod names, so the number
//! of series is bounded by the configuration. As a second guard, request series beyond
//! [`MAX_REQUEST_SERIES`] are counted under `policy="_overflow",rule="_overflow"`.
//!
//! Per-request counters are sharded by worker thread: each worker holds its [`Counters`] (see
//! `pipeline::worker`), and the request counter lookup takes a read lock on that worker's own small
//! map (a write lock only the first time the worker sees a (policy, rule) pair), so the two cores
//! never write the same cache line per request.
//!
//! At scrape time [`Metrics::render`] copies the counters into a `Scrape`, and prometheus-client
//! encodes that in the Prometheus text format (0.0.4).

use crate::outcome::{CacheUse, Outcome};
pub use crate::outcome::{ConnRefusal, LongPollRefusal, UpstreamFailure};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub const MAX_REQUEST_SERIES: usize = 4096;
const OVERFLOW: &str = "_overflow";

/// Upper bounds of the upstream latency histogram buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

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

/// Counter shards: worker `w` is given shard `w % SHARDS` ([`Metrics::counters`]), and /metrics
/// sums them. Each shard is on its own cache line, so two workers counting at once never write the
/// same line (a shared atomic bounces between cores on every request).
const SHARDS: usize = 16;

/// One worker's request and cache counters (a shard of [`Metrics`]).
// Not prometheus-client's `Family`: its per-request lookup allocates a label set and shares a lock.
#[repr(align(128))]
pub struct Counters {
    /// Indexed by `Outcome::index()`; then policy -> rule -> count.
    requests: [RwLock<FxHashMap<Box<str>, RuleCounters>>; Outcome::ALL.len()],
    cache: [AtomicU64; CacheUse::ALL.len()],
    /// Series created in any shard (a pair counted by two workers is two), shared by all the
    /// shards: bounds the maps.
    series: Arc<AtomicUsize>,
}

impl Counters {
    fn new(series: Arc<AtomicUsize>) -> Counters {
        Counters {
            requests: Default::default(),
            cache: Default::default(),
            series,
        }
    }

    /// Counts one request. `policy`/`rule` are "" when the request never reached policy.
    pub fn count_request(&self, outcome: Outcome, policy: &str, rule: &str) {
        let lock = &self.requests[outcome.index()];
        {
            let map = lock.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = map.get(policy).and_then(|rules| rules.get(rule)) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let (policy, rule) = if self.series.load(Ordering::Relaxed) >= MAX_REQUEST_SERIES {
            (OVERFLOW, OVERFLOW)
        } else {
            (policy, rule)
        };
        let mut map = lock.write().unwrap_or_else(|e| e.into_inner());
        let rules = map.entry(policy.into()).or_default();
        let c = rules.entry(rule.into()).or_insert_with(|| {
            self.series.fetch_add(1, Ordering::Relaxed);
            AtomicU64::new(0)
        });
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what the answer cache did for one request.
    pub fn count_cache(&self, r: CacheUse) {
        self.cache[r.index()].fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Metrics {
    endpoints: Vec<String>,
    upstream_latency: Vec<Histogram>,
    upstream_failures: Vec<[AtomicU64; UpstreamFailure::ALL.len()]>,
    connections_open: AtomicI64,
    connections_accepted: AtomicU64,
    connections_refused: [AtomicU64; 2],
    header_timeouts: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Indexed by `LongPollRefusal::index()`.
    long_polls_refused: [AtomicU64; LongPollRefusal::ALL.len()],
    shards: [Arc<Counters>; SHARDS],
    /// Per-pod AWS identity: STS calls, the credential cache (`identity::creds`).
    pub identity: Arc<IdentityCounters>,
}

/// The `result` label values of `metaguard_sts_calls_total`: `ok`, then every
/// `StsError::result_label` (and `node_credentials`: the node's own credentials were missing).
pub const STS_RESULTS: [&str; 11] = [
    "ok",
    "throttled",
    "denied",
    "invalid_request",
    "transport",
    "timeout",
    "server_error",
    "bad_response",
    "config",
    "node_credentials",
    "other",
];

/// What the per-pod identity counts (shared with `identity::creds`; none of it is per request
/// on other paths).
pub struct IdentityCounters {
    sts_calls: [AtomicU64; STS_RESULTS.len()],
    sts_latency: Histogram,
    cache: [AtomicU64; 2],
    served: AtomicU64,
    /// The last failed call: its result label and when (seconds since the epoch).
    last_error: std::sync::Mutex<Option<(&'static str, f64)>>,
}

impl Default for IdentityCounters {
    fn default() -> Self {
        IdentityCounters {
            sts_calls: std::array::from_fn(|_| AtomicU64::new(0)),
            sts_latency: Histogram::new(),
            cache: [AtomicU64::new(0), AtomicU64::new(0)],
            served: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
        }
    }
}

impl IdentityCounters {
    fn result_index(label: &str) -> usize {
        STS_RESULTS
            .iter()
            .position(|r| *r == label)
            .unwrap_or(STS_RESULTS.len() - 1)
    }

    /// One AssumeRole call ended with `result` after `took`.
    pub fn sts_call(&self, result: &str, took: Duration) {
        self.sts_calls[Self::result_index(result)].fetch_add(1, Ordering::Relaxed);
        self.sts_latency.observe(took);
    }

    /// The last STS error (its label; the message goes to the log).
    pub fn sts_error(&self, result: &str, _message: &str) {
        let label = STS_RESULTS[Self::result_index(result)];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((label, now));
    }

    /// A credential request answered from memory at once.
    pub fn cache_hit(&self) {
        self.cache[0].fetch_add(1, Ordering::Relaxed);
    }

    /// A credential request that found nothing ready (it waited, or got an error).
    pub fn cache_miss(&self) {
        self.cache[1].fetch_add(1, Ordering::Relaxed);
    }

    /// Credentials handed to a pod.
    pub fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Credential requests that found nothing ready so far.
    pub fn cache_misses(&self) -> u64 {
        self.cache[1].load(Ordering::Relaxed)
    }
}

/// Values owned elsewhere, read at render time.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    pub cache_entries: usize,
    pub cache_bytes: usize,
    pub records_loaded: usize,
    pub decision_log_dropped: u64,
    pub policy_loaded: bool,
    /// Long polls in flight (`crate::longpoll`).
    pub long_polls_open: usize,
    /// The proxy vends AWS roles (`[aws]`): the STS and credential families are shown.
    pub aws_identity: bool,
}

impl Metrics {
    pub fn new(endpoints: Vec<String>) -> Metrics {
        let n = endpoints.len();
        // Series created in any shard (a pair counted by two workers is two); bounds the maps.
        let request_series = Arc::new(AtomicUsize::new(0));
        Metrics {
            shards: std::array::from_fn(|_| Arc::new(Counters::new(request_series.clone()))),
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
            long_polls_refused: Default::default(),
            identity: Arc::new(IdentityCounters::default()),
        }
    }

    /// The counters worker `worker` counts its requests in (taken once, when the worker is made).
    pub fn counters(&self, worker: usize) -> Arc<Counters> {
        self.shards[worker % SHARDS].clone()
    }

    /// Counts one request as worker `worker` would.
    #[cfg(test)]
    fn count_request(&self, worker: usize, outcome: Outcome, policy: &str, rule: &str) {
        self.counters(worker).count_request(outcome, policy, rule);
    }

    /// Counts what the answer cache did for one request as worker `worker` would.
    #[cfg(test)]
    fn count_cache(&self, worker: usize, r: CacheUse) {
        self.counters(worker).count_cache(r);
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

    /// A long poll refused by a cap (`crate::longpoll`).
    pub fn long_poll_refused(&self, why: LongPollRefusal) {
        self.long_polls_refused[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.scrape(g)));
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }

    /// Reads every counter once: the workers' shards summed, request rows sorted for a stable
    /// output.
    fn scrape(&self, g: &Gauges) -> Scrape {
        let mut requests = Vec::new();
        for outcome in Outcome::ALL {
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
            requests.extend(rows.into_iter().map(|((p, r), c)| (outcome, p, r, c)));
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let upstream = self
            .endpoints
            .iter()
            .zip(&self.upstream_latency)
            .zip(&self.upstream_failures)
            .map(|((name, h), f)| EndpointScrape {
                name: name.clone(),
                buckets: std::array::from_fn(|i| load(&h.buckets[i])),
                inf: load(&h.inf),
                sum_us: load(&h.sum_us),
                count: load(&h.count),
                failures: std::array::from_fn(|i| load(&f[i])),
            })
            .collect();
        Scrape {
            requests,
            cache: CacheUse::ALL.map(|r| (r.as_str(), self.cache_count(r))),
            upstream,
            connections_open: self.connections_open().max(0),
            connections_accepted: load(&self.connections_accepted),
            connections_refused: [ConnRefusal::Total, ConnRefusal::PerSource]
                .map(|why| (why.as_str(), load(&self.connections_refused[why as usize]))),
            header_timeouts: load(&self.header_timeouts),
            reloads: [
                ("success", load(&self.reloads_ok)),
                ("failure", load(&self.reloads_failed)),
            ],
            long_polls_refused: LongPollRefusal::ALL
                .map(|why| (why.as_str(), load(&self.long_polls_refused[why.index()]))),
            identity: self.scrape_identity(),
            gauges: *g,
        }
    }

    fn scrape_identity(&self) -> IdentityScrape {
        let id = &self.identity;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let h = &id.sts_latency;
        IdentityScrape {
            sts_calls: std::array::from_fn(|i| (STS_RESULTS[i], load(&id.sts_calls[i]))),
            buckets: std::array::from_fn(|i| load(&h.buckets[i])),
            inf: load(&h.inf),
            sum_us: load(&h.sum_us),
            count: load(&h.count),
            cache: [("hit", load(&id.cache[0])), ("miss", load(&id.cache[1]))],
            served: load(&id.served),
            last_error: *id.last_error.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[derive(Debug)]
struct IdentityScrape {
    sts_calls: [(&'static str, u64); STS_RESULTS.len()],
    buckets: [u64; BUCKETS_US.len()],
    inf: u64,
    sum_us: u64,
    count: u64,
    cache: [(&'static str, u64); 2],
    served: u64,
    last_error: Option<(&'static str, f64)>,
}

/// One scrape's values, owned so that a prometheus-client [`Registry`] can encode them.
#[derive(Debug)]
struct Scrape {
    requests: Vec<(Outcome, Box<str>, Box<str>, u64)>,
    cache: [(&'static str, u64); CacheUse::ALL.len()],
    upstream: Vec<EndpointScrape>,
    connections_open: i64,
    connections_accepted: u64,
    connections_refused: [(&'static str, u64); 2],
    header_timeouts: u64,
    reloads: [(&'static str, u64); 2],
    long_polls_refused: [(&'static str, u64); LongPollRefusal::ALL.len()],
    identity: IdentityScrape,
    gauges: Gauges,
}

#[derive(Debug)]
struct EndpointScrape {
    name: String,
    buckets: [u64; BUCKETS_US.len()],
    inf: u64,
    sum_us: u64,
    count: u64,
    failures: [u64; UpstreamFailure::ALL.len()],
}

impl Collector for Scrape {
    /// Every family in exposition order: names, labels, types and HELP text are the interface.
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let e = &mut enc;
        let g = &self.gauges;
        labelled(
            e,
            "metaguard_proxy_requests_total",
            "Requests by decision, policy and rule.",
            self.requests.iter().map(|(o, p, r, c)| {
                (
                    [("decision", o.as_str()), ("policy", &**p), ("rule", &**r)],
                    *c,
                )
            }),
        )?;
        labelled(
            e,
            "metaguard_cache_total",
            "Requests by what the answer cache did: hit (answered from the cache, upstream not asked), miss (the allow rule caches; asked upstream), off (not cacheable: no cache_ttl_ms, not a GET, not allowed).",
            self.cache.iter().map(|(r, c)| ([("result", *r)], *c)),
        )?;
        gauge(
            e,
            "metaguard_cache_entries",
            "Answers held in the cache (all workers).",
            g.cache_entries as u64,
        )?;
        gauge(
            e,
            "metaguard_cache_bytes",
            "Bytes of answers held in the cache (all workers).",
            g.cache_bytes as u64,
        )?;
        self.encode_upstream(e)?;
        gauge(
            e,
            "metaguard_proxy_connections_open",
            "Pod connections open now.",
            self.connections_open,
        )?;
        counter(
            e,
            "metaguard_proxy_connections_accepted_total",
            "Pod connections accepted.",
            self.connections_accepted,
        )?;
        labelled(
            e,
            "metaguard_proxy_connections_refused_total",
            "Pod connections closed at accept because a connection cap was reached.",
            self.connections_refused
                .iter()
                .map(|(why, c)| ([("reason", *why)], *c)),
        )?;
        counter(
            e,
            "metaguard_proxy_header_timeouts_total",
            "Connections closed because a request head did not arrive in time.",
            self.header_timeouts,
        )?;
        gauge(
            e,
            "metaguard_proxy_records_loaded",
            "Pod addresses with a cached record.",
            g.records_loaded as u64,
        )?;
        gauge(
            e,
            "metaguard_proxy_policy_loaded",
            "1 when a policy is in force.",
            u64::from(g.policy_loaded),
        )?;
        labelled(
            e,
            "metaguard_proxy_policy_reloads_total",
            "Policy reloads (SIGHUP) by result.",
            self.reloads.iter().map(|(r, c)| ([("result", *r)], *c)),
        )?;
        counter(
            e,
            "metaguard_proxy_decision_log_dropped_total",
            "Decision log lines dropped because the writer fell behind.",
            g.decision_log_dropped,
        )?;
        gauge(
            e,
            "metaguard_proxy_long_polls_open",
            "Long polls (wait_for_change) waiting on the upstream now.",
            g.long_polls_open as u64,
        )?;
        labelled(
            e,
            "metaguard_proxy_long_polls_refused_total",
            "Long polls answered 429 because a long-poll cap was reached, by cap.",
            self.long_polls_refused
                .iter()
                .map(|(why, c)| ([("reason", *why)], *c)),
        )?;
        if g.aws_identity {
            self.encode_identity(e)?;
        }
        let mut m = descriptor(
            e,
            "metaguard_proxy_build_info",
            "Version of the running daemon.",
            MetricType::Gauge,
        )?;
        ConstGauge::new(1u64).encode(m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
    }
}

impl Scrape {
    fn encode_identity(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let id = &self.identity;
        labelled(
            e,
            "metaguard_sts_calls_total",
            "AssumeRole calls made for pods' roles, by result.",
            id.sts_calls.iter().map(|(r, c)| ([("result", *r)], *c)),
        )?;
        let mut m = descriptor(
            e,
            "metaguard_sts_duration_seconds",
            "Time one AssumeRole call took, whatever its result.",
            MetricType::Histogram,
        )?;
        let buckets: Vec<(f64, u64)> = BUCKETS_US
            .iter()
            .zip(id.buckets)
            .map(|(b, c)| (*b as f64 / 1e6, c))
            .chain([(f64::INFINITY, id.inf)])
            .collect();
        m.encode_histogram::<NoLabelSet>(id.sum_us as f64 / 1e6, id.count, &buckets, None)?;
        labelled(
            e,
            "metaguard_credential_cache_total",
            "Pod credential requests by what the cache had: hit (ready, answered from memory), miss (waited for STS, or got an error).",
            id.cache.iter().map(|(r, c)| ([("result", *r)], *c)),
        )?;
        counter(
            e,
            "metaguard_credentials_served_total",
            "Role credentials handed to pods.",
            id.served,
        )?;
        let mut m = descriptor(
            e,
            "metaguard_sts_last_error_timestamp_seconds",
            "When the last AssumeRole call failed (seconds since the epoch), labelled with its result; absent until one fails.",
            MetricType::Gauge,
        )?;
        if let Some((label, at)) = id.last_error {
            ConstGauge::new(at).encode(m.encode_family(&[("result", label)])?)?;
        }
        Ok(())
    }

    fn encode_upstream(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut m = descriptor(
            e,
            "metaguard_proxy_upstream_duration_seconds",
            "Time from sending an allowed request upstream to the end of its response.",
            MetricType::Histogram,
        )?;
        for ep in &self.upstream {
            let buckets: Vec<(f64, u64)> = BUCKETS_US
                .iter()
                .zip(ep.buckets)
                .map(|(b, c)| (*b as f64 / 1e6, c))
                .chain([(f64::INFINITY, ep.inf)])
                .collect();
            m.encode_family(&[("endpoint", ep.name.as_str())])?
                .encode_histogram::<NoLabelSet>(ep.sum_us as f64 / 1e6, ep.count, &buckets, None)?;
        }
        labelled(
            e,
            "metaguard_proxy_upstream_failures_total",
            "Upstream exchanges that failed, by endpoint and kind (answered 502 or 504).",
            self.upstream.iter().flat_map(|ep| {
                UpstreamFailure::ALL
                    .iter()
                    .zip(ep.failures)
                    .map(|(k, c)| ([("endpoint", ep.name.as_str()), ("kind", k.as_str())], c))
            }),
        )
    }
}

/// A family's HELP and TYPE lines. `name` is the exposed name: prometheus-client appends a
/// counter's `_total` itself.
fn descriptor<'a>(
    e: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    ty: MetricType,
) -> Result<MetricEncoder<'a>, fmt::Error> {
    let name = match ty {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    e.encode_descriptor(name, help, None, ty)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(descriptor(e, name, help, MetricType::Counter)?)
}

fn gauge<N: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> fmt::Result {
    ConstGauge::new(v).encode(descriptor(e, name, help, MetricType::Gauge)?)
}

/// A counter family: one sample per label set.
fn labelled<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = descriptor(e, name, help, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
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
            long_polls_open: 4,
            aws_identity: false,
        }
    }

    #[test]
    fn identity_families_show_under_aws_only() {
        let m = Metrics::new(vec!["imds-v4".into()]);
        m.identity.sts_call("ok", Duration::from_millis(3));
        m.identity.sts_call("throttled", Duration::from_millis(40));
        m.identity.sts_error("throttled", "Rate exceeded");
        m.identity.cache_hit();
        m.identity.cache_hit();
        m.identity.cache_miss();
        m.identity.served();
        assert!(!m.render(&gauges()).contains("metaguard_sts"));
        let text = m.render(&Gauges {
            aws_identity: true,
            ..gauges()
        });
        for line in [
            "metaguard_sts_calls_total{result=\"ok\"} 1",
            "metaguard_sts_calls_total{result=\"throttled\"} 1",
            "metaguard_sts_duration_seconds_count 2",
            "metaguard_credential_cache_total{result=\"hit\"} 2",
            "metaguard_credential_cache_total{result=\"miss\"} 1",
            "metaguard_credentials_served_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.contains("metaguard_sts_last_error_timestamp_seconds{result=\"throttled\"}"));
    }

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::new(vec!["imds-v4".into(), "imds-v6".into()]);
        m.count_request(0, Outcome::Allow, "aws", "identity");
        m.count_request(1, Outcome::Allow, "aws", "identity");
        m.count_request(0, Outcome::Deny, "aws", "default-deny");
        m.count_request(0, Outcome::UnknownCaller, "", "");
        // A refusal over the rate limit: its policy, no rule.
        m.count_request(1, Outcome::RateLimited, "aws", "");
        m.count_request(0, Outcome::RateLimited, "aws", "");
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
            "metaguard_proxy_requests_total{decision=\"rate-limited\",policy=\"aws\",rule=\"\"} 2",
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

    /// Every family, with labels that need escaping and a histogram with whole and fractional
    /// sums.
    fn populated() -> (Metrics, Gauges) {
        let m = Metrics::new(vec!["imds-v4".into(), "imds-v6".into(), "aliyun".into()]);
        m.count_request(0, Outcome::Allow, "aws", "identity");
        m.count_request(1, Outcome::Allow, "aws", "identity");
        m.count_request(0, Outcome::Deny, "aws", "default-deny");
        m.count_request(3, Outcome::Deny, "p\"x", "r\\y\nz");
        m.count_request(0, Outcome::UnknownCaller, "", "");
        for o in Outcome::ALL {
            m.count_request(5, o, "strict", "r1");
        }
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_refused(ConnRefusal::PerSource);
        m.connection_refused(ConnRefusal::Total);
        m.header_timeout();
        m.reload(true);
        m.reload(false);
        m.reload(false);
        m.count_cache(0, CacheUse::Hit);
        m.count_cache(1, CacheUse::Hit);
        m.count_cache(17, CacheUse::Miss);
        m.observe_upstream(0, Duration::from_micros(300));
        m.observe_upstream(0, Duration::from_millis(3));
        m.observe_upstream(0, Duration::from_secs(60));
        m.observe_upstream(1, Duration::from_secs(2));
        m.upstream_failed(0, UpstreamFailure::Timeout);
        m.upstream_failed(1, UpstreamFailure::Reset);
        m.long_poll_refused(LongPollRefusal::PerSource);
        m.long_poll_refused(LongPollRefusal::PerSource);
        (m, gauges())
    }

    /// The whole exposition for [`populated`]: what a scraper sees, byte for byte (the version
    /// aside). Before prometheus-client the only difference was `_sum` 2 and 0 written as 2.0, 0.0.
    #[test]
    fn whole_exposition_is_stable() {
        let (m, g) = populated();
        let want = EXPOSITION.replace("{VERSION}", env!("CARGO_PKG_VERSION"));
        let got = m.render(&g);
        for (i, (w, o)) in want.lines().zip(got.lines()).enumerate() {
            assert_eq!(w, o, "line {}", i + 1);
        }
        assert_eq!(got, want);
    }

    const EXPOSITION: &str = r##"# HELP metaguard_proxy_requests_total Requests by decision, policy and rule.
# TYPE metaguard_proxy_requests_total counter
metaguard_proxy_requests_total{decision="allow",policy="aws",rule="identity"} 2
metaguard_proxy_requests_total{decision="allow",policy="strict",rule="r1"} 1
metaguard_proxy_requests_total{decision="deny",policy="aws",rule="default-deny"} 1
metaguard_proxy_requests_total{decision="deny",policy="p\"x",rule="r\\y\nz"} 1
metaguard_proxy_requests_total{decision="deny",policy="strict",rule="r1"} 1
metaguard_proxy_requests_total{decision="respond",policy="strict",rule="r1"} 1
metaguard_proxy_requests_total{decision="audit",policy="strict",rule="r1"} 1
metaguard_proxy_requests_total{decision="invalid",policy="strict",rule="r1"} 1
metaguard_proxy_requests_total{decision="unknown-caller",policy="",rule=""} 1
metaguard_proxy_requests_total{decision="unknown-caller",policy="strict",rule="r1"} 1
metaguard_proxy_requests_total{decision="error",policy="strict",rule="r1"} 1
metaguard_proxy_requests_total{decision="long-poll-limited",policy="strict",rule="r1"} 1
metaguard_proxy_requests_total{decision="rate-limited",policy="strict",rule="r1"} 1
# HELP metaguard_cache_total Requests by what the answer cache did: hit (answered from the cache, upstream not asked), miss (the allow rule caches; asked upstream), off (not cacheable: no cache_ttl_ms, not a GET, not allowed).
# TYPE metaguard_cache_total counter
metaguard_cache_total{result="hit"} 2
metaguard_cache_total{result="miss"} 1
metaguard_cache_total{result="off"} 0
# HELP metaguard_cache_entries Answers held in the cache (all workers).
# TYPE metaguard_cache_entries gauge
metaguard_cache_entries 3
# HELP metaguard_cache_bytes Bytes of answers held in the cache (all workers).
# TYPE metaguard_cache_bytes gauge
metaguard_cache_bytes 1234
# HELP metaguard_proxy_upstream_duration_seconds Time from sending an allowed request upstream to the end of its response.
# TYPE metaguard_proxy_upstream_duration_seconds histogram
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.0005"} 1
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.001"} 1
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.0025"} 1
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.005"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.01"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.025"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.05"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.1"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.25"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="0.5"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="1"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="2.5"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="5"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="10"} 2
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v4",le="+Inf"} 3
metaguard_proxy_upstream_duration_seconds_sum{endpoint="imds-v4"} 60.0033
metaguard_proxy_upstream_duration_seconds_count{endpoint="imds-v4"} 3
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.0005"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.001"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.0025"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.005"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.01"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.025"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.05"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.1"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.25"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="0.5"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="1"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="2.5"} 1
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="5"} 1
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="10"} 1
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="imds-v6",le="+Inf"} 1
metaguard_proxy_upstream_duration_seconds_sum{endpoint="imds-v6"} 2.0
metaguard_proxy_upstream_duration_seconds_count{endpoint="imds-v6"} 1
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.0005"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.001"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.0025"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.005"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.01"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.025"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.05"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.1"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.25"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="0.5"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="1"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="2.5"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="5"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="10"} 0
metaguard_proxy_upstream_duration_seconds_bucket{endpoint="aliyun",le="+Inf"} 0
metaguard_proxy_upstream_duration_seconds_sum{endpoint="aliyun"} 0.0
metaguard_proxy_upstream_duration_seconds_count{endpoint="aliyun"} 0
# HELP metaguard_proxy_upstream_failures_total Upstream exchanges that failed, by endpoint and kind (answered 502 or 504).
# TYPE metaguard_proxy_upstream_failures_total counter
metaguard_proxy_upstream_failures_total{endpoint="imds-v4",kind="connect"} 0
metaguard_proxy_upstream_failures_total{endpoint="imds-v4",kind="timeout"} 1
metaguard_proxy_upstream_failures_total{endpoint="imds-v4",kind="oversize"} 0
metaguard_proxy_upstream_failures_total{endpoint="imds-v4",kind="reset"} 0
metaguard_proxy_upstream_failures_total{endpoint="imds-v6",kind="connect"} 0
metaguard_proxy_upstream_failures_total{endpoint="imds-v6",kind="timeout"} 0
metaguard_proxy_upstream_failures_total{endpoint="imds-v6",kind="oversize"} 0
metaguard_proxy_upstream_failures_total{endpoint="imds-v6",kind="reset"} 1
metaguard_proxy_upstream_failures_total{endpoint="aliyun",kind="connect"} 0
metaguard_proxy_upstream_failures_total{endpoint="aliyun",kind="timeout"} 0
metaguard_proxy_upstream_failures_total{endpoint="aliyun",kind="oversize"} 0
metaguard_proxy_upstream_failures_total{endpoint="aliyun",kind="reset"} 0
# HELP metaguard_proxy_connections_open Pod connections open now.
# TYPE metaguard_proxy_connections_open gauge
metaguard_proxy_connections_open 1
# HELP metaguard_proxy_connections_accepted_total Pod connections accepted.
# TYPE metaguard_proxy_connections_accepted_total counter
metaguard_proxy_connections_accepted_total 2
# HELP metaguard_proxy_connections_refused_total Pod connections closed at accept because a connection cap was reached.
# TYPE metaguard_proxy_connections_refused_total counter
metaguard_proxy_connections_refused_total{reason="total"} 1
metaguard_proxy_connections_refused_total{reason="per_source"} 1
# HELP metaguard_proxy_header_timeouts_total Connections closed because a request head did not arrive in time.
# TYPE metaguard_proxy_header_timeouts_total counter
metaguard_proxy_header_timeouts_total 1
# HELP metaguard_proxy_records_loaded Pod addresses with a cached record.
# TYPE metaguard_proxy_records_loaded gauge
metaguard_proxy_records_loaded 7
# HELP metaguard_proxy_policy_loaded 1 when a policy is in force.
# TYPE metaguard_proxy_policy_loaded gauge
metaguard_proxy_policy_loaded 1
# HELP metaguard_proxy_policy_reloads_total Policy reloads (SIGHUP) by result.
# TYPE metaguard_proxy_policy_reloads_total counter
metaguard_proxy_policy_reloads_total{result="success"} 1
metaguard_proxy_policy_reloads_total{result="failure"} 2
# HELP metaguard_proxy_decision_log_dropped_total Decision log lines dropped because the writer fell behind.
# TYPE metaguard_proxy_decision_log_dropped_total counter
metaguard_proxy_decision_log_dropped_total 2
# HELP metaguard_proxy_long_polls_open Long polls (wait_for_change) waiting on the upstream now.
# TYPE metaguard_proxy_long_polls_open gauge
metaguard_proxy_long_polls_open 4
# HELP metaguard_proxy_long_polls_refused_total Long polls answered 429 because a long-poll cap was reached, by cap.
# TYPE metaguard_proxy_long_polls_refused_total counter
metaguard_proxy_long_polls_refused_total{reason="total"} 0
metaguard_proxy_long_polls_refused_total{reason="per_source"} 2
# HELP metaguard_proxy_build_info Version of the running daemon.
# TYPE metaguard_proxy_build_info gauge
metaguard_proxy_build_info{version="{VERSION}"} 1
"##;

    /// The Python client's parser for the text format (prometheus_client.parser, from the
    /// Prometheus project; Debian: python3-prometheus-client) reads the whole exposition: every
    /// family with its type and HELP, every sample with its labels and value.
    #[test]
    fn exposition_reads_back_with_the_reference_parser() {
        const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
print(json.dumps([{"name": f.name, "type": f.type, "help": f.documentation,
                   "samples": [[s.name, s.labels, s.value] for s in f.samples]}
                  for f in text_string_to_metric_families(sys.stdin.read())]))
"#;
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| {
                std::process::Command::new(p)
                    .args(["-c", "import prometheus_client.parser"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("python3 with prometheus_client (Debian: python3-prometheus-client)");
        let (m, g) = populated();
        let text = m.render(&g);
        let mut child = std::process::Command::new(python)
            .args(["-c", PARSE])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "parser refused the exposition: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let families: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();

        // Family name (the parser drops a counter's `_total`), type, HELP: the whole list, in order.
        let seen: Vec<(String, String)> = families
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().into(),
                    f["type"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want = [
            ("metaguard_proxy_requests", "counter"),
            ("metaguard_cache", "counter"),
            ("metaguard_cache_entries", "gauge"),
            ("metaguard_cache_bytes", "gauge"),
            ("metaguard_proxy_upstream_duration_seconds", "histogram"),
            ("metaguard_proxy_upstream_failures", "counter"),
            ("metaguard_proxy_connections_open", "gauge"),
            ("metaguard_proxy_connections_accepted", "counter"),
            ("metaguard_proxy_connections_refused", "counter"),
            ("metaguard_proxy_header_timeouts", "counter"),
            ("metaguard_proxy_records_loaded", "gauge"),
            ("metaguard_proxy_policy_loaded", "gauge"),
            ("metaguard_proxy_policy_reloads", "counter"),
            ("metaguard_proxy_decision_log_dropped", "counter"),
            ("metaguard_proxy_long_polls_open", "gauge"),
            ("metaguard_proxy_long_polls_refused", "counter"),
            ("metaguard_proxy_build_info", "gauge"),
        ]
        .map(|(n, t)| (n.to_string(), t.to_string()));
        assert_eq!(seen, want);
        assert_eq!(
            families[5]["help"],
            "Upstream exchanges that failed, by endpoint and kind (answered 502 or 504)."
        );
        for f in &families {
            let help = f["help"].as_str().unwrap();
            assert!(help.ends_with('.') && help.len() > 10, "{f}");
        }

        // Samples: (name, labels, value) exactly as the parser read them.
        let sample = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
            let labels: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect();
            families
                .iter()
                .flat_map(|f| f["samples"].as_array().unwrap())
                .find(|s| s[0] == name && s[1] == serde_json::Value::Object(labels.clone()))
                .map(|s| s[2].as_f64().unwrap())
        };
        let req = |d, p, r| {
            sample(
                "metaguard_proxy_requests_total",
                &[("decision", d), ("policy", p), ("rule", r)],
            )
        };
        assert_eq!(req("allow", "aws", "identity"), Some(2.0));
        assert_eq!(req("deny", "p\"x", "r\\y\nz"), Some(1.0), "escaped labels");
        assert_eq!(req("unknown-caller", "", ""), Some(1.0));
        assert_eq!(
            sample("metaguard_cache_total", &[("result", "hit")]),
            Some(2.0)
        );
        assert_eq!(
            sample("metaguard_cache_total", &[("result", "off")]),
            Some(0.0)
        );
        assert_eq!(sample("metaguard_cache_bytes", &[]), Some(1234.0));
        let h = "metaguard_proxy_upstream_duration_seconds";
        let bucket = |e, le| sample(&format!("{h}_bucket"), &[("endpoint", e), ("le", le)]);
        assert_eq!(bucket("imds-v4", "0.0005"), Some(1.0));
        assert_eq!(bucket("imds-v4", "10"), Some(2.0));
        assert_eq!(bucket("imds-v4", "+Inf"), Some(3.0));
        assert_eq!(bucket("imds-v6", "2.5"), Some(1.0));
        assert_eq!(bucket("aliyun", "+Inf"), Some(0.0));
        assert_eq!(
            sample(&format!("{h}_sum"), &[("endpoint", "imds-v4")]),
            Some(60.0033)
        );
        assert_eq!(
            sample(&format!("{h}_count"), &[("endpoint", "imds-v6")]),
            Some(1.0)
        );
        assert_eq!(
            sample(
                "metaguard_proxy_upstream_failures_total",
                &[("endpoint", "imds-v6"), ("kind", "reset")]
            ),
            Some(1.0)
        );
        assert_eq!(sample("metaguard_proxy_connections_open", &[]), Some(1.0));
        assert_eq!(
            sample(
                "metaguard_proxy_connections_refused_total",
                &[("reason", "total")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample("metaguard_proxy_header_timeouts_total", &[]),
            Some(1.0)
        );
        assert_eq!(
            sample(
                "metaguard_proxy_policy_reloads_total",
                &[("result", "failure")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample("metaguard_proxy_decision_log_dropped_total", &[]),
            Some(2.0)
        );
        assert_eq!(sample("metaguard_proxy_long_polls_open", &[]), Some(4.0));
        assert_eq!(
            sample(
                "metaguard_proxy_long_polls_refused_total",
                &[("reason", "per_source")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                "metaguard_proxy_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        // Nothing the parser read is left out of the text, nothing in the text is lost.
        let samples: usize = families
            .iter()
            .map(|f| f["samples"].as_array().unwrap().len())
            .sum();
        assert_eq!(
            samples,
            text.lines().filter(|l| !l.starts_with('#')).count()
        );
    }
}
