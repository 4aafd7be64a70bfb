//! The per-identity credential cache: what makes a pod's first credential request an answer
//! from memory, and what keeps STS off the request path.
//!
//! - **Prefetch.** When a pod's record appears, [`CredStore::pod_added`] starts fetching its
//!   identity's credentials (`identity::prefetch` calls it from the state directory's events,
//!   before the plugin's ADD has even returned). By the time the pod's containers run, the answer
//!   is in memory.
//! - **One call per identity.** The cache key is the whole [`PodRole`] (role, ExternalId, session
//!   policy, session name, tags), never the role alone. However many requests wait for one
//!   identity, one STS call is in flight for it (`Slot::in_flight`).
//! - **Refresh.** Credentials are fetched again `refresh_before` ahead of their expiry (at least
//!   15 minutes, with up to 30 s of jitter so a node's pods do not renew in step): an SDK never
//!   sees credentials inside its own refresh window, so it never asks again and again.
//! - **Errors.** A recoverable STS error (throttling, 5xx, network) keeps the credentials that are
//!   still valid in service and retries with exponential backoff and jitter; a refusal (access
//!   denied, bad signature) drops them and retries slowly. A pod whose credentials are not ready
//!   waits at most `wait` and then gets an error answer: never another pod's credentials, never
//!   the node's.
//! - **Rate.** All AssumeRole calls of the node pass one token bucket (`aws.sts.rate`/`burst`);
//!   calls over it wait their turn.
//! - **Forget.** When a pod's record goes (DEL), its entry goes; an identity no pod holds is
//!   dropped with its credentials and never refreshed again.
//!
//! The calls themselves run on the identity thread's runtime ([`CredStore::run`]); workers only
//! read slots and wait on them (`tokio::sync::watch` works across runtimes).

use super::role::PodRole;
use super::RoleCredentials;
use crate::metrics::IdentityCounters;
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// Credentials are not served when they have less than this left (they would fail in the
/// client's hands); the refresh runs long before.
pub const MIN_VALIDITY: Duration = Duration::from_secs(60);
/// Retry delays after a recoverable error: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// After a refusal (the role's trust policy, a bad ExternalId): slower, nothing will change soon.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// Refreshes start up to this much earlier than `refresh_before`, at random.
const REFRESH_JITTER: Duration = Duration::from_secs(30);

/// Why a fetch failed.
#[derive(Debug, Clone)]
pub struct FetchError {
    /// Worth retrying soon (throttling, 5xx, network); else a refusal.
    pub recoverable: bool,
    /// The metrics label (a closed set, see `metrics::STS_RESULTS`).
    pub label: &'static str,
    /// One line for logs and the pod's error answer; never a secret.
    pub message: String,
}

pub type Fetch<'a> = Pin<Box<dyn Future<Output = Result<RoleCredentials, FetchError>> + Send + 'a>>;

/// Where credentials come from: STS with the node's credentials (`identity::source`), or a
/// stand-in in tests.
pub trait RoleSource: Send + Sync + 'static {
    fn assume<'a>(&'a self, role: &'a PodRole) -> Fetch<'a>;
}

/// Credentials ready to serve: the IMDS answer is built once, when they arrive.
#[derive(Debug)]
pub struct Issued {
    pub credentials: RoleCredentials,
    /// The IMDS JSON (`Code`, `LastUpdated`, `Type`, keys, `Token`, `Expiration`).
    pub body: Bytes,
    /// `Expiration` on the monotonic clock.
    pub expires_at: Instant,
    /// When STS issued them (`LastUpdated`, and `iam/info`'s).
    pub issued_unix: SystemTime,
}

impl Issued {
    pub fn usable_at(&self, now: Instant) -> bool {
        self.expires_at.saturating_duration_since(now) > MIN_VALIDITY
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Nothing yet: a fetch is on its way.
    Pending,
    Ready(Arc<Issued>),
    /// The last fetch failed and nothing valid is held.
    Failed(Arc<str>),
}

struct Slot {
    state: watch::Sender<State>,
    /// A fetch for this identity is in flight (or queued): others wait for it.
    in_flight: AtomicBool,
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            state: watch::Sender::new(State::Pending),
            in_flight: AtomicBool::new(false),
        })
    }
}

#[derive(Default)]
struct Inner {
    slots: HashMap<Arc<PodRole>, Arc<Slot>>,
    /// attachment key -> the identity its record selects.
    pods: HashMap<Box<str>, Arc<PodRole>>,
}

impl Inner {
    fn holders(&self, role: &PodRole) -> usize {
        self.pods.values().filter(|r| ***r == *role).count()
    }

    /// Records that `attachment` holds `role` (releasing what it held before) and returns the
    /// identity's slot, and whether the slot is new (nothing fetched or being fetched yet).
    fn hold(&mut self, attachment: &str, role: &Arc<PodRole>) -> (Arc<Slot>, bool) {
        if self.pods.get(attachment).is_none_or(|r| **r != **role) {
            if let Some(old) = self.pods.insert(attachment.into(), role.clone()) {
                self.release(&old);
            }
        }
        match self.slots.get(role) {
            Some(slot) => (slot.clone(), false),
            None => {
                let slot = Slot::new();
                self.slots.insert(role.clone(), slot.clone());
                (slot, true)
            }
        }
    }

    /// `attachment` holds nothing any more.
    fn forget(&mut self, attachment: &str) {
        if let Some(old) = self.pods.remove(attachment) {
            self.release(&old);
        }
    }

    /// Drops `role`'s slot once no pod holds it.
    fn release(&mut self, role: &PodRole) {
        if self.holders(role) == 0 {
            self.slots.remove(role);
        }
    }
}

/// How a credential request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From memory, at once (the prefetch or an earlier fetch had them).
    Cached,
    /// After waiting this long for a fetch in flight.
    Waited(Duration),
}

/// Why a pod gets no credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredError {
    #[error("credentials for role {role} are not ready yet (waited {waited_ms} ms); retry")]
    NotReady { role: String, waited_ms: u64 },
    #[error("credentials for role {role} are unavailable: {why}")]
    Failed { role: String, why: String },
}

enum Job {
    Fetch(Arc<PodRole>),
}

/// Settings of the store (from `[aws.sts]`).
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    pub wait: Duration,
    pub refresh_before: Duration,
    pub rate: u32,
    pub burst: u32,
}

pub struct CredStore {
    inner: Mutex<Inner>,
    jobs: mpsc::UnboundedSender<Job>,
    cfg: StoreConfig,
    stats: Arc<IdentityCounters>,
}

/// The receiving end of the store's jobs, for [`CredStore::run`].
pub struct Jobs(mpsc::UnboundedReceiver<Job>);

impl CredStore {
    pub fn new(cfg: StoreConfig, stats: Arc<IdentityCounters>) -> (Arc<CredStore>, Jobs) {
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Arc::new(CredStore {
            inner: Mutex::new(Inner::default()),
            jobs: tx,
            cfg,
            stats,
        });
        (store, Jobs(rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of identities held, and of pods holding one.
    pub fn len(&self) -> (usize, usize) {
        let i = self.lock();
        (i.slots.len(), i.pods.len())
    }

    /// A pod's record appeared (or changed): remember its identity and fetch its credentials if
    /// nobody has them yet. `None`: the pod has no role (any identity it held is released).
    pub fn pod_added(&self, attachment: &str, role: Option<Arc<PodRole>>) {
        let Some(role) = role else {
            self.pod_gone(attachment);
            return;
        };
        let (slot, new) = self.lock().hold(attachment, &role);
        // An existing slot is fetched or being fetched, and its refresh is scheduled.
        if new {
            self.ensure_fetch(&slot, &role);
        }
    }

    /// A pod's record went: its identity is dropped once no other pod holds it.
    pub fn pod_gone(&self, attachment: &str) {
        self.lock().forget(attachment);
    }

    /// Keeps only the pods in `live` (after a rescan of the state directory).
    pub fn retain_pods(&self, live: &dyn Fn(&str) -> bool) {
        let mut i = self.lock();
        let gone: Vec<Box<str>> = i.pods.keys().filter(|k| !live(k)).cloned().collect();
        for k in gone {
            i.forget(&k);
        }
    }

    fn ensure_fetch(&self, slot: &Slot, role: &Arc<PodRole>) {
        if !slot.in_flight.swap(true, Ordering::AcqRel) {
            // The receiver lives as long as the identity thread; if it is gone the waiters time
            // out with "not ready", which is the truth.
            let _ = self.jobs.send(Job::Fetch(role.clone()));
        }
    }

    /// The credentials of `role` for the pod `attachment`, waiting at most the configured time
    /// for a fetch in flight. A pod the prefetch has not seen (say, a policy reload gave it a
    /// role) is registered here.
    pub async fn credentials(
        &self,
        attachment: &str,
        role: &Arc<PodRole>,
        now: Instant,
    ) -> Result<(Arc<Issued>, Served), CredError> {
        let (slot, _) = self.lock().hold(attachment, role);
        let mut rx = slot.state.subscribe();
        let state = rx.borrow_and_update().clone();
        match state {
            State::Ready(c) if c.usable_at(now) => {
                self.stats.cache_hit();
                return Ok((c, Served::Cached));
            }
            // The last fetch failed and its retry is scheduled (with backoff): answer at once
            // rather than have every request call STS.
            State::Failed(why) if !slot.in_flight.load(Ordering::Acquire) => {
                self.stats.cache_miss();
                return Err(CredError::Failed {
                    role: role.role_arn().to_owned(),
                    why: why.to_string(),
                });
            }
            _ => {}
        }
        self.stats.cache_miss();
        self.ensure_fetch(&slot, role);
        let waited = tokio::time::timeout(self.cfg.wait, async {
            loop {
                if rx.changed().await.is_err() {
                    return None;
                }
                match &*rx.borrow_and_update() {
                    State::Ready(c) if c.usable_at(Instant::now()) => {
                        return Some(Ok(c.clone()));
                    }
                    State::Failed(why) => return Some(Err(why.clone())),
                    _ => {}
                }
            }
        })
        .await;
        let role_arn = role.role_arn().to_owned();
        match waited {
            Ok(Some(Ok(c))) => Ok((c, Served::Waited(now.elapsed()))),
            Ok(Some(Err(why))) => Err(CredError::Failed {
                role: role_arn,
                why: why.to_string(),
            }),
            _ => Err(CredError::NotReady {
                role: role_arn,
                waited_ms: now.elapsed().as_millis() as u64,
            }),
        }
    }

    /// The identity thread's loop: runs every fetch (rate-limited), refreshes and retries, until
    /// the store is dropped. Spawns one task per fetch on the current runtime.
    pub async fn run(self: Arc<Self>, mut jobs: Jobs, source: Arc<dyn RoleSource>) {
        let bucket = Arc::new(tokio::sync::Mutex::new(Bucket::new(
            self.cfg.rate,
            self.cfg.burst,
        )));
        while let Some(Job::Fetch(role)) = jobs.0.recv().await {
            let (store, source, bucket) = (self.clone(), source.clone(), bucket.clone());
            tokio::spawn(async move {
                store.fetch_until_settled(role, &*source, &bucket).await;
            });
        }
    }

    fn slot(&self, role: &PodRole) -> Option<Arc<Slot>> {
        self.lock().slots.get(role).cloned()
    }

    /// One identity's fetch, its retries while they are worth it, then its next refresh.
    async fn fetch_until_settled(
        &self,
        role: Arc<PodRole>,
        source: &dyn RoleSource,
        bucket: &tokio::sync::Mutex<Bucket>,
    ) {
        let mut delay = RETRY_FIRST;
        loop {
            let Some(slot) = self.slot(&role) else {
                return; // no pod holds it any more
            };
            Bucket::take(bucket).await;
            let started = Instant::now();
            let result = source.assume(&role).await;
            let took = started.elapsed();
            let next = match result {
                Ok(c) => {
                    self.stats.sts_call("ok", took);
                    log::debug!(
                        "sts AssumeRole {} (session {}): ok in {} ms",
                        role.role_arn(),
                        role.session_name,
                        took.as_millis()
                    );
                    let issued = Arc::new(issue(c, Instant::now()));
                    let refresh_in = issued
                        .expires_at
                        .saturating_duration_since(Instant::now())
                        .saturating_sub(self.cfg.refresh_before)
                        .saturating_sub(jitter(REFRESH_JITTER));
                    slot.state.send_replace(State::Ready(issued));
                    slot.in_flight.store(false, Ordering::Release);
                    delay = RETRY_FIRST;
                    refresh_in
                }
                Err(e) => {
                    self.stats.sts_call(e.label, took);
                    self.stats.sts_error(e.label, &e.message);
                    log::warn!(
                        "sts AssumeRole {} (session {}): {}",
                        role.role_arn(),
                        role.session_name,
                        e.message
                    );
                    let keep = matches!(&*slot.state.borrow(),
                        State::Ready(c) if e.recoverable && c.usable_at(Instant::now()));
                    if !keep {
                        slot.state
                            .send_replace(State::Failed(e.message.as_str().into()));
                    }
                    slot.in_flight.store(false, Ordering::Release);
                    let wait = if e.recoverable {
                        let d = delay;
                        delay = (delay * 2).min(RETRY_MAX);
                        d
                    } else {
                        REFUSED_RETRY
                    };
                    wait.saturating_sub(jitter(wait / 2))
                }
            };
            tokio::time::sleep(next).await;
            // Refresh or retry: only if pods still hold it, and no request started one meanwhile.
            let Some(slot) = self.slot(&role) else {
                return;
            };
            if slot.in_flight.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }
}

/// The IMDS answer for `c`, built once.
fn issue(c: RoleCredentials, now: Instant) -> Issued {
    let expiration = c.credentials.expiration.unwrap_or(SystemTime::UNIX_EPOCH);
    let left = expiration
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let issued_unix = SystemTime::now();
    let body = serde_json::json!({
        "Code": "Success",
        "LastUpdated": rfc3339(issued_unix),
        "Type": "AWS-HMAC",
        "AccessKeyId": c.credentials.access_key_id,
        "SecretAccessKey": c.credentials.secret_access_key,
        "Token": c.credentials.session_token.as_deref().unwrap_or(""),
        "Expiration": rfc3339(expiration),
    });
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    Issued {
        credentials: c,
        body: Bytes::from(text),
        expires_at: now + left,
        issued_unix,
    }
}

/// `2026-12-03T07:00:00Z`: what IMDS writes (seconds, UTC).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A random duration in [0, max).
fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() || max.is_zero() {
        return Duration::ZERO;
    }
    let n = u64::from_le_bytes(b) % (max.as_millis().max(1) as u64);
    Duration::from_millis(n)
}

/// The node's AssumeRole budget: `rate` calls per second, `burst` at once.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            at: Instant::now(),
        }
    }

    /// Waits for a token. The lock is held while waiting, so callers are served in turn.
    async fn take(b: &tokio::sync::Mutex<Bucket>) {
        let mut b = b.lock().await;
        let now = Instant::now();
        let t = b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * b.rate;
        b.tokens = t.min(b.burst);
        b.at = now;
        if b.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / b.rate);
            tokio::time::sleep(wait).await;
            b.tokens = 1.0;
            b.at = Instant::now();
        }
        b.tokens -= 1.0;
    }
}

#[cfg(test)]
#[path = "creds_tests.rs"]
mod tests;
