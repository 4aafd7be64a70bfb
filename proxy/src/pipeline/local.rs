//! Answers the proxy makes itself: refusals and failures as one line of text, a policy's deny and
//! respond actions.

use crate::http1::Answer;
use crate::policy::Policy;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, StatusCode};

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A policy's status code (validated when the file is loaded; 403 is the safe fallback).
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN)
}

/// `reason` as a one-line text body.
pub fn text(status: StatusCode, reason: &str) -> Answer {
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
    text_body(status, Bytes::from(body))
}

/// A one-line text `body` (newline included) that is already built.
pub fn text_body(status: StatusCode, body: Bytes) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, TEXT_PLAIN);
    Answer::Local {
        status,
        headers,
        body,
    }
}

/// `reason` as a one-line text body, with `Retry-After: retry_after_secs`.
pub fn retry_later(status: StatusCode, reason: &str, retry_after_secs: u32) -> Answer {
    let mut answer = text(status, reason);
    if let Answer::Local { headers, .. } = &mut answer {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
    answer
}

/// A deny rule's answer: its text body and the policy's response headers.
pub fn deny(policy: &Policy, status: StatusCode, body: Bytes) -> Answer {
    let mut answer = text_body(status, body);
    if let Answer::Local { headers, .. } = &mut answer {
        add(headers, policy.response_headers());
    }
    answer
}

/// A respond rule's fixed answer: the policy's response headers, then the rule's own (which win).
pub fn respond(
    policy: &Policy,
    status: StatusCode,
    rule_headers: &[(HeaderName, HeaderValue)],
    body: &Bytes,
) -> Answer {
    let mut headers = HeaderMap::new();
    add(&mut headers, policy.response_headers());
    add(&mut headers, rule_headers);
    Answer::Local {
        status,
        headers,
        body: body.clone(),
    }
}

/// The refusal of a pod over its rate limit: 429, `Retry-After` in whole seconds, the policy's
/// response headers and the limit's one-line reason.
pub fn rate_limited(policy: &Policy, retry_after_secs: u64, body: Bytes) -> Answer {
    let mut answer = text_body(StatusCode::TOO_MANY_REQUESTS, body);
    if let Answer::Local { headers, .. } = &mut answer {
        add(headers, policy.response_headers());
        // After the policy's headers: the proxy's own value wins.
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
    answer
}

fn add(dst: &mut HeaderMap, hs: &[(HeaderName, HeaderValue)]) {
    for (n, v) in hs {
        dst.insert(n.clone(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_answers_are_one_line_of_text() {
        let Answer::Local {
            status,
            headers,
            body,
        } = text(StatusCode::FORBIDDEN, "no\nrule\r\nallows\u{0} this")
        else {
            panic!("a local answer");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(&body[..], b"no rule  allows  this\n");
    }

    #[test]
    fn rate_limited_answers_say_when_to_retry() {
        let set = crate::policy::PolicySet::from_toml("").unwrap();
        let gcp = set.policy("gcp").unwrap();
        let Answer::Local {
            status,
            headers,
            body,
        } = rate_limited(gcp, 3, Bytes::from_static(b"slow down\n"))
        else {
            panic!("a local answer");
        };
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[RETRY_AFTER], "3");
        assert_eq!(headers["metadata-flavor"], "Google", "the policy's headers");
        assert_eq!(headers[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(&body[..], b"slow down\n");
    }

    #[test]
    fn retry_later_says_when() {
        let Answer::Local {
            status,
            headers,
            body,
        } = retry_later(StatusCode::TOO_MANY_REQUESTS, "too many", 5)
        else {
            panic!("a local answer");
        };
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[RETRY_AFTER], "5");
        assert_eq!(&body[..], b"too many\n");
    }

    #[test]
    fn bad_policy_statuses_fall_back_to_403() {
        assert_eq!(status(429), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(1000), StatusCode::FORBIDDEN);
    }
}
