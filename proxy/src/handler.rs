//! The per-request pipeline.
//!
//! canonicalise the target -> check framing and headers -> who is calling -> select the pod's
//! policy -> decide -> forward (allow, audit) or answer locally (deny, respond, refusals).
//! Every path ends in [`finish`], which writes the decision line and counts the request, so no
//! request goes unrecorded. Nothing here holds a lock across an await.

use crate::app::App;
use crate::cache::{self, CacheUse};
use crate::canon::{self, CanonicalTarget};
use crate::decision_log::{self, Entry};
use crate::headers;
use crate::outcome::Outcome;
use crate::policy::{Action, RequestView};
use crate::records::Identity;
use crate::relay::RelayedHead;
use crate::upstream;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode, Version};
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// An answer's body: every answer is one buffer, written with its head in one go.
pub type Body = Bytes;

/// A request as the pod-facing server read it (requests have no body).
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: Method,
    /// The request-target exactly as received (not yet canonicalised).
    pub target: &'a str,
    pub version: Version,
    pub headers: &'a HeaderMap,
}

/// The handler's answer, and whether the connection must close after it: a request refused as
/// invalid (target, framing or headers) ends the connection, so nothing sent after it is read.
#[derive(Debug)]
pub struct Answer {
    /// Status and body; a local answer's headers.
    pub resp: Response<Body>,
    /// A forwarded answer's headers, as relayed from the upstream (`resp` then has none).
    pub relayed: Option<RelayedHead>,
    pub close: bool,
}

/// What the connection knows before any request: the caller's address and which endpoint's
/// port it connected to.
#[derive(Debug, Clone, Copy)]
pub struct ConnCtx {
    /// Normalised (IPv4-mapped IPv6 -> IPv4).
    pub peer: IpAddr,
    pub endpoint: usize,
    /// The worker thread serving the connection (selects its upstream pool).
    pub worker: usize,
}

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A local answer: `reason` as a one-line text body.
pub fn text_response(status: StatusCode, reason: &str) -> Response<Body> {
    let mut body = Vec::with_capacity(reason.len() + 1);
    body.extend_from_slice(reason.as_bytes());
    // One line, whatever the reason contains.
    if reason.chars().any(char::is_control) {
        body = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into_bytes();
    }
    body.push(b'\n');
    text_body_response(status, Bytes::from(body))
}

/// A local answer whose one-line text `body` (newline included) is already built.
fn text_body_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
    r
}

fn status(code: u16) -> StatusCode {
    // Policy statuses are validated when the file is loaded; 403 is the safe fallback.
    StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN)
}

/// The fields of a decision line that are known by the end of the request.
struct Outcomes<'a> {
    outcome: Outcome,
    policy: Option<&'a str>,
    rule: Option<&'a str>,
    status: StatusCode,
    upstream_status: Option<u16>,
    reason: Option<&'a str>,
    cache: CacheUse,
}

impl<'a> Outcomes<'a> {
    /// A request answered locally before policy was consulted.
    fn before_policy(outcome: Outcome, status: StatusCode, reason: &'a str) -> Outcomes<'a> {
        Outcomes {
            outcome,
            policy: None,
            rule: None,
            status,
            upstream_status: None,
            reason: Some(reason),
            cache: CacheUse::Off,
        }
    }
}

fn answer(resp: Response<Body>) -> Answer {
    Answer {
        resp,
        relayed: None,
        close: false,
    }
}

/// A forwarded (or cached) upstream answer.
fn relayed_answer(status: StatusCode, head: RelayedHead, body: Body) -> Answer {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    Answer {
        resp,
        relayed: Some(head),
        close: false,
    }
}

/// Decides and answers one request. `timer` is the connection's timer, lent for the upstream
/// response timeout (the connection does not need it while a request is being handled);
/// `scratch` is a buffer of the connection's, free while the request is handled, that holds the
/// upstream request.
pub async fn handle(
    app: &App,
    ctx: ConnCtx,
    parts: &RequestHead<'_>,
    timer: Pin<&mut Sleep>,
    scratch: &mut Vec<u8>,
) -> Answer {
    let start = Instant::now();
    // One snapshot for the whole request: a reload meanwhile does not mix two policies.
    let snap = app.policy.current();
    let caller = app.records.lookup_at(ctx.peer, &snap, start);
    let record: Option<&Identity> = caller
        .as_ref()
        .ok()
        .and_then(|c| c.as_ref())
        .map(|c| &*c.identity);

    let target = match canon::canonicalize_str(&parts.method, parts.target) {
        Ok(t) => t,
        Err(rej) => {
            let o = Outcomes::before_policy(Outcome::Invalid, status(rej.status), &rej.reason);
            return refuse(app, ctx, record, parts, None, &o, start.elapsed());
        }
    };
    if let Err(rej) = headers::check_request_headers(parts.version, parts.headers) {
        let o = Outcomes::before_policy(Outcome::Invalid, status(rej.status), &rej.reason);
        return refuse(app, ctx, record, parts, Some(&target), &o, start.elapsed());
    }
    let caller = match &caller {
        Ok(Some(c)) => c,
        Ok(None) => {
            let o = Outcomes::before_policy(
                Outcome::UnknownCaller,
                StatusCode::FORBIDDEN,
                "no pod record for this source address",
            );
            return refuse(app, ctx, None, parts, Some(&target), &o, start.elapsed());
        }
        Err(e) => {
            // Fail closed: an unreadable record is no identity.
            log::warn!("pod record for {}: {e}", ctx.peer);
            let o = Outcomes::before_policy(
                Outcome::Error,
                StatusCode::FORBIDDEN,
                "pod record unreadable",
            );
            return refuse(app, ctx, None, parts, Some(&target), &o, start.elapsed());
        }
    };

    let policy = snap.policy(caller.policy);
    let view = RequestView {
        method: &parts.method,
        target: &target,
        headers: parts.headers,
    };
    let d = policy.decide(&view);
    let rec = Some(&*caller.identity);
    match d.action {
        Action::Deny {
            status: code,
            reason,
            ..
        } => {
            let st = status(*code);
            let body = d.deny_body(&view).unwrap_or_default();
            let o = Outcomes {
                outcome: Outcome::Deny,
                policy: Some(d.policy),
                rule: Some(d.rule_id),
                status: st,
                upstream_status: None,
                reason: Some(reason),
                cache: CacheUse::Off,
            };
            finish(app, ctx, rec, parts, Some(&target), &o, start.elapsed());
            let mut resp = text_body_response(st, body);
            add_headers(resp.headers_mut(), policy.response_headers());
            answer(resp)
        }
        Action::Respond {
            status: code,
            headers: hs,
            body,
        } => {
            let st = status(*code);
            let o = Outcomes {
                outcome: Outcome::Respond,
                policy: Some(d.policy),
                rule: Some(d.rule_id),
                status: st,
                upstream_status: None,
                reason: None,
                cache: CacheUse::Off,
            };
            finish(app, ctx, rec, parts, Some(&target), &o, start.elapsed());
            let mut resp = Response::new(body.clone());
            *resp.status_mut() = st;
            add_headers(resp.headers_mut(), policy.response_headers());
            // The rule's own headers win over the policy's.
            for (n, v) in hs {
                resp.headers_mut().insert(n.clone(), v.clone());
            }
            answer(resp)
        }
        Action::Allow => {
            let outcome = if d.audit {
                Outcome::Audit
            } else {
                Outcome::Allow
            };
            // The policy has allowed this request (above, on every request); only now may the
            // cache answer it, and only for a GET under a rule with `cache_ttl_ms`. The key is
            // built from the request itself, so a hit costs no upstream header map.
            let mut cache_use = CacheUse::Off;
            let mut key = Vec::new();
            if let (Some(_), &Method::GET) = (d.cache_ttl, &parts.method) {
                let mut c = app.cache.lock(ctx.worker);
                if c.enabled() {
                    cache::key(
                        &mut key,
                        ctx.endpoint,
                        target.path,
                        target.raw_query,
                        headers::forwarded(parts.headers),
                    );
                    if let Some(hit) = c.get(snap.generation, &key, start) {
                        drop(c);
                        let o = Outcomes {
                            outcome,
                            policy: Some(d.policy),
                            rule: Some(d.rule_id),
                            status: StatusCode::OK,
                            upstream_status: None,
                            reason: None,
                            cache: CacheUse::Hit,
                        };
                        finish(app, ctx, rec, parts, Some(&target), &o, start.elapsed());
                        return relayed_answer(StatusCode::OK, hit.head, hit.body);
                    }
                    cache_use = CacheUse::Miss;
                }
            }
            let upstream = app.upstream(ctx.worker);
            let host = upstream
                .target(ctx.endpoint)
                .map(|t| t.host.as_str())
                .unwrap_or("");
            // Exactly what was matched: the canonical path and the raw query (`forward_target`).
            scratch.clear();
            upstream::encode_request(scratch, &parts.method, target.path, target.raw_query, |v| {
                headers::write_upstream_headers(parts.headers, host, v)
            });
            let up_start = Instant::now();
            let head_only = parts.method == Method::HEAD;
            let result = upstream
                .send_encoded(ctx.endpoint, head_only, scratch, timer, up_start)
                .await;
            // One clock read for the upstream latency and the request's.
            let done = Instant::now();
            let latency = done.saturating_duration_since(start);
            match result {
                Ok(up) => {
                    app.metrics
                        .observe_upstream(ctx.endpoint, done.saturating_duration_since(up_start));
                    let o = Outcomes {
                        outcome,
                        policy: Some(d.policy),
                        rule: Some(d.rule_id),
                        status: up.status,
                        upstream_status: Some(up.status.as_u16()),
                        reason: None,
                        cache: cache_use,
                    };
                    finish(app, ctx, rec, parts, Some(&target), &o, latency);
                    // The upstream's headers arrive filtered for relaying (`relay`); the
                    // pod-facing server frames the answer by the exact length of the body.
                    if let (CacheUse::Miss, Some(ttl)) = (cache_use, d.cache_ttl) {
                        if cache::storable(up.status) {
                            let value = cache::Cached {
                                head: up.head.clone(),
                                body: up.body.clone(),
                            };
                            app.cache.lock(ctx.worker).insert(
                                snap.generation,
                                &key,
                                value,
                                ttl,
                                done,
                            );
                        }
                    }
                    relayed_answer(up.status, up.head, up.body)
                }
                Err(e) => {
                    app.metrics.upstream_failed(ctx.endpoint, e.kind);
                    let reason = e.reason();
                    log::debug!("upstream {}: {reason}", app.endpoint_name(ctx.endpoint));
                    let st = e.status();
                    let o = Outcomes {
                        outcome: Outcome::Error,
                        policy: Some(d.policy),
                        rule: Some(d.rule_id),
                        status: st,
                        upstream_status: None,
                        reason: Some(&reason),
                        cache: cache_use,
                    };
                    finish(app, ctx, rec, parts, Some(&target), &o, latency);
                    answer(text_response(st, &reason))
                }
            }
        }
    }
}

/// Records a request refused before policy and answers it with its reason as text. An invalid
/// request also ends the connection.
fn refuse(
    app: &App,
    ctx: ConnCtx,
    record: Option<&Identity>,
    parts: &RequestHead<'_>,
    target: Option<&CanonicalTarget>,
    o: &Outcomes<'_>,
    latency: Duration,
) -> Answer {
    finish(app, ctx, record, parts, target, o, latency);
    Answer {
        resp: text_response(o.status, o.reason.unwrap_or("")),
        relayed: None,
        close: o.outcome == Outcome::Invalid,
    }
}

fn add_headers(dst: &mut HeaderMap, hs: &[(http::HeaderName, HeaderValue)]) {
    for (n, v) in hs {
        dst.insert(n.clone(), v.clone());
    }
}

/// Writes the decision line and counts the request.
fn finish(
    app: &App,
    ctx: ConnCtx,
    record: Option<&Identity>,
    parts: &RequestHead<'_>,
    target: Option<&CanonicalTarget>,
    o: &Outcomes<'_>,
    latency: Duration,
) {
    let path = match target {
        Some(t) => t.path,
        None => decision_log::truncate(parts.target, decision_log::MAX_LOGGED_TARGET),
    };
    count_and_log(app, ctx, record, parts.method.as_str(), path, o, latency);
}

/// Counts the request (metrics) and writes its decision line.
fn count_and_log(
    app: &App,
    ctx: ConnCtx,
    record: Option<&Identity>,
    method: &str,
    path: &str,
    o: &Outcomes<'_>,
    latency: Duration,
) {
    app.metrics.count_request(
        ctx.worker,
        o.outcome,
        o.policy.unwrap_or(""),
        o.rule.unwrap_or(""),
    );
    app.metrics.count_cache(ctx.worker, o.cache);
    app.log.write(&Entry {
        ts: decision_log::Timestamp::now(),
        who: record.map(|r| &r.who),
        src: ctx.peer,
        endpoint: app.endpoint_name(ctx.endpoint),
        method,
        path,
        decision: o.outcome.as_str(),
        policy: o.policy,
        rule: o.rule,
        status: o.status.as_u16(),
        upstream_status: o.upstream_status,
        latency,
        reason: o.reason,
        cache: o.cache.as_str(),
    });
}

/// Records a request refused before it reached [`handle`] (unparsable head, head too large): the
/// caller answers it (400/431/505); this leaves the decision line and the count.
pub fn record_unparsed(app: &App, ctx: ConnCtx, status: StatusCode, reason: &str) {
    let snap = app.policy.current();
    let caller = app.records.lookup(ctx.peer, &snap).ok().flatten();
    let o = Outcomes::before_policy(Outcome::Invalid, status, reason);
    count_and_log(
        app,
        ctx,
        caller.as_ref().map(|c| &*c.identity),
        "",
        "",
        &o,
        Duration::ZERO,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_answers_are_one_line_of_text() {
        let r = text_response(StatusCode::FORBIDDEN, "no\nrule\r\nallows\u{0} this");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(&r.body()[..], b"no rule  allows  this\n");
    }

    #[test]
    fn bad_policy_statuses_fall_back_to_403() {
        assert_eq!(status(429), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(1000), StatusCode::FORBIDDEN);
    }
}
