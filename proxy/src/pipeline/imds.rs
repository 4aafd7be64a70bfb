//! The AWS endpoints' per-pod steps (`[aws]` enabled; docs/identity.md): the IMDSv2 token check
//! before the policy, the pod's own role under `meta-data/iam/`, and the token itself when the
//! policy allows `PUT /latest/api/token`.
//!
//! The real service's answers are the model: 401 for a missing (when required), invalid or
//! expired token, 400 for a token TTL outside 1..21600, 403 for a token request carrying
//! `X-Forwarded-For`, 404 for an unknown path under `iam/`.

use super::{Ctx, Fields, RequestHead};
use crate::canon::CanonicalTarget;
use crate::http1::{rules, Answer};
use crate::identity::creds::{rfc3339, CredError, Issued, Served};
use crate::identity::role::PodRole;
use crate::identity::token::{self, Holder};
use crate::identity::AwsIdentity;
use crate::outcome::{CacheUse, Outcome};
use crate::policy::Policy;
use crate::records::Caller;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode};
use std::borrow::Cow;

/// The TTL a token request asks for (and the token answer states).
pub const TOKEN_TTL: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds");
/// The path of token requests (only `latest`, as on the real service).
pub const TOKEN_PATH: &str = "/latest/api/token";

/// Rule ids of the decisions taken here (they appear in decision lines and the request metric
/// like a policy's own rule ids).
pub const RULE_TOKEN_REFUSED: &str = "imdsv2-token-refused";
pub const RULE_V2_REQUIRED: &str = "imdsv2-required";
pub const RULE_ROLE: &str = "pod-role";

/// How the request was authenticated: the decision line's `imds_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// Whether this is a token request (which carries no token of its own).
pub fn is_token_request(method: &Method, target: &CanonicalTarget<'_>) -> bool {
    *method == Method::PUT && target.path == TOKEN_PATH
}

/// A one-line (or JSON) text answer with the policy's response headers, as the policy's own
/// denials are made (`local::deny`).
fn text(status: StatusCode, policy: &Policy, body: &str) -> Answer {
    let mut b = Vec::with_capacity(body.len() + 1);
    b.extend_from_slice(body.as_bytes());
    b.push(b'\n');
    super::local::deny(policy, status, Bytes::from(b))
}

/// A decision taken here, under the pod's policy, answered locally.
fn local<'a>(
    policy: &'a Policy,
    outcome: Outcome,
    rule: &'a str,
    status: StatusCode,
    reason: Option<Cow<'a, str>>,
) -> Fields<'a> {
    Fields {
        outcome,
        policy: Some(policy.name()),
        rule: Some(rule),
        status,
        upstream_status: None,
        reason,
        cache: CacheUse::Off,
        done: None,
        imds: None,
        hop_limit: None,
    }
}

/// Step one, before the policy: the request's token (401 when invalid, expired or another
/// pod's, or missing under `require_imdsv2`). A token request itself needs none.
pub(super) fn check_token<'a>(
    cx: &Ctx<'_>,
    aws: &AwsIdentity,
    head: &RequestHead<'_>,
    target: &CanonicalTarget<'_>,
    caller: &Caller,
    policy: &'a Policy,
) -> TokenCheck<'a> {
    if is_token_request(&head.method, target) {
        return TokenCheck::Passed(None);
    }
    let refuse = |rule, reason: String, version| {
        let st = StatusCode::UNAUTHORIZED;
        let (answer, mut f) = refused(policy, Outcome::Deny, rule, st, Cow::Owned(reason), None);
        f.imds = version;
        TokenCheck::Refused(Box::new((answer, f)))
    };
    match head.headers.get(rules::IMDS_TOKEN) {
        Some(t) => {
            match aws
                .tokens
                .verify(t.as_bytes(), holder(cx, caller), cx.start)
            {
                Ok(()) => TokenCheck::Passed(Some(Version::V2)),
                Err(e) => refuse(RULE_TOKEN_REFUSED, e.to_string(), Some(Version::V2)),
            }
        }
        None if policy.require_imdsv2() => refuse(
            RULE_V2_REQUIRED,
            "IMDSv2 is required: PUT /latest/api/token first, then send the token in \
             X-aws-ec2-metadata-token"
                .to_owned(),
            Some(Version::V1),
        ),
        None => TokenCheck::Passed(Some(Version::V1)),
    }
}

/// What [`check_token`] found.
pub(super) enum TokenCheck<'a> {
    /// Go on; how the request is authenticated (`None`: a token request).
    Passed(Option<Version>),
    /// 401, decided here (boxed: the rare case carries the whole answer).
    Refused(Box<(Answer, Fields<'a>)>),
}

/// The answer to a token request the policy allowed (under its rule `rule`): a token bound to
/// this pod and address, the TTL it asked for, and how many hops the answer may travel
/// (`token_hop_limit`). A token request carrying `X-Forwarded-For` never gets here: forwarding
/// headers are refused with 403 before any policy (`http1::rules`), as the real service does.
pub(super) fn issue_token<'a>(
    cx: &Ctx<'_>,
    aws: &AwsIdentity,
    head: &RequestHead<'_>,
    caller: &Caller,
    policy: &'a Policy,
    rule: &'a str,
) -> (Answer, Fields<'a>, Option<u8>) {
    let ttl = match head
        .headers
        .get(TOKEN_TTL)
        .ok_or(token::TtlError::Invalid)
        .and_then(|v| token::parse_ttl(v.as_bytes()))
    {
        Ok(ttl) => ttl,
        Err(e) => {
            let st = StatusCode::BAD_REQUEST;
            let reason = Cow::Owned(e.to_string());
            let (answer, f) = refused(policy, Outcome::Deny, rule, st, reason, None);
            return (answer, f, None);
        }
    };
    let token = aws.tokens.mint(holder(cx, caller), ttl, cx.start);
    let mut answer = text(StatusCode::OK, policy, "");
    if let Answer::Local { headers, body, .. } = &mut answer {
        headers.insert(TOKEN_TTL, HeaderValue::from(ttl.as_secs()));
        // The real service answers the bare token, no newline.
        *body = Bytes::from(token);
    }
    let mut f = local(policy, Outcome::Respond, rule, StatusCode::OK, None);
    f.imds = Some(Version::V2);
    (answer, f, policy.token_hop_limit())
}

/// What a path under `/<version>/meta-data/iam` asks for.
#[derive(Debug, PartialEq, Eq)]
enum IamPath<'p> {
    Index,
    Info,
    RoleList,
    Role(&'p str),
    Other,
}

/// `None`: not under `iam` (the policy decides). Exact case only: any other spelling is left to
/// the policy, whose `iam*` denial ignores case.
fn iam_path(path: &str) -> Option<IamPath<'_>> {
    let rest = path.strip_prefix('/')?;
    let (_version, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("meta-data/iam")?;
    let rest = match rest {
        "" | "/" => return Some(IamPath::Index),
        r => r.strip_prefix('/')?,
    };
    Some(match rest.trim_end_matches('/') {
        "info" if !rest.ends_with('/') => IamPath::Info,
        "security-credentials" => IamPath::RoleList,
        r => match r.strip_prefix("security-credentials/") {
            Some(name) if !name.is_empty() && !name.contains('/') && !rest.ends_with('/') => {
                IamPath::Role(name)
            }
            _ => IamPath::Other,
        },
    })
}

/// Step two, before the policy: a pod with a role gets its own `iam/` tree, built here and never
/// forwarded. `None`: not a GET/HEAD under `iam`, or the pod has no role (the policy decides,
/// and every preset denies `iam`).
pub(super) async fn role_answer<'a>(
    cx: &Ctx<'_>,
    aws: &AwsIdentity,
    head: &RequestHead<'_>,
    target: &CanonicalTarget<'_>,
    caller: &Caller,
    policy: &'a Policy,
) -> Option<(Answer, Fields<'a>)> {
    let role = caller.identity.role.as_ref()?;
    if !(head.method == Method::GET || head.method == Method::HEAD) {
        return None;
    }
    let what = iam_path(target.path)?;
    let ok = |body: String| {
        let f = local(policy, Outcome::Respond, RULE_ROLE, StatusCode::OK, None);
        (text(StatusCode::OK, policy, &body), f)
    };
    match what {
        IamPath::Index => Some(ok("info\nsecurity-credentials/".into())),
        IamPath::RoleList => Some(ok(role.role_name().to_owned())),
        IamPath::Other => Some(not_found(policy)),
        IamPath::Role(name) if name != role.role_name() => Some(not_found(policy)),
        IamPath::Info | IamPath::Role(_) => {
            // Both from the pod's credentials (waiting a bounded time for a fetch in flight).
            let got = aws
                .creds
                .credentials(&caller.identity.attachment, role, cx.start)
                .await;
            Some(match (got, what) {
                (Err(e), _) => cred_error(policy, e),
                (Ok((issued, _)), IamPath::Info) => info(role, &issued, policy),
                (Ok((issued, served)), _) => credentials(cx, &issued, served, policy),
            })
        }
    }
}

/// A refusal or failure decided here: its answer (the reason as its one-line body, unless
/// `body` says otherwise) and its decision fields.
fn refused<'a>(
    policy: &'a Policy,
    outcome: Outcome,
    rule: &'a str,
    status: StatusCode,
    reason: Cow<'a, str>,
    body: Option<&str>,
) -> (Answer, Fields<'a>) {
    let answer = text(status, policy, body.unwrap_or(&reason));
    (answer, local(policy, outcome, rule, status, Some(reason)))
}

/// Who a token is for: this pod's attachment, at the address it called from.
fn holder<'c>(cx: &Ctx<'_>, caller: &'c Caller) -> Holder<'c> {
    Holder {
        attachment: &caller.identity.attachment,
        address: cx.conn.peer,
    }
}

fn not_found(policy: &Policy) -> (Answer, Fields<'_>) {
    let reason = Cow::Borrowed("not found under this pod's iam/");
    let st = StatusCode::NOT_FOUND;
    refused(
        policy,
        Outcome::Respond,
        RULE_ROLE,
        st,
        reason,
        Some("Not Found"),
    )
}

/// The pod's credentials: the IMDS JSON built when they arrived.
fn credentials<'a>(
    cx: &Ctx<'_>,
    issued: &Issued,
    served: Served,
    policy: &'a Policy,
) -> (Answer, Fields<'a>) {
    cx.app.metrics.identity.served();
    let mut f = local(policy, Outcome::Respond, RULE_ROLE, StatusCode::OK, None);
    f.cache = match served {
        Served::Cached => CacheUse::Hit,
        Served::Waited(_) => CacheUse::Miss,
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let answer = Answer::Local {
        status: StatusCode::OK,
        headers,
        body: issued.body.clone(),
    };
    (answer, f)
}

/// Credentials not ready (503, retry soon) or refused by STS (500, as IMDS does when the
/// instance profile's role cannot be assumed): an error, never anyone else's credentials.
fn cred_error(policy: &Policy, e: CredError) -> (Answer, Fields<'_>) {
    let st = match e {
        CredError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
        CredError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refused(
        policy,
        Outcome::Error,
        RULE_ROLE,
        st,
        Cow::Owned(e.to_string()),
        None,
    )
}

/// `iam/info`: built here from the pod's role (kube2iam forwarded it, naming the node's
/// instance profile). The profile ARN is the role's with `role/` read as `instance-profile/`.
fn info<'a>(role: &PodRole, issued: &Issued, policy: &'a Policy) -> (Answer, Fields<'a>) {
    let updated = issued.issued_unix;
    let arn = role.role_arn();
    let profile = arn.replacen(":role/", ":instance-profile/", 1);
    let id = profile_id(arn);
    let body = serde_json::json!({
        "Code": "Success",
        "LastUpdated": rfc3339(updated),
        "InstanceProfileArn": profile,
        "InstanceProfileId": id,
    });
    let text_body = serde_json::to_string_pretty(&body).unwrap_or_default();
    let f = local(policy, Outcome::Respond, RULE_ROLE, StatusCode::OK, None);
    (text(StatusCode::OK, policy, &text_body), f)
}

/// A stable, made-up instance profile id (`AIPA` and 17 characters) for a role ARN.
fn profile_id(arn: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(arn.as_bytes());
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let tail: String = d
        .iter()
        .take(17)
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("AIPA{tail}")
}

/// The node's token for an upstream request at `now`, when the proxy holds one
/// (`identity::node`; renewed by the identity thread, never on a request's path). Without one the
/// request goes without a token (IMDSv1): an instance that requires IMDSv2 answers 401, which
/// the pod sees as it would see it from the real service.
pub fn node_token(aws: &AwsIdentity, now: std::time::Instant) -> Option<std::sync::Arc<str>> {
    aws.node.current_token_at(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_paths_are_read_exactly() {
        use IamPath::*;
        for (p, want) in [
            ("/latest/meta-data/iam", Some(Index)),
            ("/latest/meta-data/iam/", Some(Index)),
            ("/2009-04-04/meta-data/iam/info", Some(Info)),
            ("/latest/meta-data/iam/info/", Some(Other)),
            ("/latest/meta-data/iam/security-credentials", Some(RoleList)),
            (
                "/latest/meta-data/iam/security-credentials/",
                Some(RoleList),
            ),
            (
                "/latest/meta-data/iam/security-credentials/r",
                Some(Role("r")),
            ),
            ("/latest/meta-data/iam/security-credentials/r/", Some(Other)),
            (
                "/latest/meta-data/iam/security-credentials/r/x",
                Some(Other),
            ),
            ("/latest/meta-data/iam/x", Some(Other)),
            ("/latest/meta-data/iamx", None),
            ("/latest/meta-data/IAM/info", None),
            ("/latest/meta-data/instance-id", None),
            ("/latest/user-data", None),
        ] {
            assert_eq!(iam_path(p), want, "{p}");
        }
    }

    #[test]
    fn profile_ids_look_like_aws_ones() {
        let a = profile_id("arn:aws:iam::123456789012:role/a");
        assert_eq!(a.len(), 21);
        assert!(a.starts_with("AIPA"));
        assert_ne!(a, profile_id("arn:aws:iam::123456789012:role/b"));
    }
}
