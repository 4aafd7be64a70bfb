//! The connection loop over real loopback sockets: framing refusals, pipelining, keep-alive,
//! slow and oversized heads, shutdown. The app has the built-in policy and no pod records, so
//! every well-formed request is answered 403 (unknown caller) without touching the upstream.

use super::*;
use crate::config::{Config, LogTarget};
use crate::decision_log::DecisionLog;
use crate::http1::client::{Target, Upstream};
use crate::longpoll::LongPolls;
use crate::metrics::Metrics;
use crate::pipeline::cache::ResponseCache;
use crate::policy::store::{self, PolicyStore};
use crate::records::RecordCache;
use crate::server::stop;
use crate::testing::TempDir;
use metaguard_common::state::StateDir;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn app(dir: &std::path::Path) -> (Arc<App>, Arc<Worker>) {
    let mut cfg = Config::default();
    for e in &mut cfg.endpoints {
        // Never contacted: nothing is allowed.
        e.upstream = Some("127.0.0.1:9".parse().unwrap());
    }
    let metrics = Metrics::new(cfg.endpoints.iter().map(|e| e.name.clone()).collect());
    let upstream = Upstream::new(&cfg.upstream, &cfg.endpoints).unwrap();
    let cache = ResponseCache::new(10, 1000);
    let worker = Arc::new(Worker::new(upstream, cache, metrics.counters(0)));
    let app = Arc::new(App {
        policy: PolicyStore::new(store::load(None).unwrap(), None),
        records: RecordCache::new(StateDir::new(dir), Duration::from_millis(1000)),
        log: DecisionLog::start(LogTarget::File(dir.join("decisions.log"))).unwrap(),
        metrics,
        targets: cfg.endpoints.iter().map(Target::from_config).collect(),
        long_polls: LongPolls::new(&cfg.long_poll, Duration::from_millis(5000)),
        limiter: crate::ratelimit::RateLimiter::default(),
        aws: None,
    });
    (app, worker)
}

fn limits() -> ConnSettings {
    ConnSettings {
        head: HeadLimits {
            max_header_bytes: 8192,
            max_headers: 64,
        },
        header_read_timeout: Duration::from_millis(400),
        max_buf_size: 8192,
        keep_alive: true,
    }
}

/// One server connection on loopback: writes `chunks` (each its own write, `gap` apart, to split
/// the input across reads), then reads until the server closes (or 3 s pass). Returns what came
/// back and whether the server closed.
async fn exchange(lim: ConnSettings, chunks: Vec<Vec<u8>>, gap: Duration) -> (String, bool) {
    let (mut c, server, _dir) = serve_one(lim).await;
    c.set_nodelay(true).unwrap();
    for ch in chunks {
        if c.write_all(&ch).await.is_err() {
            break;
        }
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        let mut b = [0u8; 4096];
        loop {
            match c.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
    })
    .await
    .is_ok();
    drop(c);
    server.await.unwrap();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// A server for one connection, and the client's end of it.
async fn serve_one(lim: ConnSettings) -> (TcpStream, tokio::task::JoinHandle<()>, TempDir) {
    let dir = TempDir::new("conn");
    let (app, worker) = app(dir.path());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, peer) = l.accept().await.unwrap();
        let ctx = ConnCtx {
            peer: peer.ip(),
            endpoint: 0,
        };
        serve_connection(s, ctx, &app, &worker, &lim).await;
    });
    (TcpStream::connect(addr).await.unwrap(), server, dir)
}

fn statuses(s: &str) -> Vec<&str> {
    s.split("HTTP/1.1 ").skip(1).map(|x| &x[..3]).collect()
}

fn rt<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn bodies_are_refused_and_what_follows_is_never_a_request() {
    rt(async {
        for h in [
            "Content-Length: 5",
            "Transfer-Encoding: chunked",
            "Content-Length: 0\r\nContent-Length: 0",
            "Content-Length: 00",
        ] {
            let req = format!("GET /a HTTP/1.1\r\n{h}\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
            let (s, closed) = exchange(limits(), vec![req.into_bytes()], Duration::ZERO).await;
            assert_eq!(statuses(&s), ["400"], "{h}: {s}");
            assert!(s.contains("connection: close\r\n"), "{h}: {s}");
            assert!(closed, "{h}");
        }
    });
}

#[test]
fn pipelined_heads_split_across_reads_are_answered_in_order() {
    rt(async {
        let (s, closed) = exchange(
            limits(),
            vec![
                b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGE".to_vec(),
                b"T /c HTTP/1.1\nHost: x\n\nGET /d HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            ],
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(statuses(&s), ["403", "403", "403", "403"], "{s}");
        assert!(closed);
    });
}

#[test]
fn a_long_pipeline_through_a_small_buffer_is_answered_whole() {
    rt(async {
        let mut many = Vec::new();
        for i in 0..2000 {
            many.extend_from_slice(format!("GET /{i} HTTP/1.1\r\n\r\n").as_bytes());
        }
        many.extend_from_slice(b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n");
        let (s, closed) = exchange(limits(), vec![many], Duration::ZERO).await;
        assert_eq!(statuses(&s).len(), 2001);
        assert!(closed);
    });
}

#[test]
fn keep_alive_follows_rfc_9112() {
    rt(async {
        // HEAD and HTTP/1.1 stay open, HTTP/1.0 with keep-alive too; plain HTTP/1.0 closes, so
        // /d is never answered.
        let (s, closed) = exchange(
            limits(),
            vec![b"HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /c HTTP/1.0\r\n\r\nGET /d HTTP/1.1\r\n\r\n".to_vec()],
            Duration::ZERO,
        )
        .await;
        assert_eq!(statuses(&s), ["403", "403", "403"], "{s}");
        assert!(s.contains("connection: keep-alive\r\n"), "{s}");
        assert!(
            s.ends_with("connection: close\r\n\r\nno pod record for this source address\n"),
            "{s}"
        );
        assert!(closed);
        // A HEAD answer has the length of the body it does not send.
        let head = &s[..s.find("\r\n\r\n").unwrap()];
        assert!(head.contains("content-length: 38"), "{head}");
    });
}

#[test]
fn slow_and_oversized_heads_are_cut_off() {
    rt(async {
        // A partial head: closed, unanswered, once the header-read timeout passes.
        let t0 = std::time::Instant::now();
        let (s, closed) = exchange(
            limits(),
            vec![b"GET /a HTTP/1.1\r\n".to_vec()],
            Duration::ZERO,
        )
        .await;
        assert!(closed && s.is_empty(), "{s}");
        assert!(t0.elapsed() >= limits().header_read_timeout);
        // Over the size cap: 431 and closed.
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(9000, b'a');
        let (s, closed) = exchange(limits(), vec![big], Duration::ZERO).await;
        assert_eq!(statuses(&s), ["431"], "{s}");
        assert!(closed);
    });
}

#[test]
fn shutdown_closes_an_idle_connection_at_once() {
    rt(async {
        let lim = ConnSettings {
            header_read_timeout: Duration::from_secs(30),
            ..limits()
        };
        let (mut c, server, _dir) = serve_one(lim).await;
        // A blank line after the request leaves nothing of a next request: the connection is idle.
        c.write_all(b"GET /1 HTTP/1.1\r\n\r\n\r\n").await.unwrap();
        let mut b = [0u8; 4096];
        assert!(c.read(&mut b).await.unwrap() > 0);
        stop::signal();
        // Closed well before the 30 s header-read timeout.
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
            .await
            .expect("closed at shutdown")
            .unwrap();
        assert_eq!(n, 0);
        server.await.unwrap();
    });
}
