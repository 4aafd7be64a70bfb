//! What the fake answers: AWS (IMDSv1 and IMDSv2), GCP, Azure, Alibaba (AWS-shaped paths) and
//! OpenStack content, fault paths and the benchmark path.
//!
//! GCP values can change while the fake runs, so tests can drive GCE's long polls: every GCP answer
//! carries an `ETag` (a hash of its body), `GET /fake-control/gcp-set?path=P&value=V` sets the
//! value at `P` (under `/computeMetadata/v1/`), and a request with `wait_for_change=true` is held
//! like GCE holds it ([`long_poll`]; the waiting itself is `server.rs`'s).
//!
//! Routing is deliberately lenient (the path is percent-decoded once, empty and dot segments are
//! resolved) like a permissive real server: a proxy that forwards `/latest/meta-data/x/../iam/...`
//! gets the secret back, so a bypass is visible in the answer as well as in the record. Every secret
//! contains `FAKE-SECRET`.

use crate::http1::Head;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

// Shared with the test harness, which asserts on them.
#[cfg(test)]
use metaguard_tests::fake::SECRET_MARKER;
pub use metaguard_tests::fake::{AWS_ROLE, BENCH_BODY, INSTANCE_ID};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Respond,
    /// Never answer; keep the connection until the client gives up.
    Hang,
    /// Close with RST (SO_LINGER 0) without answering.
    Reset,
    /// Answer after a delay.
    Delay(Duration),
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub action: Action,
}

impl Reply {
    fn new(status: u16, ctype: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", ctype.to_string())],
            body: body.into(),
            action: Action::Respond,
        }
    }
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::new(status, "text/plain", body.into())
    }
    fn json(status: u16, v: &Value) -> Reply {
        Reply::new(status, "application/json", v.to_string())
    }
    fn with(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
    fn action(mut self, a: Action) -> Reply {
        self.action = a;
        self
    }
    pub fn bench() -> Reply {
        Reply::new(200, "text/plain", BENCH_BODY)
    }
}

/// How the AWS side answers (`--aws-credentials`, `--require-imdsv2`, `--aws-region`).
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// A JSON file with the node's credentials (`AccessKeyId`, `SecretAccessKey`, optional `Token`
    /// and `Expiration`), read at every request so a test can rotate them; `None` serves the
    /// `FAKE-SECRET` marker credentials.
    pub credentials: Option<PathBuf>,
    /// Refuse (401) AWS requests without a valid IMDSv2 token, as an instance with
    /// `HttpTokens=required` does.
    pub require_token: bool,
    pub region: String,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            credentials: None,
            require_token: false,
            region: "us-east-1".into(),
        }
    }
}

/// IMDSv2 tokens handed out, with their expiry; GCP values set through the control path.
#[derive(Debug)]
pub struct State {
    aws: AwsOptions,
    tokens: Mutex<HashMap<String, Instant>>,
    next: AtomicU64,
    /// (path under /computeMetadata/v1/, value), in the order they were set.
    gcp_values: Mutex<Vec<(String, String)>>,
    /// Bumped at every change of a GCP value: what held long polls wait on.
    changes: watch::Sender<u64>,
}

impl Default for State {
    fn default() -> Self {
        State::new(AwsOptions::default())
    }
}

impl State {
    pub fn new(aws: AwsOptions) -> State {
        State {
            aws,
            tokens: Mutex::default(),
            next: AtomicU64::default(),
            gcp_values: Mutex::default(),
            changes: watch::Sender::new(0),
        }
    }

    /// A receiver that sees every GCP change from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn set_gcp(&self, path: &str, value: &str) {
        if let Ok(mut v) = self.gcp_values.lock() {
            v.retain(|(p, _)| p != path);
            v.push((path.to_string(), value.to_string()));
        }
        self.changes.send_modify(|n| *n += 1);
    }

    fn issue(&self, ttl: u64) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let token = format!("AQAEAFAKEIMDSTOKEN{n:08}==");
        if let Ok(mut m) = self.tokens.lock() {
            m.insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        }
        token
    }
    fn valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .map(|m| m.get(token).is_some_and(|exp| *exp > Instant::now()))
            .unwrap_or(false)
    }
}

/// The request as the router sees it.
struct Req<'a> {
    head: &'a Head,
    /// Percent-decoded once, empty and dot segments resolved, always starting with '/'.
    path: String,
    /// Query pairs, percent-decoded once, keys lowercased.
    query: Vec<(String, String)>,
}

impl Req<'_> {
    fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn method(&self) -> &str {
        &self.head.method
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn normalize(path: &str) -> String {
    let decoded = percent_decode(path).replace('\\', "/");
    let mut segs: Vec<&str> = Vec::new();
    for s in decoded.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = format!("/{}", segs.join("/"));
    if decoded.ends_with('/') && out.len() > 1 {
        out.push('/');
    }
    out
}

fn split_target(target: &[u8]) -> (String, String) {
    let t = String::from_utf8_lossy(target);
    let mut t: &str = &t;
    // Absolute form: drop scheme and authority.
    if let Some(rest) = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
    {
        t = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
    }
    let t = t.split('#').next().unwrap_or_default();
    match t.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (t.to_string(), String::new()),
    }
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(k).to_ascii_lowercase(),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Answers one request.
pub fn route(head: &Head, st: &State, bench: bool) -> Reply {
    if bench {
        return Reply::bench();
    }
    let (raw_path, raw_query) = split_target(&head.target);
    let req = Req {
        head,
        path: normalize(&raw_path),
        query: parse_query(&raw_query),
    };
    let p = req.path.as_str();
    if p == "/bench" {
        return Reply::bench();
    }
    if p == "/fake-control/gcp-set" {
        return match (req.q("path"), req.q("value")) {
            (Some(path), Some(value)) if !path.trim_matches('/').is_empty() => {
                st.set_gcp(path.trim_matches('/'), value);
                Reply::text(200, "ok\n")
            }
            _ => Reply::text(400, "gcp-set needs path and value\n"),
        };
    }
    if let Some(f) = p.strip_prefix("/fault/") {
        return fault(f, &req);
    }
    if p == "/computeMetadata" || p.starts_with("/computeMetadata/") {
        return gcp(&req, st);
    }
    if p.starts_with("/metadata/") || p == "/metadata" {
        return azure(&req);
    }
    if p.starts_with("/openstack") {
        return openstack(&req);
    }
    aws(&req, st)
}

fn fault(name: &str, req: &Req) -> Reply {
    let num = |k: &str, max: u64| {
        req.q(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .min(max)
    };
    match name.trim_end_matches('/') {
        "hang" => Reply::text(200, "").action(Action::Hang),
        "reset" => Reply::text(200, "").action(Action::Reset),
        "500" => Reply::text(500, "fake-metadata: injected failure\n"),
        "slow" => Reply::text(200, "slow\n")
            .action(Action::Delay(Duration::from_millis(num("ms", 60_000)))),
        "big" => Reply::new(
            200,
            "application/octet-stream",
            vec![b'x'; num("bytes", 64 << 20) as usize],
        ),
        _ => not_found(),
    }
}

fn not_found() -> Reply {
    Reply::text(404, "Not Found\n")
}

// ---------------------------------------------------------------- AWS (and Alibaba, same paths)

const AWS_VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2012-01-12",
    "2014-02-25",
    "2016-09-02",
    "2018-09-24",
    "2021-03-23",
    "latest",
];

fn is_aws_version(v: &str) -> bool {
    AWS_VERSIONS.contains(&v)
        || (v.len() == 10
            && v.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            }))
}

fn marker_creds() -> Value {
    json!({
        "Code": "Success",
        "LastUpdated": "2024-01-01T00:00:00Z",
        "Type": "AWS-HMAC",
        "AccessKeyId": "ASIAFAKESECRET000001",
        "SecretAccessKey": "FAKE-SECRET-aws-secret-access-key",
        "Token": "FAKE-SECRET-aws-session-token",
        "Expiration": "2099-01-01T00:00:00Z"
    })
}

fn aws_identity_document(region: &str) -> Value {
    json!({
        "accountId": "123456789012",
        "architecture": "x86_64",
        "availabilityZone": format!("{region}a"),
        "imageId": "ami-0fake00000000001",
        "instanceId": INSTANCE_ID,
        "instanceType": "m5.large",
        "privateIp": "10.0.0.10",
        "region": region,
        "version": "2017-09-30"
    })
}

/// The node role's credentials: the `--aws-credentials` file's (read now, so a test can rotate
/// them), else the marker credentials. A file that cannot be read or lacks a key is a 500 with the
/// reason, never the marker credentials in its place.
fn aws_creds(aws: &AwsOptions) -> Reply {
    let Some(path) = &aws.credentials else {
        return Reply::json(200, &marker_creds());
    };
    let parsed = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
    let v = match parsed {
        Ok(v) => v,
        Err(e) => return Reply::text(500, format!("{}: {e}\n", path.display())),
    };
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let (Some(id), Some(secret)) = (field("AccessKeyId"), field("SecretAccessKey")) else {
        return Reply::text(
            500,
            format!(
                "{}: AccessKeyId and SecretAccessKey needed\n",
                path.display()
            ),
        );
    };
    Reply::json(
        200,
        &json!({
            "Code": "Success",
            "LastUpdated": field("LastUpdated").unwrap_or("2024-01-01T00:00:00Z"),
            "Type": "AWS-HMAC",
            "AccessKeyId": id,
            "SecretAccessKey": secret,
            // IMDS always has the key; an IAM user's long-term key has no session token, and
            // SDKs (botocore) then send no X-Amz-Security-Token.
            "Token": field("Token").unwrap_or(""),
            "Expiration": field("Expiration").unwrap_or("2099-01-01T00:00:00Z"),
        }),
    )
}

/// Content below a version prefix; `None` means 404.
fn aws_file(rest: &str, aws: &AwsOptions) -> Option<Reply> {
    let dir = rest.trim_end_matches('/');
    let t = |s: &str| Some(Reply::text(200, s));
    let region = aws.region.as_str();
    match dir {
        "" => t("dynamic\nmeta-data\nuser-data"),
        "meta-data" => t("ami-id\nhostname\niam/\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\nsecurity-groups"),
        "meta-data/ami-id" => t("ami-0fake00000000001"),
        "meta-data/hostname" | "meta-data/local-hostname" => t("ip-10-0-0-10.ec2.internal"),
        "meta-data/instance-id" => t(INSTANCE_ID),
        "meta-data/instance-type" => t("m5.large"),
        "meta-data/local-ipv4" => t("10.0.0.10"),
        "meta-data/mac" => t("0e:00:00:00:00:01"),
        "meta-data/security-groups" => t("metaguard-lab"),
        "meta-data/network" => t("interfaces/"),
        "meta-data/network/interfaces" => t("macs/"),
        "meta-data/network/interfaces/macs" => t("0e:00:00:00:00:01/"),
        "meta-data/network/interfaces/macs/0e:00:00:00:00:01" => t("device-number\nlocal-ipv4s\nsubnet-id\nvpc-id"),
        "meta-data/network/interfaces/macs/0e:00:00:00:00:01/device-number" => t("0"),
        "meta-data/network/interfaces/macs/0e:00:00:00:00:01/local-ipv4s" => t("10.0.0.10"),
        "meta-data/network/interfaces/macs/0e:00:00:00:00:01/subnet-id" => t("subnet-0fake0001"),
        "meta-data/network/interfaces/macs/0e:00:00:00:00:01/vpc-id" => t("vpc-0fake0001"),
        "meta-data/placement" => t("availability-zone\navailability-zone-id\nregion"),
        "meta-data/placement/availability-zone" => t(&format!("{region}a")),
        "meta-data/placement/availability-zone-id" => t("use1-az1"),
        "meta-data/placement/region" => t(region),
        "meta-data/iam" => t("info\nsecurity-credentials/"),
        "meta-data/iam/info" => Some(Reply::json(
            200,
            &json!({"Code": "Success", "InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/metaguard-lab", "InstanceProfileId": "AIPAFAKE0001"}),
        )),
        "meta-data/iam/security-credentials" => t(AWS_ROLE),
        "meta-data/identity-credentials/ec2/security-credentials/ec2-instance" => {
            Some(Reply::json(200, &marker_creds()))
        }
        "user-data" => t("#!/bin/sh\n# cloud-init user-data\nexport DB_PASSWORD=FAKE-SECRET-user-data-hunter2\n"),
        "dynamic" => t("instance-identity/"),
        "dynamic/instance-identity" => t("document\npkcs7\nsignature"),
        "dynamic/instance-identity/document" => Some(Reply::json(200, &aws_identity_document(region))),
        "dynamic/instance-identity/pkcs7" => t("MIAGCSqGSIb3DQEHAqCAMIACAQExFAKEPKCS7"),
        "dynamic/instance-identity/signature" => t("FAKESIGNATUREBASE64=="),
        _ => {
            let role = dir.strip_prefix("meta-data/iam/security-credentials/")?;
            (role == AWS_ROLE).then(|| aws_creds(aws))
        }
    }
}

fn aws(req: &Req, st: &State) -> Reply {
    let p = req.path.as_str();
    if p == "/" {
        return Reply::text(200, AWS_VERSIONS.join("\n"));
    }
    let rest = &p[1..];
    let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if !is_aws_version(version) {
        return not_found();
    }
    if rest.trim_end_matches('/') == "api/token" {
        return aws_token(req, st);
    }
    if !matches!(req.method(), "GET" | "HEAD") {
        return Reply::text(405, "Method Not Allowed\n").with("Allow", "GET, HEAD");
    }
    match req.head.header("X-aws-ec2-metadata-token") {
        Some(tok) if !st.valid(tok) => return Reply::text(401, "Unauthorized\n"),
        None if st.aws.require_token => return Reply::text(401, "Unauthorized\n"),
        _ => {}
    }
    aws_file(rest, &st.aws).unwrap_or_else(not_found)
}

fn aws_token(req: &Req, st: &State) -> Reply {
    if req.method() != "PUT" {
        return Reply::text(405, "Method Not Allowed\n").with("Allow", "PUT");
    }
    if req.head.has_header("X-Forwarded-For") {
        return Reply::text(403, "Forbidden\n");
    }
    let ttl = req
        .head
        .header("X-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.parse::<u64>().ok());
    match ttl {
        Some(ttl @ 1..=21600) => Reply::text(200, st.issue(ttl))
            .with("X-aws-ec2-metadata-token-ttl-seconds", ttl.to_string()),
        _ => Reply::text(400, "Bad Request\n"),
    }
}

// ---------------------------------------------------------------- GCP

/// The GCP tree with the values set through the control path.
fn gcp_tree(st: &State) -> Value {
    let mut tree = gcp_tree_base();
    if let Ok(values) = st.gcp_values.lock() {
        for (path, value) in values.iter() {
            let mut node = &mut tree;
            for seg in path.split('/').filter(|s| !s.is_empty()) {
                if !node.is_object() {
                    *node = json!({});
                }
                node = match node {
                    Value::Object(o) => o.entry(seg.to_string()).or_insert(Value::Null),
                    other => other,
                };
            }
            *node = Value::String(value.clone());
        }
    }
    tree
}

fn gcp_tree_base() -> Value {
    json!({
        "instance": {
            "id": "4520031799277581759",
            "hostname": "metaguard-lab.c.metaguard-lab.internal",
            "zone": "projects/123456789/zones/us-central1-a",
            "machine-type": "projects/123456789/machineTypes/e2-medium",
            "attributes": {
                "cluster-name": "metaguard-lab",
                "kube-env": "KUBELET_CERT: FAKE-SECRET-kube-env-cert\nKUBELET_KEY: FAKE-SECRET-kube-env-key\n",
                "startup-script": "#!/bin/sh\necho FAKE-SECRET-startup-script\n"
            },
            "network-interfaces": { "0": { "ip": "10.128.0.10", "network": "projects/123456789/networks/default" } },
            "service-accounts": {
                "default": {
                    "aliases": "default",
                    "email": "123456789-compute@developer.gserviceaccount.com",
                    "scopes": "https://www.googleapis.com/auth/cloud-platform",
                    "token": "",
                    "identity": ""
                }
            }
        },
        "project": { "project-id": "metaguard-lab", "numeric-project-id": "123456789" }
    })
}

fn gcp_listing(obj: &serde_json::Map<String, Value>) -> String {
    obj.iter()
        .map(|(k, v)| {
            if v.is_object() {
                format!("{k}/\n")
            } else {
                format!("{k}\n")
            }
        })
        .collect()
}

fn gcp(req: &Req, st: &State) -> Reply {
    let reply = gcp_inner(req, st);
    let etag = etag(&reply.body);
    reply.with("Metadata-Flavor", "Google").with("ETag", etag)
}

/// GCE-style ETag: 16 hex digits that change when the answer's body changes.
pub fn etag(body: &[u8]) -> String {
    // FNV-1a, 64 bits.
    let h = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// How long a long poll without `timeout_sec` is held (GCE does not document its own figure; this
/// is metaguard-proxy's default maximum wait).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// A GCP request with `wait_for_change=true` (any case: Python's client sends `True`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongPoll {
    pub last_etag: Option<String>,
    pub timeout: Duration,
}

/// The long poll `head` asks for, if it is one. Like GCE: answered at once when `last_etag` is
/// given and differs from the value's ETag; else held until the ETag changes or `timeout_sec`
/// seconds pass, then answered with the value as it is.
pub fn long_poll(head: &Head) -> Option<LongPoll> {
    let (raw_path, raw_query) = split_target(&head.target);
    let path = normalize(&raw_path);
    if !path.starts_with("/computeMetadata/") {
        return None;
    }
    let query = parse_query(&raw_query);
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if !q("wait_for_change").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    let timeout = q("timeout_sec")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .map_or(DEFAULT_WAIT, Duration::from_secs);
    Some(LongPoll {
        last_etag: q("last_etag").map(str::to_string),
        timeout,
    })
}

/// The ETag header of a reply.
pub fn reply_etag(r: &Reply) -> Option<&str> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.as_str())
}

fn gcp_inner(req: &Req, st: &State) -> Reply {
    if req.head.has_header("X-Forwarded-For") {
        return Reply::text(403, "Request had X-Forwarded-For header.\n");
    }
    if req.head.header("Metadata-Flavor") != Some("Google") {
        return Reply::text(403, "Missing Metadata-Flavor:Google header.\n");
    }
    if !matches!(req.method(), "GET" | "HEAD") {
        return Reply::text(405, "Method Not Allowed\n");
    }
    let Some(rest) = req.path.strip_prefix("/computeMetadata/v1") else {
        return not_found();
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let tree = gcp_tree(st);
    let mut node = &tree;
    for s in &segs {
        match node.get(*s) {
            Some(n) => node = n,
            None => return not_found(),
        }
    }
    let recursive = req
        .q("recursive")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let in_sa = segs.first() == Some(&"instance") && segs.get(1) == Some(&"service-accounts");
    match (segs.last(), node) {
        (Some(&"token"), _) if in_sa => Reply::json(
            200,
            &json!({"access_token": "FAKE-SECRET-gcp-access-token", "expires_in": 3599, "token_type": "Bearer"}),
        ),
        (Some(&"identity"), _) if in_sa => match req.q("audience") {
            Some(_) => Reply::text(200, "eyJhbGciOiJSUzI1NiJ9.FAKE-SECRET-gcp-identity.c2ln"),
            None => Reply::text(400, "non-empty audience parameter required\n"),
        },
        (_, Value::Object(o)) if recursive => Reply::json(200, &Value::Object(o.clone())),
        (_, Value::Object(o)) => Reply::text(200, gcp_listing(o)),
        (_, Value::String(s)) => Reply::text(200, s.clone()),
        (_, v) => Reply::text(200, v.to_string()),
    }
}

// ---------------------------------------------------------------- Azure

fn azure_instance() -> Value {
    json!({
        "compute": {
            "location": "eastus",
            "name": "metaguard-lab",
            "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
            "vmSize": "Standard_D2s_v3",
            "subscriptionId": "00000000-0000-0000-0000-000000000000",
            "resourceGroupName": "metaguard-lab",
            "osType": "Linux",
            "customData": "",
            "userData": "RkFLRS1TRUNSRVQtYXp1cmUtdXNlci1kYXRh"
        },
        "network": {
            "interface": [{ "ipv4": { "ipAddress": [{ "privateIpAddress": "10.1.0.4", "publicIpAddress": "" }] } }]
        }
    })
}

fn azure(req: &Req) -> Reply {
    if req.head.has_header("X-Forwarded-For") {
        return Reply::json(
            400,
            &json!({"error": "Bad request. X-Forwarded-For header is not allowed"}),
        );
    }
    let p = req.path.trim_end_matches('/');
    if p == "/metadata/versions" {
        return Reply::json(
            200,
            &json!({"apiVersions": ["2021-02-01", "2021-12-13", "2023-07-01"]}),
        );
    }
    if !req
        .head
        .header("Metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Reply::json(
            400,
            &json!({"error": "Bad request. Required metadata header not specified"}),
        );
    }
    if req.q("api-version").is_none() {
        return Reply::json(
            400,
            &json!({"error": "Bad request. api-version was not specified in the request"}),
        );
    }
    if p == "/metadata/identity/oauth2/token" {
        return Reply::json(
            200,
            &json!({"access_token": "FAKE-SECRET-azure-access-token", "expires_in": "86399", "token_type": "Bearer", "resource": req.q("resource").unwrap_or("")}),
        );
    }
    if p == "/metadata/attested/document" {
        return Reply::json(
            200,
            &json!({"encoding": "pkcs7", "signature": "FAKEATTESTED=="}),
        );
    }
    let Some(rest) = p.strip_prefix("/metadata/instance") else {
        return Reply::json(404, &json!({"error": "Not found"}));
    };
    let doc = azure_instance();
    let mut node = &doc;
    for s in rest.split('/').filter(|s| !s.is_empty()) {
        let next = match node {
            Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get(i)),
            v => v.get(s),
        };
        match next {
            Some(n) => node = n,
            None => return Reply::json(404, &json!({"error": "Not found"})),
        }
    }
    match (req.q("format"), node) {
        (Some("text"), Value::String(s)) => Reply::text(200, s.clone()),
        (Some("text"), v) if !v.is_object() && !v.is_array() => Reply::text(200, v.to_string()),
        (_, v) => Reply::json(200, v),
    }
}

// ---------------------------------------------------------------- OpenStack

fn openstack(req: &Req) -> Reply {
    match req.path.trim_end_matches('/') {
        "/openstack" => Reply::text(200, "2018-08-27\nlatest"),
        "/openstack/latest" => Reply::text(200, "meta_data.json\nnetwork_data.json\nuser_data"),
        "/openstack/latest/meta_data.json" => Reply::json(
            200,
            &json!({"uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38", "name": "metaguard-lab", "availability_zone": "nova"}),
        ),
        "/openstack/latest/network_data.json" => {
            Reply::json(200, &json!({"links": [], "networks": []}))
        }
        "/openstack/latest/user_data" => Reply::text(
            200,
            "#cloud-config\npassword: FAKE-SECRET-openstack-user-data\n",
        ),
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> Head {
        Head {
            method: method.into(),
            target: target.as_bytes().to_vec(),
            version: "HTTP/1.1".into(),
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    fn get(target: &str, headers: &[(&str, &str)]) -> Reply {
        route(&head("GET", target, headers), &State::default(), false)
    }

    fn body(r: &Reply) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    #[test]
    fn aws_paths() {
        assert_eq!(
            body(&get("/latest/meta-data/instance-id", &[])),
            INSTANCE_ID
        );
        assert_eq!(
            body(&get("/2009-04-04/meta-data/instance-id", &[])),
            INSTANCE_ID
        );
        assert_eq!(
            body(&get("/latest/meta-data/iam/security-credentials", &[])),
            AWS_ROLE
        );
        let creds = get(
            &format!("/latest/meta-data/iam/security-credentials/{AWS_ROLE}"),
            &[],
        );
        assert!(body(&creds).contains(SECRET_MARKER));
        assert!(body(&get("/latest/user-data", &[])).contains(SECRET_MARKER));
        assert_eq!(get("/latest/meta-data/nope", &[]).status, 404);
        assert_eq!(get("/nope", &[]).status, 404);
        // Lenient like a permissive server: dot segments and encoded slashes resolve.
        let sneaky = get(
            "/latest/meta-data/placement/..%2Fiam/security-credentials/",
            &[],
        );
        assert_eq!(body(&sneaky), AWS_ROLE);
    }

    #[test]
    fn imdsv2_token_flow() {
        let st = State::default();
        let put = |h: &[(&str, &str)]| route(&head("PUT", "/latest/api/token", h), &st, false);
        assert_eq!(put(&[]).status, 400);
        assert_eq!(
            put(&[("X-aws-ec2-metadata-token-ttl-seconds", "0")]).status,
            400
        );
        assert_eq!(
            put(&[("X-aws-ec2-metadata-token-ttl-seconds", "21601")]).status,
            400
        );
        let xff = [
            ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
            ("X-Forwarded-For", "1.2.3.4"),
        ];
        assert_eq!(put(&xff).status, 403);
        let ok = put(&[("X-aws-ec2-metadata-token-ttl-seconds", "60")]);
        assert_eq!(ok.status, 200);
        let tok = body(&ok);
        let r = route(
            &head(
                "GET",
                "/latest/meta-data/instance-id",
                &[("X-aws-ec2-metadata-token", &tok)],
            ),
            &st,
            false,
        );
        assert_eq!(r.status, 200);
        let bad = route(
            &head(
                "GET",
                "/latest/meta-data/instance-id",
                &[("X-aws-ec2-metadata-token", "nope")],
            ),
            &st,
            false,
        );
        assert_eq!(bad.status, 401);
    }

    #[test]
    fn aws_options_serve_given_credentials_and_require_tokens() {
        let dir = std::env::temp_dir().join(format!("mg-fake-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("creds.json");
        std::fs::write(
            &file,
            r#"{"AccessKeyId":"AKIAMOTO","SecretAccessKey":"s3cr3t","Expiration":"2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let st = State::new(AwsOptions {
            credentials: Some(file.clone()),
            require_token: true,
            region: "eu-west-3".into(),
        });
        let creds_path = format!("/latest/meta-data/iam/security-credentials/{AWS_ROLE}");
        let get = |target: &str, h: &[(&str, &str)]| route(&head("GET", target, h), &st, false);
        // Required token: none is 401, a bad one is 401, a valid one is served.
        assert_eq!(get(&creds_path, &[]).status, 401);
        assert_eq!(
            get(&creds_path, &[("X-aws-ec2-metadata-token", "x")]).status,
            401
        );
        let put = route(
            &head(
                "PUT",
                "/latest/api/token",
                &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
            ),
            &st,
            false,
        );
        let tok = body(&put);
        let ok = get(&creds_path, &[("X-aws-ec2-metadata-token", &tok)]);
        assert_eq!(ok.status, 200);
        let v: Value = serde_json::from_slice(&ok.body).unwrap();
        assert_eq!(v["AccessKeyId"], "AKIAMOTO");
        assert_eq!(v["SecretAccessKey"], "s3cr3t");
        assert_eq!(v["Token"], "");
        assert_eq!(v["Expiration"], "2030-01-01T00:00:00Z");
        assert!(!body(&ok).contains(SECRET_MARKER));
        let region = get(
            "/latest/meta-data/placement/region",
            &[("X-aws-ec2-metadata-token", &tok)],
        );
        assert_eq!(body(&region), "eu-west-3");
        // Rewritten file: the next answer has the new key (rotation).
        std::fs::write(
            &file,
            r#"{"AccessKeyId":"AKIANEW","SecretAccessKey":"x","Token":"t"}"#,
        )
        .unwrap();
        let v: Value =
            serde_json::from_slice(&get(&creds_path, &[("X-aws-ec2-metadata-token", &tok)]).body)
                .unwrap();
        assert_eq!(
            (v["AccessKeyId"].as_str(), v["Token"].as_str()),
            (Some("AKIANEW"), Some("t"))
        );
        // A broken file is a 500, never the marker credentials in its place.
        std::fs::write(&file, "{").unwrap();
        let broken = get(&creds_path, &[("X-aws-ec2-metadata-token", &tok)]);
        assert_eq!(broken.status, 500);
        assert!(!body(&broken).contains(SECRET_MARKER));
        let _ = std::fs::remove_dir_all(&dir);
        // Defaults unchanged: no token needed, marker credentials, us-east-1.
        assert!(body(&route(
            &head("GET", &creds_path, &[]),
            &State::default(),
            false
        ))
        .contains(SECRET_MARKER));
    }

    #[test]
    fn gcp_needs_flavor() {
        let flavor = [("Metadata-Flavor", "Google")];
        assert_eq!(get("/computeMetadata/v1/instance/id", &[]).status, 403);
        let r = get("/computeMetadata/v1/instance/id", &flavor);
        assert_eq!(r.status, 200);
        assert!(r
            .headers
            .iter()
            .any(|(n, v)| *n == "Metadata-Flavor" && v == "Google"));
        assert!(body(&get(
            "/computeMetadata/v1/instance/attributes/kube-env",
            &flavor
        ))
        .contains(SECRET_MARKER));
        assert!(body(&get(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            &flavor
        ))
        .contains(SECRET_MARKER));
        let rec = get("/computeMetadata/v1/instance/?recursive=TRUE", &flavor);
        assert!(body(&rec).contains("kube-env"));
        assert!(body(&get("/computeMetadata/v1/instance/", &flavor)).contains("attributes/"));
    }

    #[test]
    fn gcp_values_change_through_the_control_path_and_so_do_etags() {
        let st = State::default();
        let flavor = [("Metadata-Flavor", "Google")];
        let at = |st: &State| {
            route(
                &head(
                    "GET",
                    "/computeMetadata/v1/instance/attributes/flag",
                    &flavor,
                ),
                st,
                false,
            )
        };
        assert_eq!(at(&st).status, 404);
        let mut changes = st.subscribe();
        let set = |v: &str| {
            let t = format!("/fake-control/gcp-set?path=instance/attributes/flag&value={v}");
            route(&head("GET", &t, &[]), &st, false)
        };
        assert_eq!(set("one").status, 200);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let one = at(&st);
        assert_eq!(body(&one), "one");
        let etag_one = reply_etag(&one).unwrap().to_string();
        assert_eq!(etag_one.len(), 16);
        assert_eq!(
            reply_etag(&at(&st)).unwrap(),
            etag_one,
            "same value, same ETag"
        );
        set("two%20too");
        assert!(changes.has_changed().unwrap());
        let two = at(&st);
        assert_eq!(body(&two), "two too");
        assert_ne!(reply_etag(&two).unwrap(), etag_one);
        // The listing shows the new key too, and the static values are still there.
        let listing = route(
            &head("GET", "/computeMetadata/v1/instance/attributes/", &flavor),
            &st,
            false,
        );
        assert!(body(&listing).contains("flag\n") && body(&listing).contains("kube-env\n"));
        assert_eq!(
            route(
                &head("GET", "/fake-control/gcp-set?path=/", &[]),
                &st,
                false
            )
            .status,
            400
        );
    }

    #[test]
    fn what_is_a_long_poll() {
        let lp = |t: &str| long_poll(&head("GET", t, &[]));
        assert_eq!(lp("/computeMetadata/v1/instance/id"), None);
        assert_eq!(
            lp("/computeMetadata/v1/instance/id?wait_for_change=false"),
            None
        );
        assert_eq!(lp("/latest/meta-data/?wait_for_change=true"), None);
        assert_eq!(
            lp("/computeMetadata/v1/instance/id?wait_for_change=True&timeout_sec=7&last_etag=abc"),
            Some(LongPoll {
                last_etag: Some("abc".into()),
                timeout: Duration::from_secs(7)
            })
        );
        assert_eq!(
            lp("/computeMetadata/v1/?wait_for_change=true"),
            Some(LongPoll {
                last_etag: None,
                timeout: DEFAULT_WAIT
            })
        );
    }

    #[test]
    fn azure_needs_header_and_version() {
        let md = [("Metadata", "true")];
        assert_eq!(
            get("/metadata/instance?api-version=2021-02-01", &[]).status,
            400
        );
        assert_eq!(get("/metadata/instance", &md).status, 400);
        let r = get(
            "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text",
            &md,
        );
        assert_eq!(body(&r), "02aab8a4-74ef-476e-8182-f6d2ba4166a6");
        let tok = get(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
            &md,
        );
        assert!(body(&tok).contains(SECRET_MARKER));
    }

    #[test]
    fn faults_and_bench() {
        assert_eq!(get("/fault/hang", &[]).action, Action::Hang);
        assert_eq!(get("/fault/reset", &[]).action, Action::Reset);
        assert_eq!(get("/fault/500", &[]).status, 500);
        assert_eq!(get("/bench", &[]).body, BENCH_BODY);
        assert_eq!(
            route(&head("GET", "/anything", &[]), &State::default(), true).body,
            BENCH_BODY
        );
    }
}
