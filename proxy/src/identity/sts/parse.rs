//! STS's XML answers: the credentials of a success, the code and message of an error, read as a
//! stream of events (the error body comes in several shapes: `ErrorResponse/Error`,
//! `ErrorResponse/Errors/Error`, a bare `Error`). Parse failures are described by position only,
//! never by content: a success body holds the new secret key and session token.

use super::StsError;
use crate::identity::{Credentials, RoleCredentials};
use quick_xml::events::Event;
use quick_xml::Reader;
use std::time::SystemTime;

/// Deeper than any STS answer; a deeper document is not one.
const MAX_DEPTH: usize = 16;
/// STS's messages are one or two sentences; longer ones are cut (they land in logs and metrics).
const MAX_MESSAGE: usize = 400;

const SUCCESS_FIELDS: [&str; 5] = [
    "AccessKeyId",
    "SecretAccessKey",
    "SessionToken",
    "Expiration",
    "Arn",
];

/// `AssumeRoleResponse/AssumeRoleResult/{Credentials/*, AssumedRoleUser/Arn}`.
pub(super) fn success(body: &[u8]) -> Result<RoleCredentials, String> {
    let pick = |path: &[String]| -> Option<usize> {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["AssumeRoleResponse", "AssumeRoleResult", "Credentials", f] => {
                SUCCESS_FIELDS[..4].iter().position(|x| x == f)
            }
            ["AssumeRoleResponse", "AssumeRoleResult", "AssumedRoleUser", "Arn"] => Some(4),
            _ => None,
        }
    };
    let mut found = collect(body, &pick, SUCCESS_FIELDS.len(), None)?;
    let mut take = |i: usize| -> Result<String, String> {
        match found[i].take().map(|s| s.trim().to_string()) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(format!("no {} in the answer", SUCCESS_FIELDS[i])),
        }
    };
    let access_key_id = take(0)?;
    let secret_access_key = take(1)?;
    let session_token = take(2)?;
    let expiration = parse_time(&take(3)?)?;
    let assumed_role_arn = take(4)?;
    Ok(RoleCredentials {
        credentials: Credentials {
            access_key_id,
            secret_access_key,
            session_token: Some(session_token),
            expiration: Some(expiration),
        },
        assumed_role_arn,
    })
}

/// A non-200 answer, sorted by its HTTP status and `Error/Code`. `secrets` are cut out of the
/// message (an STS that echoed a credential must not put it in a log line).
pub(super) fn error(status: u16, body: &[u8], secrets: &[&str]) -> StsError {
    let pick = |path: &[String]| -> Option<usize> {
        match path {
            [.., e, f] if e == "Error" => ["Code", "Message", "Type"].iter().position(|x| x == f),
            _ => None,
        }
    };
    let (code, message, kind) = match collect(body, &pick, 3, Some("Error")) {
        Ok(mut f) => (
            f[0].take().map(|s| s.trim().to_string()),
            f[1].take().unwrap_or_default(),
            f[2].take().unwrap_or_default(),
        ),
        Err(_) => (None, String::new(), String::new()),
    };
    let message = clean_message(&message, secrets);
    let code = match code {
        Some(c) if !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()) => c,
        _ if status >= 500 || status == 429 => "Unknown".to_string(),
        _ => {
            return StsError::BadResponse {
                status,
                detail: "an error answer without an Error/Code".into(),
            }
        }
    };
    classify(status, code, message, kind.trim() == "Receiver")
}

/// Which kind of error a code is. Unknown codes: 429 throttled, 5xx or `Type` `Receiver` (STS's
/// side failed) server, 401/403 denied, other 4xx an invalid request.
fn classify(status: u16, code: String, message: String, receiver: bool) -> StsError {
    const THROTTLED: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "PriorRequestNotComplete",
    ];
    const SERVER: &[&str] = &[
        "IDPCommunicationError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServiceError",
        "RequestTimeout",
        "RequestTimeoutException",
    ];
    const DENIED: &[&str] = &[
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredToken",
        "ExpiredTokenException",
        "MissingAuthenticationToken",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "RegionDisabledException",
        "OptInRequired",
        "RequestExpired",
        "AuthFailure",
    ];
    let c = code.as_str();
    if THROTTLED.contains(&c) || (status == 429 && !SERVER.contains(&c)) {
        StsError::Throttled {
            status,
            code,
            message,
        }
    } else if SERVER.contains(&c) || status >= 500 || (receiver && !DENIED.contains(&c)) {
        StsError::ServerError {
            status,
            code,
            message,
        }
    } else if DENIED.contains(&c) || status == 401 || status == 403 {
        StsError::Denied {
            status,
            code,
            message,
        }
    } else {
        StsError::InvalidRequest {
            status,
            code,
            message,
        }
    }
}

/// The text of the elements `pick` names (by their path of local names from the root), one
/// field each. A field given twice is an error; with `stop_after`, reading ends after the
/// first element of that name closes.
fn collect(
    body: &[u8],
    pick: &dyn Fn(&[String]) -> Option<usize>,
    fields: usize,
    stop_after: Option<&str>,
) -> Result<Vec<Option<String>>, String> {
    let text =
        std::str::from_utf8(body).map_err(|e| format!("not UTF-8 at byte {}", e.valid_up_to()))?;
    let mut reader = Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut out: Vec<Option<String>> = vec![None; fields];
    let mut current: Option<usize> = None;
    let bad = |r: &Reader<&[u8]>| format!("not well-formed XML at byte {}", r.error_position());
    loop {
        let event = reader.read_event().map_err(|_| bad(&reader))?;
        match event {
            Event::Start(e) => {
                if path.len() >= MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} elements"));
                }
                let name = std::str::from_utf8(e.local_name().into_inner())
                    .map_err(|_| bad(&reader))?
                    .to_string();
                path.push(name);
                current = pick(&path);
                if let Some(i) = current {
                    if out[i].is_some() {
                        return Err(format!("element {} given twice", path.join("/")));
                    }
                    out[i] = Some(String::new());
                }
            }
            Event::End(_) => {
                let closed = path.pop();
                current = None;
                if let (Some(stop), Some(closed)) = (stop_after, closed) {
                    if closed == stop {
                        return Ok(out);
                    }
                }
            }
            Event::Text(t) => append(
                &mut out,
                current,
                &t.xml_content().map_err(|_| bad(&reader))?,
            ),
            Event::CData(t) => append(&mut out, current, &t.decode().map_err(|_| bad(&reader))?),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|_| bad(&reader))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|_| bad(&reader))?;
                        quick_xml::escape::resolve_xml_entity(&name)
                            .ok_or_else(|| bad(&reader))?
                            .to_string()
                    }
                };
                append(&mut out, current, &resolved);
            }
            Event::Eof if path.is_empty() => return Ok(out),
            Event::Eof => return Err("the answer ends inside an element (truncated)".into()),
            _ => {}
        }
    }
}

fn append(out: &mut [Option<String>], current: Option<usize>, text: &str) {
    if let Some(s) = current.and_then(|i| out[i].as_mut()) {
        s.push_str(text);
    }
}

/// ISO 8601 in UTC as STS and the metadata service write it: `2026-12-03T07:00:00Z`, with or
/// without fractional seconds, `+00:00` accepted for `Z`.
pub(crate) fn parse_time(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    let utc = s.strip_suffix("+00:00").map(|t| format!("{t}Z"));
    humantime::parse_rfc3339(utc.as_deref().unwrap_or(s)).map_err(|_| {
        format!(
            "expiration {:?} is not an RFC 3339 UTC time",
            truncate(s, 40)
        )
    })
}

/// Secrets cut out, control characters made spaces, whitespace runs folded, at most
/// [`MAX_MESSAGE`] characters.
fn clean_message(message: &str, secrets: &[&str]) -> String {
    let mut m = message.to_string();
    for s in secrets {
        m = m.replace(s, "[redacted]");
    }
    let folded = m
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    truncate(&folded, MAX_MESSAGE).to_string()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
