//! The credential cache against a scripted stand-in for STS: prefetch, one call per identity,
//! the whole identity as the key, waits and their bound, errors, refresh, forgetting.

use super::*;
use crate::identity::role::PodRole;
use crate::identity::Credentials;
use crate::policy::RoleGrant;
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use tokio::sync::Semaphore;

/// Answers from a script (then "ok" forever), counting calls; each call first takes a permit
/// from `gate`, so a test decides when STS answers.
struct Scripted {
    calls: AtomicUsize,
    script: Mutex<VecDeque<Result<Duration, FetchError>>>,
    gate: Semaphore,
    /// The session names asked for, in order.
    asked: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(script: Vec<Result<Duration, FetchError>>, open: bool) -> Arc<Scripted> {
        Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            script: Mutex::new(script.into()),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            asked: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn creds_for(role: &PodRole, valid: Duration) -> RoleCredentials {
    RoleCredentials {
        credentials: Credentials {
            access_key_id: format!("ASIA-{}", role.session_name),
            secret_access_key: "secret".into(),
            session_token: Some("token".into()),
            expiration: Some(SystemTime::now() + valid),
        },
        assumed_role_arn: format!(
            "arn:aws:sts::123456789012:assumed-role/r/{}",
            role.session_name
        ),
    }
}

impl RoleSource for Scripted {
    fn assume<'a>(&'a self, role: &'a PodRole) -> Fetch<'a> {
        Box::pin(async move {
            let permit = self.gate.acquire().await;
            std::mem::forget(permit);
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.asked
                .lock()
                .unwrap()
                .push(role.session_name.to_string());
            let next = self.script.lock().unwrap().pop_front();
            match next.unwrap_or(Ok(Duration::from_secs(3600))) {
                Ok(valid) => Ok(creds_for(role, valid)),
                Err(e) => Err(e),
            }
        })
    }
}

fn role(session: &str, external_id: Option<&str>) -> Arc<PodRole> {
    Arc::new(PodRole {
        grant: Arc::new(RoleGrant {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            role_name: "r".into(),
            external_id: external_id.map(Arc::from),
            session_policy: None,
        }),
        session_name: session.into(),
        tags: Vec::new(),
    })
}

fn throttled() -> FetchError {
    FetchError {
        recoverable: true,
        label: "throttled",
        message: "Throttling: Rate exceeded".into(),
    }
}

fn denied() -> FetchError {
    FetchError {
        recoverable: false,
        label: "denied",
        message: "AccessDenied: not allowed".into(),
    }
}

fn start(source: Arc<Scripted>, wait_ms: u64) -> Arc<CredStore> {
    let cfg = StoreConfig {
        wait: Duration::from_millis(wait_ms),
        refresh_before: Duration::from_secs(15 * 60),
        rate: 1000,
        burst: 1000,
    };
    let (store, jobs) = CredStore::new(cfg, Arc::new(IdentityCounters::default()));
    tokio::spawn(store.clone().run(jobs, source));
    store
}

async fn wait_calls(s: &Scripted, n: usize) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while s.calls() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("STS calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_identity_is_answered_from_memory() {
    let src = Scripted::new(vec![], false);
    let store = start(src.clone(), 2000);
    let r = role("ns.a", None);
    store.pod_added("pod-a", Some(r.clone()));
    src.gate.add_permits(1);
    wait_calls(&src, 1).await;
    // The fetch has answered; the first request finds it ready.
    let (c, served) = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let got = store.credentials("pod-a", &r, Instant::now()).await;
            if let Ok((c, Served::Cached)) = got {
                return (c, Served::Cached);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(served, Served::Cached);
    assert_eq!(c.credentials.credentials.access_key_id, "ASIA-ns.a");
    let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    for k in [
        "Code",
        "LastUpdated",
        "Type",
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
    ] {
        assert!(body.get(k).is_some(), "{k} in {body}");
    }
    assert_eq!(body["Type"], "AWS-HMAC");
    assert_eq!(src.calls(), 1, "the request did not call STS again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_identity_share_one_call() {
    let src = Scripted::new(vec![], false);
    let store = start(src.clone(), 5000);
    let r = role("ns.a", None);
    let mut waiters = Vec::new();
    for i in 0..20 {
        let (store, r) = (store.clone(), r.clone());
        waiters.push(tokio::spawn(async move {
            let pod = format!("pod-{}", i % 2);
            store.credentials(&pod, &r, Instant::now()).await
        }));
    }
    // All twenty are waiting behind the closed gate; then STS answers once.
    tokio::time::timeout(Duration::from_secs(5), async {
        while store.stats.cache_misses() < 20 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every request waiting");
    src.gate.add_permits(1);
    for w in waiters {
        let (c, _) = w.await.unwrap().unwrap();
        assert_eq!(c.credentials.credentials.access_key_id, "ASIA-ns.a");
    }
    assert_eq!(src.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_identity_is_the_key_never_the_role_alone() {
    let src = Scripted::new(vec![], true);
    let store = start(src.clone(), 2000);
    let a = role("ns.a", Some("ext-a"));
    let b = role("ns.a", Some("ext-b"));
    let (ca, _) = store
        .credentials("pod-a", &a, Instant::now())
        .await
        .unwrap();
    let (cb, _) = store
        .credentials("pod-b", &b, Instant::now())
        .await
        .unwrap();
    assert_eq!(src.calls(), 2, "another ExternalId is another call");
    assert!(!Arc::ptr_eq(&ca, &cb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_a_bounded_time_then_gets_an_error_not_someone_elses() {
    let src = Scripted::new(vec![], false);
    let store = start(src.clone(), 100);
    let other = role("ns.other", None);
    // Someone else's credentials are ready...
    src.gate.add_permits(1);
    store
        .credentials("pod-o", &other, Instant::now())
        .await
        .unwrap();
    // ...this pod's STS call hangs.
    let mine = role("ns.mine", None);
    let t0 = Instant::now();
    let got = store.credentials("pod-m", &mine, t0).await;
    let waited = t0.elapsed();
    assert!(
        matches!(got, Err(CredError::NotReady { .. })),
        "{:?}",
        got.map(|(c, _)| c.credentials.assumed_role_arn.clone())
    );
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recoverable_error_keeps_valid_credentials_in_service() {
    // First credentials are inside the refresh window (10 min left < 15 min): the refresh runs
    // at once and is throttled; the pod keeps getting the credentials it had.
    let src = Scripted::new(
        vec![
            Ok(Duration::from_secs(600)),
            Err(throttled()),
            Err(throttled()),
        ],
        true,
    );
    let store = start(src.clone(), 2000);
    let r = role("ns.a", None);
    let (first, _) = store
        .credentials("pod-a", &r, Instant::now())
        .await
        .unwrap();
    wait_calls(&src, 2).await;
    let (again, served) = store
        .credentials("pod-a", &r, Instant::now())
        .await
        .unwrap();
    assert_eq!(served, Served::Cached);
    assert!(Arc::ptr_eq(&first, &again));
    // The retry (after about a second) gets through the second throttle and then succeeds.
    wait_calls(&src, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_answered_at_once_and_retried_slowly() {
    let src = Scripted::new(vec![Err(denied())], true);
    let store = start(src.clone(), 2000);
    let r = role("ns.a", None);
    let got = store.credentials("pod-a", &r, Instant::now()).await;
    match got {
        Err(CredError::Failed { why, .. }) => assert!(why.contains("AccessDenied"), "{why}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Asked again: the refusal stands until the slow retry; no new STS call per request.
    let t0 = Instant::now();
    for _ in 0..10 {
        assert!(store.credentials("pod-a", &r, t0).await.is_err());
    }
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "answered at once"
    );
    assert_eq!(src.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pods_identity_is_dropped() {
    let src = Scripted::new(vec![], true);
    let store = start(src.clone(), 2000);
    let r = role("ns.a", None);
    store.pod_added("pod-a", Some(r.clone()));
    store.pod_added("pod-a2", Some(r.clone()));
    wait_calls(&src, 1).await;
    assert_eq!(store.len(), (1, 2));
    store.pod_gone("pod-a");
    assert_eq!(store.len(), (1, 1), "still held by pod-a2");
    store.pod_gone("pod-a2");
    assert_eq!(store.len(), (0, 0));
    // A pod whose role changes releases the old identity.
    store.pod_added("pod-b", Some(role("ns.b", None)));
    store.pod_added("pod-b", Some(role("ns.b2", None)));
    assert_eq!(store.len(), (1, 1));
    store.pod_added("pod-b", None);
    assert_eq!(store.len(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credentials_are_never_served() {
    // STS hands out credentials with 30 s left (under MIN_VALIDITY), then refuses.
    let src = Scripted::new(vec![Ok(Duration::from_secs(30)), Err(denied())], true);
    let store = start(src.clone(), 300);
    let r = role("ns.a", None);
    assert!(store
        .credentials("pod-a", &r, Instant::now())
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn the_nodes_sts_budget_paces_calls_past_the_burst() {
    // 10 calls per second, 2 at once: the first two go at once, each further one waits its
    // tenth of a second (on the runtime's clock, which this test drives).
    let bucket = tokio::sync::Mutex::new(Bucket::new(10, 2));
    let t0 = tokio::time::Instant::now();
    Bucket::take(&bucket).await;
    Bucket::take(&bucket).await;
    assert!(t0.elapsed() < Duration::from_millis(10), "the burst");
    for _ in 0..3 {
        Bucket::take(&bucket).await;
    }
    let paced = t0.elapsed();
    assert!(
        paced >= Duration::from_millis(290) && paced < Duration::from_millis(400),
        "{paced:?}"
    );
}
