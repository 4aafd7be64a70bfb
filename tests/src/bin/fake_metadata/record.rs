//! The request record: one JSON line per request, appended before the answer is sent.
//!
//! Each line is written with a single `write` to a file opened with `O_APPEND`, so concurrent
//! connections never interleave and a reader never sees half a line unless it reads during that
//! one call (readers ignore a last line without a newline). No fsync: the page cache makes the line
//! visible to every reader on this machine as soon as `write` returns.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Serialize)]
pub struct Line<'a> {
    /// Seconds since the Unix epoch, with microseconds.
    pub ts: f64,
    /// The `--listen` address that accepted the connection.
    pub listener: String,
    /// The connection's local address (the address the client actually reached).
    pub local: String,
    pub peer: String,
    pub method: &'a str,
    /// The request target exactly as on the request line (lossy UTF-8; see `target_hex`).
    pub target: String,
    /// Hex of the raw target bytes, only when they are not plain printable ASCII.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
    pub headers: &'a [(String, String)],
    pub version: &'a str,
    pub body_len: usize,
    /// Set when the bytes received were not an HTTP request; `raw` holds them (lossy).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub malformed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn target_fields(target: &[u8]) -> (String, Option<String>) {
    let plain = target.iter().all(|b| (0x21..0x7f).contains(b));
    let hex = (!plain).then(|| target.iter().map(|b| format!("{b:02x}")).collect());
    (String::from_utf8_lossy(target).into_owned(), hex)
}

pub struct Conn {
    pub listener: SocketAddr,
    pub local: String,
    pub peer: String,
}

#[derive(Debug)]
pub struct Recorder {
    file: Option<File>,
}

impl Recorder {
    pub fn open(path: Option<&Path>) -> Result<Recorder, String> {
        let file = match path {
            None => None,
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("--record {}: {e}", p.display()))?,
            ),
        };
        Ok(Recorder { file })
    }

    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Appends one line. A failure is reported on stderr and otherwise ignored: the answer still goes
    /// out, and a test that reads the record will notice the missing line.
    pub fn write(&self, line: &Line<'_>) {
        let Some(mut file) = self.file.as_ref() else {
            return;
        };
        let mut buf = match serde_json::to_vec(line) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("fake-metadata: record: {e}");
                return;
            }
        };
        buf.push(b'\n');
        match file.write(&buf) {
            Ok(n) if n == buf.len() => {}
            Ok(n) => eprintln!("fake-metadata: record: short write {n}/{}", buf.len()),
            Err(e) => eprintln!("fake-metadata: record: {e}"),
        }
    }
}
