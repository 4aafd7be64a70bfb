//! One JSON line per request, written by a background thread so logging never blocks a request.
//!
//! Requests serialise their line into a per-thread scratch buffer and append it to a shared batch
//! under a short lock; nobody is woken per line. The writer thread takes the whole batch every
//! [`FLUSH_INTERVAL`] (or sooner when it grows past [`WAKE_BYTES`]) and writes it with one call, so
//! under load one `write` carries hundreds of lines and the request path makes no system call
//! for logging. If the writer falls behind (a stalled disk, a full pipe) and the batch reaches
//! [`MAX_BUFFERED_BYTES`], lines are dropped and counted
//! (`metaguard_proxy_decision_log_dropped_total`) rather than slowing every pod down.

use crate::config::LogTarget;
use crate::http1::fmt::{push_decimal, rfc3339_millis};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long a line may wait in the batch while the daemon is busy.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// A batch this large wakes the writer early.
pub const WAKE_BYTES: usize = 256 * 1024;
/// Past this much unwritten log, new lines are dropped (and counted).
pub const MAX_BUFFERED_BYTES: usize = 8 * 1024 * 1024;
/// Raw (rejected) request targets are cut to this many bytes in the log.
pub const MAX_LOGGED_TARGET: usize = 1024;

/// The fields of one decision line. Field order here is the order in the JSON line.
#[derive(Debug)]
pub struct Entry<'a> {
    /// RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
    pub ts: Timestamp,
    /// The caller's `pod` and `container_id` fields, rendered once per pod record; both are
    /// null when the caller has no record.
    pub who: Option<&'a WhoJson>,
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
    pub latency: Duration,
    pub reason: Option<&'a str>,
    /// What the answer cache did: "hit", "miss" or "off" (see `outcome::CacheUse`).
    pub cache: &'static str,
    /// On the AWS endpoints under `[aws]`: "v1" or "v2" (how the request was authenticated).
    /// The field is left out otherwise.
    pub imds_version: Option<&'static str>,
    /// The caller's AWS role ARN, when the role mapping gives it one (left out otherwise).
    pub role: Option<&'a str>,
}

impl Entry<'_> {
    /// Appends the JSON line (with its newline) to `out`. Written by hand rather than through
    /// serde: this runs once per request and the generic serializer was a visible share of the
    /// denied path's CPU time.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        out.extend_from_slice(&rfc3339_millis(self.ts.0));
        out.extend_from_slice(b"\",");
        match self.who {
            Some(w) => out.extend_from_slice(&w.0),
            None => out.extend_from_slice(b"\"pod\":null,\"container_id\":null"),
        }
        out.extend_from_slice(b",\"src\":\"");
        match self.src {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                push_decimal(out, a.into());
                for o in [b, c, d] {
                    out.push(b'.');
                    push_decimal(out, o.into());
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(out, "{v6}");
            }
        }
        out.extend_from_slice(b"\",\"endpoint\":");
        json_token(out, self.endpoint);
        out.extend_from_slice(b",\"method\":");
        json_token(out, self.method);
        out.extend_from_slice(b",\"path\":");
        json_str(out, self.path);
        out.extend_from_slice(b",\"decision\":");
        json_token(out, self.decision);
        out.extend_from_slice(b",\"policy\":");
        json_opt_token(out, self.policy);
        out.extend_from_slice(b",\"rule\":");
        json_opt_token(out, self.rule);
        out.extend_from_slice(b",\"status\":");
        push_decimal(out, u64::from(self.status));
        out.extend_from_slice(b",\"upstream_status\":");
        match self.upstream_status {
            Some(s) => push_decimal(out, u64::from(s)),
            None => out.extend_from_slice(b"null"),
        }
        // Milliseconds with microsecond resolution: "1.250".
        let us = u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX);
        out.extend_from_slice(b",\"latency_ms\":");
        push_decimal(out, us / 1000);
        let frac = us % 1000;
        out.extend_from_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
        out.extend_from_slice(b",\"reason\":");
        json_opt_str(out, self.reason);
        out.extend_from_slice(b",\"cache\":");
        json_token(out, self.cache);
        if let Some(v) = self.imds_version {
            out.extend_from_slice(b",\"imds_version\":");
            json_token(out, v);
        }
        if let Some(r) = self.role {
            out.extend_from_slice(b",\"role\":");
            json_str(out, r);
        }
        out.extend_from_slice(b"}\n");
    }

    pub fn to_line(&self) -> String {
        let mut v = Vec::with_capacity(256);
        self.write_line(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }
}

/// A caller's `"pod":…,"container_id":…` as it appears in every decision line of its requests:
/// escaped once when the record is loaded instead of on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoJson(Box<[u8]>);

impl WhoJson {
    /// `pod` is `namespace/name` when the record has both.
    pub fn new(pod: Option<&str>, container_id: &str) -> WhoJson {
        let mut v = Vec::with_capacity(40 + pod.map_or(4, str::len) + container_id.len());
        v.extend_from_slice(b"\"pod\":");
        json_opt_str(&mut v, pod);
        v.extend_from_slice(b",\"container_id\":");
        json_str(&mut v, container_id);
        WhoJson(v.into_boxed_slice())
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string of a value that never needs escaping, by how it was made: the method (an HTTP
/// token), endpoint names, policy names and rule ids (checked against a small alphabet when the
/// configuration and policies load) and the fixed decision and cache words. Skipping the escape
/// check for these halves the cost of a line; tests check it would never have escaped anything.
fn json_token(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!needs_escape(s.as_bytes()), "{s:?} needs escaping");
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn json_opt_token(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_token(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string: `"`, `\\` and control characters escaped, everything else (UTF-8 included) as is.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Nearly every value needs no escaping: check eight bytes at a time, copy in one go.
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether `bytes` holds a control byte, `"` or `\\`: eight bytes per step with the classic
/// word tricks ("has a byte less than n", "has a zero byte"), which are exact for whether any
/// byte matches. Bytes >= 0x80 (UTF-8) never match.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(c) else {
            return true;
        };
        let x = u64::from_le_bytes(word);
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let quote = zero_byte(x ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(x ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A point in time, written as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
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

#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    /// The writer is waiting with nothing to write: the next line must wake it.
    writer_idle: bool,
    /// Somebody asked for the writer now (a flush, a reopen, a large batch).
    wake_requested: bool,
    acks: Vec<mpsc::Sender<()>>,
    /// A reopen was asked for when `data` was this long: what came before goes to the old file,
    /// what came after to the new one.
    reopen_at: Option<usize>,
}

struct Shared {
    batch: Mutex<Batch>,
    wake: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct DecisionLog {
    shared: Arc<Shared>,
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

thread_local! {
    /// Per-thread serialisation buffer: no allocation per line once warm.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl DecisionLog {
    /// Opens the target (failing now rather than at the first request) and starts the writer.
    pub fn start(target: LogTarget) -> Result<DecisionLog, LogError> {
        let out = open(&target)?;
        let shared = Arc::new(Shared {
            batch: Mutex::new(Batch::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let s = shared.clone();
        // Detached: at exit we wait for a flush acknowledgement, never join (a blocked pipe would
        // hang the join).
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer(target, out, s))
            .map_err(LogError::Spawn)?;
        Ok(DecisionLog { shared })
    }

    /// Queues one line; never blocks on I/O.
    pub fn write(&self, entry: &Entry<'_>) {
        SCRATCH.with(|cell| {
            let Ok(mut scratch) = cell.try_borrow_mut() else {
                // Re-entered from within serialisation: impossible, but never panic for a log.
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            };
            scratch.clear();
            entry.write_line(&mut scratch);
            self.append(&scratch);
        });
    }

    fn append(&self, line: &[u8]) {
        let mut b = self.shared.lock();
        if b.data.len() + line.len() > MAX_BUFFERED_BYTES {
            drop(b);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        b.data.extend_from_slice(line);
        let wake = (b.writer_idle || b.data.len() >= WAKE_BYTES) && !b.wake_requested;
        if wake {
            b.wake_requested = true;
            b.writer_idle = false;
        }
        drop(b);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Reopens the file (after log rotation); a no-op for stdout. Asynchronous.
    pub fn reopen(&self) {
        let mut b = self.shared.lock();
        if b.reopen_at.is_none() {
            b.reopen_at = Some(b.data.len());
        }
        b.wake_requested = true;
        drop(b);
        self.shared.wake.notify_one();
    }

    /// Waits (at most `timeout`) until every line queued so far is written and flushed.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        let mut b = self.shared.lock();
        b.acks.push(tx);
        b.wake_requested = true;
        drop(b);
        self.shared.wake.notify_one();
        rx.recv_timeout(timeout).is_ok()
    }
}

fn writer(target: LogTarget, out: Box<dyn Write + Send>, shared: Arc<Shared>) {
    let mut w = Writer { out, failed: false };
    let mut spare: Vec<u8> = Vec::new();
    loop {
        let (mut data, acks, reopen) = {
            let mut b = shared.lock();
            if b.data.is_empty() && !b.wake_requested {
                // Nothing to do: sleep until a line, a flush or a reopen wakes us.
                b.writer_idle = true;
                while !b.wake_requested {
                    b = shared.wake.wait(b).unwrap_or_else(|e| e.into_inner());
                }
            } else if !b.wake_requested {
                // Lines are arriving: let them collect for a while, then write them together.
                let deadline = Instant::now() + FLUSH_INTERVAL;
                while !b.wake_requested {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    b = shared
                        .wake
                        .wait_timeout(b, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
            b.wake_requested = false;
            b.writer_idle = false;
            std::mem::swap(&mut b.data, &mut spare);
            (
                std::mem::take(&mut spare),
                std::mem::take(&mut b.acks),
                b.reopen_at.take(),
            )
        };
        let split = reopen.unwrap_or(data.len()).min(data.len());
        w.write(&data[..split]);
        w.flush();
        if reopen.is_some() {
            match open(&target) {
                Ok(f) => {
                    w.out = f;
                    log::info!("decision log reopened");
                }
                Err(e) => log::error!("{e}; keeping the old file"),
            }
            w.write(&data[split..]);
            w.flush();
        }
        for a in acks {
            let _ = a.send(());
        }
        // Keep the allocation for the next swap, but not a huge one left by a burst.
        data.clear();
        if data.capacity() > 4 * WAKE_BYTES {
            data = Vec::new();
        }
        spare = data;
    }
}

struct Writer {
    out: Box<dyn Write + Send>,
    /// Set after a failure is logged, so a broken pipe logs once, not once per batch.
    failed: bool,
}

impl Writer {
    fn write(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        let r = self.out.write_all(b);
        self.note(r);
    }

    fn flush(&mut self) {
        let r = self.out.flush();
        self.note(r);
    }

    fn note(&mut self, r: io::Result<()>) {
        match r {
            Ok(()) => self.failed = false,
            Err(e) if !self.failed => {
                log::error!("decision log: write failed: {e}");
                self.failed = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use std::time::UNIX_EPOCH;

    static SAMPLE_WHO: std::sync::LazyLock<WhoJson> =
        std::sync::LazyLock::new(|| WhoJson::new(Some("ns/pod"), "abc"));

    fn sample<'a>(_tag: &'a str) -> Entry<'a> {
        Entry {
            ts: Timestamp(UNIX_EPOCH + Duration::from_millis(1_709_251_199_123)),
            who: Some(&SAMPLE_WHO),
            src: "10.0.0.2".parse().unwrap(),
            endpoint: "imds-v4",
            method: "GET",
            path: "/latest/meta-data/",
            decision: Outcome::Allow.as_str(),
            policy: Some("aws"),
            rule: Some("identity"),
            status: 200,
            upstream_status: Some(200),
            latency: Duration::from_micros(1250),
            reason: None,
            cache: "hit",
            imds_version: None,
            role: None,
        }
    }

    #[test]
    fn imds_version_and_role_are_written_when_known() {
        let plain = sample("").to_line();
        assert!(!plain.contains("imds_version") && !plain.contains("\"role\""));
        let mut e = sample("");
        e.imds_version = Some("v2");
        e.role = Some("arn:aws:iam::123456789012:role/r");
        let v: serde_json::Value = serde_json::from_str(&e.to_line()).unwrap();
        assert_eq!(v["imds_version"], "v2");
        assert_eq!(v["role"], "arn:aws:iam::123456789012:role/r");
    }

    #[test]
    fn needs_escape_agrees_with_the_byte_by_byte_check() {
        let naive = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        // Every byte value at every position of strings up to 17 bytes long (two words and a
        // tail), around plain and non-ASCII neighbours.
        for len in 1..=17 {
            for pos in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'a', 0xc3, 0x7f, b' '] {
                        let mut s = vec![fill; len];
                        s[pos] = b;
                        assert_eq!(needs_escape(&s), naive(&s), "{s:?}");
                    }
                }
            }
        }
        assert!(!needs_escape(b""));
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
            "cache",
        ];
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(v["src"], "10.0.0.2");
        assert_eq!(v["pod"], "ns/pod");
        assert_eq!(v["container_id"], "abc");
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 1.25);
        assert!(v["reason"].is_null());
        assert_eq!(v["cache"], "hit");
        // Field order is stable (ts first), so lines are easy to read by eye.
        assert!(
            line.starts_with("{\"ts\":\"2024-02-29T23:59:59.123Z\","),
            "{line}"
        );
    }

    #[test]
    fn hostile_targets_stay_on_one_line() {
        let mut e = sample("t");
        e.path = "/a\n{\"decision\":\"allow\"}\r\u{0}\u{7f}";
        e.who = None;
        e.decision = Outcome::Invalid.as_str();
        let line = e.to_line();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/a\n{\"decision\":\"allow\"}\r\u{0}\u{7f}");
        assert_eq!(v["decision"], "invalid");
        assert!(v["pod"].is_null());
        assert!(v["container_id"].is_null());
        // Whatever a record holds stays inside its own fields.
        let who = WhoJson::new(Some("ns/\"x\n"), "c\"},{\"decision\":\"allow");
        e.who = Some(&who);
        let v: serde_json::Value = serde_json::from_str(&e.to_line()).unwrap();
        assert_eq!(v["pod"], "ns/\"x\n");
        assert_eq!(v["container_id"], "c\"},{\"decision\":\"allow");
        assert_eq!(v["decision"], "invalid");
    }

    #[test]
    fn every_character_round_trips_through_json() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€😀\u{85}\u{2028}");
        let mut e = sample("t");
        e.path = &all;
        e.reason = Some(&all);
        e.latency = Duration::from_micros(12_345_678);
        let line = e.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], all.as_str());
        assert_eq!(v["reason"], all.as_str());
        assert_eq!(v["latency_ms"], 12345.678);
        assert_eq!(v["src"], "10.0.0.2");
        let mut e = sample("t");
        e.src = "fd00::5".parse().unwrap();
        e.upstream_status = None;
        e.latency = Duration::ZERO;
        let v: serde_json::Value = serde_json::from_str(&e.to_line()).unwrap();
        assert_eq!(v["src"], "fd00::5");
        assert!(v["upstream_status"].is_null());
        assert_eq!(v["latency_ms"], 0.0);
    }

    #[test]
    fn tokens_written_unescaped_never_need_escaping() {
        // Every byte the validators these values pass accept: `http::Method` (methods), the
        // policy loader (policy names, rule ids), the configuration (endpoint names).
        let mut accepted = 0;
        for b in 0..=255u8 {
            let method = http::Method::from_bytes(&[b]).is_ok();
            let name = crate::policy::is_name_byte(b);
            let endpoint = crate::config::is_endpoint_name_byte(b);
            if method || name || endpoint {
                assert!(
                    !needs_escape(&[b]),
                    "byte {b} is accepted and needs escaping"
                );
                accepted += 1;
            }
        }
        assert!(accepted > 70, "{accepted}");
        for o in Outcome::ALL {
            assert!(!needs_escape(o.as_str().as_bytes()));
        }
        for c in crate::outcome::CacheUse::ALL {
            assert!(!needs_escape(c.as_str().as_bytes()));
        }
        let set = crate::policy::PolicySet::builtin_default();
        for name in set.policy_names() {
            assert!(!needs_escape(name.as_bytes()), "{name}");
        }
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
        // Rotation: move the file away, reopen, and the next lines go to a new file (also when
        // they reach the writer in the same batch as the reopen).
        let rotated = p.with_extension("1");
        std::fs::rename(&p, &rotated).unwrap();
        log.write(&sample("before"));
        log.reopen();
        log.write(&sample("t2"));
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1);
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            101
        );
        assert_eq!(log.dropped(), 0);
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&rotated);
    }

    #[test]
    fn many_threads_many_lines_none_lost_or_torn() {
        let p = std::env::temp_dir().join(format!("mg-dlog-mt-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let log = Arc::new(DecisionLog::start(LogTarget::File(p.clone())).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for _ in 0..5000 {
                        log.write(&sample("t"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(log.flush(Duration::from_secs(10)));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 20_000);
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
        assert_eq!(log.dropped(), 0);
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn unwritable_path_fails_at_start() {
        let e = DecisionLog::start(LogTarget::File("/nonexistent-dir-mg/x.jsonl".into()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent-dir-mg/x.jsonl"));
    }
}
