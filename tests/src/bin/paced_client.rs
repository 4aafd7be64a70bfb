//! `paced-client`: sends `GET PATH` at a steady rate on one kept-alive connection and prints the
//! latency of the answers, for scripts/bench-fairness.sh (a benchmark helper, not a test).
//!
//! Usage: paced-client [--rate 200] [--duration 10] [--warmup 1] http://IP[:PORT]/PATH
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever happened to the previous one. A
//! request that could not be sent on time (the previous answer was late) is sent as soon as it can,
//! and its latency is counted from when it was due, so a stall shows in the figures instead of
//! silently lowering the rate (no coordinated omission). A broken connection is reopened and the
//! request counted as an error. Requests in the warm-up are not counted.
//!
//! Output: one JSON line, `{"rate":..,"duration_s":..,"sent":..,"errors":..,"statuses":{"200":..},
//! "p50_ms":..,"p90_ms":..,"p99_ms":..,"p999_ms":..,"max_ms":..}`. Only literal addresses.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Opts {
    rate: f64,
    duration: Duration,
    warmup: Duration,
    addr: SocketAddr,
    path: String,
}

const USAGE: &str =
    "usage: paced-client [--rate REQ_PER_S] [--duration S] [--warmup S] http://IP[:PORT]/PATH";

fn parse_opts() -> Result<Opts, String> {
    let (mut rate, mut duration, mut warmup, mut url) = (200.0, 10.0, 1.0, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<f64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            let n: f64 = v.parse().map_err(|_| format!("{name} {v}: not a number"))?;
            if n.is_finite() && (0.0..=1e6).contains(&n) {
                Ok(n)
            } else {
                Err(format!("{name} {v}: out of range"))
            }
        };
        match a.as_str() {
            "--rate" => rate = num("--rate")?,
            "--duration" => duration = num("--duration")?,
            "--warmup" => warmup = num("--warmup")?,
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s if url.is_none() => url = Some(s.to_string()),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    let url = url.ok_or(USAGE)?;
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs with a literal address")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = hostport
        .parse()
        .or_else(|_| format!("{hostport}:80").parse())
        .map_err(|_| format!("{hostport}: not IP[:PORT]"))?;
    if rate <= 0.0 || duration <= 0.0 {
        return Err("--rate and --duration must be positive".into());
    }
    Ok(Opts {
        rate,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        addr,
        path: path.to_string(),
    })
}

/// One kept-alive connection and what it has read past the last answer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads its answer (framed by content-length); the status.
    fn exchange(&mut self, req: &[u8]) -> std::io::Result<u16> {
        self.stream.write_all(req)?;
        let mut chunk = [0u8; 4096];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = resp
                .parse(&self.buf)
                .map_err(|e| std::io::Error::other(format!("bad answer: {e}")))?
            {
                let status = resp.code.unwrap_or(0);
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                if self.buf.len() >= head + len {
                    self.buf.drain(..head + len);
                    return Ok(status);
                }
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn run(o: &Opts) -> serde_json::Value {
    let host = match o.addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let req = format!("GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n", o.path).into_bytes();
    let interval = Duration::from_secs_f64(1.0 / o.rate);
    let total = o.warmup + o.duration;
    let start = Instant::now();
    let mut conn: Option<Conn> = None;
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for i in 0u32.. {
        let due = start + interval * i;
        if due >= start + total {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let measured = due >= start + o.warmup;
        let result = match conn.as_mut() {
            Some(c) => c.exchange(&req),
            None => Conn::open(o.addr).and_then(|mut c| {
                let r = c.exchange(&req);
                conn = Some(c);
                r
            }),
        };
        let done = Instant::now();
        match result {
            Ok(status) if measured => {
                latencies.push(done.saturating_duration_since(due));
                *statuses.entry(status).or_default() += 1;
            }
            Ok(_) => {}
            Err(_) => {
                conn = None;
                if measured {
                    errors += 1;
                }
            }
        }
    }
    latencies.sort();
    serde_json::json!({
        "rate": o.rate,
        "duration_s": o.duration.as_secs_f64(),
        "sent": latencies.len() as u64 + errors,
        "errors": errors,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "p50_ms": percentile(&latencies, 0.50),
        "p90_ms": percentile(&latencies, 0.90),
        "p99_ms": percentile(&latencies, 0.99),
        "p999_ms": percentile(&latencies, 0.999),
        "max_ms": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    })
}

fn main() -> ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("paced-client: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", run(&o));
    ExitCode::SUCCESS
}
