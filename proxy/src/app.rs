//! What every connection of every worker shares, built once at start: the policy in force, the
//! pod records, the decision log, the metrics, the endpoints' upstream targets, the long polls
//! in flight and the pods' rate-limit buckets. (What a worker owns alone is in `pipeline::worker`.)

use crate::decision_log::DecisionLog;
use crate::http1::client::Target;
use crate::identity::AwsIdentity;
use crate::longpoll::LongPolls;
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::ratelimit::RateLimiter;
use crate::records::RecordCache;

pub struct App {
    pub policy: PolicyStore,
    pub records: RecordCache,
    pub log: DecisionLog,
    pub metrics: Metrics,
    /// Where each endpoint's allowed requests go, indexed like the configuration's endpoints
    /// (and like every worker's `Upstream`).
    pub targets: Vec<Target>,
    /// Long-poll deadlines and the caps on how many hang at once (a pod's connections are spread
    /// over the workers, so the caps are shared).
    pub long_polls: LongPolls,
    /// Every pod address's rate-limit bucket, shared by the workers.
    pub limiter: RateLimiter,
    /// Per-pod IMDSv2 tokens and role credentials on the AWS endpoints (`[aws]` enabled).
    pub aws: Option<AwsIdentity>,
}

impl App {
    pub fn endpoint_name(&self, i: usize) -> &str {
        self.targets.get(i).map(|t| t.name.as_str()).unwrap_or("?")
    }
}
