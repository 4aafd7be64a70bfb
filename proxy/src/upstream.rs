//! Forwarding allowed requests to the metadata service.
//!
//! One hyper client with a pool of kept-alive connections serves every endpoint (the pool is keyed
//! by upstream address). The endpoint is chosen by the local port the pod's connection arrived on,
//! never by the Host header. The whole exchange (connect, request, complete body) runs under the
//! response timeout, and the body is buffered up to a size cap, so a slow or huge upstream answer
//! becomes a clean 504 or 502 instead of a half-relayed response.

use crate::config::{EndpointConfig, UpstreamConfig};
use crate::metrics::UpstreamFailure;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Where one endpoint's allowed requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    authority: Authority,
    /// Host header value: the metadata service's own address (what the pod addressed), even when
    /// `addr` points elsewhere (a test fake, a local cache).
    pub host: String,
}

impl Target {
    pub fn from_config(e: &EndpointConfig) -> Result<Target, UpstreamSetupError> {
        let addr = e.upstream_addr();
        let authority: Authority = addr.to_string().parse().map_err(|_| {
            UpstreamSetupError(format!("endpoint {}: bad upstream address {addr}", e.name))
        })?;
        Ok(Target {
            name: e.name.clone(),
            addr,
            authority,
            host: host_header(e.address, e.port),
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamSetupError(String);

/// `169.254.169.254`, `[fd00:ec2::254]`, with `:port` only when it is not 80.
pub fn host_header(ip: IpAddr, port: u16) -> String {
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// A failed exchange, answered to the pod as 502 or 504 with [`UpstreamError::reason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: UpstreamFailure,
    pub detail: String,
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self.kind {
            UpstreamFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn reason(&self) -> String {
        let what = match self.kind {
            UpstreamFailure::Connect => "upstream connection failed",
            UpstreamFailure::Timeout => "upstream timed out",
            UpstreamFailure::Oversize => "upstream response too large",
            UpstreamFailure::Reset => "upstream connection broken",
        };
        if self.detail.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {}", self.detail)
        }
    }
}

/// A complete upstream response.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Upstream {
    client: Client<HttpConnector, Empty<Bytes>>,
    targets: Vec<Target>,
    response_timeout: Duration,
    max_response_bytes: usize,
}

impl Upstream {
    pub fn new(
        cfg: &UpstreamConfig,
        endpoints: &[EndpointConfig],
    ) -> Result<Upstream, UpstreamSetupError> {
        let targets = endpoints
            .iter()
            .map(Target::from_config)
            .collect::<Result<Vec<_>, _>>()?;
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
        // Upstream addresses are IP literals: no resolver is ever consulted.
        conn.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(cfg.pool_idle_timeout_ms))
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            // We set Host ourselves (headers::upstream_headers), from configuration.
            .set_host(false)
            .build(conn);
        Ok(Upstream {
            client,
            targets,
            response_timeout: Duration::from_millis(cfg.response_timeout_ms),
            max_response_bytes: cfg.max_response_bytes,
        })
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn target(&self, endpoint: usize) -> Option<&Target> {
        self.targets.get(endpoint)
    }

    /// Sends `method path_and_query` with `headers` (already filtered, Host set) to `endpoint`.
    pub async fn send(
        &self,
        endpoint: usize,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let target = self.targets.get(endpoint).ok_or_else(|| UpstreamError {
            kind: UpstreamFailure::Connect,
            detail: "no such endpoint".into(),
        })?;
        let pq = PathAndQuery::try_from(path_and_query).map_err(|e| UpstreamError {
            kind: UpstreamFailure::Connect,
            detail: format!("bad target: {e}"),
        })?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(target.authority.clone());
        parts.path_and_query = Some(pq);
        let uri = Uri::from_parts(parts).map_err(|e| UpstreamError {
            kind: UpstreamFailure::Connect,
            detail: format!("bad target: {e}"),
        })?;
        let mut req = Request::new(Empty::new());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;

        let exchange = async {
            let resp = self.client.request(req).await.map_err(classify)?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        UpstreamError {
                            kind: UpstreamFailure::Oversize,
                            detail: format!("more than {} bytes", self.max_response_bytes),
                        }
                    } else {
                        UpstreamError {
                            kind: UpstreamFailure::Reset,
                            detail: root_cause(&*e),
                        }
                    }
                })?;
            Ok(UpstreamResponse {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        match tokio::time::timeout(self.response_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError {
                kind: UpstreamFailure::Timeout,
                detail: format!(
                    "no complete response within {} ms",
                    self.response_timeout.as_millis()
                ),
            }),
        }
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> UpstreamError {
    let detail = root_cause(&e);
    if e.is_connect() {
        let timed_out = chain(&e).any(|s| {
            s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        let kind = if timed_out {
            UpstreamFailure::Timeout
        } else {
            UpstreamFailure::Connect
        };
        return UpstreamError { kind, detail };
    }
    UpstreamError {
        kind: UpstreamFailure::Reset,
        detail,
    }
}

fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |e: &&'a (dyn StdError + 'static)| {
        let e: &'a (dyn StdError + 'static) = *e;
        e.source()
    })
}

/// The innermost error's message (the useful part: "Connection refused (os error 111)").
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    chain(e).last().map(|s| s.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers() {
        assert_eq!(
            host_header("169.254.169.254".parse().unwrap(), 80),
            "169.254.169.254"
        );
        assert_eq!(
            host_header("fd00:ec2::254".parse().unwrap(), 80),
            "[fd00:ec2::254]"
        );
        assert_eq!(
            host_header("fd00:ec2::254".parse().unwrap(), 8080),
            "[fd00:ec2::254]:8080"
        );
    }

    #[test]
    fn statuses_and_reasons() {
        let t = UpstreamError {
            kind: UpstreamFailure::Timeout,
            detail: "x".into(),
        };
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(t.reason(), "upstream timed out: x");
        let c = UpstreamError {
            kind: UpstreamFailure::Connect,
            detail: String::new(),
        };
        assert_eq!(c.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(c.reason(), "upstream connection failed");
    }

    fn upstream(addr: SocketAddr, max: usize, timeout_ms: u64) -> Upstream {
        let ep = EndpointConfig {
            name: "e".into(),
            address: "169.254.169.254".parse().unwrap(),
            port: 80,
            proxy_port: 8169,
            upstream: Some(addr),
        };
        let cfg = UpstreamConfig {
            max_response_bytes: max,
            response_timeout_ms: timeout_ms,
            ..Default::default()
        };
        Upstream::new(&cfg, &[ep]).unwrap()
    }

    /// A one-shot raw HTTP server on loopback answering `reply` (or nothing, when `None`).
    async fn serve_once(
        reply: Option<&'static [u8]>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            match reply {
                Some(r) => {
                    s.write_all(r).await.unwrap();
                }
                None => {
                    // Hold the connection open without answering until the client gives up.
                    let _ = s.read(&mut buf).await;
                }
            }
            got
        });
        (addr, h)
    }

    #[tokio::test]
    async fn forwards_and_buffers() {
        let (addr, h) = serve_once(Some(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello",
        ))
        .await;
        let u = upstream(addr, 1024, 2000);
        let mut hm = HeaderMap::new();
        hm.insert(http::header::HOST, "169.254.169.254".parse().unwrap());
        let r = u
            .send(0, Method::GET, "/latest/meta-data/?a=1", hm)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"hello");
        assert_eq!(r.headers["x-a"], "b");
        let req = String::from_utf8(h.await.unwrap()).unwrap();
        assert!(
            req.starts_with("GET /latest/meta-data/?a=1 HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase()
                .contains("host: 169.254.169.254\r\n"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn oversize_is_502() {
        let (addr, _h) = serve_once(Some(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789",
        ))
        .await;
        let u = upstream(addr, 4, 2000);
        let e = u
            .send(0, Method::GET, "/", HeaderMap::new())
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, UpstreamFailure::Oversize);
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn silence_is_504() {
        let (addr, _h) = serve_once(None).await;
        let u = upstream(addr, 1024, 100);
        let e = u
            .send(0, Method::GET, "/", HeaderMap::new())
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, UpstreamFailure::Timeout);
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[tokio::test]
    async fn refused_is_502() {
        // Bind then drop to get a loopback port with nothing listening.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let u = upstream(addr, 1024, 2000);
        let e = u
            .send(0, Method::GET, "/", HeaderMap::new())
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, UpstreamFailure::Connect, "{e:?}");
        assert!(e.reason().contains("refused"), "{}", e.reason());
    }

    #[tokio::test]
    async fn reset_mid_response_is_502() {
        let (addr, _h) = serve_once(Some(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial",
        ))
        .await;
        let u = upstream(addr, 1024, 2000);
        let e = u
            .send(0, Method::GET, "/", HeaderMap::new())
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, UpstreamFailure::Reset, "{e:?}");
    }
}
