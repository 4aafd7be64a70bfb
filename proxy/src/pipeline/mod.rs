//! The request pipeline: one request, from its head to its answer and its decision line.
//!
//! canonicalise the target -> check framing and headers -> identify the caller -> select the pod's
//! policy -> take the pod's rate-limit token -> decide -> answer (locally, from the answer cache,
//! or forwarded upstream) -> record.
//!
//! The steps before the decision return `Result<_, Refusal>`; a refusal is answered with its reason
//! as one line of text. Every request, a head the server could not parse included, ends in
//! `record`, the one place that writes the decision line and counts the request. Nothing here
//! holds a lock across an await.

pub mod cache;
pub mod imds;
pub mod local;
pub mod worker;

use crate::app::App;
use crate::canon::{self, CanonicalTarget, Rejection};
use crate::decision_log::{self, Entry};
use crate::http1::client::encode_request;
use crate::http1::{rules, Answer, HeadError};
use crate::identity::AwsIdentity;
use crate::longpoll;
use crate::outcome::{CacheUse, LongPollRefusal, Outcome};
use crate::policy::store::Snapshot;
use crate::policy::{Action, Decision, Policy, RequestView};
use crate::ratelimit::Verdict;
use crate::records::{Caller, Identity};
use bytes::Bytes;
use cache::Cached;
use http::{HeaderMap, Method, StatusCode, Version};
use metaguard_common::state::StateError;
use std::borrow::Cow;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::time::Sleep;
use worker::Worker;

/// A request as the pod-facing server read it (requests have no body).
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: Method,
    /// The request-target exactly as received (not yet canonicalised).
    pub target: &'a str,
    pub version: Version,
    pub headers: &'a HeaderMap,
}

/// What the server hands the pipeline: a request, or a head it could not parse (answered with
/// 400/431 and recorded like any other request).
#[derive(Debug)]
pub enum Request<'a> {
    Head(RequestHead<'a>),
    Unparsable(&'a HeadError),
}

/// What the connection knows before any request: the caller's address and which endpoint's
/// port it connected to.
#[derive(Debug, Clone, Copy)]
pub struct ConnCtx {
    /// Normalised (IPv4-mapped IPv6 -> IPv4).
    pub peer: IpAddr,
    pub endpoint: usize,
}

/// The answer, and whether the connection must close after it: a request refused as invalid
/// (unparsable, its target, framing or headers) ends the connection, so nothing sent after it is
/// read.
#[derive(Debug)]
pub struct Reply {
    pub answer: Answer,
    pub close: bool,
    /// Send this answer (and the rest of the connection) with this IP TTL / hop limit: an IMDSv2
    /// token answer under `token_hop_limit`.
    pub hop_limit: Option<u8>,
}

/// A request refused before its policy was consulted.
#[derive(Debug)]
pub struct Refusal {
    outcome: Outcome,
    status: StatusCode,
    reason: Cow<'static, str>,
}

impl Refusal {
    /// Unparsable head, ambiguous target, bad framing or headers.
    fn invalid(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            outcome: Outcome::Invalid,
            status,
            reason: reason.into(),
        }
    }

    fn rejected(rej: Rejection) -> Refusal {
        Refusal::invalid(local::status(rej.status), rej.reason)
    }

    fn unknown_caller() -> Refusal {
        Refusal {
            outcome: Outcome::UnknownCaller,
            status: StatusCode::FORBIDDEN,
            reason: "no pod record for this source address".into(),
        }
    }

    fn unreadable_record() -> Refusal {
        Refusal {
            outcome: Outcome::Error,
            status: StatusCode::FORBIDDEN,
            reason: "pod record unreadable".into(),
        }
    }

    /// The answer (the reason as text) and the decision line's fields.
    fn answer<'a>(self) -> (Answer, Fields<'a>) {
        let answer = local::text(self.status, &self.reason);
        let fields = Fields {
            outcome: self.outcome,
            policy: None,
            rule: None,
            status: self.status,
            upstream_status: None,
            reason: Some(self.reason),
            cache: CacheUse::Off,
            done: None,
            imds: None,
            hop_limit: None,
        };
        (answer, fields)
    }
}

/// The fields of a decision line that the steps find out.
struct Fields<'a> {
    outcome: Outcome,
    policy: Option<&'a str>,
    rule: Option<&'a str>,
    status: StatusCode,
    upstream_status: Option<u16>,
    reason: Option<Cow<'a, str>>,
    cache: CacheUse,
    /// When a forwarded request's upstream exchange ended (the request's latency ends there, one
    /// clock read for both); `None`: when the decision line is written.
    done: Option<Instant>,
    /// On the AWS endpoints under `[aws]`: how the request was authenticated.
    imds: Option<imds::Version>,
    /// The IP TTL / hop limit to send the answer with (an IMDSv2 token's, `token_hop_limit`).
    hop_limit: Option<u8>,
}

impl<'a> Fields<'a> {
    fn decided(d: &Decision<'a>, outcome: Outcome, status: StatusCode) -> Fields<'a> {
        Fields {
            outcome,
            policy: Some(d.policy),
            rule: Some(d.rule_id),
            status,
            upstream_status: None,
            reason: None,
            cache: CacheUse::Off,
            done: None,
            imds: None,
            hop_limit: None,
        }
    }
}

/// Decides, answers and records one request. `timer` is the connection's timer, lent for the
/// upstream response timeout (the connection does not need it while a request is being handled);
/// `scratch` is a buffer of the connection's, free while the request is handled, that holds the
/// upstream request.
pub async fn handle(
    app: &App,
    worker: &Worker,
    ctx: ConnCtx,
    req: Request<'_>,
    timer: Pin<&mut Sleep>,
    scratch: &mut Vec<u8>,
) -> Reply {
    let start = Instant::now();
    let cx = Ctx {
        app,
        worker,
        conn: ctx,
        start,
    };
    // One snapshot for the whole request: a reload meanwhile does not mix two policies.
    let snap = app.policy.current();
    let caller = app.records.lookup_at(ctx.peer, &snap, start);
    let (method, path, decided) = match &req {
        Request::Unparsable(e) => {
            let (answer, mut fields) = Refusal::invalid(e.status(), e.reason()).answer();
            // Refused before it was a request: its line says no latency.
            fields.done = Some(start);
            ("", "", Ok((answer, fields)))
        }
        Request::Head(head) => {
            let target = canon::canonicalize_str(&head.method, head.target);
            let path = match &target {
                Ok(t) => t.path,
                Err(_) => decision_log::truncate(head.target, decision_log::MAX_LOGGED_TARGET),
            };
            let decided = match target {
                Ok(t) => decide(&cx, head, &t, &snap, &caller, timer, scratch).await,
                Err(rej) => Err(Refusal::rejected(rej)),
            };
            (head.method.as_str(), path, decided)
        }
    };
    let (answer, fields) = decided.unwrap_or_else(Refusal::answer);
    let latency = match fields.done {
        Some(done) => done.saturating_duration_since(start),
        None => start.elapsed(),
    };
    let caller = caller.as_ref().ok().and_then(Option::as_ref);
    let close = fields.outcome == Outcome::Invalid;
    record(&cx, caller, method, path, &fields, latency);
    Reply {
        answer,
        close,
        hop_limit: fields.hop_limit,
    }
}

/// What every step may use: the shared state, the worker's, the connection's, and when the
/// request started.
struct Ctx<'r> {
    app: &'r App,
    worker: &'r Worker,
    conn: ConnCtx,
    start: Instant,
}

/// The steps after canonicalisation, to the answer.
async fn decide<'a>(
    cx: &Ctx<'_>,
    head: &RequestHead<'_>,
    target: &CanonicalTarget<'_>,
    snap: &'a Snapshot,
    caller: &Result<Option<Caller>, StateError>,
    timer: Pin<&mut Sleep>,
    scratch: &mut Vec<u8>,
) -> Result<(Answer, Fields<'a>), Refusal> {
    rules::check_request_headers(head.version, head.headers).map_err(Refusal::rejected)?;
    let caller = identify(cx.conn.peer, caller)?;
    let policy = snap.policy(caller.policy);
    if let Some((answer, fields, pause)) = over_limit(cx, caller, policy) {
        hold(timer, cx.start + pause).await;
        return Ok((answer, fields));
    }
    // The AWS endpoints under `[aws]`: the pod's token first, then its own role's `iam/`.
    let aws = cx.app.aws.as_ref().filter(|a| a.serves(cx.conn.endpoint));
    let mut imds_version = None;
    if let Some(aws) = aws {
        imds_version = match imds::check_token(cx, aws, head, target, caller, policy) {
            imds::TokenCheck::Passed(v) => v,
            imds::TokenCheck::Refused(refused) => return Ok(*refused),
        };
        if let Some((answer, mut fields)) =
            imds::role_answer(cx, aws, head, target, caller, policy).await
        {
            fields.imds = imds_version;
            return Ok((answer, fields));
        }
    }
    let view = RequestView {
        method: &head.method,
        target,
        headers: head.headers,
    };
    let d = policy.decide(&view);
    let (answer, mut fields) = match d.action {
        Action::Deny { status, reason, .. } => {
            let st = local::status(*status);
            let body = d.deny_body(&view).unwrap_or_default();
            let mut fields = Fields::decided(&d, Outcome::Deny, st);
            fields.reason = Some(Cow::Borrowed(reason));
            (local::deny(policy, st, body), fields)
        }
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let st = local::status(*status);
            let fields = Fields::decided(&d, Outcome::Respond, st);
            (local::respond(policy, st, headers, body), fields)
        }
        Action::Allow => match aws {
            // Allowed by the policy, answered here: a token bound to this pod.
            Some(aws) if imds::is_token_request(&head.method, target) => {
                let (answer, mut fields, hop_limit) =
                    imds::issue_token(cx, aws, head, caller, policy, d.rule_id);
                fields.hop_limit = hop_limit;
                (answer, fields)
            }
            _ => {
                let allowed = Allowed {
                    view: &view,
                    decision: &d,
                    generation: snap.generation,
                    aws,
                };
                forward(cx, &allowed, timer, scratch).await
            }
        },
    };
    fields.imds = fields.imds.or(imds_version);
    Ok((answer, fields))
}

/// Who is calling: a pod record, or a refusal (fail closed: an unreadable record is no identity).
fn identify(peer: IpAddr, caller: &Result<Option<Caller>, StateError>) -> Result<&Caller, Refusal> {
    match caller {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(Refusal::unknown_caller()),
        Err(e) => {
            log::warn!("pod record for {peer}: {e}");
            Err(Refusal::unreadable_record())
        }
    }
}

/// The reason (and the body, with its newline) when the bucket map is full
/// (`ratelimit::MAX_TRACKED`): fail closed.
const LIMITER_FULL: &str = "rate limiter full: too many pod addresses tracked";
const LIMITER_FULL_BODY: &[u8] = b"rate limiter full: too many pod addresses tracked\n";

/// The longest a refusal over the rate limit is held before it is sent.
///
/// Why hold it at all: a runaway client is usually a loop that asks again the moment it gets an
/// answer. Answered at once, it gets a 429 as fast as the proxy can make one, and its refusals
/// alone keep the proxy's CPUs busy (the metadata quota is safe, the other pods' latency is not).
/// Held until its next token is due (at most this long), each of its connections gets one answer
/// per token interval (or per this long, if shorter), and its connections are capped per pod
/// (`limits.max_connections_per_source`). An ordinary client never waits: it is never refused.
pub const MAX_REFUSAL_HOLD: Duration = Duration::from_millis(100);

/// Takes a token from the pod address's bucket; `None` when it had one. After identification
/// and before the policy decides, so every answer counts: forwarded, cached, local, denied.
/// Over the limit: 429 with `Retry-After` (whole seconds until a token) and the policy's reason,
/// logged as its own decision (`rate-limited`) under the pod's policy, and how long to hold it.
fn over_limit<'a>(
    cx: &Ctx<'_>,
    caller: &Caller,
    policy: &'a Policy,
) -> Option<(Answer, Fields<'a>, Duration)> {
    let limit = policy.rate_limit();
    let verdict = cx
        .app
        .limiter
        .check(cx.conn.peer, &caller.identity, limit, cx.start);
    let (reason, body, wait) = match verdict {
        Verdict::Allowed => return None,
        Verdict::Limited { retry_after } => (limit.reason(), limit.body(), retry_after),
        Verdict::Full => (
            LIMITER_FULL,
            Bytes::from_static(LIMITER_FULL_BODY),
            MAX_REFUSAL_HOLD,
        ),
    };
    let status = StatusCode::TOO_MANY_REQUESTS;
    let answer = local::rate_limited(policy, verdict.retry_after_secs(), body);
    let fields = Fields {
        outcome: Outcome::RateLimited,
        policy: Some(policy.name()),
        rule: None,
        status,
        upstream_status: None,
        reason: Some(Cow::Borrowed(reason)),
        cache: CacheUse::Off,
        done: None,
        imds: None,
        hop_limit: None,
    };
    Some((answer, fields, wait.min(MAX_REFUSAL_HOLD)))
}

/// Waits until `until` on the connection's timer (lent, as for the upstream response timeout;
/// the connection re-arms it for the next head).
async fn hold(mut timer: Pin<&mut Sleep>, until: Instant) {
    if until > Instant::now() {
        timer.as_mut().reset(until.into());
        timer.await;
    }
}

/// A request the policy allowed.
struct Allowed<'v, 'a> {
    view: &'v RequestView<'v>,
    decision: &'v Decision<'a>,
    /// The policy generation it was decided under (the answer cache's entries carry it).
    generation: u64,
    /// Set when the endpoint is EC2's and the proxy answers IMDSv2 per pod: the pod's token is
    /// not forwarded (nor part of the cache key), the node's is sent instead.
    aws: Option<&'v AwsIdentity>,
}

/// Answers an allowed request: from the worker's answer cache when the rule allows it and the
/// cache has it, else from the upstream (storing the answer when the rule caches). A long poll
/// (`crate::longpoll`) takes a slot under the long-poll caps first, or is refused; it gets its own
/// upstream deadline and never touches the cache: a stored answer would end its wait at once, and
/// its answer is "the value after a change", which no later request asked for.
async fn forward<'a>(
    cx: &Ctx<'_>,
    a: &Allowed<'_, 'a>,
    timer: Pin<&mut Sleep>,
    scratch: &mut Vec<u8>,
) -> (Answer, Fields<'a>) {
    let (app, worker, endpoint) = (cx.app, cx.worker, cx.conn.endpoint);
    let d = a.decision;
    let (method, target) = (a.view.method, a.view.target);
    let outcome = if d.audit {
        Outcome::Audit
    } else {
        Outcome::Allow
    };
    let mut fields = Fields::decided(d, outcome, StatusCode::OK);
    let long_poll = app.long_polls.deadline(longpoll::requested_wait(target));
    // Held until the exchange is over.
    let _slot = match long_poll {
        None => None,
        Some(_) => match app.long_polls.begin(cx.conn.peer) {
            Ok(slot) => Some(slot),
            Err(refused) => return long_poll_refused(app, refused, fields),
        },
    };
    let mut key = Vec::new();
    if long_poll.is_none() {
        if let Some(hit) = cached(cx, a, &mut key, &mut fields) {
            return (hit, fields);
        }
    }
    let upstream = &worker.upstream;
    let host = upstream
        .target(endpoint)
        .map(|t| t.host.as_str())
        .unwrap_or("");
    // Exactly what was matched: the canonical path and the raw query (`forward_target`).
    scratch.clear();
    let node_token = a.aws.and_then(|aws| imds::node_token(aws, cx.start));
    encode_request(
        scratch,
        method,
        target.path,
        target.raw_query,
        |v| match a.aws {
            None => rules::write_upstream_headers(a.view.headers, host, v),
            Some(_) => {
                rules::write_upstream_headers_imds(a.view.headers, host, node_token.as_deref(), v)
            }
        },
    );
    let up_start = Instant::now();
    let head_only = *method == Method::HEAD;
    let result = match long_poll {
        None => {
            upstream
                .send_encoded(endpoint, head_only, scratch, timer, up_start)
                .await
        }
        Some(within) => {
            let send =
                upstream.send_encoded_within(endpoint, head_only, scratch, timer, up_start, within);
            match app.long_polls.unless_closed(send).await {
                Some(r) => r,
                None => return long_poll_refused(app, longpoll::Refused::Closing, fields),
            }
        }
    };
    // One clock read for the upstream latency and the request's.
    let done = Instant::now();
    fields.done = Some(done);
    match result {
        Ok(up) => {
            if let (Some(aws), Some(t), StatusCode::UNAUTHORIZED) = (a.aws, &node_token, up.status)
            {
                // The service no longer takes the node's token (it restarted): renew it.
                aws.node.token_rejected(t);
            }
            let upstream_latency = done.saturating_duration_since(up_start);
            app.metrics.observe_upstream(endpoint, upstream_latency);
            fields.status = up.status;
            fields.upstream_status = Some(up.status.as_u16());
            // The upstream's headers arrive filtered for relaying (`http1::relay`); the
            // pod-facing server frames the answer by the exact length of the body.
            if let (CacheUse::Miss, Some(ttl)) = (fields.cache, d.cache_ttl) {
                if cache::storable(up.status) {
                    let value = Cached {
                        head: up.head.clone(),
                        body: up.body.clone(),
                    };
                    worker.cache().insert(a.generation, &key, value, ttl, done);
                }
            }
            let answer = Answer::Relayed {
                status: up.status,
                head: up.head,
                body: up.body,
            };
            (answer, fields)
        }
        Err(e) => {
            app.metrics.upstream_failed(endpoint, e.kind);
            let reason = e.reason();
            log::debug!("upstream {}: {reason}", app.endpoint_name(endpoint));
            fields.outcome = Outcome::Error;
            fields.status = e.status();
            let answer = local::text(fields.status, &reason);
            fields.reason = Some(Cow::Owned(reason));
            (answer, fields)
        }
    }
}

/// The answer cache's part of [`forward`]: the policy has allowed this request (on every
/// request); only now may the cache answer it, and only for a GET under a rule with
/// `cache_ttl_ms`. The key is built (into `key`) from the request itself, so a hit costs no
/// upstream header map. Records a hit or a miss in `fields`.
fn cached(
    cx: &Ctx<'_>,
    a: &Allowed<'_, '_>,
    key: &mut Vec<u8>,
    fields: &mut Fields<'_>,
) -> Option<Answer> {
    let (Some(_), &Method::GET) = (a.decision.cache_ttl, a.view.method) else {
        return None;
    };
    let mut c = cx.worker.cache();
    if !c.enabled() {
        return None;
    }
    let target = a.view.target;
    let (path, query, endpoint) = (target.path, target.raw_query, cx.conn.endpoint);
    match a.aws {
        None => cache::key(key, endpoint, path, query, rules::forwarded(a.view.headers)),
        Some(_) => cache::key(
            key,
            endpoint,
            path,
            query,
            rules::forwarded_imds(a.view.headers),
        ),
    }
    match c.get(a.generation, key, cx.start) {
        Some(hit) => {
            fields.cache = CacheUse::Hit;
            Some(Answer::Relayed {
                status: StatusCode::OK,
                head: hit.head,
                body: hit.body,
            })
        }
        None => {
            fields.cache = CacheUse::Miss;
            None
        }
    }
}

/// A long poll not started (a cap: 429, decision `long-poll-limited`, counted by cap) or ended by
/// shutdown (503, decision `error`): nothing more is forwarded, and the answer says when to ask
/// again.
fn long_poll_refused<'a>(
    app: &App,
    refused: longpoll::Refused,
    mut fields: Fields<'a>,
) -> (Answer, Fields<'a>) {
    let lp = &app.long_polls;
    let (status, reason, retry_after) = match refused {
        longpoll::Refused::Cap(why) => {
            app.metrics.long_poll_refused(why);
            fields.outcome = Outcome::LongPollLimited;
            let reason = match why {
                LongPollRefusal::PerSource => format!(
                    "too many long polls from this address (at most {}); retry later",
                    lp.max_per_source
                ),
                LongPollRefusal::Total => format!(
                    "too many long polls in progress (at most {}); retry later",
                    lp.max_total
                ),
            };
            let status = StatusCode::TOO_MANY_REQUESTS;
            (status, reason, longpoll::RETRY_AFTER_CAP)
        }
        longpoll::Refused::Closing => {
            fields.outcome = Outcome::Error;
            fields.done = Some(Instant::now());
            let reason = "long poll ended: the proxy is shutting down; retry".to_owned();
            let status = StatusCode::SERVICE_UNAVAILABLE;
            (status, reason, longpoll::RETRY_AFTER_SHUTDOWN)
        }
    };
    fields.status = status;
    let answer = local::retry_later(status, &reason, retry_after);
    fields.reason = Some(Cow::Owned(reason));
    (answer, fields)
}

/// Counts the request (metrics) and writes its decision line: the one place that does either.
fn record(
    cx: &Ctx<'_>,
    caller: Option<&Caller>,
    method: &str,
    path: &str,
    f: &Fields<'_>,
    latency: Duration,
) {
    let (app, worker) = (cx.app, cx.worker);
    let identity: Option<&Identity> = caller.map(|c| &*c.identity);
    let counters = &worker.counters;
    counters.count_request(f.outcome, f.policy.unwrap_or(""), f.rule.unwrap_or(""));
    counters.count_cache(f.cache);
    app.log.write(&Entry {
        ts: decision_log::Timestamp::now(),
        who: identity.map(|r| &r.who),
        src: cx.conn.peer,
        endpoint: app.endpoint_name(cx.conn.endpoint),
        method,
        path,
        decision: f.outcome.as_str(),
        policy: f.policy,
        rule: f.rule,
        status: f.status.as_u16(),
        upstream_status: f.upstream_status,
        latency,
        reason: f.reason.as_deref(),
        cache: f.cache.as_str(),
        imds_version: f.imds.map(imds::Version::as_str),
        role: identity
            .and_then(|i| i.role.as_deref())
            .map(|r| r.role_arn()),
    });
}
