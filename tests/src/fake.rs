//! Harness for `fake-metadata`, the stand-in metadata service: start it (optionally inside a named
//! network namespace) with a fresh record file, wait until every port accepts, read what it recorded,
//! and stop it on drop.
//!
//! The record is one JSON line per request, written before the answer (see
//! `src/bin/fake_metadata/record.rs`), so once a client has its answer the line is there to read.

use serde::Deserialize;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What fake-metadata answers for `/latest/meta-data/instance-id`.
pub const INSTANCE_ID: &str = "i-0fa4e5c0ffee00001";
/// The role listed under `/latest/meta-data/iam/security-credentials/`.
pub const AWS_ROLE: &str = "metaguard-lab-node-role";
/// Every secret fake-metadata serves (credentials, tokens, user-data, kube-env) contains this.
pub const SECRET_MARKER: &str = "FAKE-SECRET";
/// The body of `/bench` and of every answer under `--bench`.
pub const BENCH_BODY: &[u8] = b"ok\n";

/// How long `start` waits for the ports to accept.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("starting {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("fake-metadata exited before it was ready ({status}); stderr: {stderr}")]
    Exited { status: String, stderr: String },
    #[error("fake-metadata: {addr} did not accept within {waited:?}")]
    NotReady { addr: SocketAddr, waited: Duration },
    #[error("network namespace {name}: {source}")]
    Netns {
        name: String,
        source: std::io::Error,
    },
    #[error("temporary directory {path}: {source}")]
    TempDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One request as fake-metadata recorded it.
#[derive(Debug, Clone, Deserialize)]
pub struct Recorded {
    pub ts: f64,
    /// The `--listen` address that accepted the connection.
    pub listener: String,
    /// The local address of the connection (the address the client reached).
    pub local: String,
    pub peer: String,
    pub method: String,
    /// The request target exactly as on the request line (lossy UTF-8).
    pub target: String,
    /// Hex of the raw target, present only when it is not plain printable ASCII.
    #[serde(default)]
    pub target_hex: Option<String>,
    /// Headers in order, names in their original case.
    pub headers: Vec<(String, String)>,
    pub version: String,
    #[serde(default)]
    pub body_len: usize,
    /// The bytes were not an HTTP request (then `raw` has them).
    #[serde(default)]
    pub malformed: bool,
    #[serde(default)]
    pub raw: Option<String>,
}

/// First value of header `name` (case-insensitive) in `(name, value)` pairs: the lookup of the
/// fake server's requests ([`Recorded`], and its own parser), and of [`crate::raw`]'s responses.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Recorded {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.parse().ok()
    }

    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr().map(|a| a.ip())
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local.parse().ok()
    }
}

/// A record file written by fake-metadata (one started here, or one the lab started).
#[derive(Debug, Clone)]
pub struct RecordFile {
    path: PathBuf,
}

impl RecordFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RecordFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every complete line so far (a missing file is an empty record; a last line still being
    /// written, without its newline, is left for the next read).
    pub fn requests(&self) -> Vec<Recorded> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("reading {}: {e}", self.path.display()),
        };
        let complete = match data.iter().rposition(|&b| b == b'\n') {
            Some(i) => &data[..=i],
            None => return Vec::new(),
        };
        complete
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).unwrap_or_else(|e| {
                    panic!(
                        "{}: bad record line {:?}: {e}",
                        self.path.display(),
                        String::from_utf8_lossy(l)
                    )
                })
            })
            .collect()
    }

    pub fn count_matching(&self, pred: impl Fn(&Recorded) -> bool) -> usize {
        self.requests().iter().filter(|r| pred(r)).count()
    }

    /// Requests whose target contains `needle`.
    pub fn count_target_containing(&self, needle: &str) -> usize {
        self.count_matching(|r| r.target.contains(needle))
    }

    /// Polls until a recorded request matches, or the timeout passes.
    pub fn wait_for(
        &self,
        pred: impl Fn(&Recorded) -> bool,
        timeout: Duration,
    ) -> Option<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Empties the record (fake-metadata appends with O_APPEND, so this is safe while it runs).
    pub fn clear(&self) {
        if let Err(e) = File::create(&self.path) {
            panic!("truncating {}: {e}", self.path.display());
        }
    }
}

/// Options for [`FakeMetadata::start_with`].
#[derive(Debug, Clone, Default)]
pub struct FakeOptions {
    /// Network namespace name (as in `ip netns`); `None` runs it in the caller's namespace.
    pub netns: Option<String>,
    pub listen: Vec<SocketAddr>,
    /// Answer everything with the fixed benchmark body.
    pub bench: bool,
    /// Skip the record file (benchmarks).
    pub no_record: bool,
    /// `--aws-credentials`: a JSON file with the node credentials to serve (see
    /// `crate::moto::NodeCredentials::write`), instead of the `FAKE-SECRET` ones.
    pub aws_credentials: Option<PathBuf>,
    /// `--require-imdsv2`: 401 for AWS requests without a valid token.
    pub require_imdsv2: bool,
}

/// A running fake-metadata; killed and reaped on drop, its temporary directory removed.
#[derive(Debug)]
pub struct FakeMetadata {
    child: Child,
    dir: PathBuf,
    record: RecordFile,
    listen: Vec<SocketAddr>,
}

fn temp_dir() -> Result<PathBuf, FakeError> {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!(
        "mg-fake-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&path).map_err(|source| FakeError::TempDir {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Waits for the `ready` line fake-metadata prints once every listener is bound; returns the
/// addresses from its `listening ADDR` lines (ports chosen by the kernel for port 0).
fn wait_ready_line(stdout: ChildStdout, timeout: Duration) -> Option<Vec<SocketAddr>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bound = Vec::new();
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) if l == "ready" => {
                    let _ = tx.send(std::mem::take(&mut bound));
                }
                Ok(l) => {
                    if let Some(a) = l.strip_prefix("listening ").and_then(|a| a.parse().ok()) {
                        bound.push(a);
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx.recv_timeout(timeout).ok()
}

/// Connects to every address from inside `netns` (a thread that enters it), polling until each
/// accepts or the deadline passes.
fn probe(netns: Option<&str>, addrs: &[SocketAddr], deadline: Instant) -> Result<(), FakeError> {
    let ns_file = match netns {
        Some(n) => {
            Some(
                File::open(format!("/run/netns/{n}")).map_err(|source| FakeError::Netns {
                    name: n.to_string(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let addrs = addrs.to_vec();
    let name = netns.unwrap_or_default().to_string();
    let start = Instant::now();
    let handle = std::thread::spawn(move || -> Result<(), FakeError> {
        if let Some(f) = ns_file {
            // This thread only: the caller's namespace is untouched.
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                FakeError::Netns {
                    name,
                    source: std::io::Error::from(e),
                }
            })?;
        }
        for addr in addrs {
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(FakeError::NotReady {
                        addr,
                        waited: start.elapsed(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    });
    handle
        .join()
        .unwrap_or_else(|_| panic!("probe thread panicked"))
}

impl FakeMetadata {
    /// Starts fake-metadata inside the named network namespace, listening on `listen`.
    pub fn start_in_netns(netns: &str, listen: &[SocketAddr]) -> Result<FakeMetadata, FakeError> {
        Self::start_with(FakeOptions {
            netns: Some(netns.to_string()),
            listen: listen.to_vec(),
            ..FakeOptions::default()
        })
    }

    /// Starts fake-metadata in the caller's network namespace.
    pub fn start(listen: &[SocketAddr]) -> Result<FakeMetadata, FakeError> {
        Self::start_with(FakeOptions {
            listen: listen.to_vec(),
            ..FakeOptions::default()
        })
    }

    pub fn start_with(opts: FakeOptions) -> Result<FakeMetadata, FakeError> {
        let bin = crate::bins::bin("fake-metadata");
        let dir = temp_dir()?;
        let record_path = dir.join("record.jsonl");
        let mut cmd = match &opts.netns {
            // `ip netns exec` execs the program: the child's pid is the server's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        for a in &opts.listen {
            cmd.arg("--listen").arg(a.to_string());
        }
        if !opts.no_record {
            cmd.arg("--record").arg(&record_path);
        }
        if opts.bench {
            cmd.arg("--bench");
        }
        if let Some(f) = &opts.aws_credentials {
            cmd.arg("--aws-credentials").arg(f);
        }
        if opts.require_imdsv2 {
            cmd.arg("--require-imdsv2");
        }
        // stderr goes to a file: a pipe nobody reads could fill up and stall the server.
        let stderr_path = dir.join("stderr.log");
        let stderr = File::create(&stderr_path).map_err(|source| FakeError::TempDir {
            path: stderr_path,
            source,
        })?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().map_err(|source| FakeError::Spawn {
            bin: bin.display().to_string(),
            source,
        })?;
        let stdout = child.stdout.take();
        // From here on Drop kills and reaps the child, whatever fails.
        let mut fake = FakeMetadata {
            child,
            dir,
            record: RecordFile::new(record_path),
            listen: opts.listen.clone(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        match stdout.and_then(|out| wait_ready_line(out, READY_TIMEOUT)) {
            Some(bound) if bound.len() == opts.listen.len() => fake.listen = bound,
            _ => return Err(fake.exit_error()),
        }
        probe(opts.netns.as_deref(), &fake.listen, deadline)?;
        Ok(fake)
    }

    fn exit_error(&mut self) -> FakeError {
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        let stderr = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        FakeError::Exited { status, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The addresses it listens on, as bound (a port 0 given to `--listen` is the real port here).
    pub fn listen(&self) -> &[SocketAddr] {
        &self.listen
    }

    pub fn record(&self) -> &RecordFile {
        &self.record
    }

    pub fn record_path(&self) -> &Path {
        self.record.path()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.record.requests()
    }

    pub fn count_matching(&self, pred: impl Fn(&Recorded) -> bool) -> usize {
        self.record.count_matching(pred)
    }

    pub fn wait_for(
        &self,
        pred: impl Fn(&Recorded) -> bool,
        timeout: Duration,
    ) -> Option<Recorded> {
        self.record.wait_for(pred, timeout)
    }
}

impl Drop for FakeMetadata {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, raw: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    // Loopback in the test's own namespace: no root needed. Needs the built fake-metadata (cargo
    // builds the package's binaries before its tests).
    #[test]
    fn records_before_answering_and_keeps_the_raw_target() {
        let fake =
            FakeMetadata::start(&["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()])
                .unwrap();
        let v4 = fake.listen()[0];
        assert_ne!(v4.port(), 0);
        let answer = get(
            v4,
            "GET /latest/meta-data//instance-id/./?x=%2F HTTP/1.1\r\nHost: h\r\nX-Odd-Case: 1\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.contains(INSTANCE_ID), "{answer}");
        // The line is there as soon as the answer is.
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].target, "/latest/meta-data//instance-id/./?x=%2F");
        assert_eq!(reqs[0].path(), "/latest/meta-data//instance-id/./");
        assert_eq!(
            reqs[0].headers[1],
            ("X-Odd-Case".to_string(), "1".to_string())
        );
        assert_eq!(reqs[0].peer_ip(), Some("127.0.0.1".parse().unwrap()));

        let garbage = get(fake.listen()[1], "\x01\x02 not http\r\n\r\n");
        assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
        assert_eq!(fake.count_matching(|r| r.malformed), 1);
        assert!(fake
            .record()
            .wait_for(|r| r.listener.starts_with("[::1]"), Duration::from_secs(1))
            .is_some());
        fake.record().clear();
        assert!(fake.requests().is_empty());
    }

    #[test]
    fn secrets_carry_the_marker() {
        let fake = FakeMetadata::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let creds = get(
            fake.listen()[0],
            &format!("GET /latest/meta-data/iam/security-credentials/{AWS_ROLE} HTTP/1.0\r\n\r\n"),
        );
        assert!(creds.contains(SECRET_MARKER), "{creds}");
    }
}
