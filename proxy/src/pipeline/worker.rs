//! What one worker thread owns: its upstream connection pools, its answer cache and its request
//! counters, in one struct that the worker lends to each of its connections.
//!
//! A worker's connections never leave its thread (see `server::dispatch`), so everything here is
//! only ever touched by that thread: the cache's mutex is never contended, and an upstream exchange
//! never wakes another thread. Nothing is found by a worker index on the request path.

use super::cache::ResponseCache;
use crate::http1::client::Upstream;
use crate::metrics::Counters;
use std::sync::{Arc, Mutex, MutexGuard};

/// One worker's state. Cache-line aligned so two workers' states (their mutexes above all) never
/// share a line.
#[repr(align(128))]
pub struct Worker {
    /// The upstream client, with this worker's pools of kept-alive connections.
    pub upstream: Upstream,
    cache: Mutex<ResponseCache>,
    /// Where this worker's requests are counted (its shard of the metrics, summed at scrape time).
    pub counters: Arc<Counters>,
}

impl Worker {
    pub fn new(upstream: Upstream, cache: ResponseCache, counters: Arc<Counters>) -> Worker {
        Worker {
            upstream,
            cache: Mutex::new(cache),
            counters,
        }
    }

    /// The worker's answer cache. Never held across an await.
    pub fn cache(&self) -> MutexGuard<'_, ResponseCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries and bytes the cache holds (for /metrics).
    pub fn cache_usage(&self) -> (usize, usize) {
        let c = self.cache();
        (c.len(), c.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::http1::relay::RelayedHead;
    use crate::metrics::Metrics;
    use crate::pipeline::cache::Cached;
    use bytes::Bytes;
    use std::time::{Duration, Instant};

    #[test]
    fn the_cache_usage_is_the_workers_own() {
        let cfg = Config::default();
        let upstream = Upstream::new(&cfg.upstream, &cfg.endpoints).unwrap();
        let counters = Metrics::new(vec![]).counters(0);
        let w = Worker::new(upstream, ResponseCache::share(2, 3, 1000), counters);
        assert_eq!(w.cache_usage(), (0, 0));
        let value = Cached {
            head: RelayedHead::default(),
            body: Bytes::from_static(b"i-1"),
        };
        let ttl = Duration::from_secs(60);
        assert!(w.cache().insert(1, b"k", value, ttl, Instant::now()));
        assert_eq!(w.cache_usage(), (1, 4));
    }
}
