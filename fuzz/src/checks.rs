//! What each fuzz target runs: one function per target, taking arbitrary bytes, calling the code
//! under test and asserting invariants that are derived here, independently of that code.
//!
//! Shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` and by the stable short run
//! `tests/fuzz_smoke.rs` (which includes this file with `#[path]`), so CI and the long fuzzing run
//! check exactly the same properties. A violated invariant panics: that is how libFuzzer (and the
//! smoke test) report it.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use metaguard_plugin::cni::{CniArgs, Command, Env};
use metaguard_plugin::config::Config;
use metaguard_proxy::canon::{self, CanonicalTarget};
use metaguard_proxy::http1::reference::percent_decode_once;
use metaguard_proxy::http1::relay::RelayedHead;
use metaguard_proxy::http1::request as front;
use metaguard_proxy::policy::{Action, PolicySet, RequestView};
use std::collections::{BTreeMap, HashMap};

/// The proxy's request rules and, behind its `reference` feature, their header-map versions.
mod headers {
    pub use metaguard_proxy::http1::reference::{filter_response_headers, upstream_headers};
    pub use metaguard_proxy::http1::rules::{check_request_headers, write_upstream_headers};
}

/// One fuzz target's check.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name (the file names under `fuzz/fuzz_targets/` and `fuzz/seeds/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("canon", check_canon),
    ("request_head", check_request_head),
    ("headers", check_headers),
    ("policy", check_policy),
    ("plugin_config", check_plugin_config),
    ("plugin_env", check_plugin_env),
];

const METHODS: &[&str] = &[
    "GET", "HEAD", "PUT", "POST", "CONNECT", "TRACE", "OPTIONS", "get", "DELETE", "FOO",
];

fn pick_method(b: u8) -> Method {
    let m = METHODS[usize::from(b) % METHODS.len()];
    Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)
}

// --- canonicaliser -------------------------------------------------------------------------------

/// First byte: method; the rest: the request target (lossy UTF-8, as the proxy would only ever see
/// valid strings from `http::Uri`, but `canonicalize_str` takes any `&str`).
pub fn check_canon(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = pick_method(m);
    let target = String::from_utf8_lossy(rest);
    let direct = canon::canonicalize_str(&method, &target);
    match &direct {
        Ok(t) => check_accepted(&method, &target, t),
        Err(r) => assert!(
            r.status == 400 || r.status == 403,
            "rejection status {} for {target:?}",
            r.status
        ),
    }
    // The path hyper takes: through http::Uri (which drops a fragment). Whatever it accepts must
    // also be forwarded exactly as matched.
    if let Ok(uri) = target.parse::<Uri>() {
        if let Ok(t) = canon::canonicalize(&method, &uri) {
            let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
            assert!(
                uri.scheme().is_none() && uri.authority().is_none(),
                "accepted non-origin form {target:?}"
            );
            check_accepted(&method, pq, &t);
        }
    }
}

/// Invariants of an accepted target.
fn check_accepted(method: &Method, input: &str, t: &CanonicalTarget) {
    assert!(
        method != Method::CONNECT && method != Method::TRACE,
        "{method} accepted"
    );
    let fwd = t.forward_target();
    // Forwarded byte for byte as received (an empty query `?` is dropped, nothing else changes).
    assert!(
        fwd == input || input.strip_suffix('?') == Some(fwd.as_str()),
        "forwarded {fwd:?} differs from received {input:?}"
    );
    assert!(t.path.starts_with('/'), "path {:?} not origin-form", t.path);
    let path = t.path.as_bytes();
    for &b in path {
        assert!(
            b.is_ascii_graphic() && !matches!(b, b'%' | b'\\' | b';' | b'#' | b'?'),
            "byte {b:#04x} accepted in path {:?}",
            t.path
        );
    }
    let lower = t.path.to_ascii_lowercase();
    for bad in ["%2f", "%2e", "%5c", "%00", "//"] {
        assert!(!lower.contains(bad), "{bad} accepted in path {:?}", t.path);
    }
    let segs: Vec<&str> = t.path[1..].split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        assert!(
            *s != "." && *s != "..",
            "dot segment accepted in {:?}",
            t.path
        );
        assert!(
            !s.is_empty() || i + 1 == segs.len(),
            "empty segment accepted in {:?}",
            t.path
        );
    }
    if let Some(q) = &t.raw_query {
        for &b in q.as_bytes() {
            assert!(
                b.is_ascii_graphic() && !matches!(b, b';' | b'#'),
                "byte {b:#04x} accepted in query {q:?}"
            );
        }
        // Keys re-derived here: split on '&' only, decode exactly once.
        let keys: Vec<String> = q
            .split('&')
            .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
            .map(|k| String::from_utf8_lossy(&percent_decode_once(k.as_bytes())).into_owned())
            .collect();
        assert_eq!(keys, t.query_keys, "query keys of {q:?}");
        let recursive = keys.iter().any(|k| k.eq_ignore_ascii_case("recursive"));
        assert_eq!(
            t.has_query_key_ci("recursive"),
            recursive,
            "recursive detection in {q:?}"
        );
        // Duplicate keys are ambiguous (servers disagree on which wins): never accepted.
        let mut seen: Vec<String> = keys.iter().map(|k| k.to_ascii_lowercase()).collect();
        seen.sort();
        let n = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), n, "duplicate query keys accepted in {q:?}");
    } else {
        assert!(t.query_keys.is_empty());
    }
    // Idempotent: the forwarded target is itself accepted, identically, by both entry points.
    let again = canon::canonicalize_str(method, &fwd)
        .unwrap_or_else(|r| panic!("{fwd:?} refused on re-check: {r}"));
    assert_eq!(&again, t, "re-canonicalising {fwd:?}");
    let uri: Uri = fwd
        .parse()
        .unwrap_or_else(|e| panic!("forwarded target {fwd:?} is not a URI: {e}"));
    let via_uri = canon::canonicalize(method, &uri)
        .unwrap_or_else(|r| panic!("{fwd:?} refused via Uri: {r}"));
    assert_eq!(&via_uri, t, "{fwd:?} via Uri");
}

// --- whole request heads, the way the proxy's server reads them ---------------------------------

/// Arbitrary bytes parsed as a request head by the proxy's pod-facing server (`front::parse`:
/// httparse, then the `http` types), then the proxy's target and header checks, then a decision by
/// each preset. Invariants: no panic, the head lies within the input, and whatever is allowed is
/// canonical and free of forwarding, framing and upgrade headers.
pub fn check_request_head(data: &[u8]) {
    let lim = front::HeadLimits {
        max_header_bytes: 64 * 1024,
        max_headers: 64,
    };
    let mut map = HeaderMap::new();
    let Ok(Some(head)) = front::parse(data, lim, &mut map) else {
        return;
    };
    assert!(head.len <= data.len(), "head longer than its input");
    let Some(raw) = data
        .get(head.target.clone())
        .and_then(|t| std::str::from_utf8(t).ok())
    else {
        panic!(
            "parsed target outside the input or not UTF-8: {:?}",
            head.target
        );
    };
    let (method, version) = (head.method, head.version);
    let Ok(target) = canon::canonicalize_str(&method, raw) else {
        return;
    };
    if headers::check_request_headers(version, &map).is_err() {
        return;
    }
    assert_headers_clean(&map);
    let set = PolicySet::builtin_default();
    let view = RequestView {
        method: &method,
        target: &target,
        headers: &map,
    };
    for name in ["deny-all", "aws", "gcp", "azure", "audit"] {
        let Some(p) = set.policy(name) else {
            panic!("preset {name} missing")
        };
        let d = p.decide(&view);
        if matches!(d.action, Action::Allow) {
            assert!(
                name != "deny-all",
                "deny-all allowed {method} {}",
                target.forward_target()
            );
            if name != "audit" {
                assert!(
                    !sensitive(name, &target),
                    "preset {name} allowed sensitive {method} {}",
                    target.forward_target()
                );
            }
        }
    }
}

/// The resources each preset must never let through (issue 3), judged here from the canonical
/// target with a deliberately broad, case-insensitive test.
pub fn sensitive(preset: &str, t: &CanonicalTarget) -> bool {
    let p = t.path.to_ascii_lowercase();
    let segs: Vec<&str> = p.split('/').skip(1).collect();
    let seg = |i: usize| segs.get(i).copied().unwrap_or("");
    match preset {
        // /<version>/user-data, /<version>/meta-data/{iam,identity-credentials}/...
        "aws" => {
            seg(1) == "user-data"
                || (seg(1) == "meta-data" && matches!(seg(2), "iam" | "identity-credentials"))
        }
        "gcp" => {
            let kube_env = seg(0) == "computemetadata"
                && seg(2) == "instance"
                && seg(3) == "attributes"
                && seg(4) == "kube-env";
            let sa_secret = segs
                .windows(3)
                .any(|w| w[0] == "service-accounts" && matches!(w[2], "token" | "identity"));
            let recursive = t.has_query_key_ci("recursive")
                && !(seg(0) == "computemetadata"
                    && seg(1) == "v1"
                    && seg(2) == "instance"
                    && seg(3) == "service-accounts");
            kube_env || sa_secret || recursive
        }
        "azure" => {
            (seg(0) == "metadata" && seg(1) == "identity")
                || (seg(0) == "metadata"
                    && seg(1) == "instance"
                    && seg(2) == "compute"
                    && seg(3) == "userdata")
        }
        _ => false,
    }
}

fn assert_headers_clean(map: &HeaderMap) {
    for name in map.keys() {
        let n = name.as_str();
        assert!(
            n != "transfer-encoding" && n != "upgrade" && n != "http2-settings",
            "{n} accepted"
        );
        assert!(
            !matches!(n, "forwarded" | "via" | "x-real-ip") && !n.starts_with("x-forwarded-"),
            "forwarding header {n} accepted"
        );
    }
    let cls: Vec<&HeaderValue> = map.get_all("content-length").iter().collect();
    assert!(
        cls.len() <= 1 && cls.iter().all(|v| v.as_bytes() == b"0"),
        "Content-Length {cls:?} accepted"
    );
    assert!(
        map.get_all("host").iter().count() <= 1,
        "several Host headers accepted"
    );
}

// --- header rules --------------------------------------------------------------------------------

/// First byte: HTTP version; the rest: `name: value` lines. Checks `check_request_headers` and
/// `upstream_headers` (the lines as a request's headers), and the relay of an upstream answer's
/// headers (the lines as a response's).
pub fn check_headers(data: &[u8]) {
    let Some((&v, rest)) = data.split_first() else {
        return;
    };
    let version = match v % 4 {
        0 => Version::HTTP_09,
        1 => Version::HTTP_10,
        2 => Version::HTTP_11,
        _ => Version::HTTP_2,
    };
    let mut map = HeaderMap::new();
    // The same lines as a response's headers.
    let mut raw: Vec<(&[u8], &[u8])> = Vec::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (n, v) = (&line[..colon], &line[colon + 1..]);
        let v = v.strip_prefix(b" ").unwrap_or(v);
        raw.push((n, v));
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            map.append(n, v);
        }
    }
    check_relay(&raw);
    if headers::check_request_headers(version, &map).is_ok() {
        assert!(
            version == Version::HTTP_10 || version == Version::HTTP_11,
            "{version:?} accepted"
        );
        assert_headers_clean(&map);
        for tok in connection_tokens(&map) {
            assert!(
                !tok.eq_ignore_ascii_case("upgrade"),
                "Connection: upgrade accepted"
            );
        }
    }
    // Whatever was asked, what goes upstream is clean.
    let named: Vec<String> = connection_tokens(&map)
        .map(|t| t.to_ascii_lowercase())
        .collect();
    let up = headers::upstream_headers(&map, "169.254.169.254");
    // The proxy writes these lines straight into the upstream request: they must be the map's.
    let mut direct = Vec::new();
    headers::write_upstream_headers(&map, "169.254.169.254", &mut direct);
    let mut lines = Vec::new();
    for (n, v) in &up {
        lines.extend_from_slice(n.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(v.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    assert_eq!(
        direct, lines,
        "written upstream headers differ from upstream_headers"
    );
    let hosts: Vec<&HeaderValue> = up.get_all("host").iter().collect();
    assert_eq!(hosts.len(), 1, "upstream Host headers: {hosts:?}");
    assert_eq!(hosts[0], "169.254.169.254");
    for name in up.keys() {
        let n = name.as_str();
        assert!(
            !matches!(
                n,
                "connection"
                    | "keep-alive"
                    | "proxy-connection"
                    | "proxy-authorization"
                    | "te"
                    | "trailer"
                    | "transfer-encoding"
                    | "upgrade"
                    | "expect"
                    | "forwarded"
                    | "via"
                    | "x-real-ip"
            ) && !n.starts_with("x-forwarded-"),
            "{n} sent upstream"
        );
        assert!(
            n == "host" || !named.iter().any(|t| t == n),
            "{n} was named in Connection but sent upstream"
        );
    }
    // Nothing end-to-end is lost or invented (other than the headers above).
    for (name, value) in &map {
        let n = name.as_str();
        let dropped = matches!(
            n,
            "host"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "expect"
                | "forwarded"
                | "via"
                | "x-real-ip"
        ) || n.starts_with("x-forwarded-")
            || named.iter().any(|t| t == n);
        if !dropped {
            assert!(
                up.get_all(name).iter().any(|v| v == value),
                "{n} lost on the way upstream"
            );
        }
    }
}

/// `raw` as an upstream answer's headers, parsed as the upstream client parses a response: the
/// relay gives the lines of the header map built from the same parse after
/// `filter_response_headers` (Content-Length aside: the pod-facing server writes its own), the
/// map's Date, and its first plain length; and whatever the parser took, the map takes too.
fn check_relay(raw: &[(&[u8], &[u8])]) {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for (n, v) in raw {
        head.extend_from_slice(n);
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = r.parse(&head) else {
        return;
    };
    let parsed: &[httparse::Header<'_>] = r.headers;
    let relayed = RelayedHead::from_parsed(parsed);
    let mut map = HeaderMap::new();
    for h in parsed {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            panic!("the parser took a header a header map refuses: {h:?}");
        };
        map.append(n, v);
    }
    headers::filter_response_headers(&mut map);
    let mut want: Vec<Vec<u8>> = map
        .iter()
        .filter(|(n, _)| *n != http::header::CONTENT_LENGTH)
        .map(|(n, v)| [n.as_str().as_bytes(), b": ", v.as_bytes(), b"\r\n"].concat())
        .collect();
    let mut got: Vec<Vec<u8>> = relayed
        .lines()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "relayed lines differ from the filtered map: {raw:?}"
    );
    assert_eq!(
        relayed.has_date(),
        map.contains_key(http::header::DATE),
        "{raw:?}"
    );
    let first_plain = map
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(HeaderValue::as_bytes)
        .find(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit));
    assert_eq!(relayed.length(), first_plain, "{raw:?}");
}

fn connection_tokens(map: &HeaderMap) -> impl Iterator<Item = &str> {
    map.get_all("connection")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

// --- policy parser -------------------------------------------------------------------------------

/// Arbitrary text as a policy file. Invariants: no panic; errors point inside the text; and
/// whatever a file says, the built-in presets keep denying what they deny (a file cannot redefine
/// them), and selection always yields some policy.
pub fn check_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match PolicySet::from_toml(text) {
        Err(e) => {
            let lines = text.lines().count() + 1;
            assert!(
                e.line <= lines,
                "error line {} beyond the text ({lines} lines): {e}",
                e.line
            );
            assert!(!e.message.is_empty(), "empty error message");
        }
        Ok(set) => {
            let _ = set.summary();
            let rec = record();
            let chosen = set.select(&rec);
            let map = {
                let mut m = HeaderMap::new();
                m.insert("metadata-flavor", HeaderValue::from_static("Google"));
                m.insert("metadata", HeaderValue::from_static("true"));
                m
            };
            for (m, t) in [
                ("GET", "/latest/meta-data/instance-id"),
                ("GET", "/latest/user-data"),
                ("GET", "/computeMetadata/v1/instance/attributes/kube-env"),
                ("GET", "/computeMetadata/v1/instance/?recursive=true"),
                (
                    "GET",
                    "/metadata/identity/oauth2/token?api-version=1&resource=x",
                ),
                ("PUT", "/latest/api/token"),
            ] {
                let method = Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET);
                let Ok(target) = canon::canonicalize_str(&method, t) else {
                    panic!("seed target {t} refused")
                };
                let view = RequestView {
                    method: &method,
                    target: &target,
                    headers: &map,
                };
                let _ = chosen.decide(&view);
                for preset in ["deny-all", "aws", "gcp", "azure"] {
                    let Some(p) = set.policy(preset) else {
                        panic!("preset {preset} missing from a parsed set")
                    };
                    let d = p.decide(&view);
                    if matches!(d.action, Action::Allow) {
                        assert!(
                            preset != "deny-all",
                            "deny-all allows {m} {t} after loading a file"
                        );
                        assert!(
                            !sensitive(preset, &target),
                            "preset {preset} allows {m} {t} after loading a file"
                        );
                    }
                }
            }
        }
    }
}

fn record() -> metaguard_common::record::PodRecord {
    let mut annotations = BTreeMap::new();
    annotations.insert("metaguard.io/policy".to_string(), "aws".to_string());
    metaguard_common::record::PodRecord {
        version: metaguard_common::record::RECORD_VERSION,
        container_id: "c0ffee".into(),
        network: "net".into(),
        ifname: "eth0".into(),
        netns: "/run/netns/x".into(),
        ips: vec!["10.0.0.2"
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))],
        namespace: Some("default".into()),
        pod_name: Some("p".into()),
        pod_uid: None,
        annotations,
        host_interface: Some("veth0".into()),
        host_guard: true,
        mac: None,
        layer2_guard: false,
        created_unix: 0,
    }
}

// --- plugin configuration and environment --------------------------------------------------------

/// The CNI error codes the plugin may return (spec codes and its own 100+).
fn valid_code(c: u32) -> bool {
    matches!(c, 1..=7 | 11 | 50 | 51 | 100..=199)
}

/// Arbitrary bytes as the plugin's stdin, for every command.
pub fn check_plugin_config(data: &[u8]) {
    for cmd in [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Gc,
        Command::Status,
    ] {
        match Config::parse(data, cmd) {
            Ok(cfg) => {
                assert!(
                    metaguard_common::ids::valid_cni_name(&cfg.name),
                    "network name {:?} accepted",
                    cfg.name
                );
                assert!(
                    cfg.state_dir.is_absolute(),
                    "relative stateDir {:?} accepted",
                    cfg.state_dir
                );
            }
            Err(e) => {
                assert!(valid_code(e.code), "error code {} for {cmd:?}", e.code);
                assert!(!e.msg.is_empty());
                let j = e.to_json("1.0.0");
                assert!(
                    j.get("code").is_some() && j.get("msg").is_some(),
                    "error JSON {j}"
                );
            }
        }
    }
    let _ = metaguard_plugin::config::peek_version(data);
}

/// Arbitrary bytes split on NUL into CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS,
/// CNI_ARGS, CNI_PATH. Invariants: anything accepted is safe to put in a file name or an nftables
/// object name; errors are code 4.
pub fn check_plugin_env(data: &[u8]) {
    let parts: Vec<String> = data
        .split(|&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let names = [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_IFNAME",
        "CNI_NETNS",
        "CNI_ARGS",
        "CNI_PATH",
    ];
    let vars: HashMap<&str, String> = names.iter().copied().zip(parts.iter().cloned()).collect();
    match Env::from_vars(|n| Ok(vars.get(n).cloned())) {
        Ok(env) => {
            if env.command.is_attachment() {
                let cid = env.container_id();
                let ifname = env.ifname();
                assert!(
                    metaguard_common::ids::valid_cni_name(cid),
                    "container id {cid:?} accepted"
                );
                assert!(
                    metaguard_common::ids::valid_ifname(ifname),
                    "ifname {ifname:?} accepted"
                );
                // `a..b` is a valid container ID (CNI allows dots); what must never pass is
                // anything that leaves a directory or hides a file: a '/' or a leading '.'.
                assert!(!cid.contains('/') && !ifname.contains('/') && !cid.starts_with('.'));
                if let Some(n) = &env.netns {
                    assert!(n.starts_with('/'), "relative netns {n:?} accepted");
                }
                for v in [
                    &env.args.pod_namespace,
                    &env.args.pod_name,
                    &env.args.pod_uid,
                ]
                .into_iter()
                .flatten()
                {
                    assert!(
                        v.bytes().all(|b| b.is_ascii_graphic()),
                        "CNI_ARGS value {v:?} accepted"
                    );
                }
            }
        }
        Err(e) => assert_eq!(e.code, 4, "environment error with code {}: {e:?}", e.code),
    }
    if let Some(a) = parts.get(4) {
        if let Ok(args) = CniArgs::parse(a) {
            for v in [&args.pod_namespace, &args.pod_name, &args.pod_uid]
                .into_iter()
                .flatten()
            {
                assert!(
                    v.len() <= 253 && v.bytes().all(|b| b.is_ascii_graphic()),
                    "CNI_ARGS value {v:?} accepted"
                );
            }
        }
    }
}

// --- deterministic mutation, for the stable short run -------------------------------------------

/// Tokens that matter to these parsers, spliced in by [`mutate`].
pub const DICTIONARY: &[&str] = &[
    "/",
    "//",
    ".",
    "..",
    "/../",
    "/./",
    "%",
    "%2f",
    "%2F",
    "%2e",
    "%2E",
    "%5c",
    "%5C",
    "%00",
    "%25",
    "%252f",
    "\\",
    ";",
    "?",
    "&",
    "=",
    "#",
    "*",
    "@",
    ":",
    "+",
    " ",
    "\t",
    "\r\n",
    "\u{0}",
    "\u{7f}",
    "\u{e9}",
    "recursive",
    "RECURSIVE",
    "%72ecursive",
    "user-data",
    "security-credentials",
    "kube-env",
    "identity",
    "token",
    "service-accounts",
    "/latest/meta-data/",
    "/computeMetadata/v1/instance/",
    "/metadata/identity/",
    "Transfer-Encoding: chunked\n",
    "Content-Length: 0\n",
    "Content-Length: +0\n",
    "Connection: upgrade\n",
    "Upgrade: h2c\n",
    "X-Forwarded-For: 1\n",
    "Host: a\n",
    "[[policy]]\n",
    "[[policy.rule]]\n",
    "glob = \"/**\"\n",
    "action = \"allow\"\n",
    "fallback = \"aws\"\n",
    "name = \"aws\"\n",
    "default = \"x\"\n",
    "\"cniVersion\":\"1.0.0\"",
    "\"prevResult\":{}",
    "\"name\":\"n\"",
    "\"hostGuard\":1",
    "\"stateDir\":\"rel\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "ADD",
    "DEL",
    "eth0",
    "c1",
];

/// A small deterministic PRNG (xorshift64*): the same seed gives the same run on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One to four random edits of `input` (insert a dictionary token or a random byte, delete,
/// duplicate or overwrite a range, splice in part of `other`).
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let pos = rng.below(v.len() + 1);
        match rng.below(7) {
            0 | 1 => {
                let tok = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                v.splice(pos..pos, tok.iter().copied());
            }
            2 => v.insert(pos, rng.next() as u8),
            3 if !v.is_empty() => {
                let end = (pos + 1 + rng.below(8)).min(v.len());
                let start = pos.min(end);
                v.drain(start..end);
            }
            4 if !v.is_empty() => {
                let end = (pos + 1 + rng.below(16)).min(v.len());
                let start = pos.min(end);
                let chunk = v[start..end].to_vec();
                v.splice(start..start, chunk);
            }
            5 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            _ if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = (a + 1 + rng.below(32)).min(other.len());
                v.splice(pos..pos, other[a..b].iter().copied());
            }
            _ => {}
        }
    }
    v.truncate(64 * 1024);
    v
}
