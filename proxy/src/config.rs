//! The daemon's configuration: a TOML file, then command-line flags on top, then checks.
//!
//! Every key has a default, so an empty file (or no file) is a working configuration: listen on
//! 0.0.0.0 and :: on each default endpoint's proxy port, forward to the endpoint itself, read pod
//! records from /run/metaguard, admin on 127.0.0.1:9169, decision log on stdout.
//! Durations are integers in milliseconds (keys end in `_ms`): no unit parsing to get wrong.

use metaguard_common::endpoints::default_endpoints;
use metaguard_common::state::DEFAULT_STATE_DIR;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default admin listener: loopback only, so pods (which reach the node through the bridge
/// gateway) cannot read metrics or probe readiness.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9169);

/// The smallest per-connection read cap accepted: less would refuse ordinary request heads (and
/// configurations written when hyper served pods, which needed 8192, stay valid).
pub const MIN_MAX_BUF_SIZE: usize = 8192;

/// The most headers `limits.max_headers` may allow. The pod-facing server keeps that many header
/// slots on the stack, uninitialised, so a high cap costs nothing.
pub const MAX_HEADERS_CAP: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML parser's message names the line and column.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where decision log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

impl LogTarget {
    /// `-` means stdout; anything else is a file path (appended to, created if missing).
    pub fn parse(s: &str) -> LogTarget {
        if s == "-" {
            LogTarget::Stdout
        } else {
            LogTarget::File(PathBuf::from(s))
        }
    }
}

impl<'de> Deserialize<'de> for LogTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom(
                "decision_log must be \"-\" or a path",
            ));
        }
        Ok(LogTarget::parse(&s))
    }
}

/// One metadata endpoint the plugin redirects to this daemon.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Name used in logs and metrics labels.
    pub name: String,
    /// The address pods use (what the plugin redirects).
    pub address: IpAddr,
    /// The metadata service's port.
    #[serde(default = "default_http_port")]
    pub port: u16,
    /// The port this daemon listens on for this endpoint (must match the plugin's `proxyPort`).
    pub proxy_port: u16,
    /// Where allowed requests are forwarded; default `address:port`.
    #[serde(default)]
    pub upstream: Option<SocketAddr>,
}

fn default_http_port() -> u16 {
    80
}

impl EndpointConfig {
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
            .unwrap_or(SocketAddr::new(self.address, self.port))
    }
}

fn default_endpoint_configs() -> Vec<EndpointConfig> {
    default_endpoints()
        .into_iter()
        .map(|e| EndpointConfig {
            name: e.name,
            address: e.address,
            port: e.port,
            proxy_port: e.proxy_port,
            upstream: None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub connect_timeout_ms: u64,
    /// From sending the request to the last byte of the response body.
    pub response_timeout_ms: u64,
    /// Larger responses become 502 (metadata documents are small; user-data is at most 16 KiB on AWS).
    pub max_response_bytes: usize,
    /// Idle kept-alive upstream connections are closed after this long.
    pub pool_idle_timeout_ms: u64,
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 1000,
            response_timeout_ms: 5000,
            max_response_bytes: 1024 * 1024,
            pool_idle_timeout_ms: 60_000,
            pool_max_idle_per_host: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open pod connections at once, all sources together.
    pub max_connections: usize,
    /// Open connections from one source address; keeps one pod from starving the others.
    pub max_connections_per_source: usize,
    /// Time allowed to send a complete request head; also closes a kept-alive connection that
    /// sends nothing for this long (the timer restarts before each request).
    pub header_read_timeout_ms: u64,
    /// Size of the request line plus headers.
    pub max_header_bytes: usize,
    /// Number of request headers.
    pub max_headers: usize,
    /// Bytes buffered from one pod connection at most, pipelined requests included (at least 8192).
    pub max_buf_size: usize,
    pub keep_alive: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            max_connections_per_source: 64,
            header_read_timeout_ms: 5000,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_buf_size: 64 * 1024,
            keep_alive: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// Watch the state directory (inotify) so that a cached record is dropped the moment its
    /// files change. Off: a change is noticed only by the check below (an address reused by a new
    /// pod keeps the old pod's identity for up to `revalidate_ms`); for tests and as a way out.
    pub watch: bool,
    /// A cached record older than this is checked against its `ips/<ip>` file before use.
    pub revalidate_ms: u64,
    /// Period of the background sweep that drops cached records whose files are gone.
    pub sweep_interval_ms: u64,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            watch: true,
            revalidate_ms: 1000,
            sweep_interval_ms: 10_000,
        }
    }
}

/// Bounds of the cache of upstream answers (used only by allow rules with `cache_ttl_ms`).
/// Split evenly between the worker threads (each has its own cache); 0 in either disables caching.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Stored answers, all workers together.
    pub max_entries: usize,
    /// Bytes of stored answers (key, headers and body), all workers together.
    pub max_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        // Metadata answers are small (instance identity document: about 500 bytes): 1024 entries
        // cover every static path of several API versions and tokens; 4 MiB caps the worst case.
        CacheConfig {
            max_entries: 1024,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Long polls: requests that ask the metadata service to hold them until a value changes (GCE's
/// `?wait_for_change=true&timeout_sec=N`; see `crate::longpoll`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongPollConfig {
    /// The longest wait granted: a `timeout_sec` above it is clamped to it, and a long poll
    /// without `timeout_sec` is given this long.
    pub max_wait_ms: u64,
    /// Added to the wait for the upstream's deadline: time to answer once the wait is over.
    pub slack_ms: u64,
    /// Long polls one source address (one pod) may hold at once; the next one gets 429.
    pub max_per_source: usize,
    /// Long polls all sources together may hold at once; the next one gets 429.
    pub max_total: usize,
}

impl Default for LongPollConfig {
    fn default() -> Self {
        LongPollConfig {
            max_wait_ms: 300_000,
            slack_ms: 5_000,
            max_per_source: 8,
            max_total: 512,
        }
    }
}

/// The longest `long_poll.max_wait_ms` accepted (one hour): a longer hold has no client.
pub const MAX_LONG_POLL_WAIT_MS: u64 = 3_600_000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long SIGTERM waits for requests in flight before exiting anyway.
    pub grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_ms: 10_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub state_dir: PathBuf,
    /// Policy file; `None` = the built-in default policy.
    pub policy: Option<PathBuf>,
    /// Addresses to listen on (each with every endpoint's proxy port).
    pub listen: Vec<IpAddr>,
    pub admin: SocketAddr,
    pub decision_log: LogTarget,
    /// Operational log level on stderr: error, warn, info, debug, trace, off.
    pub log_level: String,
    /// Runtime worker threads; 0 = one per CPU.
    pub worker_threads: usize,
    pub endpoints: Vec<EndpointConfig>,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    pub records: RecordsConfig,
    pub cache: CacheConfig,
    pub shutdown: ShutdownConfig,
    pub long_poll: LongPollConfig,
    /// Per-pod IMDSv2 tokens and role credentials on EC2 nodes (docs/identity.md).
    pub aws: AwsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            policy: None,
            listen: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            admin: DEFAULT_ADMIN,
            decision_log: LogTarget::Stdout,
            log_level: "info".into(),
            worker_threads: 0,
            endpoints: default_endpoint_configs(),
            upstream: UpstreamConfig::default(),
            limits: LimitsConfig::default(),
            records: RecordsConfig::default(),
            cache: CacheConfig::default(),
            shutdown: ShutdownConfig::default(),
            long_poll: LongPollConfig::default(),
            aws: AwsConfig::default(),
        }
    }
}

/// `[aws]`: the proxy answers the AWS endpoints' IMDSv2 token requests itself (tokens bound to
/// the pod) and vends each pod with a role its own credentials from STS (docs/identity.md).
/// Off by default: on other clouds 169.254.169.254 speaks another protocol.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    pub enabled: bool,
    /// The endpoints (by name) that are EC2's instance metadata service.
    pub endpoints: Vec<String>,
    /// Which endpoint the proxy reads the node's own token, credentials and region from.
    pub node_endpoint: String,
    /// How often the key that signs pod tokens is replaced (the previous key stays valid for
    /// one more period, so this must be at least the longest token TTL, 21600 s).
    pub token_key_rotation_ms: u64,
    /// Fetch a pod's credentials when its record appears. `false` (diagnosis only): at its first
    /// request, which then waits for STS.
    pub prefetch: bool,
    pub sts: StsConfig,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            enabled: false,
            endpoints: vec!["imds-v4".into(), "imds-v6".into()],
            node_endpoint: "imds-v4".into(),
            token_key_rotation_ms: 21_600_000,
            prefetch: true,
            sts: StsConfig::default(),
        }
    }
}

/// `[aws.sts]`: how the proxy calls `sts:AssumeRole` for pods.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StsConfig {
    /// `https://sts.<region>.amazonaws.com` when empty. `http://` is accepted (test STS).
    pub endpoint: String,
    /// The signing region; when empty, the node's region from the metadata service.
    pub region: String,
    /// `DurationSeconds` of every AssumeRole (900 to 43200; the role's maximum applies too).
    pub duration_seconds: u32,
    /// Session tags `metaguard:namespace`, `metaguard:pod`, `metaguard:pod-uid`, `metaguard:node`.
    pub session_tags: bool,
    /// The node name in the session tags; when empty, the host name.
    pub node_name: String,
    /// Credentials are renewed this long before they expire (at least 15 minutes).
    pub refresh_before_ms: u64,
    /// AssumeRole calls per second for the whole node, and how many at once.
    pub rate: u32,
    pub burst: u32,
    /// How long a pod's credential request waits for credentials not yet fetched.
    pub wait_ms: u64,
    /// Timeout of one STS call (connect to last byte).
    pub timeout_ms: u64,
}

impl Default for StsConfig {
    fn default() -> Self {
        StsConfig {
            endpoint: String::new(),
            region: String::new(),
            duration_seconds: 3600,
            session_tags: true,
            node_name: String::new(),
            // Botocore refreshes credentials with less than 15 minutes left: renewing at 20
            // leaves a margin so an SDK never holds credentials inside its own window.
            refresh_before_ms: 20 * 60 * 1000,
            rate: 20,
            burst: 40,
            wait_ms: 2000,
            timeout_ms: 5000,
        }
    }
}

/// The least `aws.sts.refresh_before_ms` accepted: SDKs refresh credentials that expire within
/// 15 minutes (botocore's advisory window), so anything shorter makes them ask again and again.
pub const MIN_STS_REFRESH_BEFORE_MS: u64 = 15 * 60 * 1000;
/// The longest token TTL the metadata service accepts (6 hours).
pub const MAX_TOKEN_TTL_SECS: u64 = 21_600;

/// Command-line values that override the file (each `None`/empty = keep the file's value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub admin: Option<SocketAddr>,
    /// When given at all, replaces the file's `listen` list.
    pub listen: Vec<IpAddr>,
    /// `NAME=ADDR:PORT`: forward endpoint NAME there.
    pub upstream: Vec<(String, SocketAddr)>,
    pub decision_log: Option<LogTarget>,
    pub log_level: Option<String>,
}

impl Config {
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// Reads the file (or takes the defaults when `path` is `None`), applies the overrides and
    /// validates the result.
    pub fn load(path: Option<&Path>, ov: &Overrides) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::from_toml(&text, p)?
            }
            None => Config::default(),
        };
        cfg.apply(ov)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn apply(&mut self, ov: &Overrides) -> Result<(), ConfigError> {
        if let Some(d) = &ov.state_dir {
            self.state_dir = d.clone();
        }
        if let Some(p) = &ov.policy {
            self.policy = Some(p.clone());
        }
        if let Some(a) = ov.admin {
            self.admin = a;
        }
        if !ov.listen.is_empty() {
            self.listen = ov.listen.clone();
        }
        if let Some(t) = &ov.decision_log {
            self.decision_log = t.clone();
        }
        if let Some(l) = &ov.log_level {
            self.log_level = l.clone();
        }
        for (name, addr) in &ov.upstream {
            let known: Vec<String> = self.endpoints.iter().map(|e| e.name.clone()).collect();
            let ep = self
                .endpoints
                .iter_mut()
                .find(|e| &e.name == name)
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "--upstream {name}=...: no endpoint named {name:?} (known: {})",
                        known.join(", ")
                    ))
                })?;
            ep.upstream = Some(*addr);
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.endpoints.is_empty() {
            return bad("no endpoints".into());
        }
        let mut names = HashSet::new();
        let mut ports = HashSet::new();
        for e in &self.endpoints {
            if e.name.is_empty() || e.name.len() > 64 || !e.name.bytes().all(is_endpoint_name_byte)
            {
                return bad(format!(
                    "endpoint name {:?}: use 1-64 of [A-Za-z0-9_-]",
                    e.name
                ));
            }
            if !names.insert(&e.name) {
                return bad(format!("endpoint name {:?} appears twice", e.name));
            }
            if e.proxy_port == 0 || !ports.insert(e.proxy_port) {
                return bad(format!(
                    "endpoint {}: proxy_port {} is 0 or already used",
                    e.name, e.proxy_port
                ));
            }
            if e.proxy_port == self.admin.port() {
                return bad(format!(
                    "endpoint {}: proxy_port {} is the admin port",
                    e.name, e.proxy_port
                ));
            }
            if e.upstream_addr().port() == 0 {
                return bad(format!("endpoint {}: upstream port 0", e.name));
            }
        }
        if self.listen.is_empty() {
            return bad("listen: no addresses".into());
        }
        let mut seen = HashSet::new();
        for a in &self.listen {
            if !seen.insert(a) {
                return bad(format!("listen: {a} appears twice"));
            }
        }
        if parse_level(&self.log_level).is_none() {
            return bad(format!(
                "log_level {:?}: use off, error, warn, info, debug or trace",
                self.log_level
            ));
        }
        let l = &self.limits;
        if l.max_connections == 0 || l.max_connections_per_source == 0 {
            return bad("limits: connection caps must be at least 1".into());
        }
        if l.max_connections > (u32::MAX as usize) {
            return bad("limits.max_connections is too large".into());
        }
        if l.header_read_timeout_ms == 0 {
            return bad("limits.header_read_timeout_ms must be at least 1".into());
        }
        if l.max_buf_size < MIN_MAX_BUF_SIZE {
            return bad(format!(
                "limits.max_buf_size must be at least {MIN_MAX_BUF_SIZE}"
            ));
        }
        if l.max_headers == 0 || l.max_header_bytes == 0 {
            return bad("limits.max_headers and limits.max_header_bytes must be at least 1".into());
        }
        if l.max_headers > MAX_HEADERS_CAP {
            return bad(format!(
                "limits.max_headers must be at most {}",
                MAX_HEADERS_CAP
            ));
        }
        let u = &self.upstream;
        if u.connect_timeout_ms == 0 || u.response_timeout_ms == 0 {
            return bad("upstream timeouts must be at least 1 ms".into());
        }
        if u.max_response_bytes == 0 {
            return bad("upstream.max_response_bytes must be at least 1".into());
        }
        if self.records.revalidate_ms == 0 || self.records.sweep_interval_ms == 0 {
            return bad("records intervals must be at least 1 ms".into());
        }
        self.validate_long_poll()?;
        self.validate_aws()
    }

    fn validate_aws(&self) -> Result<(), ConfigError> {
        let a = &self.aws;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let known = |n: &str| self.endpoints.iter().any(|e| e.name == n);
        for n in a.endpoints.iter().chain(std::iter::once(&a.node_endpoint)) {
            if a.enabled && !known(n) {
                return bad(format!("aws: no endpoint named {n:?}"));
            }
        }
        if a.token_key_rotation_ms < MAX_TOKEN_TTL_SECS * 1000 {
            return bad(format!(
                "aws.token_key_rotation_ms must be at least {} (the longest token TTL)",
                MAX_TOKEN_TTL_SECS * 1000
            ));
        }
        let s = &a.sts;
        if !(900..=43_200).contains(&s.duration_seconds) {
            return bad("aws.sts.duration_seconds must be between 900 and 43200".into());
        }
        if s.refresh_before_ms < MIN_STS_REFRESH_BEFORE_MS
            || s.refresh_before_ms >= u64::from(s.duration_seconds) * 1000
        {
            return bad(format!(
                "aws.sts.refresh_before_ms must be at least {MIN_STS_REFRESH_BEFORE_MS} \
                 (15 minutes) and less than duration_seconds"
            ));
        }
        if s.rate == 0 || s.burst == 0 || s.wait_ms == 0 || s.timeout_ms == 0 {
            return bad("aws.sts: rate, burst, wait_ms and timeout_ms must be at least 1".into());
        }
        if !(s.endpoint.is_empty()
            || s.endpoint.starts_with("https://")
            || s.endpoint.starts_with("http://"))
        {
            return bad("aws.sts.endpoint must be an http:// or https:// URL".into());
        }
        Ok(())
    }

    fn validate_long_poll(&self) -> Result<(), ConfigError> {
        let lp = &self.long_poll;
        if lp.max_wait_ms == 0 || lp.max_wait_ms > MAX_LONG_POLL_WAIT_MS {
            return Err(ConfigError::Invalid(format!(
                "long_poll.max_wait_ms must be between 1 and {MAX_LONG_POLL_WAIT_MS} (one hour)"
            )));
        }
        if lp.slack_ms > MAX_LONG_POLL_WAIT_MS {
            return Err(ConfigError::Invalid(format!(
                "long_poll.slack_ms must be at most {MAX_LONG_POLL_WAIT_MS} (one hour)"
            )));
        }
        if lp.max_per_source == 0 || lp.max_total == 0 {
            return Err(ConfigError::Invalid(
                "long_poll: max_per_source and max_total must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Every (address, port, endpoint index) the daemon listens on for pods.
    pub fn listen_sockets(&self) -> Vec<(SocketAddr, usize)> {
        let mut v = Vec::new();
        for a in &self.listen {
            for (i, e) in self.endpoints.iter().enumerate() {
                v.push((SocketAddr::new(*a, e.proxy_port), i));
            }
        }
        v
    }

    pub fn worker_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }

    pub fn level(&self) -> log::LevelFilter {
        parse_level(&self.log_level).unwrap_or(log::LevelFilter::Info)
    }
}

pub fn parse_level(s: &str) -> Option<log::LevelFilter> {
    s.parse().ok()
}

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The bytes endpoint names are made of. They appear unescaped in decision lines and as metric
/// labels (`decision_log` tests that none of them needs escaping).
pub(crate) fn is_endpoint_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        let c = Config::from_toml(s, Path::new("t.toml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.endpoints.len(), 3);
        assert_eq!(c.admin.to_string(), "127.0.0.1:9169");
        assert_eq!(c.state_dir, PathBuf::from("/run/metaguard"));
        // 2 addresses x 3 endpoints.
        let socks = c.listen_sockets();
        assert_eq!(socks.len(), 6);
        assert!(socks.contains(&("0.0.0.0:8169".parse().unwrap(), 0)));
        assert!(socks.contains(&("[::]:8170".parse().unwrap(), 1)));
        assert_eq!(
            c.endpoints[1].upstream_addr().to_string(),
            "[fd00:ec2::254]:80"
        );
    }

    #[test]
    fn the_commented_example_is_exactly_the_defaults() {
        let text = include_str!("../../conf/metaguard-proxy.toml");
        assert_eq!(parse(text).unwrap(), Config::default());
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
state_dir = "/tmp/s"
policy = "/etc/p.toml"
listen = ["10.0.0.1"]
admin = "127.0.0.1:9999"
decision_log = "/var/log/d.jsonl"
log_level = "debug"
worker_threads = 3
[[endpoints]]
name = "imds"
address = "169.254.169.254"
proxy_port = 8169
upstream = "127.0.0.1:8080"
[upstream]
connect_timeout_ms = 10
[limits]
max_connections_per_source = 2
[records]
watch = false
revalidate_ms = 500
[shutdown]
grace_ms = 1
[long_poll]
max_wait_ms = 60000
max_per_source = 2
"#,
        )
        .unwrap();
        assert_eq!(c.policy.as_deref(), Some(Path::new("/etc/p.toml")));
        assert_eq!(c.decision_log, LogTarget::File("/var/log/d.jsonl".into()));
        assert_eq!(c.endpoints.len(), 1);
        assert_eq!(c.endpoints[0].port, 80);
        assert_eq!(c.endpoints[0].upstream_addr().to_string(), "127.0.0.1:8080");
        assert_eq!(c.upstream.connect_timeout_ms, 10);
        assert_eq!(
            c.upstream.response_timeout_ms, 5000,
            "unset keys keep defaults"
        );
        assert_eq!(c.limits.max_connections_per_source, 2);
        assert_eq!(c.limits.max_connections, 4096);
        assert_eq!(c.records.revalidate_ms, 500);
        assert!(!c.records.watch);
        assert!(Config::default().records.watch, "watched by default");
        assert_eq!(c.worker_threads(), 3);
        assert_eq!(c.level(), log::LevelFilter::Debug);
        assert_eq!(c.long_poll.max_wait_ms, 60_000);
        assert_eq!(c.long_poll.max_per_source, 2);
        assert_eq!(c.long_poll.max_total, 512, "unset keys keep defaults");
        assert_eq!(c.long_poll.slack_ms, 5_000);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let e = parse("state_dir = \"/x\"\nlisten_on = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_on"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[limits]\nmax_conns = 1\n").unwrap_err().to_string();
        assert!(e.contains("max_conns"), "{e}");
    }

    #[test]
    fn invalid_values() {
        for (text, want) in [
            ("listen = []", "no addresses"),
            ("listen = [\"::\", \"::\"]", "twice"),
            ("log_level = \"loud\"", "log_level"),
            ("[limits]\nmax_buf_size = 100", "max_buf_size"),
            ("[limits]\nmax_connections = 0", "at least 1"),
            ("[limits]\nmax_headers = 1025", "at most 1024"),
            ("[upstream]\nresponse_timeout_ms = 0", "timeouts"),
            ("admin = \"127.0.0.1:8169\"", "admin port"),
            (
                "[[endpoints]]\nname=\"a\"\naddress=\"1.2.3.4\"\nproxy_port=1\n[[endpoints]]\nname=\"b\"\naddress=\"1.2.3.5\"\nproxy_port=1",
                "already used",
            ),
            ("[[endpoints]]\nname=\"a b\"\naddress=\"1.2.3.4\"\nproxy_port=1", "name"),
            ("listen = [\"not-an-ip\"]", "listen"),
            ("[long_poll]\nmax_wait_ms = 0", "max_wait_ms"),
            ("[aws]\nenabled = true\nendpoints = [\"nope\"]", "no endpoint named"),
            ("[aws]\ntoken_key_rotation_ms = 1000", "token_key_rotation_ms"),
            ("[aws.sts]\nduration_seconds = 100", "duration_seconds"),
            ("[aws.sts]\nrefresh_before_ms = 60000", "refresh_before_ms"),
            ("[aws.sts]\nduration_seconds = 900", "refresh_before_ms"),
            ("[aws.sts]\nrate = 0", "at least 1"),
            ("[aws.sts]\nendpoint = \"ftp://sts\"", "http:// or https://"),
            ("[long_poll]\nmax_wait_ms = 3600001", "one hour"),
            ("[long_poll]\nslack_ms = 3600001", "slack_ms"),
            ("[long_poll]\nmax_per_source = 0", "at least 1"),
            ("[long_poll]\nmax_total = 0", "at least 1"),
            ("[long_poll]\nmax_waits = 1", "max_waits"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn overrides_win() {
        let mut c = Config::default();
        let ov = Overrides {
            state_dir: Some("/s".into()),
            policy: Some("/p".into()),
            admin: Some("127.0.0.1:1".parse().unwrap()),
            listen: vec!["10.1.0.1".parse().unwrap()],
            upstream: vec![("imds-v6".into(), "[fd00::1]:8080".parse().unwrap())],
            decision_log: Some(LogTarget::parse("/l")),
            log_level: Some("warn".into()),
        };
        c.apply(&ov).unwrap();
        c.validate().unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/s"));
        assert_eq!(c.listen, vec!["10.1.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.endpoints[1].upstream_addr().to_string(), "[fd00::1]:8080");
        assert_eq!(
            c.endpoints[0].upstream_addr().to_string(),
            "169.254.169.254:80"
        );
        assert_eq!(c.decision_log, LogTarget::File("/l".into()));
        let bad = Overrides {
            upstream: vec![("nope".into(), "1.2.3.4:80".parse().unwrap())],
            ..Default::default()
        };
        let e = c.apply(&bad).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("imds-v4"), "{e}");
    }

    #[test]
    fn stdout_log_target() {
        assert_eq!(LogTarget::parse("-"), LogTarget::Stdout);
        let c = parse("decision_log = \"-\"").unwrap();
        assert_eq!(c.decision_log, LogTarget::Stdout);
    }
}
