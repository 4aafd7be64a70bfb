//! The admin listener (loopback by default): `/metrics`, `/healthz`, `/readyz`.
//!
//! - `/healthz`: 200 while the process serves at all.
//! - `/readyz`: 200 when a policy is in force and at least one upstream accepts a TCP connection
//!   (several endpoints are configured by default and a node reaches only its own cloud's); 503
//!   otherwise. The body lists each upstream. Probes are cached for [`PROBE_CACHE`] so a busy
//!   prober cannot turn this daemon into a connection flood against the metadata service.
//! - `/metrics`: Prometheus text.

use crate::app::App;
use crate::metrics::Gauges;
use crate::pipeline::worker::Worker;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
pub const PROBE_CACHE: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct ProbeResult {
    at: Instant,
    /// (endpoint name, upstream address, error or None when reachable)
    rows: Vec<(String, SocketAddr, Option<String>)>,
}

pub struct Admin {
    app: Arc<App>,
    /// Every worker's state, for the answer caches' size.
    workers: Vec<Arc<Worker>>,
    cache: Mutex<Option<ProbeResult>>,
}

impl Admin {
    pub fn new(app: Arc<App>, workers: Vec<Arc<Worker>>) -> Arc<Admin> {
        Arc::new(Admin {
            app,
            workers,
            cache: Mutex::new(None),
        })
    }

    /// The metrics, with the gauges read from where their values live.
    pub fn render_metrics(&self) -> String {
        let (cache_entries, cache_bytes) = self
            .workers
            .iter()
            .map(|w| w.cache_usage())
            .fold((0, 0), |(e, b), (we, wb)| (e + we, b + wb));
        self.app.metrics.render(&Gauges {
            cache_entries,
            cache_bytes,
            records_loaded: self.app.records.len(),
            decision_log_dropped: self.app.log.dropped(),
            policy_loaded: true,
            long_polls_open: self.app.long_polls.open(),
            aws_identity: self.app.aws.is_some(),
        })
    }

    async fn probe(&self) -> ProbeResult {
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if c.at.elapsed() < PROBE_CACHE {
                return c.clone();
            }
        }
        let targets: Vec<(String, SocketAddr)> = self
            .app
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.addr))
            .collect();
        let probes = targets.into_iter().map(|(name, addr)| async move {
            let err =
                match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
                };
            (name, addr, err)
        });
        let mut rows = Vec::new();
        // Probe concurrently so one black-holed endpoint costs one timeout, not one each.
        let handles: Vec<_> = probes.map(tokio::spawn).collect();
        for h in handles {
            if let Ok(r) = h.await {
                rows.push(r);
            }
        }
        let r = ProbeResult {
            at: Instant::now(),
            rows,
        };
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
        r
    }

    async fn readyz(&self) -> (StatusCode, String) {
        let p = self.probe().await;
        let mut body = String::new();
        let _ = writeln!(body, "policy: loaded");
        let mut any = false;
        for (name, addr, err) in &p.rows {
            match err {
                None => {
                    any = true;
                    let _ = writeln!(body, "upstream {name} {addr}: reachable");
                }
                Some(e) => {
                    let _ = writeln!(body, "upstream {name} {addr}: unreachable: {e}");
                }
            }
        }
        if any {
            (StatusCode::OK, format!("ready\n{body}"))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: no upstream reachable\n{body}"),
            )
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into()));
        }
        let r = match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => {
                let (st, body) = self.readyz().await;
                text(st, body)
            }
            "/metrics" => {
                let mut r = text(StatusCode::OK, self.render_metrics());
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found (try /metrics, /healthz, /readyz)\n".into(),
            ),
        };
        Ok(r)
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5));
    let b = Arc::new(b);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("admin accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        let b = b.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| admin.clone().handle(req));
            if let Err(e) = b.serve_connection(TokioIo::new(stream), svc).await {
                log::debug!("admin connection: {e}");
            }
        });
    }
}
