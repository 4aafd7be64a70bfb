//! Starting the per-pod AWS identity (`[aws]` enabled): the pieces the workers share
//! ([`AwsIdentity`]) and the identity thread, which runs every STS call, the prefetch watch and
//! the node token's renewal on a runtime of its own, so no STS latency ever sits on a worker.
//!
//! The thread lives as long as the process: a daemon shutting down has nothing to hand over, and
//! an STS call cut short is simply not finished.

use super::creds::{CredStore, Fetch, FetchError, Jobs, RoleSource, StoreConfig};
use super::node::NodeSource;
use super::prefetch::{Prefetch, Resolve};
use super::role::{host_name, Naming, PodRole};
use super::sts::{AssumeRoleRequest, StsClient};
use super::token::TokenKeys;
use super::AwsIdentity;
use crate::config::{ms, Config, StsConfig};
use crate::metrics::IdentityCounters;
use metaguard_common::state::StateDir;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OnceCell};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("aws: cannot make the IMDSv2 token key: {0}")]
    Random(getrandom::Error),
    #[error("aws: cannot start the identity thread: {0}")]
    Thread(std::io::Error),
}

/// What [`prepare`] made and [`Launch::start`] starts.
pub struct Launch {
    store: Arc<CredStore>,
    jobs: Jobs,
    node: Arc<NodeSource>,
    sts: StsConfig,
    state: StateDir,
    rescan: Arc<Notify>,
    prefetch: bool,
}

/// How sessions are named and tagged on this node.
pub fn naming(cfg: &Config) -> Naming {
    let node = match cfg.aws.sts.node_name.as_str() {
        "" => host_name(),
        n => n.to_owned(),
    };
    Naming {
        session_tags: cfg.aws.sts.session_tags,
        node,
    }
}

/// The shared pieces, or `None` when `[aws]` is off.
pub fn prepare(
    cfg: &Config,
    stats: Arc<IdentityCounters>,
) -> Result<Option<(AwsIdentity, Launch)>, ServiceError> {
    let a = &cfg.aws;
    if !a.enabled {
        return Ok(None);
    }
    let endpoints = cfg
        .endpoints
        .iter()
        .map(|e| a.endpoints.contains(&e.name))
        .collect();
    // Validated: the node endpoint exists.
    let node_ep = cfg.endpoints.iter().find(|e| e.name == a.node_endpoint);
    let upstream = node_ep.map(|e| e.upstream_addr()).unwrap_or_else(|| {
        std::net::SocketAddr::from((metaguard_common::endpoints::AWS_IMDS_V4, 80))
    });
    let node = Arc::new(NodeSource::new(
        upstream,
        ms(cfg.upstream.connect_timeout_ms),
        ms(cfg.upstream.response_timeout_ms),
    ));
    let store_cfg = StoreConfig {
        wait: ms(a.sts.wait_ms),
        refresh_before: ms(a.sts.refresh_before_ms),
        rate: a.sts.rate,
        burst: a.sts.burst,
    };
    let (store, jobs) = CredStore::new(store_cfg, stats);
    let rescan = Arc::new(Notify::new());
    let tokens = TokenKeys::new(ms(a.token_key_rotation_ms)).map_err(ServiceError::Random)?;
    let shared = AwsIdentity {
        endpoints,
        tokens,
        creds: store.clone(),
        node: node.clone(),
        rescan: rescan.clone(),
    };
    let launch = Launch {
        store,
        jobs,
        node,
        sts: a.sts.clone(),
        state: StateDir::new(&cfg.state_dir),
        rescan,
        prefetch: a.prefetch,
    };
    Ok(Some((shared, launch)))
}

impl Launch {
    /// Starts the identity thread. `resolve` gives a record's role under the policy in force.
    pub fn start(self, resolve: Box<Resolve>) -> Result<(), ServiceError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServiceError::Thread)?;
        let source: Arc<dyn RoleSource> = Arc::new(StsSource {
            node: self.node.clone(),
            cfg: self.sts,
            client: OnceCell::new(),
        });
        let prefetch = Prefetch::new(self.state, self.store.clone(), resolve, self.rescan);
        let (store, jobs, node, enabled) = (self.store, self.jobs, self.node, self.prefetch);
        if !enabled {
            log::warn!("aws.prefetch = false: each pod's first credential request waits for STS");
        }
        std::thread::Builder::new()
            .name("identity".into())
            .spawn(move || {
                rt.block_on(async move {
                    let watch = async {
                        if enabled {
                            prefetch.run().await
                        }
                    };
                    tokio::join!(store.run(jobs, source), watch, keep_node(node));
                });
            })
            .map_err(ServiceError::Thread)?;
        Ok(())
    }
}

/// Keeps the node's token (for forwarded requests) and credentials (for STS) fresh, so neither
/// is fetched on a request's path. Each turn costs nothing while both are fresh (no I/O): it
/// runs every second so a token the service refused (`token_rejected`) is replaced at once.
/// Failures are logged once until they clear; the next turn tries again.
async fn keep_node(node: Arc<NodeSource>) {
    let mut logged = false;
    loop {
        let t = node.token().await;
        let c = node.credentials().await;
        let wait = match (&t, &c) {
            (Ok(_), Ok(_)) => {
                logged = false;
                Duration::from_secs(1)
            }
            _ => {
                if !logged {
                    if let Err(e) = &t {
                        log::warn!("aws: the node's IMDSv2 token: {e}");
                    }
                    if let Err(e) = &c {
                        log::warn!("aws: the node's credentials: {e}");
                    }
                    logged = true;
                }
                Duration::from_secs(5)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// AssumeRole with the node's credentials, against the regional endpoint (region from the
/// configuration, else from the metadata service, read once).
struct StsSource {
    node: Arc<NodeSource>,
    cfg: StsConfig,
    client: OnceCell<StsClient>,
}

impl StsSource {
    async fn client(&self) -> Result<&StsClient, FetchError> {
        self.client
            .get_or_try_init(|| async {
                let region = match self.cfg.region.as_str() {
                    "" => self.node.region().await.map_err(|e| FetchError {
                        recoverable: e.recoverable(),
                        label: "node_credentials",
                        message: format!("the node's region: {e}"),
                    })?,
                    r => r.to_owned(),
                };
                StsClient::new(&self.cfg, &region).map_err(|e| FetchError {
                    recoverable: false,
                    label: e.result_label(),
                    message: e.to_string(),
                })
            })
            .await
    }
}

impl RoleSource for StsSource {
    fn assume<'a>(&'a self, role: &'a PodRole) -> Fetch<'a> {
        Box::pin(async move {
            let node = self.node.credentials().await.map_err(|e| FetchError {
                recoverable: e.recoverable(),
                label: "node_credentials",
                message: format!("the node's credentials: {e}"),
            })?;
            let client = self.client().await?;
            let req = AssumeRoleRequest {
                role_arn: role.role_arn(),
                session_name: &role.session_name,
                duration_seconds: self.cfg.duration_seconds,
                external_id: role.grant.external_id.as_deref(),
                policy: role.grant.session_policy.as_deref(),
                tags: &role.tags,
            };
            client
                .assume_role(&node, &req)
                .await
                .map_err(|e| FetchError {
                    recoverable: e.recoverable(),
                    label: e.result_label(),
                    message: e.to_string(),
                })
        })
    }
}
