//! The node's own IMDSv2 token, credentials and region, read from the EC2 metadata service
//! (docs/identity.md): the token goes on every request the proxy forwards upstream (instead of
//! the pod's), the credentials sign `sts:AssumeRole`, the region picks and signs for the STS
//! endpoint.
//!
//! Plain HTTP to one upstream address with `Host: 169.254.169.254`; every call under the connect
//! and response timeouts, every answer read up to [`MAX_ANSWER`] bytes. Each value is cached;
//! callers that find it missing or stale while a fetch is under way wait for that fetch and
//! share its outcome, success or error (one request to the service, not one per caller).

use super::sts::error_chain;
use super::Credentials;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// The largest answer read from the metadata service (credentials are about 1.5 KiB).
pub const MAX_ANSWER: usize = 64 * 1024;
/// The TTL asked for the node's token: the longest the service gives (6 hours).
pub const TOKEN_TTL_SECS: u64 = 21_600;
/// Credentials this close to their `Expiration` are read again.
pub const CREDENTIALS_REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// [`NodeSource::current_token`] gives no token this close to its expiry: a request forwarded
/// with it must still find it valid when it arrives.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
const MAX_TOKEN_LEN: usize = 4096;
const TOKEN_PATH: &str = "/latest/api/token";
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
const REGION_PATH: &str = "/latest/meta-data/placement/region";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// Why a value could not be read. Messages name the method, path and status, never a token or
/// a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("metadata service {method} {path}: unreachable: {detail}")]
    Transport {
        method: &'static str,
        path: String,
        detail: String,
    },
    #[error("metadata service {method} {path}: no answer within {after_ms} ms")]
    Timeout {
        method: &'static str,
        path: String,
        after_ms: u64,
    },
    #[error("metadata service {method} {path}: HTTP {status}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
    },
    #[error("metadata service {method} {path}: {detail}")]
    BadAnswer {
        method: &'static str,
        path: String,
        detail: String,
    },
    /// The credentials document says `Code` is not `Success` (the service is still fetching).
    #[error("metadata service GET {path}: credentials not ready (Code {code:?})")]
    NotReady { path: String, code: String },
}

impl NodeError {
    /// Whether asking again later may work without a change on the node: transport, timeout,
    /// credentials not ready, HTTP 5xx, 429 (throttled) and 401 (a token that expired on the
    /// way). 404 (no role attached), 403 and answers that do not parse are not.
    pub fn recoverable(&self) -> bool {
        match self {
            NodeError::Transport { .. }
            | NodeError::Timeout { .. }
            | NodeError::NotReady { .. } => true,
            NodeError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 401,
            NodeError::BadAnswer { .. } => false,
        }
    }
}

struct CachedToken {
    value: Arc<str>,
    renew_at: Instant,
    expires: Instant,
    /// The service answered 401 to a request carrying it.
    rejected: bool,
}

/// One fetch at a time; callers that waited for a fetch take its outcome.
#[derive(Default)]
struct SingleFlight {
    /// Fetches finished (read before waiting, compared after).
    finished: AtomicU64,
    /// The last fetch's error, if it failed.
    last_error: tokio::sync::Mutex<Option<NodeError>>,
}

impl SingleFlight {
    async fn run<T, F, Fut>(&self, cached: impl Fn() -> Option<T>, fetch: F) -> Result<T, NodeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, NodeError>>,
    {
        if let Some(v) = cached() {
            return Ok(v);
        }
        let seen = self.finished.load(Ordering::Acquire);
        let mut last_error = self.last_error.lock().await;
        if self.finished.load(Ordering::Acquire) != seen {
            // A fetch finished while this caller waited: its outcome is this caller's.
            if let Some(v) = cached() {
                return Ok(v);
            }
            if let Some(e) = last_error.as_ref() {
                return Err(e.clone());
            }
        }
        let result = fetch().await;
        *last_error = result.as_ref().err().cloned();
        self.finished.fetch_add(1, Ordering::Release);
        result
    }
}

/// The node's token, credentials and region, read from one metadata service address.
pub struct NodeSource {
    upstream: SocketAddr,
    connect_timeout: Duration,
    response_timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
    token: RwLock<Option<CachedToken>>,
    token_flight: SingleFlight,
    credentials: RwLock<Option<Arc<Credentials>>>,
    credentials_flight: SingleFlight,
    region: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for NodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSource")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl NodeSource {
    pub fn new(
        upstream: SocketAddr,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> NodeSource {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(http);
        NodeSource {
            upstream,
            connect_timeout,
            response_timeout,
            client,
            token: RwLock::new(None),
            token_flight: SingleFlight::default(),
            credentials: RwLock::new(None),
            credentials_flight: SingleFlight::default(),
            region: tokio::sync::OnceCell::new(),
        }
    }

    /// The node's token: the cached one while more than half its TTL is left (and the service
    /// has not refused it), else a new one (`PUT /latest/api/token`, TTL 21600 s).
    pub async fn token(&self) -> Result<Arc<str>, NodeError> {
        self.token_flight
            .run(|| self.token_to_keep(), || self.fetch_token())
            .await
    }

    /// The cached token if it is still valid (not refused, more than 10 s left), without I/O.
    /// It may be past its renewal time: [`NodeSource::token`] renews it.
    ///
    /// Cost, measured on the 2-vCPU development VM (release, fat LTO): one `RwLock` read and an
    /// `Arc` clone, about 40 ns uncontended, plus `Instant::now()`, about 45 ns (the pipeline can
    /// pass the time it already read to [`NodeSource::current_token_at`]). Two threads calling
    /// it back to back: about 250 ns each, the lock word and the reference count bouncing
    /// between cores. No allocation; writers take the lock once per renewal (every 3 hours).
    pub fn current_token(&self) -> Option<Arc<str>> {
        self.current_token_at(Instant::now())
    }

    /// [`NodeSource::current_token`] at `now`.
    pub fn current_token_at(&self, now: Instant) -> Option<Arc<str>> {
        let guard = self.token.read().unwrap_or_else(|e| e.into_inner());
        let t = guard.as_ref()?;
        (!t.rejected && now + TOKEN_MARGIN < t.expires).then(|| t.value.clone())
    }

    /// The service answered 401 to a request carrying `token`: the next [`NodeSource::token`]
    /// fetches a new one and [`NodeSource::current_token`] gives none until then. A token other
    /// than the cached one (already replaced) changes nothing.
    pub fn token_rejected(&self, token: &str) {
        let mut guard = self.token.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = guard.as_mut().filter(|t| &*t.value == token) {
            t.rejected = true;
        }
    }

    /// The node role's credentials, read again when within 5 minutes of their expiry. When that
    /// read fails and the cached ones are still valid for a minute, those are given (and the
    /// failure logged): STS still takes them.
    pub async fn credentials(&self) -> Result<Arc<Credentials>, NodeError> {
        let result = self
            .credentials_flight
            .run(|| self.credentials_to_keep(), || self.fetch_credentials())
            .await;
        match result {
            Err(e) => {
                let cached = self
                    .credentials
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match cached.filter(|c| valid_for(c, Duration::from_secs(60))) {
                    Some(c) => {
                        log::warn!(
                            "{e}; the node credentials read before are still valid and used"
                        );
                        Ok(c)
                    }
                    None => Err(e),
                }
            }
            ok => ok,
        }
    }

    /// The node's region (`placement/region`), read once for the process's life.
    pub async fn region(&self) -> Result<String, NodeError> {
        self.region
            .get_or_try_init(|| async {
                let body = self.get(REGION_PATH).await?;
                let region = body.trim();
                if super::sts::valid_region(region) {
                    Ok(region.to_string())
                } else {
                    Err(bad("GET", REGION_PATH, "not a region name".into()))
                }
            })
            .await
            .cloned()
    }

    fn token_to_keep(&self) -> Option<Arc<str>> {
        let guard = self.token.read().unwrap_or_else(|e| e.into_inner());
        let t = guard.as_ref()?;
        (!t.rejected && Instant::now() < t.renew_at).then(|| t.value.clone())
    }

    fn credentials_to_keep(&self) -> Option<Arc<Credentials>> {
        let guard = self.credentials.read().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|c| valid_for(c, CREDENTIALS_REFRESH_BEFORE))
            .cloned()
    }

    async fn fetch_token(&self) -> Result<Arc<str>, NodeError> {
        let asked = Instant::now();
        let (status, headers, body) = self
            .exchange(
                Method::PUT,
                TOKEN_PATH,
                (TTL_HEADER, &TOKEN_TTL_SECS.to_string()),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(status_error("PUT", TOKEN_PATH, status));
        }
        let token = std::str::from_utf8(&body).unwrap_or("").trim();
        if token.is_empty()
            || token.len() > MAX_TOKEN_LEN
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(bad("PUT", TOKEN_PATH, "the answer is not a token".into()));
        }
        // The service may grant less than asked; it says so in the same header.
        let ttl = headers
            .get(TTL_HEADER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .filter(|&t| t > 0)
            .map_or(TOKEN_TTL_SECS, |t| t.min(TOKEN_TTL_SECS));
        let ttl = Duration::from_secs(ttl);
        let value: Arc<str> = Arc::from(token);
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = Some(CachedToken {
            value: value.clone(),
            renew_at: asked + ttl / 2,
            expires: asked + ttl,
            rejected: false,
        });
        Ok(value)
    }

    async fn fetch_credentials(&self) -> Result<Arc<Credentials>, NodeError> {
        let listing = self.get(CREDENTIALS_PATH).await?;
        let role = listing.lines().next().unwrap_or("").trim();
        if !valid_role_name(role) {
            return Err(bad(
                "GET",
                CREDENTIALS_PATH,
                "no role name (is an instance profile attached?)".into(),
            ));
        }
        let path = format!("{CREDENTIALS_PATH}{role}");
        let body = self.get(&path).await?;
        let creds = parse_credentials(&path, &body)?;
        let creds = Arc::new(creds);
        *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = Some(creds.clone());
        Ok(creds)
    }

    /// A GET with the node's token; after a 401, once more with a new token.
    async fn get(&self, path: &str) -> Result<String, NodeError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let (status, _, body) = self
                .exchange(Method::GET, path, (TOKEN_HEADER, &token))
                .await?;
            match status {
                StatusCode::OK => {
                    return String::from_utf8(body.to_vec())
                        .map_err(|_| bad("GET", path, "the answer is not UTF-8".into()))
                }
                StatusCode::UNAUTHORIZED if attempt == 0 => self.token_rejected(&token),
                status => return Err(status_error("GET", path, status)),
            }
        }
        Err(status_error("GET", path, StatusCode::UNAUTHORIZED))
    }

    /// One request with one extra header, under the timeouts, the answer read up to
    /// [`MAX_ANSWER`] bytes.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        header: (&'static str, &str),
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), NodeError> {
        let m: &'static str = if method == Method::PUT { "PUT" } else { "GET" };
        let value = HeaderValue::from_str(header.1)
            .map_err(|_| bad(m, path, "a header value the request cannot carry".into()))?;
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.upstream))
            .header(HOST, "169.254.169.254")
            .header(header.0, value)
            .body(Full::new(Bytes::new()))
            .map_err(|_| bad(m, path, "the request could not be built".into()))?;
        let exchange = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| NodeError::Transport {
                    method: m,
                    path: path.to_string(),
                    detail: error_chain(&e),
                })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        bad(m, path, format!("answer longer than {MAX_ANSWER} bytes"))
                    } else {
                        NodeError::Transport {
                            method: m,
                            path: path.to_string(),
                            detail: error_chain(&*e),
                        }
                    }
                })?;
            Ok((parts.status, parts.headers, body.to_bytes()))
        };
        let limit = self.connect_timeout + self.response_timeout;
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| NodeError::Timeout {
                method: m,
                path: path.to_string(),
                after_ms: limit.as_millis() as u64,
            })?
    }
}

/// The IMDS credentials document: `Code`, `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`.
fn parse_credentials(path: &str, body: &str) -> Result<Credentials, NodeError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Doc {
        code: String,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        token: Option<String>,
        expiration: Option<String>,
    }
    // serde_json's message names a position, not the content.
    let doc: Doc = serde_json::from_str(body).map_err(|e| {
        bad(
            "GET",
            path,
            format!(
                "not the credentials document: line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })?;
    if doc.code != "Success" {
        let code: String = doc
            .code
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return Err(NodeError::NotReady {
            path: path.to_string(),
            code,
        });
    }
    let need = |v: Option<String>, name: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| bad("GET", path, format!("no {name}")))
    };
    let access_key_id = need(doc.access_key_id, "AccessKeyId")?;
    let secret_access_key = need(doc.secret_access_key, "SecretAccessKey")?;
    // EC2 always gives a session token; a long-term key (an IAM user's, as some on-premises or
    // test set-ups serve) has none, and must then be signed without one.
    let token = doc.token.filter(|t| !t.is_empty());
    let expiration = super::sts::parse_time(&need(doc.expiration, "Expiration")?)
        .map_err(|e| bad("GET", path, e))?;
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token: token,
        expiration: Some(expiration),
    })
}

fn valid_for(c: &Credentials, margin: Duration) -> bool {
    c.expiration.is_none_or(|e| {
        e.duration_since(SystemTime::now())
            .is_ok_and(|left| left > margin)
    })
}

/// IAM role names: 1 to 64 of `A-Za-z0-9+=,.@_-` (so the name is safe in a path).
fn valid_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

fn bad(method: &'static str, path: &str, detail: String) -> NodeError {
    NodeError::BadAnswer {
        method,
        path: path.to_string(),
        detail,
    }
}

fn status_error(method: &'static str, path: &str, status: StatusCode) -> NodeError {
    NodeError::Status {
        method,
        path: path.to_string(),
        status: status.as_u16(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::sts::fake::{answer, FakeServer, Received, Reply};
    use std::sync::atomic::{AtomicU16, AtomicUsize};
    use std::sync::Mutex;

    /// A scripted metadata service: tokens `tok-N`, the role `node-role`, credentials `AKID-N`.
    struct Imds {
        puts: AtomicUsize,
        docs: AtomicUsize,
        /// Tokens answered 401.
        refused: Mutex<Vec<String>>,
        /// Seconds from now to each document's Expiration; the last one repeats.
        expiries: Mutex<Vec<u64>>,
        /// Status of the role listing (200: the role's name).
        listing: AtomicU16,
        code: Mutex<String>,
        region: Mutex<String>,
        /// The TTL the service grants (header), when set.
        granted_ttl: Mutex<Option<String>>,
    }

    impl Imds {
        fn new() -> Arc<Imds> {
            Arc::new(Imds {
                puts: AtomicUsize::new(0),
                docs: AtomicUsize::new(0),
                refused: Mutex::new(Vec::new()),
                expiries: Mutex::new(vec![3600]),
                listing: AtomicU16::new(200),
                code: Mutex::new("Success".into()),
                region: Mutex::new("eu-west-3".into()),
                granted_ttl: Mutex::new(None),
            })
        }

        fn handle(&self, r: &Received) -> Reply {
            assert_eq!(r.header("host"), Some("169.254.169.254"));
            if r.method == "PUT" && r.path == TOKEN_PATH {
                assert_eq!(r.header(TTL_HEADER), Some("21600"));
                assert_eq!(r.header(TOKEN_HEADER), None);
                let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
                let mut head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n",
                    format!("tok-{n}").len()
                );
                if let Some(ttl) = self.granted_ttl.lock().unwrap().as_ref() {
                    head.push_str(&format!("{TTL_HEADER}: {ttl}\r\n"));
                }
                return Reply::Bytes(format!("{head}\r\ntok-{n}").into_bytes());
            }
            assert_eq!(r.method, "GET");
            let token = r
                .header(TOKEN_HEADER)
                .expect("every GET carries the node token");
            if self.refused.lock().unwrap().iter().any(|t| t == token) {
                return answer(401, "text/plain", b"");
            }
            if r.path == CREDENTIALS_PATH {
                let status = self.listing.load(Ordering::SeqCst);
                return answer(status, "text/plain", b"node-role\nsecond-line");
            }
            if r.path == format!("{CREDENTIALS_PATH}node-role") {
                let n = self.docs.fetch_add(1, Ordering::SeqCst) + 1;
                let expiries = self.expiries.lock().unwrap();
                let secs = expiries[(n - 1).min(expiries.len() - 1)];
                let exp = humantime::format_rfc3339_seconds(
                    SystemTime::now() + Duration::from_secs(secs),
                );
                let doc = serde_json::json!({
                    "Code": *self.code.lock().unwrap(),
                    "LastUpdated": "2026-12-03T06:00:00Z",
                    "Type": "AWS-HMAC",
                    "AccessKeyId": format!("AKID-{n}"),
                    "SecretAccessKey": "node-secret",
                    "Token": "node-session-token",
                    "Expiration": exp.to_string(),
                });
                return answer(200, "text/plain", doc.to_string().as_bytes());
            }
            if r.path == REGION_PATH {
                return answer(200, "text/plain", self.region.lock().unwrap().as_bytes());
            }
            answer(404, "text/plain", b"")
        }
    }

    async fn start(imds: &Arc<Imds>) -> (FakeServer, NodeSource) {
        let i = imds.clone();
        let server = FakeServer::start(move |r| i.handle(r)).await;
        let node = NodeSource::new(server.addr, Duration::from_secs(1), Duration::from_secs(2));
        (server, node)
    }

    impl NodeSource {
        /// Moves the cached token's clock forward by `by` (instead of waiting).
        fn age_token(&self, by: Duration) {
            let mut guard = self.token.write().unwrap();
            let t = guard.as_mut().unwrap();
            t.renew_at = t.renew_at.checked_sub(by).unwrap();
            t.expires = t.expires.checked_sub(by).unwrap();
        }
    }

    fn gets(server: &FakeServer, path: &str) -> Vec<String> {
        server
            .received()
            .iter()
            .filter(|r| r.method == "GET" && r.path == path)
            .map(|r| r.header(TOKEN_HEADER).unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn one_token_fetch_is_shared_and_reused() {
        let imds = Imds::new();
        let (server, node) = start(&imds).await;
        assert_eq!(node.current_token(), None);
        let tokens = futures_join(8, || node.token()).await;
        assert!(
            tokens.iter().all(|t| t.as_deref() == Ok("tok-1")),
            "{tokens:?}"
        );
        assert_eq!(imds.puts.load(Ordering::SeqCst), 1);
        assert_eq!(node.token().await.unwrap().as_ref(), "tok-1");
        assert_eq!(node.current_token().as_deref(), Some("tok-1"));
        assert_eq!(imds.puts.load(Ordering::SeqCst), 1);
        assert_eq!(server.received().len(), 1);
    }

    #[tokio::test]
    async fn the_token_is_renewed_past_half_its_ttl_and_dropped_at_expiry() {
        let imds = Imds::new();
        let (_server, node) = start(&imds).await;
        node.token().await.unwrap();
        node.age_token(Duration::from_secs(TOKEN_TTL_SECS / 2 - 60));
        assert_eq!(node.token().await.unwrap().as_ref(), "tok-1");
        node.age_token(Duration::from_secs(61));
        // Past half its TTL: still valid for a forwarded request, renewed by the next token().
        assert_eq!(node.current_token().as_deref(), Some("tok-1"));
        assert_eq!(node.token().await.unwrap().as_ref(), "tok-2");
        assert_eq!(node.current_token().as_deref(), Some("tok-2"));
        let later = |secs| node.current_token_at(Instant::now() + Duration::from_secs(secs));
        assert_eq!(later(TOKEN_TTL_SECS - 60).as_deref(), Some("tok-2"));
        assert_eq!(later(TOKEN_TTL_SECS - 5), None);
        node.age_token(Duration::from_secs(TOKEN_TTL_SECS - 5));
        assert_eq!(node.current_token(), None, "within 10 s of expiry");
        assert_eq!(imds.puts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_shorter_granted_ttl_is_honoured() {
        let imds = Imds::new();
        *imds.granted_ttl.lock().unwrap() = Some("600".into());
        let (_server, node) = start(&imds).await;
        node.token().await.unwrap();
        node.age_token(Duration::from_secs(301));
        assert_eq!(node.token().await.unwrap().as_ref(), "tok-2");
        node.age_token(Duration::from_secs(595));
        assert_eq!(node.current_token(), None);
    }

    #[tokio::test]
    async fn a_401_renews_the_token_and_the_request_is_sent_once_more() {
        let imds = Imds::new();
        let (server, node) = start(&imds).await;
        assert_eq!(node.token().await.unwrap().as_ref(), "tok-1");
        imds.refused.lock().unwrap().push("tok-1".into());
        let creds = node.credentials().await.unwrap();
        assert_eq!(creds.access_key_id, "AKID-1");
        assert_eq!(gets(&server, CREDENTIALS_PATH), ["tok-1", "tok-2"]);
        assert_eq!(
            gets(&server, &format!("{CREDENTIALS_PATH}node-role")),
            ["tok-2"]
        );
        assert_eq!(node.current_token().as_deref(), Some("tok-2"));
        // A 401 reported for a token already replaced changes nothing.
        node.token_rejected("tok-1");
        assert_eq!(node.current_token().as_deref(), Some("tok-2"));
        // Reported for the current one (the pipeline saw a 401): no current token until renewed.
        node.token_rejected("tok-2");
        assert_eq!(node.current_token(), None);
        assert_eq!(node.token().await.unwrap().as_ref(), "tok-3");

        // A service that refuses every token: one retry, then the 401.
        imds.refused
            .lock()
            .unwrap()
            .extend(["tok-3".into(), "tok-4".into()]);
        let e = node.region().await.unwrap_err();
        assert!(matches!(e, NodeError::Status { status: 401, .. }), "{e}");
        assert_eq!(gets(&server, REGION_PATH), ["tok-3", "tok-4"]);
        assert!(!e.to_string().contains("tok-"), "{e}");
    }

    #[tokio::test]
    async fn credentials_are_read_again_within_five_minutes_of_expiry() {
        let imds = Imds::new();
        *imds.expiries.lock().unwrap() = vec![4 * 60, 3600];
        let (server, node) = start(&imds).await;
        let c1 = node.credentials().await.unwrap();
        assert_eq!(c1.access_key_id, "AKID-1");
        assert_eq!(c1.secret_access_key, "node-secret");
        assert_eq!(c1.session_token.as_deref(), Some("node-session-token"));
        let left = c1
            .expiration
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(
            left > Duration::from_secs(200) && left <= Duration::from_secs(240),
            "{left:?}"
        );
        // Within 5 minutes of expiry: read again.
        assert_eq!(node.credentials().await.unwrap().access_key_id, "AKID-2");
        // An hour left: the cached ones.
        assert_eq!(node.credentials().await.unwrap().access_key_id, "AKID-2");
        assert_eq!(imds.docs.load(Ordering::SeqCst), 2);
        assert_eq!(gets(&server, CREDENTIALS_PATH).len(), 2);
        assert_eq!(
            imds.puts.load(Ordering::SeqCst),
            1,
            "one token for all of it"
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_read_and_its_failure() {
        let imds = Imds::new();
        let (server, node) = start(&imds).await;
        let got = futures_join(8, || node.credentials()).await;
        assert!(got
            .iter()
            .all(|c| c.as_ref().unwrap().access_key_id == "AKID-1"));
        assert_eq!(gets(&server, CREDENTIALS_PATH).len(), 1);

        let imds = Imds::new();
        imds.listing.store(503, Ordering::SeqCst);
        let (server, node) = start(&imds).await;
        let got = futures_join(8, || node.credentials()).await;
        for e in &got {
            let e = e.as_ref().unwrap_err();
            assert!(
                matches!(e, NodeError::Status { status: 503, .. }) && e.recoverable(),
                "{e}"
            );
        }
        assert_eq!(
            gets(&server, CREDENTIALS_PATH).len(),
            1,
            "one failed read, shared"
        );
        // A later caller tries again.
        imds.listing.store(200, Ordering::SeqCst);
        assert_eq!(node.credentials().await.unwrap().access_key_id, "AKID-1");
    }

    #[tokio::test]
    async fn still_valid_credentials_outlive_a_failed_re_read() {
        let imds = Imds::new();
        *imds.expiries.lock().unwrap() = vec![4 * 60];
        let (_server, node) = start(&imds).await;
        assert_eq!(node.credentials().await.unwrap().access_key_id, "AKID-1");
        imds.listing.store(500, Ordering::SeqCst);
        assert_eq!(node.credentials().await.unwrap().access_key_id, "AKID-1");
        // Control: with nothing cached the failure is the answer.
        let imds = Imds::new();
        imds.listing.store(500, Ordering::SeqCst);
        let (_server, node) = start(&imds).await;
        assert!(node.credentials().await.is_err());
    }

    #[tokio::test]
    async fn region_is_read_once_and_checked() {
        let imds = Imds::new();
        let (server, node) = start(&imds).await;
        assert_eq!(node.region().await.unwrap(), "eu-west-3");
        *imds.region.lock().unwrap() = "us-east-1".into();
        assert_eq!(node.region().await.unwrap(), "eu-west-3");
        assert_eq!(gets(&server, REGION_PATH).len(), 1);

        let imds = Imds::new();
        *imds.region.lock().unwrap() = "eu-west-3.evil.example/".into();
        let (_server, node) = start(&imds).await;
        let e = node.region().await.unwrap_err();
        assert!(
            matches!(e, NodeError::BadAnswer { .. }) && !e.recoverable(),
            "{e}"
        );
    }

    #[tokio::test]
    async fn bad_answers_and_their_classes() {
        // Credentials not ready yet: recoverable.
        let imds = Imds::new();
        *imds.code.lock().unwrap() = "Pending".into();
        let (_server, node) = start(&imds).await;
        let e = node.credentials().await.unwrap_err();
        assert!(
            matches!(&e, NodeError::NotReady { code, .. } if code == "Pending"),
            "{e}"
        );
        assert!(e.recoverable());
        // No instance profile: 404, not recoverable.
        let imds = Imds::new();
        imds.listing.store(404, Ordering::SeqCst);
        let (_server, node) = start(&imds).await;
        let e = node.credentials().await.unwrap_err();
        assert!(
            matches!(e, NodeError::Status { status: 404, .. }) && !e.recoverable(),
            "{e}"
        );
        assert!(e.to_string().contains(CREDENTIALS_PATH), "{e}");

        // Oversized, malformed, never-ending, unreachable.
        let big = "x".repeat(MAX_ANSWER + 1);
        let server = FakeServer::start(move |r| match r.path.as_str() {
            TOKEN_PATH => answer(200, "text/plain", b"tok"),
            REGION_PATH => answer(200, "text/plain", big.as_bytes()),
            CREDENTIALS_PATH => answer(200, "text/plain", b"node-role"),
            p if p.ends_with("node-role") => answer(
                200,
                "text/plain",
                b"{\"Code\":\"Success\",\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s3cr3t\"",
            ),
            _ => Reply::Hang,
        })
        .await;
        let node = NodeSource::new(
            server.addr,
            Duration::from_millis(200),
            Duration::from_millis(300),
        );
        let e = node.region().await.unwrap_err();
        assert!(
            matches!(e, NodeError::BadAnswer { .. }) && e.to_string().contains("65536"),
            "{e}"
        );
        let e = node.credentials().await.unwrap_err();
        assert!(matches!(e, NodeError::BadAnswer { .. }), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = node
            .exchange(Method::GET, "/latest/meta-data/hang", (TOKEN_HEADER, "tok"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, NodeError::Timeout { after_ms: 500, .. }) && e.recoverable(),
            "{e}"
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let node = NodeSource::new(addr, Duration::from_millis(200), Duration::from_millis(300));
        let e = node.token().await.unwrap_err();
        assert!(
            matches!(e, NodeError::Transport { method: "PUT", .. }) && e.recoverable(),
            "{e}"
        );
        assert_eq!(node.current_token(), None);
    }

    #[test]
    fn the_credentials_document() {
        let path = "/p";
        let ok = r#"{"Code":"Success","LastUpdated":"x","Type":"AWS-HMAC","AccessKeyId":"A","SecretAccessKey":"S","Token":"T","Expiration":"2026-12-03T07:00:00Z"}"#;
        let c = parse_credentials(path, ok).unwrap();
        assert_eq!(
            c.expiration,
            Some(std::time::UNIX_EPOCH + Duration::from_secs(1_796_281_200))
        );
        assert_eq!(c.session_token.as_deref(), Some("T"));
        // A long-term key: no token, signed without one.
        let long_term = parse_credentials(path, &ok.replace(r#""Token":"T","#, "")).unwrap();
        assert_eq!(long_term.session_token, None);
        let empty = parse_credentials(path, &ok.replace(r#""Token":"T""#, r#""Token":"""#));
        assert_eq!(empty.unwrap().session_token, None);
        for (doc, why) in [
            (ok.replace(r#""S""#, r#""""#), "no SecretAccessKey"),
            (ok.replace("2026-12-03T07:00:00Z", "soon"), "expiration"),
            ("[]".into(), "not the credentials document"),
        ] {
            let e = parse_credentials(path, &doc).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
        assert!(valid_role_name("node-role_1+=,.@"));
        for bad in ["", "a/b", "../x", "a b", &"r".repeat(65)] {
            assert!(!valid_role_name(bad), "{bad}");
        }
    }

    /// `n` calls of `f`, polled together.
    async fn futures_join<T, Fut: Future<Output = T>>(n: usize, f: impl Fn() -> Fut) -> Vec<T> {
        let mut set: Vec<std::pin::Pin<Box<Fut>>> = (0..n).map(|_| Box::pin(f())).collect();
        let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (i, fut) in set.iter_mut().enumerate() {
                if out[i].is_none() {
                    match fut.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => out[i] = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.into_iter().map(|v| v.unwrap()).collect()
    }
}
