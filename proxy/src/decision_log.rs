//! One JSON line per request, written by a background thread so logging never blocks a request.
//!
//! Requests format their line and hand it over a bounded channel with `try_send`; if the writer
//! falls behind (a stalled disk, a full pipe) lines are dropped and counted
//! (`metaguard_proxy_decision_log_dropped_total`) rather than slowing every pod down. The writer
//! drains everything queued before each flush, so under load one `write` carries many lines.

use crate::config::LogTarget;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lines that may wait for the writer (the channel allocates its slots up front, so this is also
/// resident memory: about 40 bytes a line).
pub const QUEUE_LINES: usize = 16 * 1024;
/// Raw (rejected) request targets are cut to this many bytes in the log.
pub const MAX_LOGGED_TARGET: usize = 1024;

/// The fields of one decision line. Field order here is the order in the JSON line.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
    pub ts: &'a str,
    /// `namespace/name` when the record has both, else null.
    pub pod: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub src: IpAddr,
    pub endpoint: &'a str,
    pub method: &'a str,
    /// The canonical path (without query), or the raw target (escaped by JSON, cut to
    /// [`MAX_LOGGED_TARGET`]) when the request was refused before canonicalisation succeeded.
    pub path: &'a str,
    pub decision: &'static str,
    pub policy: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub latency_ms: f64,
    pub reason: Option<&'a str>,
}

impl Entry<'_> {
    pub fn to_line(&self) -> String {
        // Serialising a struct of strings and numbers cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Rounds to microseconds so the JSON stays short.
pub fn latency_ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

enum Msg {
    Line(String),
    /// Write and flush everything before this, then acknowledge.
    Flush(mpsc::Sender<()>),
    /// Reopen the file (after log rotation); a no-op for stdout.
    Reopen,
}

pub struct DecisionLog {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("decision log {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("decision log writer thread: {0}")]
    Spawn(io::Error),
}

fn open(target: &LogTarget) -> Result<Box<dyn Write + Send>, LogError> {
    match target {
        LogTarget::Stdout => Ok(Box::new(io::stdout())),
        LogTarget::File(p) => {
            let f: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| LogError::Open {
                    path: p.display().to_string(),
                    source,
                })?;
            Ok(Box::new(f))
        }
    }
}

impl DecisionLog {
    /// Opens the target (failing now rather than at the first request) and starts the writer.
    pub fn start(target: LogTarget) -> Result<DecisionLog, LogError> {
        let out = open(&target)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        // Detached: at exit we wait for a flush acknowledgement, never join (a blocked pipe would
        // hang the join).
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer(target, out, rx))
            .map_err(LogError::Spawn)?;
        Ok(DecisionLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues one line; never blocks.
    pub fn write(&self, entry: &Entry<'_>) {
        self.send_line(entry.to_line());
    }

    fn send_line(&self, line: String) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn reopen(&self) {
        if self.tx.try_send(Msg::Reopen).is_err() {
            log::warn!("decision log: reopen request dropped (writer busy)");
        }
    }

    /// Waits (at most `timeout`) until every line queued so far is written and flushed.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = mpsc::channel();
        let deadline = std::time::Instant::now() + timeout;
        let mut msg = Msg::Flush(ack_tx);
        // The queue may be full: retry until the deadline rather than block forever.
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::yield_now();
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        ack_rx.recv_timeout(left).is_ok()
    }
}

fn writer(target: LogTarget, out: Box<dyn Write + Send>, rx: Receiver<Msg>) {
    let mut w = Writer {
        out: BufWriter::with_capacity(64 * 1024, out),
        failed: false,
    };
    loop {
        // Block for the first message, then take everything already queued before flushing.
        let Ok(first) = rx.recv() else { break };
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Msg::Line(l) => w.write(l.as_bytes()),
                Msg::Flush(a) => acks.push(a),
                // In order: what came before goes to the old file, what comes after to the new.
                Msg::Reopen => {
                    w.flush();
                    match open(&target) {
                        Ok(f) => {
                            w.out = BufWriter::with_capacity(64 * 1024, f);
                            log::info!("decision log reopened");
                        }
                        Err(e) => log::error!("{e}; keeping the old file"),
                    }
                }
            }
            next = match rx.recv_timeout(Duration::ZERO) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
            };
        }
        w.flush();
        for a in acks {
            let _ = a.send(());
        }
    }
    w.flush();
}

struct Writer {
    out: BufWriter<Box<dyn Write + Send>>,
    /// Set after a failure is logged, so a broken pipe logs once, not once per line.
    failed: bool,
}

impl Writer {
    fn write(&mut self, b: &[u8]) {
        let r = self.out.write_all(b);
        self.note(r);
    }

    fn flush(&mut self) {
        let r = self.out.flush();
        self.note(r);
    }

    fn note(&mut self, r: io::Result<()>) {
        match r {
            Ok(()) => {}
            Err(e) if !self.failed => {
                log::error!("decision log: write failed: {e}");
                self.failed = true;
            }
            Err(_) => {}
        }
    }
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let ms = d.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;

    fn sample<'a>(ts: &'a str) -> Entry<'a> {
        Entry {
            ts,
            pod: Some("ns/pod"),
            container_id: Some("abc"),
            src: "10.0.0.2".parse().unwrap(),
            endpoint: "imds-v4",
            method: "GET",
            path: "/latest/meta-data/",
            decision: Outcome::Allow.as_str(),
            policy: Some("aws"),
            rule: Some("identity"),
            status: 200,
            upstream_status: Some(200),
            latency_ms: 1.25,
            reason: None,
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123); // leap year, end of Feb
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01
        assert_eq!(rfc3339(t), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn line_format() {
        let line = sample("2024-01-01T00:00:00.000Z").to_line();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
        let mut want = vec![
            "ts",
            "pod",
            "container_id",
            "src",
            "endpoint",
            "method",
            "path",
            "decision",
            "policy",
            "rule",
            "status",
            "upstream_status",
            "latency_ms",
            "reason",
        ];
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(v["src"], "10.0.0.2");
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 1.25);
        assert!(v["reason"].is_null());
        // Field order is stable (ts first), so lines are easy to read by eye.
        assert!(line.starts_with("{\"ts\":"));
    }

    #[test]
    fn hostile_targets_stay_on_one_line() {
        let mut e = sample("t");
        e.path = "/a\n{\"decision\":\"allow\"}\r\u{0}\u{7f}";
        e.pod = None;
        e.decision = Outcome::Invalid.as_str();
        let line = e.to_line();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/a\n{\"decision\":\"allow\"}\r\u{0}\u{7f}");
        assert_eq!(v["decision"], "invalid");
        assert!(v["pod"].is_null());
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    fn writes_lines_to_a_file_and_reopens() {
        let p = std::env::temp_dir().join(format!("mg-dlog-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let log = DecisionLog::start(LogTarget::File(p.clone())).unwrap();
        for _ in 0..100 {
            log.write(&sample("t"));
        }
        assert!(log.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 100);
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        // Rotation: move the file away, reopen, and the next lines go to a new file.
        let rotated = p.with_extension("1");
        std::fs::rename(&p, &rotated).unwrap();
        log.reopen();
        log.write(&sample("t2"));
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1);
        assert_eq!(log.dropped(), 0);
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&rotated);
    }

    #[test]
    fn unwritable_path_fails_at_start() {
        let e = DecisionLog::start(LogTarget::File("/nonexistent-dir-mg/x.jsonl".into()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent-dir-mg/x.jsonl"));
    }
}
