//! Judging the adversarial suite: does an exchange match what a case expects, and does a request
//! the fake metadata server recorded break the invariant (a denied resource, or a target the proxy
//! should have refused as ambiguous, reached the metadata service)?
//!
//! The record check is deliberately independent of the proxy's code and broader than its rules: it
//! decodes percent-encoding repeatedly, resolves dot segments and backslashes, ignores case and
//! matrix parameters, so that a request a lenient server *might* read as a secret counts as one.

use crate::corpus::Expect;
use crate::fake::Recorded;
use crate::raw::{End, Exchange};
use metaguard_proxy::http1::reference::percent_decode_once;

/// `Ok(())` when the exchange is what the case expects; otherwise why not.
pub fn judge(expect: Expect, ex: &Exchange) -> Result<(), String> {
    if ex.end == End::Garbage {
        return Err(format!("answer is not HTTP: {}", ex.summary()));
    }
    let st = ex.statuses();
    let closed = matches!(ex.end, End::Closed | End::Reset);
    let ok = match expect {
        Expect::One(set) => st.len() == 1 && set.contains(&st[0]),
        Expect::OneOrClosed(set) => {
            (st.len() == 1 && set.contains(&st[0])) || (st.is_empty() && closed)
        }
        Expect::OneOrSilent(set) => {
            (st.len() == 1 && set.contains(&st[0]))
                || (st.is_empty() && (closed || ex.end == End::Timeout))
        }
        Expect::Seq(list) => {
            st.len() == list.len() && st.iter().zip(list).all(|(s, want)| want.contains(s))
        }
        Expect::Prefix(list) => {
            !st.is_empty()
                && st.len() <= list.len()
                && st.iter().zip(list).all(|(s, want)| want.contains(s))
                && (st.len() == list.len() || closed)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected {}, got {}",
            describe(expect),
            ex.summary()
        ))
    }
}

/// Number of final responses after which the reader may stop waiting (plus a short grace).
pub fn expected_responses(expect: Expect) -> usize {
    match expect {
        Expect::Seq(l) | Expect::Prefix(l) => l.len(),
        _ => 1,
    }
}

pub fn describe(expect: Expect) -> String {
    match expect {
        Expect::One(s) => format!("{s:?}"),
        Expect::OneOrClosed(s) => format!("{s:?} or closed"),
        Expect::OneOrSilent(s) => format!("{s:?} or no answer"),
        Expect::Seq(l) => format!("{l:?}"),
        Expect::Prefix(l) => format!("a prefix of {l:?} then closed"),
    }
}

/// One way a recorded request breaks the invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub target: String,
    pub why: String,
}

/// Repeated percent-decoding (at most 4 rounds, as far as it changes anything).
fn decode_fully(s: &str) -> String {
    let mut cur = s.as_bytes().to_vec();
    for _ in 0..4 {
        let next = percent_decode_once(&cur);
        if next == cur {
            break;
        }
        cur = next;
    }
    String::from_utf8_lossy(&cur).into_owned()
}

/// The path as the most lenient server would read it: fully decoded, `\` as `/`, matrix
/// parameters and empty and dot segments resolved, lower-cased, as segments.
pub fn lenient_segments(target: &str) -> Vec<String> {
    let path = strip_to_path(target);
    let decoded = decode_fully(path).replace('\\', "/").to_ascii_lowercase();
    let mut segs: Vec<String> = Vec::new();
    for raw in decoded.split('/') {
        // Matrix parameters and NUL truncation as some servers apply them.
        let seg = raw.split([';', '\0']).next().unwrap_or("").trim();
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s.to_string()),
        }
    }
    segs
}

/// The path part of a target in any form (absolute-form loses its scheme and authority).
fn strip_to_path(target: &str) -> &str {
    let t = target.split(['?', '#']).next().unwrap_or("");
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let rest = &t[t.find("//").map_or(0, |i| i + 2)..];
        return rest.find('/').map_or("/", |i| &rest[i..]);
    }
    t
}

/// Query keys as the most lenient server would read them: split on `&` and `;`, fully decoded,
/// `+` as space, trimmed, lower-cased.
pub fn lenient_query_keys(target: &str) -> Vec<String> {
    let Some((_, q)) = target.split_once('?') else {
        return Vec::new();
    };
    let q = q.split('#').next().unwrap_or("");
    q.split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| p.split('=').next().unwrap_or(""))
        .map(|k| {
            decode_fully(&k.replace('+', " "))
                .trim()
                .to_ascii_lowercase()
        })
        .collect()
}

/// The denied resource a target reaches, read leniently, whatever cloud: AWS credentials,
/// user-data and instance tags, GCP kube-env, service-account tokens and identities and
/// `recursive` outside the service-accounts tree, Azure managed identity and userData.
///
/// A segment that starts with a secret's name counts as that secret (`kube-env.`, `kube-envx`,
/// `token~`, `service-accounts./default/token`): a server may ignore what trails a name, and
/// whether a real one does is not ours to bet on (issue 14, near-miss names).
pub fn denied_resource(target: &str) -> Option<&'static str> {
    let segs = lenient_segments(target);
    let s = |i: usize| segs.get(i).map(String::as_str).unwrap_or("");
    let named = |seg: &str, name: &str| seg.starts_with(name);
    let has = |name: &str| segs.iter().any(|x| named(x, name));
    if has("user-data") || has("userdata") {
        return Some("user-data");
    }
    if has("security-credentials")
        || has("identity-credentials")
        || (named(s(1), "meta-data") && named(s(2), "iam"))
    {
        return Some("AWS credentials");
    }
    if named(s(1), "meta-data") && named(s(2), "tags") {
        return Some("AWS instance tags");
    }
    if has("kube-env") {
        return Some("GCP kube-env");
    }
    if segs.windows(3).any(|w| {
        named(&w[0], "service-accounts") && (named(&w[2], "token") || named(&w[2], "identity"))
    }) {
        return Some("GCP service-account token or identity");
    }
    let in_sa_tree = s(0) == "computemetadata"
        && s(1) == "v1"
        && s(2) == "instance"
        && s(3) == "service-accounts";
    if !in_sa_tree
        && lenient_query_keys(target)
            .iter()
            .any(|k| k.contains("recursive"))
    {
        return Some("GCP recursive listing outside service-accounts");
    }
    if named(s(0), "metadata") && named(s(1), "identity") {
        return Some("Azure managed identity");
    }
    None
}

/// Why a target the proxy forwarded should have been refused as ambiguous, if it should.
pub fn ambiguous_target(target: &str) -> Option<&'static str> {
    if !target.starts_with('/') {
        return Some("not origin-form");
    }
    if target
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80)
    {
        return Some("control, space or non-ASCII byte");
    }
    if target.contains(';') || target.contains('\\') || target.contains('#') {
        return Some("';', '\\' or '#' in target");
    }
    let path = target.split('?').next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    for bad in ["%2f", "%2e", "%5c", "%00", "%25"] {
        if lower.contains(bad) {
            return Some("percent-encoded '/', '.', '\\', NUL or '%' in path");
        }
    }
    let rest = &path[1..];
    let segs: Vec<&str> = rest.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        if *seg == "." || *seg == ".." {
            return Some("dot segment");
        }
        if seg.is_empty() && i + 1 != segs.len() {
            return Some("empty segment");
        }
    }
    None
}

/// Forwarding headers the proxy must never send (it refuses requests that carry them and never
/// adds them itself).
pub fn forwarding_header(rec: &Recorded) -> Option<String> {
    rec.headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .find(|n| {
            matches!(
                n.as_str(),
                "x-forwarded-for" | "forwarded" | "via" | "x-real-ip"
            ) || n.starts_with("x-forwarded-")
        })
}

/// Every way one recorded request breaks the invariant, given whether the policy in force allows
/// denied resources (audit) or nothing at all (deny-all).
pub fn violations(rec: &Recorded, allows_everything: bool, allows_nothing: bool) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut add = |why: String| {
        v.push(Violation {
            target: rec.target.clone(),
            why,
        })
    };
    if rec.malformed {
        add(format!(
            "the metadata service received bytes that are not a request: {:?}",
            rec.raw
        ));
    }
    if allows_nothing {
        add("a request reached the metadata service under deny-all".into());
    }
    if !allows_everything {
        if let Some(what) = denied_resource(&rec.target) {
            add(format!("denied resource reached: {what}"));
        }
    }
    if let Some(why) = ambiguous_target(&rec.target) {
        add(format!("ambiguous target forwarded: {why}"));
    }
    if let Some(h) = forwarding_header(rec) {
        add(format!("forwarding header {h} sent upstream"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::Response;
    use std::time::Duration;

    #[test]
    fn lenient_reading_catches_tricks() {
        for t in [
            "/latest/user-data",
            "/latest/meta-data/instance-id/../../user-data",
            "/latest%2fuser-data",
            "/latest%252Fuser-data",
            "/latest\\user-data",
            "/LATEST/USER-DATA",
            "/latest/user-data;x",
            "/latest/meta-data/iam/security-credentials",
            "/latest/meta-data/IAM/info",
            "http://169.254.169.254/latest/user-data",
            "/computeMetadata/v1/instance/attributes/kube-env",
            "/computeMetadata/v1/instance/service-accounts/default/token",
            "/computeMetadata/v1/instance/service-accounts/x/identity?audience=a",
            "/computeMetadata/v1/instance/?%72ecursive=true",
            "/computeMetadata/v1/instance/?alt=json;RECURSIVE=1",
            "/computeMetadata/v1/instance/service-accounts/../?recursive=true",
            "/metadata/identity/oauth2/token?api-version=1",
            "/metadata/instance/compute/userData?api-version=1",
            "/latest/meta-data/tags/instance",
            // Near-miss names: the name plus trailing characters, on the leaf or on the way.
            "/computeMetadata/v1/instance/attributes/kube-env.",
            "/computeMetadata/v1/instance/attributes/kube-envx",
            "/computeMetadata/v1/instance/attributes/KUBE-ENV~",
            "/computeMetadata/v1/instance/service-accounts/default/token.",
            "/computeMetadata/v1/instance/service-accounts/default/identity_?audience=x",
            "/computeMetadata/v1/instance/service-accounts./default/token",
            "/latest/meta-data/iam.",
            "/latest/meta-data./iam/security-credentials/",
            "/latest/user-data-",
            "/latest/meta-data/identity-credentials%2e",
            "/latest/meta-data/tags~/instance",
            "/metadata/identity./oauth2/token?api-version=1",
            "/metadata/instance/compute/userData..?api-version=1",
        ] {
            assert!(denied_resource(t).is_some(), "{t}");
        }
        for t in [
            "/latest/meta-data/instance-id",
            "/computeMetadata/v1/instance/service-accounts/?recursive=true",
            "/computeMetadata/v1/instance/service-accounts/default/?recursive=true",
            "/computeMetadata/v1/instance/zone?alt=json%26x%3d1",
            "/metadata/instance?api-version=2021-02-01",
            // What clients fetch next to the secrets.
            "/computeMetadata/v1/instance/service-accounts/default/email",
            "/computeMetadata/v1/instance/attributes/kube-labels",
            "/computeMetadata/v1/instance/tags",
            "/latest/meta-data/instance-id",
            "/latest/meta-data/placement/region",
            "/metadata/instance/compute/vmId?api-version=2017-08-01",
        ] {
            assert_eq!(denied_resource(t), None, "{t}");
        }
    }

    #[test]
    fn ambiguous_targets() {
        assert_eq!(ambiguous_target("/latest/meta-data/instance-id"), None);
        assert_eq!(ambiguous_target("/latest/meta-data/"), None);
        assert_eq!(ambiguous_target("/x?a=%2F"), None);
        for t in [
            "/a/../b",
            "/a//b",
            "/a%2Fb",
            "/a;b",
            "http://x/",
            "/a\\b",
            "/a%00",
            "/./a",
            "/a/.",
        ] {
            assert!(ambiguous_target(t).is_some(), "{t}");
        }
    }

    fn ex(statuses: &[u16], end: End) -> Exchange {
        Exchange {
            responses: statuses
                .iter()
                .map(|&s| Response {
                    status: s,
                    head: String::new(),
                    headers: Vec::new(),
                    body: Vec::new(),
                })
                .collect(),
            interim: Vec::new(),
            end,
            trailing: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn judging() {
        assert!(judge(Expect::One(&[200]), &ex(&[200], End::Timeout)).is_ok());
        assert!(judge(Expect::One(&[200]), &ex(&[200, 403], End::Timeout)).is_err());
        assert!(judge(Expect::One(&[200]), &ex(&[], End::Closed)).is_err());
        assert!(judge(Expect::OneOrClosed(&[400]), &ex(&[], End::Reset)).is_ok());
        assert!(judge(Expect::OneOrClosed(&[400]), &ex(&[], End::Timeout)).is_err());
        assert!(judge(Expect::OneOrSilent(&[400]), &ex(&[], End::Timeout)).is_ok());
        assert!(judge(
            Expect::Seq(&[&[200], &[403]]),
            &ex(&[200, 403], End::Timeout)
        )
        .is_ok());
        assert!(judge(
            Expect::Seq(&[&[200], &[403]]),
            &ex(&[200, 200], End::Timeout)
        )
        .is_err());
        assert!(judge(Expect::Prefix(&[&[200], &[403]]), &ex(&[200], End::Closed)).is_ok());
        assert!(judge(Expect::Prefix(&[&[200], &[403]]), &ex(&[200], End::Timeout)).is_err());
        assert!(judge(Expect::One(&[200]), &ex(&[200], End::Garbage)).is_err());
    }
}
