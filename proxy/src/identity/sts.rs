//! One `sts:AssumeRole` call: the form, its SigV4 signature, the answer parsed (docs/identity.md).
//!
//! The signature is `aws-sigv4`'s (service `sts`, the client's region, the node's credentials;
//! their session token goes in `X-Amz-Security-Token`, signed). The transport is hyper-util's
//! client over rustls (ring, Mozilla's roots compiled in); `http://` endpoints are accepted for
//! test STS servers. The whole exchange runs under `aws.sts.timeout_ms` and the answer is read up
//! to [`MAX_ANSWER`] bytes. [`parse`] reads the XML and sorts error answers into [`StsError`].

mod parse;
pub(crate) use parse::parse_time;
#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use super::{Credentials, RoleCredentials};
use crate::config::StsConfig;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The largest STS answer read (a success is about 1.5 KiB; an error less).
pub const MAX_ANSWER: usize = 64 * 1024;
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// What one AssumeRole asks for.
#[derive(Debug, Clone, Copy)]
pub struct AssumeRoleRequest<'a> {
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub duration_seconds: u32,
    pub external_id: Option<&'a str>,
    /// A session policy (JSON), sent as `Policy`.
    pub policy: Option<&'a str>,
    /// Session tags, sent as `Tags.member.N.Key` / `.Value` (N from 1) in this order.
    pub tags: &'a [(String, String)],
}

/// Why an STS call gave no credentials. `Display` never holds a secret key or a session token
/// (the node's are cut out of STS's messages, which are also shortened and stripped of control
/// characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    /// The endpoint or region in the configuration cannot be used (from [`StsClient::new`]).
    #[error("STS client not set up ({endpoint}): {detail}")]
    Config { endpoint: String, detail: String },
    /// The request could not be built or signed (a value a header or form cannot carry).
    #[error("STS request not sent: {0}")]
    Request(&'static str),
    /// No answer: connection refused or reset, DNS, TLS.
    #[error("STS {endpoint} unreachable: {detail}")]
    Transport { endpoint: String, detail: String },
    #[error("STS {endpoint}: no complete answer within {after_ms} ms")]
    Timeout { endpoint: String, after_ms: u64 },
    /// STS (or the identity provider behind it) asked us to slow down.
    #[error("STS throttled the call: {code} (HTTP {status}): {message}")]
    Throttled {
        status: u16,
        code: String,
        message: String,
    },
    /// HTTP 5xx, or a code that says STS failed on its side (`InternalFailure`,
    /// `ServiceUnavailable`, `IDPCommunicationError`).
    #[error("STS failed (HTTP {status}): {code}: {message}")]
    ServerError {
        status: u16,
        code: String,
        message: String,
    },
    /// Refused for who asked: the node's credentials or the role's trust policy
    /// (`AccessDenied`, `InvalidClientTokenId`, `SignatureDoesNotMatch`, `ExpiredToken`, ...).
    #[error("STS refused: {code} (HTTP {status}): {message}")]
    Denied {
        status: u16,
        code: String,
        message: String,
    },
    /// Refused for what was asked (`ValidationError`, `MalformedPolicyDocument`,
    /// `PackedPolicyTooLarge`, ...).
    #[error("STS refused the request: {code} (HTTP {status}): {message}")]
    InvalidRequest {
        status: u16,
        code: String,
        message: String,
    },
    /// An answer that is not what STS sends: not XML, fields missing, too large.
    #[error("STS answer (HTTP {status}) not understood: {detail}")]
    BadResponse { status: u16, detail: String },
}

impl StsError {
    /// Whether the same call may succeed later without a change of configuration or policy:
    /// transport, timeout, throttling, server errors, and a 2xx answer that did not parse (a
    /// middlebox or a cut connection, not a refusal).
    pub fn recoverable(&self) -> bool {
        match self {
            StsError::Transport { .. }
            | StsError::Timeout { .. }
            | StsError::Throttled { .. }
            | StsError::ServerError { .. } => true,
            StsError::BadResponse { status, .. } => (200..300).contains(status),
            StsError::Config { .. }
            | StsError::Request(_)
            | StsError::Denied { .. }
            | StsError::InvalidRequest { .. } => false,
        }
    }

    /// A metric label from the closed set `metrics::STS_RESULTS` (its `result` label).
    pub fn result_label(&self) -> &'static str {
        match self {
            StsError::Config { .. } => "config",
            StsError::Request(_) | StsError::InvalidRequest { .. } => "invalid_request",
            StsError::Transport { .. } => "transport",
            StsError::Timeout { .. } => "timeout",
            StsError::Throttled { .. } => "throttled",
            StsError::ServerError { .. } => "server_error",
            StsError::Denied { .. } => "denied",
            StsError::BadResponse { .. } => "bad_response",
        }
    }

    /// STS's error code, when it sent one (`AccessDenied`, `Throttling`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            StsError::Throttled { code, .. }
            | StsError::ServerError { code, .. }
            | StsError::Denied { code, .. }
            | StsError::InvalidRequest { code, .. } => Some(code),
            _ => None,
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Calls `sts:AssumeRole` at one endpoint, in one region. `&self` calls run concurrently over a
/// pool of kept-alive connections; a clone shares that pool.
#[derive(Clone)]
pub struct StsClient {
    endpoint: String,
    uri: Uri,
    /// `host[:port]` as the endpoint names it: sent as `Host` and signed.
    host: HeaderValue,
    region: String,
    timeout: Duration,
    client: HttpsClient,
}

impl std::fmt::Debug for StsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsClient")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StsClient {
    /// `cfg.endpoint`, or `https://sts.{region}.amazonaws.com` (`.com.cn` in China) when it is
    /// empty; `region` signs.
    pub fn new(cfg: &StsConfig, region: &str) -> Result<StsClient, StsError> {
        let endpoint = if cfg.endpoint.is_empty() {
            // The China partition has its own domain; other partitions (ISO) set `endpoint`.
            let domain = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://sts.{region}.{domain}")
        } else {
            cfg.endpoint.trim_end_matches('/').to_string()
        };
        // A user part (`https://user:password@host`) is refused, and never shown.
        let shown = if endpoint.contains('@') {
            "(an endpoint with a user part)".to_string()
        } else {
            endpoint.clone()
        };
        let config_err = |detail: String| StsError::Config {
            endpoint: shown.clone(),
            detail,
        };
        if !valid_region(region) {
            return Err(config_err(format!(
                "region {region:?} is not a region name (a-z, 0-9, -)"
            )));
        }
        let uri: Uri = format!("{endpoint}/")
            .parse()
            .map_err(|e| config_err(format!("not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("https") | Some("http") => {}
            _ => {
                return Err(config_err(
                    "the scheme must be https:// (or http://)".into(),
                ))
            }
        }
        if uri.path() != "/" || uri.query().is_some() {
            return Err(config_err("no path or query is allowed".into()));
        }
        let host = uri
            .authority()
            .filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
            .ok_or_else(|| config_err("no host (or a user part)".into()))?;
        let host = HeaderValue::from_str(host.as_str())
            .map_err(|_| config_err("the host is not a header value".into()))?;
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let client = https_client(timeout).map_err(|e| config_err(format!("TLS: {e}")))?;
        Ok(StsClient {
            endpoint,
            uri,
            host,
            region: region.to_string(),
            timeout,
            client,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// One AssumeRole with the node's credentials.
    pub async fn assume_role(
        &self,
        node: &Credentials,
        req: &AssumeRoleRequest<'_>,
    ) -> Result<RoleCredentials, StsError> {
        let request = self.signed_request(node, req, SystemTime::now())?;
        let exchange = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| self.transport_detail(&e))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        StsError::BadResponse {
                            status,
                            detail: format!("answer longer than {MAX_ANSWER} bytes"),
                        }
                    } else {
                        self.transport_detail(&*e)
                    }
                })?
                .to_bytes();
            Ok::<_, StsError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| StsError::Timeout {
                endpoint: self.endpoint.clone(),
                after_ms: self.timeout.as_millis() as u64,
            })??;
        if status == 200 {
            parse::success(&body).map_err(|detail| StsError::BadResponse { status, detail })
        } else {
            Err(parse::error(status, &body, &secrets(node)))
        }
    }

    /// The POST, signed at `now` (tests pass a fixed time).
    fn signed_request(
        &self,
        node: &Credentials,
        req: &AssumeRoleRequest<'_>,
        now: SystemTime,
    ) -> Result<Request<Full<Bytes>>, StsError> {
        let body = form_body(req);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, FORM_CONTENT_TYPE)
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|_| StsError::Request("the request could not be built"))?;
        let identity = aws_credential_types::Credentials::new(
            node.access_key_id.clone(),
            node.secret_access_key.clone(),
            node.session_token.clone(),
            None,
            "metaguard-node",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sts")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| StsError::Request("the signing parameters are incomplete"))?
            .into();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let signable = SignableRequest::new(
            "POST",
            self.uri.to_string(),
            headers,
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|_| StsError::Request("the request could not be signed"))?;
        // The error is not shown: it could quote a header value (the session token).
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|_| {
                StsError::Request(
                    "the request could not be signed (a credential holds a character a header cannot carry)",
                )
            })?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }

    /// The error and its causes, one line (hyper's and rustls's messages carry no header values).
    fn transport_detail(&self, e: &(dyn std::error::Error + 'static)) -> StsError {
        StsError::Transport {
            endpoint: self.endpoint.clone(),
            detail: error_chain(e),
        }
    }
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

/// `Action=AssumeRole&Version=2011-06-15&...`, form-encoded byte for byte as botocore encodes it
/// (Python's `urlencode`: letters, digits and `-_.~` as they are, space as `+`, the rest `%XX`).
/// STS hashes the body it receives, so any form encoding signs; but a server that checks the
/// signature over the form it parsed and encoded again (moto does) only agrees with this one.
fn form_body(req: &AssumeRoleRequest<'_>) -> String {
    let mut pairs: Vec<(std::borrow::Cow<'_, str>, &str)> = vec![
        ("Action".into(), "AssumeRole"),
        ("Version".into(), "2011-06-15"),
        ("RoleArn".into(), req.role_arn),
        ("RoleSessionName".into(), req.session_name),
    ];
    let duration = req.duration_seconds.to_string();
    pairs.push(("DurationSeconds".into(), &duration));
    if let Some(id) = req.external_id {
        pairs.push(("ExternalId".into(), id));
    }
    if let Some(policy) = req.policy {
        pairs.push(("Policy".into(), policy));
    }
    for (n, (key, value)) in req.tags.iter().enumerate() {
        let n = n + 1;
        pairs.push((format!("Tags.member.{n}.Key").into(), key));
        pairs.push((format!("Tags.member.{n}.Value").into(), value));
    }
    let mut body = String::new();
    for (k, v) in &pairs {
        if !body.is_empty() {
            body.push('&');
        }
        body.push_str(&form_encode(k));
        body.push('=');
        body.push_str(&form_encode(v));
    }
    body
}

/// Everything but letters, digits and `-_.~` is escaped (space too: it becomes `+` below).
const FORM_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn form_encode(s: &str) -> String {
    // A `%20` here can only come from a space: a `%` in the input is itself escaped (`%25`).
    percent_encoding::utf8_percent_encode(s, FORM_ESCAPED)
        .to_string()
        .replace("%20", "+")
}

/// What must never appear in an error message: the node's secret key and session token.
fn secrets(node: &Credentials) -> Vec<&str> {
    let mut s = vec![node.secret_access_key.as_str()];
    s.extend(node.session_token.as_deref());
    s.retain(|s| !s.is_empty());
    s
}

/// A region name goes into a host name: `us-east-1`, `cn-north-1`, `us-gov-west-1`.
pub(crate) fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// rustls with ring and the Mozilla roots, over hyper-util's pooled client; plain `http://` too.
fn https_client(timeout: Duration) -> Result<HttpsClient, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)?
        .https_or_http()
        .enable_http1()
        .wrap_connector({
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_connect_timeout(Some(timeout));
            http.set_nodelay(true);
            http
        });
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}
