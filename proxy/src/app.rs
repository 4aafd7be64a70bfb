//! Everything a request needs, built once at start and shared by every connection.

use crate::cache::WorkerCaches;
use crate::decision_log::DecisionLog;
use crate::metrics::{Gauges, Metrics};
use crate::policy_store::PolicyStore;
use crate::records::RecordCache;
use crate::upstream::Upstream;

pub struct App {
    pub policy: PolicyStore,
    pub records: RecordCache,
    /// One upstream client (and connection pool) per worker thread, so an upstream exchange
    /// never leaves the thread that serves the pod's connection. Never empty.
    pub upstreams: Vec<Upstream>,
    /// One answer cache per worker thread (see `cache.rs` for why per worker).
    pub cache: WorkerCaches,
    pub log: DecisionLog,
    pub metrics: Metrics,
    /// Endpoint names, indexed like the configuration's endpoints (and `Upstream::targets`).
    pub endpoints: Vec<String>,
}

impl App {
    pub fn endpoint_name(&self, i: usize) -> &str {
        self.endpoints.get(i).map(String::as_str).unwrap_or("?")
    }

    /// The upstream client of worker `worker` (the first one for anything else, e.g. the admin).
    pub fn upstream(&self, worker: usize) -> &Upstream {
        match self.upstreams.get(worker) {
            Some(u) => u,
            None => &self.upstreams[0],
        }
    }

    pub fn render_metrics(&self) -> String {
        let (cache_entries, cache_bytes) = self.cache.usage();
        self.metrics.render(&Gauges {
            cache_entries,
            cache_bytes,
            records_loaded: self.records.len(),
            decision_log_dropped: self.log.dropped(),
            policy_loaded: true,
        })
    }
}
