//! Start-up, signals and shutdown.
//!
//! Start-up refuses a state directory someone other than root could steer
//! ([`StateDir::check_secure`]; a missing one is fine), then binds every socket (FREEBIND: the
//! addresses need not exist yet), so the daemon serves before the first pod exists; records are
//! preloaded in the background (a miss reads the files directly, so nothing waits for the
//! preload).
//! SIGHUP: reload the policy (a bad file keeps the old one, logs why and counts a failed reload)
//! and reopen the decision log file; long polls in flight go on. SIGTERM/SIGINT: stop accepting
//! (listeners closed, so pods get connection refused, never the real service), end long polls in
//! flight at once (503, retry: `crate::longpoll`), let other requests in flight finish within the
//! grace period, flush the decision log, exit 0.

use crate::admin::{self, Admin};
use crate::app::App;
use crate::config::{ms, Config};
use crate::decision_log::DecisionLog;
use crate::http1::client::{Target, Upstream};
use crate::identity;
use crate::longpoll::LongPolls;
use crate::metrics::Metrics;
use crate::pipeline::cache::ResponseCache;
use crate::pipeline::worker::Worker;
use crate::policy::store::{self, PolicyStore, Reloaded};
use crate::ratelimit::RateLimiter;
use crate::records::{Identity, RecordCache};
use crate::server::conn::ConnSettings;
use crate::server::dispatch::{self, Dispatcher, WorkerQueue};
use crate::server::limits::ConnLimits;
use crate::server::listen;
use metaguard_common::state::StateDir;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Policy(#[from] store::LoadError),
    #[error(transparent)]
    Log(#[from] crate::decision_log::LogError),
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    #[error(transparent)]
    Upstream(#[from] crate::http1::client::UpstreamSetupError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    /// The state directory is one someone other than root could steer (or cannot be examined):
    /// its records would decide who callers are, so the daemon does not start on it.
    #[error("refusing to start: {0}")]
    StateDir(#[from] metaguard_common::state::StateError),
    #[error(transparent)]
    Identity(#[from] identity::service::ServiceError),
}

/// Runs the daemon until SIGTERM/SIGINT. Errors are start-up errors.
///
/// Threads: the main thread runs a single-threaded runtime with the accept loops, the admin
/// listener, signals and background work, and serves connections as worker 0; each further worker
/// (`worker_threads` in all) is a thread with its own single-threaded runtime. See
/// [`Dispatcher`] for why.
pub fn run(cfg: Config) -> Result<(), RunError> {
    // First, before anything is bound or started. A state directory that does not exist yet is
    // fine: the plugin creates it (mode 0755) at the first ADD, and until then no caller is known.
    StateDir::new(&cfg.state_dir).check_secure()?;
    let policy = store::load(cfg.policy.as_deref())?;
    let names: Vec<String> = policy.policy_names().map(str::to_owned).collect();
    log::info!(
        "policy {}: {}",
        cfg.policy
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(built-in default)".into()),
        names.join(", ")
    );
    let log = DecisionLog::start(cfg.decision_log.clone())?;
    let n = cfg.worker_threads();
    let metrics = Metrics::new(cfg.endpoints.iter().map(|e| e.name.clone()).collect());
    let workers = (0..n)
        .map(|i| {
            let upstream = Upstream::new(&cfg.upstream, &cfg.endpoints)?;
            let cache = ResponseCache::share(n, cfg.cache.max_entries, cfg.cache.max_bytes);
            Ok(Arc::new(Worker::new(upstream, cache, metrics.counters(i))))
        })
        .collect::<Result<Vec<_>, RunError>>()?;
    let aws = identity::service::prepare(&cfg, metrics.identity.clone())?;
    let naming = aws.as_ref().map(|_| identity::service::naming(&cfg));
    let (aws, launch) = match aws {
        Some((shared, launch)) => (Some(shared), Some(launch)),
        None => (None, None),
    };
    let mut records = records(&cfg);
    if let Some(n) = &naming {
        records = records.with_roles(n.clone());
    }
    let app = Arc::new(App {
        policy: PolicyStore::new(policy, cfg.policy.clone()),
        records,
        log,
        metrics,
        targets: cfg.endpoints.iter().map(Target::from_config).collect(),
        long_polls: LongPolls::new(&cfg.long_poll, ms(cfg.upstream.response_timeout_ms)),
        limiter: RateLimiter::default(),
        aws,
    });
    if let (Some(launch), Some(naming)) = (launch, naming) {
        // The prefetch resolves roles exactly as a request's lookup does.
        let a = app.clone();
        launch.start(Box::new(move |rec| {
            let snap = a.policy.current();
            Identity::resolve(rec, &snap, Some(&naming)).role
        }))?;
    }
    let (dispatcher, queues) = Dispatcher::new(n);
    let settings = ConnSettings::from_config(&cfg.limits);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);

    // Each queue with its worker's state; the first is served on this thread.
    let mut queues: Vec<(WorkerQueue, Arc<Worker>)> =
        queues.into_iter().zip(workers.iter().cloned()).collect();
    let extra: Vec<_> = queues.drain(1..).collect();
    let mut threads = Vec::new();
    let mut spawn_error = None;
    for (q, worker) in extra {
        let rt = match single_threaded() {
            Ok(rt) => rt,
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        };
        let (app, shutdown, mut stop) = (app.clone(), shutdown_rx.clone(), stop_rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{}", q.index))
            .spawn(move || {
                rt.block_on(async move {
                    // The queue closes when accepting stops; this worker's connections keep
                    // running (draining) until the main thread says the grace period is over.
                    dispatch::run_worker(q, app, worker, settings, shutdown).await;
                    dispatch::stopped(&mut stop).await;
                });
                // Connections still open after the grace period are cut here.
                rt.shutdown_timeout(Duration::from_millis(100));
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        }
    }
    let res = match (spawn_error, single_threaded()) {
        (Some(e), _) | (None, Err(e)) => Err(RunError::Runtime(e)),
        (None, Ok(rt)) => {
            let started = Started {
                app,
                workers,
                queues,
                dispatcher,
                settings,
                shutdown_tx,
                shutdown_rx,
            };
            let res = rt.block_on(run_async(cfg, started));
            // Blocking tasks (a preload on a slow disk) must not hold the exit.
            rt.shutdown_timeout(Duration::from_secs(1));
            res
        }
    };
    let _ = stop_tx.send(true);
    for t in threads {
        let _ = t.join();
    }
    res
}

fn records(cfg: &Config) -> RecordCache {
    let (state, revalidate) = (StateDir::new(&cfg.state_dir), ms(cfg.records.revalidate_ms));
    if cfg.records.watch {
        RecordCache::watching(state, revalidate)
    } else {
        log::warn!(
            "records.watch = false: an address reused by a new pod keeps the old pod's identity \
             for up to records.revalidate_ms"
        );
        RecordCache::new(state, revalidate)
    }
}

fn single_threaded() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// What the main thread's runtime starts from.
struct Started {
    app: Arc<App>,
    /// Every worker's state (for /metrics).
    workers: Vec<Arc<Worker>>,
    /// The queues of the workers this thread serves (worker 0), with their state.
    queues: Vec<(WorkerQueue, Arc<Worker>)>,
    dispatcher: Arc<Dispatcher>,
    settings: ConnSettings,
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
}

async fn run_async(cfg: Config, started: Started) -> Result<(), RunError> {
    let Started {
        app,
        workers,
        queues,
        dispatcher,
        settings,
        shutdown_tx,
        shutdown_rx,
    } = started;
    // Bind everything before serving anything: a port conflict is a start-up error, not a
    // half-working daemon.
    let mut listeners = Vec::new();
    for (addr, endpoint) in cfg.listen_sockets() {
        listeners.push((listen::bind(addr)?, endpoint));
    }
    let admin_listener = listen::bind(cfg.admin)?;

    let limits = ConnLimits::new(
        cfg.limits.max_connections,
        cfg.limits.max_connections_per_source,
    );
    // Worker 0 is this thread.
    let mut served = Vec::new();
    for (q, worker) in queues {
        served.push(tokio::spawn(dispatch::run_worker(
            q,
            app.clone(),
            worker,
            settings,
            shutdown_rx.clone(),
        )));
    }
    let mut loops = Vec::new();
    for (l, endpoint) in listeners {
        log::info!(
            "listening on {} for endpoint {}",
            describe(&l),
            app.endpoint_name(endpoint)
        );
        loops.push(tokio::spawn(dispatch::accept_loop(
            l,
            endpoint,
            app.clone(),
            limits.clone(),
            dispatcher.clone(),
            shutdown_rx.clone(),
        )));
    }
    log::info!("admin on {}", describe(&admin_listener));
    loops.push(tokio::spawn(admin::serve(
        admin_listener,
        Admin::new(app.clone(), workers),
        shutdown_rx.clone(),
    )));

    spawn_background(&app, &cfg, &shutdown_rx);

    wait_for_shutdown(&app).await.map_err(RunError::Runtime)?;

    log::info!(
        "shutting down: no longer accepting; {} connections open",
        limits.in_use()
    );
    let _ = shutdown_tx.send(true);
    // Long polls would hold the drain for the whole grace period (they wait up to minutes): they
    // are answered now (503, retry), and requests of any other kind in flight finish.
    let hanging = app.long_polls.open();
    app.long_polls.close();
    if hanging > 0 {
        log::info!("shutting down: {hanging} long polls ended");
    }
    for l in loops {
        let _ = l.await;
    }
    // The accept loops are gone: no worker gets anything new.
    drop(dispatcher);
    let grace = ms(cfg.shutdown.grace_ms);
    if limits.wait_idle(grace).await {
        log::info!("all connections finished");
    } else {
        log::warn!(
            "grace period ({} ms) over: closing {} connections",
            grace.as_millis(),
            limits.in_use()
        );
    }
    if !app.log.flush(Duration::from_secs(2)) {
        log::warn!("decision log not fully flushed");
    }
    drop(served);
    Ok(())
}

/// Record upkeep: the state directory's changes applied even when no request comes (so the event
/// queue never overflows on an idle proxy and removed addresses leave memory), the preload, then
/// the periodic sweep.
fn spawn_background(app: &Arc<App>, cfg: &Config, shutdown_rx: &watch::Receiver<bool>) {
    // Background: apply the state directory's changes even when no request comes (so the
    // event queue never overflows on an idle proxy and removed addresses leave memory).
    {
        let app = app.clone();
        let mut shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_SYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tick.tick() => {}
                }
                // No file I/O: one non-blocking read (and, while a directory is missing, an
                // attempt to watch it).
                app.records.sync_watch();
            }
        });
    }
    // Background: preload, then sweep periodically.
    {
        let app = app.clone();
        let sweep_every = ms(cfg.records.sweep_interval_ms);
        let mut shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            preload(&app).await;
            let mut tick = tokio::time::interval(sweep_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tick.tick() => {}
                }
                let a = app.clone();
                let swept = tokio::task::spawn_blocking(move || {
                    let n = a.records.sweep();
                    // Then the rate-limit buckets: idle ones, and those of addresses whose
                    // record was just evicted.
                    let now = std::time::Instant::now();
                    (n, a.limiter.sweep(now, |ip| a.records.contains(ip)))
                });
                if let Ok((n, buckets)) = swept.await {
                    if n > 0 || buckets > 0 {
                        log::debug!(
                            "pod records: {n} removed addresses evicted; {buckets} rate-limit buckets dropped"
                        );
                    }
                }
            }
        });
    }
}

/// How often the background applies the state directory's changes (requests do it themselves).
const WATCH_SYNC_EVERY: Duration = Duration::from_millis(250);

fn describe(l: &tokio::net::TcpListener) -> String {
    l.local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Loads every pod record under the policy in force (in a blocking thread: it reads files).
async fn preload(app: &Arc<App>) {
    let a = app.clone();
    if let Ok((n, errors)) = tokio::task::spawn_blocking(move || {
        let snap = a.policy.current();
        a.records.preload(&snap)
    })
    .await
    {
        log::info!(
            "pod records: {n} addresses loaded from {}",
            app.records.state_dir().root().display()
        );
        for e in errors.iter().take(10) {
            log::warn!("pod record skipped: {e}");
        }
    }
}

/// Handles SIGHUP until SIGTERM or SIGINT arrives.
async fn wait_for_shutdown(app: &Arc<App>) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(app).await,
            _ = term.recv() => { log::info!("SIGTERM"); return Ok(()); }
            _ = int.recv() => { log::info!("SIGINT"); return Ok(()); }
        }
    }
}

/// SIGHUP: policy reload plus decision log reopen (for log rotation).
pub async fn reload(app: &Arc<App>) {
    app.log.reopen();
    let a = app.clone();
    match tokio::task::spawn_blocking(move || a.policy.reload()).await {
        Ok(Ok(Reloaded::Swapped(names))) => {
            app.metrics.reload(true);
            log::info!("policy reloaded: {}", names.join(", "));
            // Roles may have changed: the prefetch resolves every record again.
            if let Some(aws) = &app.aws {
                aws.rescan.notify_one();
            }
            // Select every known pod's policy again now, rather than on each pod's next request
            // (which would read its record file on the request path).
            let app = app.clone();
            tokio::spawn(async move { preload(&app).await });
        }
        Ok(Ok(Reloaded::NoFile)) => {
            log::info!("SIGHUP: no policy file configured (built-in default); nothing to reload");
        }
        Ok(Err(e)) => {
            app.metrics.reload(false);
            log::error!("policy reload failed, keeping the previous policy: {e}");
        }
        Err(e) => {
            app.metrics.reload(false);
            log::error!("policy reload failed, keeping the previous policy: {e}");
        }
    }
}
