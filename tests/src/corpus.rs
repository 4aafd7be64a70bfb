//! The adversarial HTTP corpus: raw requests a hostile pod sends to 169.254.169.254:80, each with
//! the preset policy it runs under, the outcome a correct proxy gives, and whether it aims at a
//! resource the policy denies.
//!
//! Requests are exact bytes on the wire. The small macros below only glue string literals
//! together at compile time (`concat!`), so what you read is what is sent; cases that need bytes a
//! `str` cannot hold use byte-string literals, and the few that are too large to write out are
//! built by a function named in the case.
//!
//! Expectations follow issue 3 (the proxy's rules): ambiguous targets get 400 and never reach
//! upstream; whatever no rule allows gets 403; framing the proxy does not need gets 400. Where the
//! rules leave a choice (for example 400 or 403 for a lower-case method, or a parse error that
//! hyper answers by closing the connection), the case lists every acceptable status: the
//! invariant over the fake server's record still applies to every case.

use crate::raw::Step;
use std::sync::LazyLock;
use std::time::Duration;

/// What the corpus is about, for the summary table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Path,
    Query,
    TargetForm,
    Method,
    Headers,
    Framing,
    Size,
    Slow,
    NearMiss,
}

impl Category {
    pub const ALL: [Category; 9] = [
        Category::Path,
        Category::Query,
        Category::TargetForm,
        Category::Method,
        Category::Headers,
        Category::Framing,
        Category::Size,
        Category::Slow,
        Category::NearMiss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Path => "path",
            Category::Query => "query",
            Category::TargetForm => "target-form",
            Category::Method => "method",
            Category::Headers => "headers",
            Category::Framing => "framing",
            Category::Size => "size",
            Category::Slow => "slow",
            Category::NearMiss => "near-miss",
        }
    }
}

/// The built-in policy presets of metaguard-proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Preset {
    DenyAll,
    Aws,
    Gcp,
    Azure,
    Audit,
}

impl Preset {
    pub const ALL: [Preset; 5] = [
        Preset::DenyAll,
        Preset::Aws,
        Preset::Gcp,
        Preset::Azure,
        Preset::Audit,
    ];

    /// The preset's name in policy files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Preset::DenyAll => "deny-all",
            Preset::Aws => "aws",
            Preset::Gcp => "gcp",
            Preset::Azure => "azure",
            Preset::Audit => "audit",
        }
    }
}

/// The right outcome of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Exactly one final response, with one of these statuses.
    One(&'static [u16]),
    /// One final response with one of these statuses, or no response and the connection closed
    /// or reset (hyper closes without answering some parse errors).
    OneOrClosed(&'static [u16]),
    /// One of these statuses, or nothing at all: closed, reset, or still silent at the deadline
    /// (for input a server may wait on, such as an HTTP/2 preface or a half request).
    OneOrSilent(&'static [u16]),
    /// Pipelined: exactly these responses, in order, each with one of its statuses.
    Seq(&'static [&'static [u16]]),
    /// Pipelined where the server may stop early: at least one and at most these responses, in
    /// order, then the connection closed.
    Prefix(&'static [&'static [u16]]),
}

/// How the bytes of a case are sent.
#[derive(Debug, Clone, Copy)]
pub enum Wire {
    /// All at once.
    Raw(&'static [u8]),
    /// Built by a function (too large or too repetitive to write out).
    Built(fn() -> Vec<u8>),
    /// A sequence of writes and pauses (slow attacks).
    Steps(fn() -> Vec<Step>),
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub id: &'static str,
    pub category: Category,
    pub preset: Preset,
    pub wire: Wire,
    pub expect: Expect,
    /// The request (or a request smuggled inside it) aims at a resource the preset denies.
    pub denied: bool,
}

impl Case {
    pub fn steps(&self) -> Vec<Step> {
        match self.wire {
            Wire::Raw(b) => vec![Step::Write(b.to_vec())],
            Wire::Built(f) => vec![Step::Write(f())],
            Wire::Steps(f) => f(),
        }
    }

    /// The target of the first request line (for cases sent all at once).
    pub fn target(&self) -> Option<String> {
        let Wire::Raw(b) = self.wire else {
            return None;
        };
        let line = b.split(|&c| c == b'\r').next()?;
        let target = line.split(|&c| c == b' ').nth(1)?;
        Some(String::from_utf8_lossy(target).into_owned())
    }

    /// The first request is HEAD (its response carries no body).
    pub fn is_head(&self) -> bool {
        match self.wire {
            Wire::Raw(b) => b.starts_with(b"HEAD "),
            _ => false,
        }
    }

    /// How long to wait for the outcome after the last byte is sent.
    pub fn deadline(&self) -> Duration {
        match (self.category, self.expect) {
            (Category::Slow, _) => SLOW_DEADLINE,
            (_, Expect::OneOrSilent(_)) => Duration::from_millis(1500),
            _ => Duration::from_secs(3),
        }
    }

    /// How many final responses to wait for before stopping early.
    pub fn max_responses(&self) -> usize {
        match self.expect {
            Expect::Seq(s) | Expect::Prefix(s) => s.len() + 1,
            _ => 2,
        }
    }
}

/// The header-read timeout the adversarial run configures on the proxy, and how long a slow case
/// may take to be cut off (timeout plus margin). The slow cases are built around these.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
pub const SLOW_DEADLINE: Duration = Duration::from_secs(6);

// --- request builders: compile-time string concatenation, nothing else --------------------------

/// A request line plus headers, each ended with CRLF, then the empty line.
macro_rules! req {
    ($line:expr $(, $h:expr)* $(,)?) => {
        concat!($line, "\r\n", $($h, "\r\n",)* "\r\n").as_bytes()
    };
}

/// `GET <path>` with the Host a pod would send, for the AWS-style presets.
macro_rules! get {
    ($path:expr $(, $h:expr)* $(,)?) => {
        req!(concat!("GET ", $path, " HTTP/1.1"), "Host: 169.254.169.254" $(, $h)*)
    };
}

/// `<METHOD> <path>` with the AWS Host header.
macro_rules! get_method {
    ($m:literal, $path:literal) => {
        req!(
            concat!($m, " ", $path, " HTTP/1.1"),
            "Host: 169.254.169.254"
        )
    };
}

/// `GET <path>` with GCP's required header.
macro_rules! gget {
    ($path:expr $(, $h:expr)* $(,)?) => {
        req!(concat!("GET ", $path, " HTTP/1.1"), "Host: metadata.google.internal", "Metadata-Flavor: Google" $(, $h)*)
    };
}

/// `GET <path>` with Azure's required header.
macro_rules! aget {
    ($path:expr $(, $h:expr)* $(,)?) => {
        req!(concat!("GET ", $path, " HTTP/1.1"), "Host: 169.254.169.254", "Metadata: true" $(, $h)*)
    };
}

macro_rules! case {
    ($id:literal, $cat:ident, $preset:ident, $wire:expr, $expect:expr, $denied:expr) => {
        Case {
            id: $id,
            category: Category::$cat,
            preset: Preset::$preset,
            wire: Wire::Raw($wire),
            expect: $expect,
            denied: $denied,
        }
    };
}

macro_rules! built {
    ($id:literal, $cat:ident, $preset:ident, $f:expr, $expect:expr, $denied:expr) => {
        Case {
            id: $id,
            category: Category::$cat,
            preset: Preset::$preset,
            wire: Wire::Built($f),
            expect: $expect,
            denied: $denied,
        }
    };
}

macro_rules! slow {
    ($id:literal, $preset:ident, $f:expr, $expect:expr, $denied:expr) => {
        Case {
            id: $id,
            category: Category::Slow,
            preset: Preset::$preset,
            wire: Wire::Steps($f),
            expect: $expect,
            denied: $denied,
        }
    };
}

use Expect::*;

const OK: Expect = One(&[200]);
const DENY: Expect = One(&[403]);
const BAD: Expect = One(&[400]);
/// A parse error hyper may answer with 400 or by closing the connection.
const BAD_OR_CLOSED: Expect = OneOrClosed(&[400]);
/// Either refused as malformed or denied as unmatched: both are safe.
const BAD_OR_DENY: Expect = One(&[400, 403]);
/// A method no rule allows.
const NO_METHOD: Expect = One(&[400, 403, 405]);
/// Forwarded (under `audit`): the fake's answer, 200 or 404 for a name it does not serve.
pub const FORWARDED: Expect = One(&[200, 404]);

impl Expect {
    /// Whether the outcome is decided before any policy is consulted (canonicaliser, framing and
    /// header checks, parser limits): such a case must come out the same under every preset.
    pub fn policy_independent(self) -> bool {
        let refusal = |set: &[u16]| {
            set.iter()
                .all(|s| matches!(s, 400 | 408 | 413 | 414 | 417 | 431 | 505))
        };
        match self {
            Expect::One(s) | Expect::OneOrClosed(s) | Expect::OneOrSilent(s) => refusal(s),
            Expect::Seq(l) | Expect::Prefix(l) => l.iter().all(|s| refusal(s)),
        }
    }
}

/// Every case of the corpus, plus each policy-independent case again under `audit` (which allows
/// everything well-formed) and `deny-all`: refusing an ambiguous request must not depend on the
/// policy. Near-miss cases run under those two presets too: refused or denied under `deny-all`,
/// refused or forwarded under `audit` (the control that they are requests a policy could let
/// through, and that the judge reads them as the secret).
pub fn cases_all_presets() -> Vec<Case> {
    let base = cases();
    let mut v = base.clone();
    for preset in [Preset::Audit, Preset::DenyAll] {
        v.extend(base.iter().filter(|c| c.preset != preset).filter_map(|c| {
            let expect = match (c.category, preset) {
                _ if c.expect.policy_independent() => c.expect,
                (Category::NearMiss, Preset::Audit) => FORWARDED,
                (Category::NearMiss, _) => DENY,
                _ => return None,
            };
            Some(Case {
                preset,
                expect,
                ..*c
            })
        }));
    }
    v
}

/// Every case of the corpus.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend_from_slice(PATH);
    v.extend_from_slice(QUERY);
    v.extend_from_slice(TARGET);
    v.extend_from_slice(METHOD);
    v.extend_from_slice(HEADERS);
    v.extend_from_slice(FRAMING);
    v.extend_from_slice(SIZE);
    v.extend_from_slice(SLOW);
    v.extend(near_miss_cases());
    v
}

// --- near-miss names (issue 14) ---------------------------------------------------------------

/// A name a cloud preset denies, in the request a client would send for it: `before`, the name,
/// `after`, `query`, with the preset's headers. Some names are on the way to the secret
/// (`attributes`, `service-accounts`, `compute`): a server that ignores trailing characters there
/// reaches the secret too.
struct Denied {
    preset: Preset,
    id: &'static str,
    before: &'static str,
    name: &'static str,
    after: &'static str,
    query: &'static str,
}

#[rustfmt::skip]
const DENIED_NAMES: &[Denied] = &[
    Denied { preset: Preset::Aws, id: "aws-iam", before: "/latest/meta-data/", name: "iam", after: "/security-credentials/", query: "" },
    Denied { preset: Preset::Aws, id: "aws-identity-creds", before: "/latest/meta-data/", name: "identity-credentials", after: "/ec2/security-credentials/ec2-instance", query: "" },
    Denied { preset: Preset::Aws, id: "aws-user-data", before: "/latest/", name: "user-data", after: "", query: "" },
    Denied { preset: Preset::Aws, id: "aws-tags", before: "/latest/meta-data/", name: "tags", after: "/instance", query: "" },
    Denied { preset: Preset::Gcp, id: "gcp-kube-env", before: "/computeMetadata/v1/instance/attributes/", name: "kube-env", after: "", query: "" },
    Denied { preset: Preset::Gcp, id: "gcp-attributes", before: "/computeMetadata/v1/instance/", name: "attributes", after: "/kube-env", query: "" },
    Denied { preset: Preset::Gcp, id: "gcp-token", before: "/computeMetadata/v1/instance/service-accounts/default/", name: "token", after: "", query: "" },
    Denied { preset: Preset::Gcp, id: "gcp-identity", before: "/computeMetadata/v1/instance/service-accounts/default/", name: "identity", after: "", query: "?audience=x" },
    Denied { preset: Preset::Gcp, id: "gcp-service-accounts", before: "/computeMetadata/v1/instance/", name: "service-accounts", after: "/default/token", query: "" },
    Denied { preset: Preset::Azure, id: "azure-identity", before: "/metadata/", name: "identity", after: "/oauth2/token", query: "?api-version=2018-02-01&resource=x" },
    Denied { preset: Preset::Azure, id: "azure-user-data", before: "/metadata/instance/compute/", name: "userData", after: "", query: "?api-version=2021-01-01" },
    Denied { preset: Preset::Azure, id: "azure-compute", before: "/metadata/instance/", name: "compute", after: "/userData", query: "?api-version=2021-01-01" },
];

/// How a near miss is spelled: `name` (upper-cased if `upper`) then `tail`. `refused`: the
/// canonicaliser refuses it with 400 before any policy (escapes, matrix parameters); the rest
/// must be denied by the preset.
struct Spelling {
    tag: &'static str,
    tail: &'static str,
    upper: bool,
    refused: bool,
}

#[rustfmt::skip]
const SPELLINGS: &[Spelling] = &[
    Spelling { tag: "dot", tail: ".", upper: false, refused: false },
    Spelling { tag: "x", tail: "x", upper: false, refused: false },
    Spelling { tag: "tilde", tail: "~", upper: false, refused: false },
    Spelling { tag: "dash", tail: "-", upper: false, refused: false },
    Spelling { tag: "underscore", tail: "_", upper: false, refused: false },
    Spelling { tag: "dotdot", tail: "..", upper: false, refused: false },
    Spelling { tag: "upper-dot", tail: ".", upper: true, refused: false },
    Spelling { tag: "pct-2e", tail: "%2e", upper: false, refused: true },
    Spelling { tag: "pct-2E", tail: "%2E", upper: false, refused: true },
    Spelling { tag: "pct-7e", tail: "%7e", upper: false, refused: true },
    Spelling { tag: "matrix", tail: ";x", upper: false, refused: true },
];

/// One generated case: id, request bytes, preset, refused. Kept for the life of the process so
/// the cases can borrow from it like the written-out ones borrow from the binary.
type Generated = (String, Vec<u8>, Preset, bool);

static NEAR_MISSES: LazyLock<Vec<Generated>> = LazyLock::new(|| {
    let mut v = Vec::new();
    for d in DENIED_NAMES {
        let headers = match d.preset {
            Preset::Gcp => "Host: metadata.google.internal\r\nMetadata-Flavor: Google\r\n",
            Preset::Azure => "Host: 169.254.169.254\r\nMetadata: true\r\n",
            _ => "Host: 169.254.169.254\r\n",
        };
        for sp in SPELLINGS {
            let name = if sp.upper {
                d.name.to_ascii_uppercase()
            } else {
                d.name.to_owned()
            };
            let request = format!(
                "GET {}{name}{}{}{} HTTP/1.1\r\n{headers}\r\n",
                d.before, sp.tail, d.after, d.query
            );
            let id = format!("near-{}-{}", d.id, sp.tag);
            v.push((id, request.into_bytes(), d.preset, sp.refused));
        }
    }
    v
});

/// Every near miss of every denied name, under the name's preset: 400 where the canonicaliser
/// refuses the spelling, 403 otherwise. Never forwarded.
fn near_miss_cases() -> Vec<Case> {
    let generated: &'static [Generated] = &NEAR_MISSES;
    generated
        .iter()
        .map(|(id, bytes, preset, refused)| Case {
            id,
            category: Category::NearMiss,
            preset: *preset,
            wire: Wire::Raw(bytes),
            expect: if *refused { BAD } else { DENY },
            denied: true,
        })
        .collect()
}

// --- path tricks ---------------------------------------------------------------------------------

static PATH: &[Case] = &[
    // Baselines: the policy itself.
    case!("path-aws-allowed", Path, Aws, get!("/latest/meta-data/instance-id"), OK, false),
    case!("path-aws-dated-allowed", Path, Aws, get!("/2009-04-04/meta-data/instance-id"), OK, false),
    case!("path-aws-identity-doc", Path, Aws, get!("/latest/dynamic/instance-identity/document"), OK, false),
    case!("path-aws-placement", Path, Aws, get!("/latest/meta-data/placement/availability-zone"), OK, false),
    case!("path-aws-creds", Path, Aws, get!("/latest/meta-data/iam/security-credentials/"), DENY, true),
    // kube2iam#121: the listing without its trailing slash.
    case!("path-aws-creds-noslash", Path, Aws, get!("/latest/meta-data/iam/security-credentials"), DENY, true),
    case!("path-aws-creds-role", Path, Aws, get!("/latest/meta-data/iam/security-credentials/node-role"), DENY, true),
    case!("path-aws-userdata", Path, Aws, get!("/latest/user-data"), DENY, true),
    case!("path-aws-userdata-slash", Path, Aws, get!("/latest/user-data/"), DENY, true),
    case!("path-aws-dated-userdata", Path, Aws, get!("/2009-04-04/user-data"), DENY, true),
    case!("path-aws-dated-creds", Path, Aws, get!("/2009-04-04/meta-data/iam/security-credentials/"), DENY, true),
    case!(
        "path-aws-identity-creds",
        Path,
        Aws,
        get!("/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance"),
        DENY,
        true
    ),
    // Dot segments.
    case!("path-dot-dotdot", Path, Aws, get!("/latest/meta-data/instance-id/../../user-data"), BAD, true),
    case!("path-dot-single", Path, Aws, get!("/latest/meta-data/./iam/security-credentials/"), BAD, true),
    case!("path-dot-sideways", Path, Aws, get!("/latest/meta-data/placement/../iam/security-credentials/"), BAD, true),
    case!("path-dot-trailing-dotdot", Path, Aws, get!("/latest/meta-data/.."), BAD, false),
    case!("path-dot-trailing-dot", Path, Aws, get!("/latest/meta-data/."), BAD, false),
    case!("path-dot-leading", Path, Aws, get!("/../latest/user-data"), BAD, true),
    case!("path-dot-many", Path, Aws, get!("/latest/meta-data/a/b/../../../user-data"), BAD, true),
    case!(
        "path-dot-gcp",
        Path,
        Gcp,
        gget!("/computeMetadata/v1/instance/network-interfaces/../attributes/kube-env"),
        BAD,
        true
    ),
    case!(
        "path-dot-azure",
        Path,
        Azure,
        aget!("/metadata/instance/../identity/oauth2/token?api-version=2018-02-01&resource=x"),
        BAD,
        true
    ),
    // Three dots is a name, not a dot segment: unmatched.
    case!("path-dot-triple", Path, Aws, get!("/latest/meta-data/.../user-data"), BAD_OR_DENY, true),
    // Empty segments.
    case!("path-empty-middle", Path, Aws, get!("/latest//user-data"), BAD, true),
    case!("path-empty-leading", Path, Aws, get!("//latest/user-data"), BAD, true),
    case!("path-empty-creds", Path, Aws, get!("/latest/meta-data//iam/security-credentials/"), BAD, true),
    case!("path-empty-trailing", Path, Aws, get!("/latest/meta-data/instance-id//"), BAD, false),
    case!("path-empty-creds-trailing", Path, Aws, get!("/latest/meta-data/iam/security-credentials//"), BAD, true),
    case!("path-empty-gcp-v1", Path, Gcp, gget!("/computeMetadata/v1//instance/attributes/kube-env"), BAD, true),
    case!("path-empty-gcp-attr", Path, Gcp, gget!("/computeMetadata/v1/instance/attributes//kube-env"), BAD, true),
    case!(
        "path-empty-azure",
        Path,
        Azure,
        aget!("/metadata//identity/oauth2/token?api-version=2018-02-01&resource=x"),
        BAD,
        true
    ),
    // Percent-encoded '/', both cases.
    case!("path-pct-2f", Path, Aws, get!("/latest/meta-data/instance-id%2f..%2f..%2fuser-data"), BAD, true),
    case!("path-pct-2F", Path, Aws, get!("/latest%2Fuser-data"), BAD, true),
    case!("path-pct-2f-creds", Path, Aws, get!("/latest/meta-data/iam%2fsecurity-credentials/"), BAD, true),
    case!("path-pct-2F-allowed", Path, Aws, get!("/latest/meta-data%2Finstance-id"), BAD, false),
    case!("path-pct-2f-gcp", Path, Gcp, gget!("/computeMetadata/v1/instance/attributes%2fkube-env"), BAD, true),
    // Percent-encoded '.', both cases.
    case!("path-pct-2e-pair", Path, Aws, get!("/latest/meta-data/instance-id/%2e%2e/%2e%2e/user-data"), BAD, true),
    case!("path-pct-2E-pair", Path, Aws, get!("/latest/meta-data/%2E%2E/user-data"), BAD, true),
    case!("path-pct-2e-mixed", Path, Aws, get!("/latest/meta-data/.%2e/user-data"), BAD, true),
    case!("path-pct-2E-mixed", Path, Aws, get!("/latest/meta-data/%2E./user-data"), BAD, true),
    case!("path-pct-2e-single", Path, Aws, get!("/latest/meta-data/%2e/iam/security-credentials/"), BAD, true),
    case!(
        "path-pct-2e-gcp",
        Path,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/default/%2e%2e/%2e%2e/attributes/kube-env"),
        BAD,
        true
    ),
    // Percent-encoded '\', both cases, and the raw backslash.
    case!("path-pct-5c", Path, Aws, get!("/latest/meta-data/instance-id%5c..%5c..%5cuser-data"), BAD, true),
    case!("path-pct-5C", Path, Aws, get!("/latest%5Cuser-data"), BAD, true),
    case!("path-backslash-raw", Path, Aws, get!("/latest\\user-data"), BAD_OR_CLOSED, true),
    case!("path-backslash-dots", Path, Aws, get!("/latest/meta-data\\..\\..\\user-data"), BAD_OR_CLOSED, true),
    // Percent-encoded NUL (only one case exists for 0) and raw NUL.
    case!("path-pct-00-dots", Path, Aws, get!("/latest/meta-data/instance-id%00/../../user-data"), BAD, true),
    case!("path-pct-00-end", Path, Aws, get!("/latest/user-data%00"), BAD, true),
    case!("path-pct-00-allowed", Path, Aws, get!("/latest/meta-data/instance-id%00"), BAD, false),
    case!("path-pct-00-ext", Path, Aws, get!("/latest/meta-data/instance-id%00.html"), BAD, false),
    case!("path-nul-raw", Path, Aws, b"GET /latest/user-data\x00 HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", BAD_OR_CLOSED, true),
    // Double (and triple) encoding: one decoding leaves a literal '%2f' etc.; either refused or unmatched.
    case!("path-double-2f", Path, Aws, get!("/latest%252fuser-data"), BAD_OR_DENY, true),
    case!("path-double-2F", Path, Aws, get!("/latest/meta-data/iam%252Fsecurity-credentials/"), BAD_OR_DENY, true),
    case!("path-double-2e", Path, Aws, get!("/latest/meta-data/%252e%252e/user-data"), BAD_OR_DENY, true),
    case!("path-double-2E", Path, Aws, get!("/latest/meta-data/instance-id/%252E%252E/%252E%252E/user-data"), BAD_OR_DENY, true),
    case!("path-double-5c", Path, Aws, get!("/latest/meta-data%255c..%255cuser-data"), BAD_OR_DENY, true),
    case!("path-double-00", Path, Aws, get!("/latest/user-data%2500"), BAD_OR_DENY, true),
    case!("path-triple-2f", Path, Aws, get!("/latest%25252fuser-data"), BAD_OR_DENY, true),
    // Encoded unreserved characters: decoded-and-matched (deny) or refused; never allowed.
    case!("path-pct-unreserved-u", Path, Aws, get!("/latest/%75ser-data"), BAD_OR_DENY, true),
    case!("path-pct-unreserved-dash", Path, Aws, get!("/latest/meta-data/iam/security%2dcredentials/"), BAD_OR_DENY, true),
    case!("path-pct-unreserved-gcp", Path, Gcp, gget!("/computeMetadata/v1/instance/attributes/kube%2Denv"), BAD_OR_DENY, true),
    case!(
        "path-pct-unreserved-azure",
        Path,
        Azure,
        aget!("/metadata/identity/oauth2/%74oken?api-version=2018-02-01&resource=x"),
        BAD_OR_DENY,
        true
    ),
    // Broken escapes.
    case!("path-pct-bad-hex", Path, Aws, get!("/latest/meta-data/%zz"), BAD, false),
    case!("path-pct-truncated", Path, Aws, get!("/latest/meta-data/instance-id%"), BAD, false),
    case!("path-pct-truncated-2", Path, Aws, get!("/latest/meta-data/instance-id%2"), BAD, false),
    // Non-ASCII: overlong UTF-8 dots, full-width dots, raw high bytes.
    case!("path-overlong-dots", Path, Aws, get!("/latest/meta-data/%c0%ae%c0%ae/user-data"), BAD_OR_DENY, true),
    case!("path-fullwidth-dots", Path, Aws, get!("/latest/meta-data/%ef%bc%8e%ef%bc%8e/user-data"), BAD_OR_DENY, true),
    case!("path-fullwidth-slash", Path, Aws, get!("/latest%ef%bc%8fuser-data"), BAD_OR_DENY, true),
    case!(
        "path-raw-high-bytes",
        Path,
        Aws,
        b"GET /latest/meta-data/\xc0\xae\xc0\xae/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        BAD_OR_CLOSED,
        true
    ),
    // Control characters and spaces in the target.
    case!("path-ctl-01", Path, Aws, b"GET /latest/user-data\x01 HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", BAD_OR_CLOSED, true),
    case!("path-ctl-7f", Path, Aws, b"GET /latest/user-data\x7f HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", BAD_OR_CLOSED, true),
    case!("path-ctl-tab", Path, Aws, b"GET /latest/\tuser-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", BAD_OR_CLOSED, true),
    case!("path-space-split", Path, Aws, get!("/latest/meta-data/instance-id /../../user-data"), BAD_OR_CLOSED, true),
    case!("path-pct-20", Path, Aws, get!("/latest/user-data%20"), BAD_OR_DENY, true),
    case!("path-pct-09", Path, Aws, get!("/latest/user-data%09"), BAD, true),
    case!("path-pct-0a", Path, Aws, get!("/latest/meta-data/instance-id%0d%0aX:%20y"), BAD, false),
    // Case variants: paths are case-sensitive, so these match no allow rule.
    case!("path-case-upper", Path, Aws, get!("/LATEST/USER-DATA"), DENY, true),
    case!("path-case-iam", Path, Aws, get!("/latest/meta-data/IAM/security-credentials/"), DENY, true),
    case!("path-case-creds", Path, Aws, get!("/latest/meta-data/iam/Security-Credentials/"), DENY, true),
    // The aws preset matches the API version with `*`, so this is forwarded and upstream says 404.
    case!("path-case-allowed", Path, Aws, get!("/Latest/meta-data/instance-id"), One(&[403, 404]), false),
    case!("path-case-gcp-kube-env", Path, Gcp, gget!("/computeMetadata/v1/instance/attributes/KUBE-ENV"), DENY, true),
    // The gcp preset allows /computeMetadata/v1/** and carves secrets out with case-sensitive deny
    // rules: a case variant is forwarded. Harmless against a case-sensitive server, a leak against a
    // lenient one; counted as a violation (see docs/adversarial.md).
    case!(
        "path-case-gcp-token",
        Path,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/default/TOKEN"),
        DENY,
        true
    ),
    case!(
        "path-case-gcp-identity",
        Path,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/default/Identity?audience=x"),
        DENY,
        true
    ),
    case!("path-case-gcp-root", Path, Gcp, gget!("/computemetadata/v1/instance/attributes/kube-env"), DENY, true),
    case!(
        "path-case-azure",
        Path,
        Azure,
        aget!("/METADATA/identity/oauth2/token?api-version=2018-02-01&resource=x"),
        DENY,
        true
    ),
    case!(
        "path-case-azure-identity",
        Path,
        Azure,
        aget!("/metadata/Identity/oauth2/token?api-version=2018-02-01&resource=x"),
        DENY,
        true
    ),
    // Matrix parameters (';').
    case!("path-matrix-end", Path, Aws, get!("/latest/user-data;x=1"), BAD, true),
    case!("path-matrix-dotdot", Path, Aws, get!("/latest/meta-data/..;/user-data"), BAD, true),
    case!("path-matrix-segment", Path, Aws, get!("/latest/meta-data/iam;/security-credentials/"), BAD, true),
    case!("path-matrix-escape", Path, Aws, get!("/latest/meta-data/instance-id;/../../user-data"), BAD, true),
    case!("path-matrix-allowed", Path, Aws, get!("/latest/meta-data/instance-id;x"), BAD, false),
    case!("path-matrix-pct", Path, Aws, get!("/latest/meta-data/instance-id%3b/../user-data"), BAD, true),
    case!("path-matrix-gcp", Path, Gcp, gget!("/computeMetadata/v1/instance/attributes/kube-env;x=y"), BAD, true),
    // GCP and Azure resources.
    case!("path-gcp-allowed", Path, Gcp, gget!("/computeMetadata/v1/instance/zone"), OK, false),
    case!("path-gcp-kube-env", Path, Gcp, gget!("/computeMetadata/v1/instance/attributes/kube-env"), DENY, true),
    case!("path-gcp-kube-env-slash", Path, Gcp, gget!("/computeMetadata/v1/instance/attributes/kube-env/"), DENY, true),
    case!(
        "path-gcp-identity",
        Path,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/default/identity?audience=x"),
        DENY,
        true
    ),
    case!(
        "path-gcp-identity-email",
        Path,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/identity?audience=x"),
        DENY,
        true
    ),
    case!(
        "path-gcp-identity-slash",
        Path,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/default/identity/?audience=x"),
        DENY,
        true
    ),
    case!("path-gcp-v1beta1-kube-env", Path, Gcp, gget!("/computeMetadata/v1beta1/instance/attributes/kube-env"), DENY, true),
    case!("path-azure-allowed", Path, Azure, aget!("/metadata/instance?api-version=2021-02-01"), OK, false),
    case!(
        "path-azure-token",
        Path,
        Azure,
        aget!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"),
        DENY,
        true
    ),
    case!(
        "path-azure-token-slash",
        Path,
        Azure,
        aget!("/metadata/identity/oauth2/token/?api-version=2018-02-01&resource=x"),
        DENY,
        true
    ),
    case!("path-azure-identity-info", Path, Azure, aget!("/metadata/identity/info?api-version=2018-02-01"), DENY, true),
    // deny-all answers 403 to every well-formed request and 400 to the rest.
    case!("path-denyall-aws", Path, DenyAll, get!("/latest/meta-data/instance-id"), DENY, true),
    case!("path-denyall-root", Path, DenyAll, get!("/"), DENY, true),
    case!("path-denyall-gcp", Path, DenyAll, gget!("/computeMetadata/v1/instance/zone"), DENY, true),
    case!("path-denyall-azure", Path, DenyAll, aget!("/metadata/instance?api-version=2021-02-01"), DENY, true),
    case!("path-denyall-dots", Path, DenyAll, get!("/latest/meta-data/../user-data"), BAD, true),
    // audit allows everything well-formed, but the canonicaliser still refuses ambiguous targets.
    case!("path-audit-userdata", Path, Audit, get!("/latest/user-data"), OK, false),
    case!("path-audit-dots", Path, Audit, get!("/latest/meta-data/instance-id/../../user-data"), BAD, true),
    case!("path-audit-empty", Path, Audit, get!("/latest//user-data"), BAD, true),
    case!("path-audit-pct-2f", Path, Audit, get!("/latest%2fuser-data"), BAD, true),
    case!("path-audit-pct-5c", Path, Audit, get!("/latest%5cuser-data"), BAD, true),
    case!("path-audit-matrix", Path, Audit, get!("/latest/user-data;x"), BAD, true),
];

// --- query tricks --------------------------------------------------------------------------------

static QUERY: &[Case] = &[
    // GCP: `recursive` outside the service-accounts tree, in every spelling.
    case!(
        "query-rec-base",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive=true"),
        DENY,
        true
    ),
    case!(
        "query-rec-upper-key",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?RECURSIVE=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-mixed",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?Recursive=True"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-one",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive=1"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-false",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive=false"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-novalue",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-empty-value",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive="),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-enc-r",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?%72ecursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-enc-all",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?%72%65%63%75%72%73%69%76%65=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-enc-upper",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?%52ECURSIVE=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-enc-value",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive=%74rue"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-enc-eq",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive%3dtrue"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-double",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?%2572ecursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-second",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?alt=json&recursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-dup",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive=false&recursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-semicolon",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?alt=json;recursive=true"),
        BAD,
        true
    ),
    case!(
        "query-rec-semicolon-first",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive=true;x=1"),
        BAD,
        true
    ),
    case!(
        "query-rec-plus",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive+=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-space",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive%20=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-leading-amp",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?&recursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-nul",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive%00=true"),
        BAD_OR_DENY,
        true
    ),
    // The http crate drops a fragment before the proxy sees the target: what is checked is what
    // is forwarded, so 403 is as safe as 400 here.
    case!(
        "query-rec-fragment",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/?recursive=true#x"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-attributes",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/attributes/?recursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-project",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/project/?recursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-root",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/?recursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-sa-prefix-trick",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts-x/?recursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-sa-case",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/Service-Accounts/?recursive=true"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-rec-sa-escape",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/../?recursive=true"),
        BAD,
        true
    ),
    case!(
        "query-rec-sa-escape-enc",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/%2e%2e/attributes/?recursive=true"),
        BAD,
        true
    ),
    // `recursive` inside the service-accounts tree is what gcloud uses: allowed.
    case!(
        "query-rec-sa-allowed",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/?recursive=true"),
        OK,
        false
    ),
    case!(
        "query-rec-sa-default-allowed",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/service-accounts/default/?recursive=true"),
        OK,
        false
    ),
    // Keys hidden in values: one decoding gives `alt` a strange value, no `recursive` key.
    // Allowed or refused are both safe; the record check decides.
    case!(
        "query-amp-in-value",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/zone?alt=json%26recursive%3dtrue"),
        One(&[200, 400, 403]),
        false
    ),
    case!(
        "query-semicolon-in-value",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/zone?alt=json%3brecursive=true"),
        One(&[200, 400, 403]),
        false
    ),
    case!(
        "query-gcp-alt",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/zone?alt=text"),
        OK,
        false
    ),
    case!(
        "query-gcp-unknown-key",
        Query,
        Gcp,
        gget!("/computeMetadata/v1/instance/zone?foo=bar"),
        BAD_OR_DENY,
        false
    ),
    // AWS has no query keys.
    case!(
        "query-aws-on-allowed",
        Query,
        Aws,
        get!("/latest/meta-data/instance-id?x=1"),
        BAD_OR_DENY,
        false
    ),
    case!(
        "query-aws-on-userdata",
        Query,
        Aws,
        get!("/latest/user-data?x"),
        BAD_OR_DENY,
        true
    ),
    case!(
        "query-aws-semicolon",
        Query,
        Aws,
        get!("/latest/meta-data/instance-id?a=1;b=2"),
        BAD,
        false
    ),
    case!(
        "query-aws-path-in-query",
        Query,
        Aws,
        get!("/latest/meta-data/instance-id?/../../user-data"),
        BAD_OR_DENY,
        false
    ),
    // Azure: api-version is required, `Metadata: true` too.
    case!(
        "query-azure-no-api-version",
        Query,
        Azure,
        aget!("/metadata/instance"),
        BAD_OR_DENY,
        false
    ),
    case!(
        "query-azure-format",
        Query,
        Azure,
        aget!("/metadata/instance/compute?api-version=2021-02-01&format=json"),
        OK,
        false
    ),
    case!(
        "query-azure-semicolon",
        Query,
        Azure,
        aget!("/metadata/instance?api-version=2021-02-01;format=json"),
        BAD,
        false
    ),
    case!(
        "query-azure-unknown-key",
        Query,
        Azure,
        aget!("/metadata/instance?api-version=2021-02-01&path=/metadata/identity/oauth2/token"),
        BAD_OR_DENY,
        false
    ),
    case!(
        "query-azure-token-resource-first",
        Query,
        Azure,
        aget!("/metadata/identity/oauth2/token?resource=x&api-version=2018-02-01"),
        DENY,
        true
    ),
    case!(
        "query-azure-token-client-id",
        Query,
        Azure,
        aget!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x&client_id=y"),
        DENY,
        true
    ),
];

// --- request-target forms ------------------------------------------------------------------------

static TARGET: &[Case] = &[
    case!("target-absolute-meta", TargetForm, Aws, req!("GET http://169.254.169.254/latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254"), BAD, false),
    case!("target-absolute-userdata", TargetForm, Aws, req!("GET http://169.254.169.254/latest/user-data HTTP/1.1", "Host: 169.254.169.254"), BAD, true),
    case!("target-absolute-other-host", TargetForm, Aws, req!("GET http://example.com/ HTTP/1.1", "Host: example.com"), BAD, false),
    case!("target-absolute-other-port", TargetForm, Aws, req!("GET http://169.254.169.254:8080/latest/user-data HTTP/1.1", "Host: 169.254.169.254"), BAD, true),
    case!("target-absolute-https", TargetForm, Aws, req!("GET https://169.254.169.254/latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254"), BAD, false),
    case!("target-absolute-upper-scheme", TargetForm, Aws, req!("GET HTTP://169.254.169.254/latest/user-data HTTP/1.1", "Host: 169.254.169.254"), BAD, true),
    case!("target-absolute-no-path", TargetForm, Aws, req!("GET http://169.254.169.254 HTTP/1.1", "Host: 169.254.169.254"), BAD, false),
    case!("target-absolute-userinfo", TargetForm, Aws, req!("GET http://user:pw@169.254.169.254/latest/user-data HTTP/1.1", "Host: 169.254.169.254"), BAD, true),
    case!("target-absolute-ipv6", TargetForm, Aws, req!("GET http://[fd00:ec2::254]/latest/user-data HTTP/1.1", "Host: [fd00:ec2::254]"), BAD, true),
    case!("target-absolute-gcp", TargetForm, Gcp, req!("GET http://metadata.google.internal/computeMetadata/v1/instance/attributes/kube-env HTTP/1.1", "Host: metadata.google.internal", "Metadata-Flavor: Google"), BAD, true),
    case!("target-absolute-audit", TargetForm, Audit, req!("GET http://169.254.169.254/latest/user-data HTTP/1.1", "Host: 169.254.169.254"), BAD, false),
    case!("target-authority-get", TargetForm, Aws, req!("GET 169.254.169.254:80 HTTP/1.1", "Host: 169.254.169.254"), BAD, false),
    case!("target-authority-connect", TargetForm, Aws, req!("CONNECT 169.254.169.254:80 HTTP/1.1", "Host: 169.254.169.254:80"), BAD, false),
    case!("target-authority-connect-other", TargetForm, Aws, req!("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"), BAD, false),
    case!("target-authority-audit", TargetForm, Audit, req!("CONNECT 169.254.169.254:80 HTTP/1.1", "Host: 169.254.169.254:80"), BAD, false),
    case!("target-asterisk-options", TargetForm, Aws, req!("OPTIONS * HTTP/1.1", "Host: 169.254.169.254"), BAD, false),
    case!("target-asterisk-get", TargetForm, Aws, req!("GET * HTTP/1.1", "Host: 169.254.169.254"), BAD, false),
    case!("target-asterisk-audit", TargetForm, Audit, req!("OPTIONS * HTTP/1.1", "Host: 169.254.169.254"), BAD, false),
    case!("target-userinfo-origin", TargetForm, Aws, req!("GET @169.254.169.254/latest/user-data HTTP/1.1", "Host: 169.254.169.254"), BAD_OR_CLOSED, true),
    case!("target-relative", TargetForm, Aws, req!("GET latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254"), BAD_OR_CLOSED, false),
    case!("target-scheme-relative", TargetForm, Aws, req!("GET //169.254.169.254/latest/user-data HTTP/1.1", "Host: 169.254.169.254"), BAD, true),
    case!("target-empty", TargetForm, Aws, req!("GET  HTTP/1.1", "Host: 169.254.169.254"), BAD_OR_CLOSED, false),
    // Fragments never reach the proxy's code (the http crate strips them); what is left is checked.
    case!("target-fragment", TargetForm, Aws, get!("/latest/meta-data/instance-id#frag"), One(&[200, 400]), false),
    case!("target-fragment-escape", TargetForm, Aws, get!("/latest/meta-data/instance-id#/../../user-data"), One(&[200, 400]), false),
    case!("target-fragment-denied", TargetForm, Aws, get!("/latest/user-data#x"), BAD_OR_DENY, true),
    case!("target-question-only", TargetForm, Aws, get!("/latest/meta-data/instance-id?"), One(&[200, 400]), false),
    case!("target-root", TargetForm, Aws, get!("/"), OK, false),
];

// --- methods -------------------------------------------------------------------------------------

static METHOD: &[Case] = &[
    case!(
        "method-connect-origin",
        Method,
        Aws,
        get_method!("CONNECT", "/latest/meta-data/instance-id"),
        BAD,
        false
    ),
    case!(
        "method-trace",
        Method,
        Aws,
        get_method!("TRACE", "/latest/meta-data/instance-id"),
        BAD,
        false
    ),
    case!(
        "method-trace-audit",
        Method,
        Audit,
        get_method!("TRACE", "/latest/meta-data/instance-id"),
        BAD,
        false
    ),
    case!(
        "method-connect-audit",
        Method,
        Audit,
        get_method!("CONNECT", "/latest/meta-data/instance-id"),
        BAD,
        false
    ),
    case!(
        "method-trace-lower",
        Method,
        Aws,
        get_method!("trace", "/latest/meta-data/instance-id"),
        NO_METHOD,
        false
    ),
    case!(
        "method-track",
        Method,
        Aws,
        get_method!("TRACK", "/latest/meta-data/instance-id"),
        NO_METHOD,
        false
    ),
    case!(
        "method-get-lower",
        Method,
        Aws,
        get_method!("get", "/latest/meta-data/instance-id"),
        NO_METHOD,
        false
    ),
    case!(
        "method-get-lower-denied",
        Method,
        Aws,
        get_method!("get", "/latest/user-data"),
        NO_METHOD,
        true
    ),
    case!(
        "method-get-mixed-denied",
        Method,
        Aws,
        get_method!("Get", "/latest/meta-data/iam/security-credentials/"),
        NO_METHOD,
        true
    ),
    case!(
        "method-unknown",
        Method,
        Aws,
        get_method!("FOO", "/latest/meta-data/instance-id"),
        NO_METHOD,
        false
    ),
    case!(
        "method-unknown-denied",
        Method,
        Aws,
        get_method!("FOO", "/latest/user-data"),
        NO_METHOD,
        true
    ),
    built!(
        "method-unknown-long",
        Method,
        Aws,
        long_method,
        OneOrClosed(&[400, 403, 405]),
        false
    ),
    case!(
        "method-post",
        Method,
        Aws,
        req!(
            "POST /latest/meta-data/instance-id HTTP/1.1",
            "Host: 169.254.169.254",
            "Content-Length: 0"
        ),
        NO_METHOD,
        false
    ),
    case!(
        "method-delete-token",
        Method,
        Aws,
        req!("DELETE /latest/api/token HTTP/1.1", "Host: 169.254.169.254"),
        NO_METHOD,
        false
    ),
    case!(
        "method-options",
        Method,
        Aws,
        get_method!("OPTIONS", "/latest/meta-data/instance-id"),
        NO_METHOD,
        false
    ),
    case!(
        "method-patch-token",
        Method,
        Aws,
        req!(
            "PATCH /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 21600",
            "Content-Length: 0"
        ),
        NO_METHOD,
        false
    ),
    case!(
        "method-head-denied",
        Method,
        Aws,
        get_method!("HEAD", "/latest/user-data"),
        NO_METHOD,
        true
    ),
    case!(
        "method-head-creds",
        Method,
        Aws,
        get_method!("HEAD", "/latest/meta-data/iam/security-credentials/"),
        NO_METHOD,
        true
    ),
    case!(
        "method-space-double",
        Method,
        Aws,
        req!("GET  /latest/user-data HTTP/1.1", "Host: 169.254.169.254"),
        BAD_OR_CLOSED,
        true
    ),
    case!(
        "method-tab",
        Method,
        Aws,
        req!("GET\t/latest/user-data HTTP/1.1", "Host: 169.254.169.254"),
        BAD_OR_CLOSED,
        true
    ),
    case!(
        "method-gcp-post",
        Method,
        Gcp,
        req!(
            "POST /computeMetadata/v1/instance/zone HTTP/1.1",
            "Host: metadata.google.internal",
            "Metadata-Flavor: Google",
            "Content-Length: 0"
        ),
        NO_METHOD,
        false
    ),
    case!(
        "method-azure-post-token",
        Method,
        Azure,
        req!(
            "POST /metadata/identity/oauth2/token?api-version=2018-02-01&resource=x HTTP/1.1",
            "Host: 169.254.169.254",
            "Metadata: true",
            "Content-Length: 0"
        ),
        NO_METHOD,
        true
    ),
    // IMDSv2 token PUT and its variants.
    case!(
        "method-put-token",
        Method,
        Aws,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 21600",
            "Content-Length: 0"
        ),
        OK,
        false
    ),
    case!(
        "method-put-token-no-cl",
        Method,
        Aws,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 60"
        ),
        OK,
        false
    ),
    case!(
        "method-put-token-ttl-lower",
        Method,
        Aws,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "x-aws-ec2-metadata-token-ttl-seconds: 1"
        ),
        OK,
        false
    ),
    case!(
        "method-put-token-no-ttl",
        Method,
        Aws,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "Content-Length: 0"
        ),
        BAD_OR_DENY,
        false
    ),
    case!(
        "method-put-token-ttl-0",
        Method,
        Aws,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 0"
        ),
        BAD_OR_DENY,
        false
    ),
    case!(
        "method-put-token-ttl-big",
        Method,
        Aws,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 21601"
        ),
        BAD_OR_DENY,
        false
    ),
    case!(
        "method-put-token-ttl-neg",
        Method,
        Aws,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: -1"
        ),
        BAD_OR_DENY,
        false
    ),
    case!(
        "method-put-token-ttl-nan",
        Method,
        Aws,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: abc"
        ),
        BAD_OR_DENY,
        false
    ),
    case!(
        "method-put-token-ttl-dup",
        Method,
        Aws,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
            "X-aws-ec2-metadata-token-ttl-seconds: 99999"
        ),
        One(&[200, 400, 403]),
        false
    ),
    case!(
        "method-put-token-lower",
        Method,
        Aws,
        req!(
            "put /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 60"
        ),
        NO_METHOD,
        false
    ),
    case!(
        "method-put-token-case-path",
        Method,
        Aws,
        req!(
            "PUT /latest/API/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 60"
        ),
        DENY,
        false
    ),
    case!(
        "method-put-token-dots",
        Method,
        Aws,
        req!(
            "PUT /latest/api/../api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 60"
        ),
        BAD,
        false
    ),
    case!(
        "method-get-token",
        Method,
        Aws,
        get!(
            "/latest/api/token",
            "X-aws-ec2-metadata-token-ttl-seconds: 60"
        ),
        NO_METHOD,
        false
    ),
    case!(
        "method-put-userdata",
        Method,
        Aws,
        req!(
            "PUT /latest/user-data HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
            "Content-Length: 0"
        ),
        NO_METHOD,
        true
    ),
    case!(
        "method-put-creds",
        Method,
        Aws,
        req!(
            "PUT /latest/meta-data/iam/security-credentials/ HTTP/1.1",
            "Host: 169.254.169.254",
            "Content-Length: 0"
        ),
        NO_METHOD,
        true
    ),
    case!(
        "method-put-token-denyall",
        Method,
        DenyAll,
        req!(
            "PUT /latest/api/token HTTP/1.1",
            "Host: 169.254.169.254",
            "X-aws-ec2-metadata-token-ttl-seconds: 60"
        ),
        DENY,
        true
    ),
];

fn long_method() -> Vec<u8> {
    let mut v = vec![b'A'; 4096];
    v.extend_from_slice(
        b" /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    );
    v
}

// --- forwarding, hop-by-hop and other headers ----------------------------------------------------

static HEADERS: &[Case] = &[
    // Forwarding headers: clouds reject them on the token PUT; the proxy refuses them there.
    case!("hdr-xff-token", Headers, Aws, req!("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254", "X-aws-ec2-metadata-token-ttl-seconds: 60", "X-Forwarded-For: 10.0.0.1"), BAD_OR_DENY, false),
    case!("hdr-xff-lower-token", Headers, Aws, req!("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254", "X-aws-ec2-metadata-token-ttl-seconds: 60", "x-forwarded-for: 10.0.0.1"), BAD_OR_DENY, false),
    case!("hdr-xff-empty-token", Headers, Aws, req!("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254", "X-aws-ec2-metadata-token-ttl-seconds: 60", "X-Forwarded-For:"), BAD_OR_DENY, false),
    case!("hdr-forwarded-token", Headers, Aws, req!("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254", "X-aws-ec2-metadata-token-ttl-seconds: 60", "Forwarded: for=10.0.0.1"), BAD_OR_DENY, false),
    case!("hdr-via-token", Headers, Aws, req!("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254", "X-aws-ec2-metadata-token-ttl-seconds: 60", "Via: 1.1 evil"), BAD_OR_DENY, false),
    case!("hdr-xff-get", Headers, Aws, get!("/latest/meta-data/instance-id", "X-Forwarded-For: 10.0.0.1"), One(&[200, 400, 403]), false),
    case!("hdr-xff-gcp", Headers, Gcp, gget!("/computeMetadata/v1/instance/zone", "X-Forwarded-For: 10.0.0.1"), One(&[200, 400, 403]), false),
    case!("hdr-xff-azure", Headers, Azure, aget!("/metadata/instance?api-version=2021-02-01", "X-Forwarded-For: 10.0.0.1"), One(&[200, 400, 403]), false),
    case!("hdr-xff-denied", Headers, Aws, get!("/latest/user-data", "X-Forwarded-For: 127.0.0.1"), BAD_OR_DENY, true),
    case!("hdr-real-ip-denied", Headers, Aws, get!("/latest/meta-data/iam/security-credentials/", "X-Real-IP: 127.0.0.1", "X-Client-IP: 127.0.0.1"), BAD_OR_DENY, true),
    // Headers that rewrite the path on some servers must not turn a denial into an allow.
    case!("hdr-original-url", Headers, Aws, get!("/latest/meta-data/instance-id", "X-Original-URL: /latest/user-data", "X-Rewrite-URL: /latest/user-data"), One(&[200, 400, 403]), false),
    case!("hdr-original-url-denied", Headers, Aws, get!("/latest/user-data", "X-Original-URL: /latest/meta-data/instance-id"), BAD_OR_DENY, true),
    // GCP: Metadata-Flavor required.
    case!("hdr-gcp-no-flavor", Headers, Gcp, req!("GET /computeMetadata/v1/instance/zone HTTP/1.1", "Host: metadata.google.internal"), DENY, false),
    case!("hdr-gcp-no-flavor-kube-env", Headers, Gcp, req!("GET /computeMetadata/v1/instance/attributes/kube-env HTTP/1.1", "Host: metadata.google.internal"), DENY, true),
    case!("hdr-gcp-legacy-header", Headers, Gcp, req!("GET /computeMetadata/v1/instance/zone HTTP/1.1", "Host: metadata.google.internal", "X-Google-Metadata-Request: True"), DENY, false),
    case!("hdr-gcp-flavor-wrong", Headers, Gcp, req!("GET /computeMetadata/v1/instance/zone HTTP/1.1", "Host: metadata.google.internal", "Metadata-Flavor: Amazon"), DENY, false),
    case!("hdr-gcp-flavor-in-connection", Headers, Gcp, gget!("/computeMetadata/v1/instance/zone", "Connection: Metadata-Flavor"), One(&[200, 400, 403]), false),
    case!("hdr-gcp-flavor-kube-env-dup", Headers, Gcp, gget!("/computeMetadata/v1/instance/attributes/kube-env", "Metadata-Flavor: Google"), BAD_OR_DENY, true),
    // Azure: Metadata: true required.
    case!("hdr-azure-no-metadata", Headers, Azure, req!("GET /metadata/instance?api-version=2021-02-01 HTTP/1.1", "Host: 169.254.169.254"), DENY, false),
    case!("hdr-azure-metadata-false", Headers, Azure, req!("GET /metadata/instance?api-version=2021-02-01 HTTP/1.1", "Host: 169.254.169.254", "Metadata: false"), DENY, false),
    case!("hdr-azure-no-metadata-token", Headers, Azure, req!("GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=x HTTP/1.1", "Host: 169.254.169.254"), DENY, true),
    // Hop-by-hop headers: dropped, the request still served.
    case!("hdr-hop-connection-close", Headers, Aws, get!("/latest/meta-data/instance-id", "Connection: close"), OK, false),
    case!("hdr-hop-keep-alive", Headers, Aws, get!("/latest/meta-data/instance-id", "Connection: keep-alive", "Keep-Alive: timeout=5"), OK, false),
    case!("hdr-hop-te-trailers", Headers, Aws, get!("/latest/meta-data/instance-id", "TE: trailers"), One(&[200, 400]), false),
    case!("hdr-hop-proxy-connection", Headers, Aws, get!("/latest/meta-data/instance-id", "Proxy-Connection: keep-alive"), One(&[200, 400]), false),
    case!("hdr-hop-proxy-authorization", Headers, Aws, get!("/latest/meta-data/instance-id", "Proxy-Authorization: Basic YTpi"), One(&[200, 400]), false),
    case!("hdr-hop-custom", Headers, Aws, get!("/latest/meta-data/instance-id", "Connection: X-Secret", "X-Secret: 1"), One(&[200, 400]), false),
    case!("hdr-hop-denied", Headers, Aws, get!("/latest/user-data", "Connection: close"), DENY, true),
    case!("hdr-upgrade-websocket", Headers, Aws, get!("/latest/meta-data/instance-id", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"), BAD, false),
    case!("hdr-upgrade-websocket-denied", Headers, Aws, get!("/latest/user-data", "Connection: Upgrade", "Upgrade: websocket"), BAD_OR_DENY, true),
    // Host: ignored for routing (the port says which endpoint), set by the proxy for upstream.
    case!("hdr-host-evil", Headers, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: evil.example"), One(&[200, 400]), false),
    case!("hdr-host-missing", Headers, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1"), One(&[200, 400]), false),
    case!("hdr-host-dup", Headers, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254", "Host: evil.example"), One(&[200, 400]), false),
    case!("hdr-host-userinfo", Headers, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: u@169.254.169.254"), One(&[200, 400]), false),
    case!("hdr-host-denied", Headers, Aws, req!("GET /latest/user-data HTTP/1.1", "Host: 127.0.0.1"), BAD_OR_DENY, true),
    // Malformed header lines.
    case!("hdr-nul-value", Headers, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-A: a\x00b\r\n\r\n", BAD_OR_CLOSED, false),
    case!("hdr-cr-value", Headers, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-A: a\rb\r\n\r\n", BAD_OR_CLOSED, false),
    case!("hdr-obs-fold", Headers, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-A: a\r\n b\r\n\r\n", BAD_OR_CLOSED, false),
    case!("hdr-obs-fold-token", Headers, Aws, b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-A: a\r\n X-Forwarded-For: 1.2.3.4\r\n\r\n", BAD_OR_CLOSED, false),
    case!("hdr-space-before-colon", Headers, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost : 169.254.169.254\r\n\r\n", BAD_OR_CLOSED, false),
    case!("hdr-no-colon", Headers, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost 169.254.169.254\r\n\r\n", BAD_OR_CLOSED, false),
    case!("hdr-high-bytes-value", Headers, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-A: \xff\xfe\r\n\r\n", One(&[200, 400]), false),
    case!("hdr-bare-lf", Headers, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\nHost: 169.254.169.254\n\n", One(&[200, 400]), false),
    case!("hdr-bare-lf-denied", Headers, Aws, b"GET /latest/user-data HTTP/1.1\nHost: 169.254.169.254\n\n", BAD_OR_DENY, true),
    case!("hdr-expect-continue", Headers, Aws, get!("/latest/meta-data/instance-id", "Expect: 100-continue"), One(&[200, 400, 417]), false),
    case!("hdr-expect-continue-denied", Headers, Aws, get!("/latest/user-data", "Expect: 100-continue"), One(&[400, 403, 417]), true),
];

// --- framing -------------------------------------------------------------------------------------

static FRAMING: &[Case] = &[
    // Transfer-Encoding in any form: refused.
    case!("frame-te-chunked-get", Framing, Aws, get!("/latest/meta-data/instance-id", "Transfer-Encoding: chunked"), BAD_OR_CLOSED, false),
    case!("frame-te-chunked-body", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-token", Framing, Aws, b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-cl", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-cl-te-smuggle", Framing, Aws, b"POST /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 56\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", OneOrClosed(&[400, 403, 405]), true),
    case!("frame-te-cl-smuggle", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n38\r\nGET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, true),
    // CVE-2021-21299: several Transfer-Encoding values.
    case!("frame-te-multi-identity-last", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-multi-chunked-last", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-gzip-chunked", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-chunked-gzip", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-upper", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-xchunked", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-tab", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-space-name", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-te-http10", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    // CVE-2021-32714: chunk size overflow.
    case!("frame-chunk-overflow", Framing, Aws, b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nTransfer-Encoding: chunked\r\n\r\nf0000000000000003\r\nabc\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    case!("frame-chunk-ext", Framing, Aws, b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"y\"\r\nabc\r\n0\r\n\r\n", BAD_OR_CLOSED, false),
    // Content-Length mutations (CVE-2021-32715: '+').
    case!("frame-cl-plus", Framing, Aws, req!("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254", "X-aws-ec2-metadata-token-ttl-seconds: 60", "Content-Length: +0"), BAD_OR_CLOSED, false),
    case!("frame-cl-plus-get", Framing, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254", "Content-Length: +5"), BAD_OR_CLOSED, false),
    case!("frame-cl-negative", Framing, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254", "Content-Length: -1"), BAD_OR_CLOSED, false),
    case!("frame-cl-dup-diff", Framing, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 0", "Content-Length: 5"), BAD_OR_CLOSED, false),
    case!("frame-cl-dup-same", Framing, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 0", "Content-Length: 0"), OneOrClosed(&[200, 400]), false),
    case!("frame-cl-list", Framing, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 0, 5"), BAD_OR_CLOSED, false),
    case!("frame-cl-huge", Framing, Aws, req!("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254", "X-aws-ec2-metadata-token-ttl-seconds: 60", "Content-Length: 99999999999999999999"), BAD_OR_CLOSED, false),
    case!("frame-cl-hex", Framing, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 0x10"), BAD_OR_CLOSED, false),
    case!("frame-cl-inner-space", Framing, Aws, req!("GET /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 1 0"), BAD_OR_CLOSED, false),
    // A body on an allowed GET carrying a whole denied request: one response, nothing smuggled.
    case!("frame-cl-body-smuggle", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 56\r\n\r\nGET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", OneOrClosed(&[200, 400, 413]), true),
    case!("frame-cl-body-smuggle-token", Framing, Aws, b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 56\r\n\r\nGET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", OneOrClosed(&[200, 400, 413]), true),
    // A short Content-Length: the rest is read as the next request, judged on its own.
    case!("frame-cl-short", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 4\r\n\r\nXXXXGET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", Prefix(&[&[200, 400, 413], &[400, 403]]), true),
    // Pipelining after an allowed request: each judged on its own.
    case!("frame-pipe-allowed-userdata", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\nGET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", Seq(&[&[200], &[403]]), true),
    case!("frame-pipe-allowed-creds", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\nGET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", Seq(&[&[200], &[403]]), true),
    case!("frame-pipe-allowed-dots", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\nGET /latest/meta-data/../user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", Seq(&[&[200], &[400]]), true),
    case!("frame-pipe-three", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\nGET /latest/meta-data/placement/availability-zone HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\nGET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", Seq(&[&[200], &[200], &[403]]), true),
    case!("frame-pipe-denied-first", Framing, Aws, b"GET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\nGET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", Seq(&[&[403], &[200]]), true),
    case!("frame-pipe-token-then-creds", Framing, Aws, b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\nGET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", Seq(&[&[200], &[403]]), true),
    case!("frame-pipe-gcp", Framing, Gcp, b"GET /computeMetadata/v1/instance/zone HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\nGET /computeMetadata/v1/instance/attributes/kube-env HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n", Seq(&[&[200], &[403]]), true),
    case!("frame-pipe-gcp-recursive", Framing, Gcp, b"GET /computeMetadata/v1/instance/zone HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\nGET /computeMetadata/v1/instance/?recursive=true HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n", Seq(&[&[200], &[403]]), true),
    case!("frame-pipe-azure", Framing, Azure, b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\nGET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=x HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n", Seq(&[&[200], &[403]]), true),
    // After `Connection: close` (or HTTP/1.0 without keep-alive) the second request is never read.
    case!("frame-pipe-after-close", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\nGET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", Seq(&[&[200]]), true),
    case!("frame-pipe-http10", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\nGET /latest/user-data HTTP/1.0\r\n\r\n", Seq(&[&[200]]), true),
    case!("frame-pipe-lf-only", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.1\nHost: 169.254.169.254\n\nGET /latest/user-data HTTP/1.1\nHost: 169.254.169.254\n\n", Prefix(&[&[200, 400], &[400, 403]]), true),
    // HTTP/0.9 and 1.0 lines.
    case!("frame-http09", Framing, Aws, b"GET /latest/user-data\r\n\r\n", OneOrSilent(&[400]), true),
    case!("frame-http09-allowed", Framing, Aws, b"GET /latest/meta-data/instance-id\r\n", OneOrSilent(&[400]), false),
    case!("frame-http10-allowed", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n", OK, false),
    case!("frame-http10-denied", Framing, Aws, b"GET /latest/user-data HTTP/1.0\r\n\r\n", DENY, true),
    case!("frame-http10-dots", Framing, Aws, b"GET /latest/meta-data/../user-data HTTP/1.0\r\n\r\n", BAD, true),
    case!("frame-http10-absolute", Framing, Aws, b"GET http://169.254.169.254/latest/user-data HTTP/1.0\r\n\r\n", BAD, true),
    case!("frame-http10-keepalive-pipe", Framing, Aws, b"GET /latest/meta-data/instance-id HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /latest/user-data HTTP/1.0\r\n\r\n", Prefix(&[&[200], &[403]]), true),
    case!("frame-version-lower", Framing, Aws, b"GET /latest/user-data http/1.1\r\nHost: 169.254.169.254\r\n\r\n", BAD_OR_CLOSED, true),
    case!("frame-version-12", Framing, Aws, b"GET /latest/user-data HTTP/1.2\r\nHost: 169.254.169.254\r\n\r\n", OneOrClosed(&[400, 505]), true),
    case!("frame-version-20-line", Framing, Aws, b"GET /latest/user-data HTTP/2.0\r\nHost: 169.254.169.254\r\n\r\n", OneOrClosed(&[400, 505]), true),
    // h2c: upgrade and prior knowledge.
    case!("frame-h2c-upgrade", Framing, Aws, get!("/latest/meta-data/instance-id", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), BAD, false),
    case!("frame-h2c-upgrade-denied", Framing, Aws, get!("/latest/user-data", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), BAD, true),
    case!("frame-h2c-upgrade-no-connection", Framing, Aws, get!("/latest/meta-data/instance-id", "Upgrade: h2c"), BAD, false),
    case!("frame-h2c-upgrade-audit", Framing, Audit, get!("/latest/user-data", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), BAD, false),
    case!("frame-h2-preface", Framing, Aws, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", OneOrSilent(&[400, 505]), false),
    built!("frame-h2-preface-headers", Framing, Aws, h2_prior_knowledge_get, OneOrSilent(&[400, 505]), true),
    // Bytes before and instead of a request.
    case!("frame-leading-crlf", Framing, Aws, b"\r\n\r\nGET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", One(&[200, 400]), false),
    case!("frame-leading-nul", Framing, Aws, b"\x00GET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", OneOrClosed(&[400]), true),
    case!("frame-tls-hello", Framing, Aws, b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x2f\x01\x00", OneOrSilent(&[400]), false),
    case!("frame-garbage", Framing, Aws, b"\xde\xad\xbe\xef\r\n\r\n", OneOrSilent(&[400]), false),
];

/// The HTTP/2 client preface followed by SETTINGS and a HEADERS frame for GET /latest/user-data
/// (HPACK literals without Huffman coding).
fn h2_prior_knowledge_get() -> Vec<u8> {
    let mut v = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    v.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    let path = b"/latest/user-data";
    block.push(0x04); // literal without indexing, name index 4 (:path)
    block.push(path.len() as u8);
    block.extend_from_slice(path);
    block.push(0x01); // :authority
    let host = b"169.254.169.254";
    block.push(host.len() as u8);
    block.extend_from_slice(host);
    let len = block.len();
    v.extend_from_slice(&[
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        0x01,
        0x05,
        0,
        0,
        0,
        1,
    ]);
    v.extend_from_slice(&block);
    v
}

// --- oversized and numerous headers --------------------------------------------------------------

static SIZE: &[Case] = &[
    built!(
        "size-header-64k",
        Size,
        Aws,
        || big_header(64 * 1024),
        OneOrClosed(&[400, 431]),
        false
    ),
    built!(
        "size-header-1m",
        Size,
        Aws,
        || big_header(1024 * 1024),
        OneOrClosed(&[400, 431]),
        false
    ),
    built!(
        "size-headers-500",
        Size,
        Aws,
        || many_headers(500, "/latest/meta-data/instance-id"),
        OneOrClosed(&[400, 431]),
        false
    ),
    built!(
        "size-headers-500-denied",
        Size,
        Aws,
        || many_headers(500, "/latest/user-data"),
        OneOrClosed(&[400, 403, 431]),
        true
    ),
    built!(
        "size-headers-20",
        Size,
        Aws,
        || many_headers(20, "/latest/meta-data/instance-id"),
        OK,
        false
    ),
    built!(
        "size-uri-70k",
        Size,
        Aws,
        || long_uri(70 * 1024),
        OneOrClosed(&[400, 403, 414, 431]),
        false
    ),
    built!(
        "size-uri-4k-denied",
        Size,
        Aws,
        || long_uri_denied(4 * 1024),
        OneOrClosed(&[400, 403, 414, 431]),
        true
    ),
    built!(
        "size-query-many-keys",
        Size,
        Gcp,
        many_query_keys,
        OneOrClosed(&[400, 403, 414, 431]),
        true
    ),
    built!(
        "size-body-1m",
        Size,
        Aws,
        big_body,
        OneOrClosed(&[200, 400, 413]),
        false
    ),
    built!(
        "size-cookie-32k",
        Size,
        Aws,
        || big_named_header("Cookie", 32 * 1024),
        OneOrClosed(&[200, 400, 431]),
        false
    ),
];

fn big_header(n: usize) -> Vec<u8> {
    big_named_header("X-Big", n)
}

fn big_named_header(name: &str, n: usize) -> Vec<u8> {
    let mut v = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n".to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b": ");
    v.extend(std::iter::repeat_n(b'a', n));
    v.extend_from_slice(b"\r\n\r\n");
    v
}

fn many_headers(n: usize, path: &str) -> Vec<u8> {
    let mut v = format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n").into_bytes();
    for i in 0..n {
        v.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v
}

fn long_uri(n: usize) -> Vec<u8> {
    let mut v = b"GET /latest/meta-data/".to_vec();
    v.extend(std::iter::repeat_n(b'a', n));
    v.extend_from_slice(b" HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    v
}

fn long_uri_denied(n: usize) -> Vec<u8> {
    // Many `a/../` pairs ending at user-data: a canonicaliser that gives up on long input must not
    // wave it through.
    let mut v = b"GET /latest/".to_vec();
    while v.len() < n {
        v.extend_from_slice(b"a/../");
    }
    v.extend_from_slice(b"user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    v
}

fn many_query_keys() -> Vec<u8> {
    let mut v = b"GET /computeMetadata/v1/instance/?".to_vec();
    for i in 0..2000 {
        v.extend_from_slice(format!("alt{i}=json&").as_bytes());
    }
    v.extend_from_slice(b"recursive=true HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n");
    v
}

fn big_body() -> Vec<u8> {
    let n = 1024 * 1024;
    let mut v = format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: {n}\r\n\r\n"
    )
    .into_bytes();
    v.extend(std::iter::repeat_n(b'x', n));
    v
}

// --- slow headers and bodies ---------------------------------------------------------------------

static SLOW: &[Case] = &[
    // Slow but finished well within the header timeout: served normally.
    slow!(
        "slow-headers-ok",
        Aws,
        || split_with_pauses(get!("/latest/meta-data/instance-id"), 5, 150),
        OK,
        false
    ),
    slow!(
        "slow-headers-denied",
        Aws,
        || split_with_pauses(get!("/latest/user-data"), 5, 150),
        DENY,
        true
    ),
    slow!(
        "slow-request-line-dots",
        Aws,
        || split_with_pauses(get!("/latest/meta-data/../user-data"), 8, 100),
        BAD,
        true
    ),
    // Headers that never finish: cut off after the header timeout (408 or a plain close).
    slow!(
        "slow-headers-never-end",
        Aws,
        never_ending_headers,
        OneOrClosed(&[408, 400]),
        false
    ),
    slow!(
        "slow-headers-never-end-denied",
        Aws,
        never_ending_headers_denied,
        OneOrClosed(&[408, 400]),
        true
    ),
    // A promised body that never comes: refused, timed out or closed; never forwarded.
    slow!(
        "slow-body-token",
        Aws,
        slow_body_token,
        OneOrClosed(&[200, 400, 408, 413]),
        false
    ),
    // Pipelined with a pause between: the second still judged on its own.
    slow!(
        "slow-pipe-allowed-then-denied",
        Aws,
        pipelined_with_pause,
        Seq(&[&[200], &[403]]),
        true
    ),
];

fn split_with_pauses(bytes: &[u8], parts: usize, pause_ms: u64) -> Vec<Step> {
    let size = bytes.len().div_ceil(parts);
    let mut steps = Vec::new();
    for (i, chunk) in bytes.chunks(size).enumerate() {
        if i > 0 {
            steps.push(Step::Pause(Duration::from_millis(pause_ms)));
        }
        steps.push(Step::Write(chunk.to_vec()));
    }
    steps
}

/// One header byte every 250 ms for twice the header timeout: never a complete head.
fn trickle(start: &[u8]) -> Vec<Step> {
    let mut steps = vec![Step::Write(start.to_vec())];
    let n = (HEADER_TIMEOUT.as_millis() * 2 / 250) as usize;
    for _ in 0..n {
        steps.push(Step::Pause(Duration::from_millis(250)));
        steps.push(Step::Write(b"a".to_vec()));
    }
    steps
}

fn never_ending_headers() -> Vec<Step> {
    trickle(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Slow: ")
}

fn never_ending_headers_denied() -> Vec<Step> {
    trickle(b"GET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Slow: ")
}

fn slow_body_token() -> Vec<Step> {
    vec![Step::Write(
        b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 10\r\n\r\nab"
            .to_vec(),
    )]
}

fn pipelined_with_pause() -> Vec<Step> {
    vec![
        Step::Write(get!("/latest/meta-data/instance-id").to_vec()),
        Step::Pause(Duration::from_millis(300)),
        Step::Write(get!("/latest/user-data").to_vec()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn corpus_is_big_and_ids_unique() {
        let cases = cases();
        assert!(cases.len() >= 150, "only {} cases", cases.len());
        let mut ids = HashSet::new();
        for c in &cases {
            assert!(ids.insert(c.id), "duplicate id {}", c.id);
        }
        for cat in Category::ALL {
            assert!(
                cases.iter().any(|c| c.category == cat),
                "no case in {}",
                cat.name()
            );
        }
    }

    #[test]
    fn near_misses_cover_every_denied_name_and_run_under_every_preset() {
        let all = cases_all_presets();
        for d in DENIED_NAMES {
            for preset in [d.preset, Preset::Audit, Preset::DenyAll] {
                let n = all
                    .iter()
                    .filter(|c| c.category == Category::NearMiss && c.preset == preset)
                    .filter(|c| c.id.starts_with(&format!("near-{}-", d.id)))
                    .count();
                assert_eq!(n, SPELLINGS.len(), "{} under {}", d.id, preset.name());
            }
        }
        let c = all
            .iter()
            .find(|c| c.id == "near-gcp-kube-env-dot" && c.preset == Preset::Gcp)
            .unwrap();
        assert_eq!(
            c.target().as_deref(),
            Some("/computeMetadata/v1/instance/attributes/kube-env.")
        );
        assert_eq!(c.expect, DENY);
        let c = all
            .iter()
            .find(|c| c.id == "near-azure-user-data-matrix" && c.preset == Preset::Audit)
            .unwrap();
        assert_eq!(c.expect, BAD);
    }

    #[test]
    fn h2_frame_is_well_formed() {
        let v = h2_prior_knowledge_get();
        assert!(v.starts_with(b"PRI * HTTP/2.0"));
        let frame = &v[24 + 9..];
        let len =
            (usize::from(frame[0]) << 16) | (usize::from(frame[1]) << 8) | usize::from(frame[2]);
        assert_eq!(frame.len(), 9 + len);
    }
}
