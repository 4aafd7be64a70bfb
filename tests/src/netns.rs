//! Throwaway network namespaces for tests.
//!
//! [`Netns::new`] creates `mg<role>-<pid>-<n>` (unique per test process and call) with `ip netns
//! add`, brings its loopback up, and deletes it on `Drop`, after killing every process still in it
//! (they can only be ones this test started there). Commands run inside with `ip netns exec`;
//! sockets are made on a short-lived thread that has entered the namespace (a socket stays in the
//! namespace it was created in, so the caller uses it from any thread afterwards).
//!
//! Also: [`wait_for`] (poll a condition with a deadline instead of sleeping), and helpers that
//! accept or receive "within" a time, for the assertions that something does *not* arrive.

use nix::sched::{setns, CloneFlags};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Path of `ip` (iproute2).
pub const IP: &str = "/usr/sbin/ip";

/// A unique name for this process: `mg<role>-<pid>-<n>`.
pub fn unique_name(role: &str) -> String {
    format!(
        "mg{role}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Polls `cond` every 10 ms until it is true or `timeout` passes; panics naming `what` then.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`wait_for`], for a value: polls until `f` returns `Some`.
pub fn wait_for_value<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One throwaway network namespace. See the module docs.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    children: Mutex<Vec<Child>>,
    deleted: bool,
}

impl Netns {
    /// Creates `mg<role>-<pid>-<n>` and brings `lo` up.
    pub fn new(role: &str) -> Netns {
        let name = unique_name(role);
        let out = Command::new(IP)
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns {
            path: PathBuf::from(format!("/run/netns/{name}")),
            name,
            children: Mutex::new(Vec::new()),
            deleted: false,
        };
        ns.ok(IP, &["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: what a runtime passes as CNI_NETNS.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }

    /// A `Command` that runs `program args...` inside the namespace (through `ip netns exec`,
    /// which also gives it a /sys of this namespace).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(IP);
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs a command inside and returns its output, whatever its status.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn ip netns exec")
    }

    /// Runs a command inside, panics with its stderr unless it succeeds; returns stdout.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "in {}: {program} {args:?} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sh -c script` inside; panics unless it succeeds; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        self.ok("/bin/sh", &["-c", script])
    }

    /// Starts a long-running command inside; it is killed when the namespace is dropped.
    /// Returns its pid.
    pub fn spawn(&self, mut cmd: Command) -> u32 {
        let child = cmd.spawn().expect("spawn in netns");
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        pid
    }

    /// Runs `f` on a fresh thread inside the namespace and returns its result.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(&self.path).expect("open netns file");
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("netns thread panicked")
        })
    }

    /// A TCP listener on `addr` inside the namespace. Retries for a while when the address is
    /// not usable yet (IPv6 duplicate address detection).
    pub fn tcp_listen(&self, addr: SocketAddr) -> TcpListener {
        wait_for_value(
            &format!("binding TCP {addr} in {}", self.name),
            Duration::from_secs(5),
            || self.enter(|| TcpListener::bind(addr)).ok(),
        )
    }

    /// A UDP socket bound to `addr` inside the namespace (retrying like [`Netns::tcp_listen`]).
    pub fn udp_bind(&self, addr: SocketAddr) -> UdpSocket {
        wait_for_value(
            &format!("binding UDP {addr} in {}", self.name),
            Duration::from_secs(5),
            || self.enter(|| UdpSocket::bind(addr)).ok(),
        )
    }

    /// A TCP connection from inside the namespace, optionally from source address `from`.
    pub fn tcp_connect(
        &self,
        from: Option<std::net::IpAddr>,
        to: SocketAddr,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let sock = self.enter(|| -> io::Result<Socket> {
            let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
            if let Some(src) = from {
                // Freebind: the test may bind an address the kernel still considers tentative.
                if src.is_ipv6() {
                    s.set_freebind_ipv6(true)?;
                } else {
                    s.set_freebind(true)?;
                }
                s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
            }
            Ok(s)
        })?;
        sock.connect_timeout(&SockAddr::from(to), timeout)?;
        Ok(sock.into())
    }

    /// Sends one UDP datagram from inside the namespace.
    pub fn udp_send(&self, to: SocketAddr, payload: &[u8]) -> io::Result<usize> {
        let unspecified: SocketAddr = if to.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let sock = self.enter(|| UdpSocket::bind(unspecified))?;
        sock.send_to(payload, to)
    }

    /// Deletes the namespace now (as a runtime does when a pod goes away), killing what runs in it.
    pub fn delete(&mut self) {
        if self.deleted {
            return;
        }
        self.deleted = true;
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for c in children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Anything else still in the namespace was started from one of those commands.
        if let Ok(out) = Command::new(IP)
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new(IP).args(["netns", "del", &self.name]).output();
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Accepts one connection if one arrives within `timeout`.
pub fn accept_within(l: &TcpListener, timeout: Duration) -> Option<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok(c) => return Some(c),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
}

/// Receives one datagram if one arrives within `timeout`.
pub fn recv_within(s: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut buf = vec![0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some((buf, from))
}

/// A temporary directory removed on `Drop`.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(role: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique_name(role));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
