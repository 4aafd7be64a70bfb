//! `mgcurl`: a tiny HTTP/1.1 client for the lab's containers (busybox `wget` cannot send PUT, and
//! hides the body of an error answer, which is where the proxy explains a denial).
//!
//! Usage: mgcurl [-X METHOD] [-H 'Name: value']... [-d BODY] [-m SECONDS] [-i] [--json]
//!               [--target RAW-TARGET] [-o FILE] http://IP[:PORT]/PATH
//!
//! Only literal addresses (IPv4 or [IPv6]): nothing is ever resolved. The request is sent with
//! `Connection: close` and read to the end.
//!
//! Output: the body (with `-i`, the status line and headers first); `--json` prints one line
//! `{"ok":true,"status":..,"reason":..,"headers":[[n,v]..],"body":".."}` or
//! `{"ok":false,"error":"refused|timeout|reset|empty|unreachable|io","detail":".."}`.
//! Exit status, like curl's: 0 answer below 400, 22 answer 400 or above, 7 connection refused or
//! unreachable, 28 timeout, 56 connection reset, 52 empty reply, 2 usage, 1 anything else.
//! With `--json` the status is 0 whatever the outcome (the line says it).
//!
//! `-o FILE` writes the output to FILE (through a temporary name and a rename) instead of stdout:
//! `ctr task exec` (containerd 1.6) now and then loses the stdout of a short-lived process under
//! load, so the lab's tests read a file from the container's root filesystem instead.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Opts {
    method: String,
    headers: Vec<String>,
    body: Option<String>,
    timeout: Duration,
    include: bool,
    json: bool,
    target: Option<String>,
    out: Option<String>,
    url: String,
}

const USAGE: &str = "usage: mgcurl [-X METHOD] [-H 'Name: value']... [-d BODY] [-m SECONDS] [-i] [--json] [--target RAW] [-o FILE] http://IP[:PORT]/PATH";

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        method: String::new(),
        headers: Vec::new(),
        body: None,
        timeout: Duration::from_secs(5),
        include: false,
        json: false,
        target: None,
        out: None,
        url: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "-X" => o.method = val("-X")?,
            "-H" => o.headers.push(val("-H")?),
            "-d" => o.body = Some(val("-d")?),
            "-m" => {
                let v = val("-m")?;
                let secs: f64 = v.parse().map_err(|_| format!("-m {v}: not a number"))?;
                if !(secs > 0.0 && secs < 3600.0) {
                    return Err(format!("-m {v}: out of range"));
                }
                o.timeout = Duration::from_secs_f64(secs);
            }
            "-i" => o.include = true,
            "--json" => o.json = true,
            "--target" => o.target = Some(val("--target")?),
            "-o" => o.out = Some(val("-o")?),
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s if o.url.is_empty() => o.url = s.to_string(),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    if o.url.is_empty() {
        return Err(USAGE.into());
    }
    if o.method.is_empty() {
        o.method = if o.body.is_some() { "POST" } else { "GET" }.into();
    }
    Ok(o)
}

/// Splits `http://HOST[:PORT]/path` into the socket address, the Host header value and the target.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| format!("{url}: bad IPv6 literal"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("{host}: not an IP address (mgcurl never resolves names)"))?;
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| format!("{p}: bad port"))?,
        None => 80,
    };
    Ok((
        SocketAddr::new(ip, port),
        authority.to_string(),
        path.to_string(),
    ))
}

enum Failure {
    Refused(String),
    Unreachable(String),
    Timeout(String),
    Reset(String),
    Empty,
    Io(String),
}

impl Failure {
    fn from_io(e: &io::Error) -> Failure {
        let d = e.to_string();
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused(d),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::Timeout(d),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Failure::Reset(d),
            _ if matches!(
                e.raw_os_error(),
                Some(libc_codes::ENETUNREACH | libc_codes::EHOSTUNREACH)
            ) =>
            {
                Failure::Unreachable(d)
            }
            _ => Failure::Io(d),
        }
    }
    fn name_detail_code(&self) -> (&'static str, String, u8) {
        match self {
            Failure::Refused(d) => ("refused", d.clone(), 7),
            Failure::Unreachable(d) => ("unreachable", d.clone(), 7),
            Failure::Timeout(d) => ("timeout", d.clone(), 28),
            Failure::Reset(d) => ("reset", d.clone(), 56),
            Failure::Empty => (
                "empty",
                "the server closed the connection without answering".into(),
                52,
            ),
            Failure::Io(d) => ("io", d.clone(), 1),
        }
    }
}

/// errno values used above (std does not expose them and this binary avoids extra crates).
mod libc_codes {
    pub const ENETUNREACH: i32 = 101;
    pub const EHOSTUNREACH: i32 = 113;
}

struct Answer {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.iter().position(|&c| c == b'\n') else {
            return out;
        };
        let line = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        b = &b[nl + 1..];
        if size == 0 || size > b.len() {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or_default();
    }
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next()?;
    let status: u16 = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Some(Answer {
        status,
        reason,
        headers,
        body,
    })
}

fn fetch(o: &Opts) -> Result<Answer, Failure> {
    let (addr, host, path) = parse_url(&o.url).map_err(Failure::Io)?;
    let deadline = Instant::now() + o.timeout;
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&addr, o.timeout).map_err(|e| Failure::from_io(&e))?;
    let target = o.target.clone().unwrap_or(path);
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mgcurl\r\nConnection: close\r\n",
        o.method, target, host
    );
    for h in &o.headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if let Some(b) = &o.body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = &o.body {
        req.push_str(b);
    }
    s.set_write_timeout(Some(remaining()))
        .map_err(|e| Failure::from_io(&e))?;
    s.write_all(req.as_bytes())
        .map_err(|e| Failure::from_io(&e))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        s.set_read_timeout(Some(remaining()))
            .map_err(|e| Failure::from_io(&e))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // A reset after a complete answer still counts as the answer.
                if let Some(a) =
                    parse_answer(&raw).filter(|_| e.kind() == io::ErrorKind::ConnectionReset)
                {
                    return Ok(a);
                }
                return Err(Failure::from_io(&e));
            }
        }
        if Instant::now() >= deadline {
            return Err(Failure::Timeout("deadline passed while reading".into()));
        }
    }
    if raw.is_empty() {
        return Err(Failure::Empty);
    }
    parse_answer(&raw).ok_or_else(|| Failure::Io("not an HTTP answer".into()))
}

/// Renders what is printed (or written to `-o FILE`) and the exit status.
fn render(o: &Opts, result: Result<Answer, Failure>) -> (Vec<u8>, u8) {
    let mut out = Vec::new();
    match result {
        Ok(a) => {
            if o.json {
                let v = serde_json::json!({
                    "ok": true,
                    "status": a.status,
                    "reason": a.reason,
                    "headers": a.headers,
                    "body": String::from_utf8_lossy(&a.body),
                });
                out.extend_from_slice(format!("{v}\n").as_bytes());
                return (out, 0);
            }
            if o.include {
                out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", a.status, a.reason).as_bytes());
                for (n, v) in &a.headers {
                    out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(&a.body);
            (out, if a.status >= 400 { 22 } else { 0 })
        }
        Err(f) => {
            let (name, detail, code) = f.name_detail_code();
            if o.json {
                let v = serde_json::json!({"ok": false, "error": name, "detail": detail});
                out.extend_from_slice(format!("{v}\n").as_bytes());
                return (out, 0);
            }
            eprintln!("mgcurl: {name}: {detail}");
            (out, code)
        }
    }
}

fn write_file(path: &str, data: &[u8]) -> io::Result<()> {
    let tmp = format!("{path}.tmp{}", std::process::id());
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

fn main() -> ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mgcurl: {e}");
            return ExitCode::from(2);
        }
    };
    let (data, code) = render(&o, fetch(&o));
    let written = match &o.out {
        Some(path) => write_file(path, &data),
        None => {
            let mut stdout = io::stdout().lock();
            stdout.write_all(&data).and_then(|_| stdout.flush())
        }
    };
    if let Err(e) = written {
        eprintln!("mgcurl: writing the output: {e}");
        return ExitCode::from(1);
    }
    ExitCode::from(code)
}
