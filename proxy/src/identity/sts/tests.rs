use super::fake::{answer, FakeServer, Received, Reply};
use super::*;
use ring::{digest, hmac};
use std::time::UNIX_EPOCH;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYNODESECRET";
const TOKEN: &str = "IQoJb3JpZ2luX2VjENODE//SESSION+TOKEN/==";

fn node() -> Credentials {
    Credentials {
        access_key_id: "ASIANODEKEY".into(),
        secret_access_key: SECRET.into(),
        session_token: Some(TOKEN.into()),
        expiration: None,
    }
}

fn client(endpoint: &str, timeout_ms: u64) -> StsClient {
    let cfg = StsConfig {
        endpoint: endpoint.into(),
        timeout_ms,
        ..StsConfig::default()
    };
    StsClient::new(&cfg, "eu-west-3").expect("client")
}

const SUCCESS: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>x</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/app/ns1.pod-a</Arn>
      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:ns1.pod-a</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAROLEKEY</AccessKeyId>
      <SecretAccessKey>role/secret+key</SecretAccessKey>
      <SessionToken>FwoG&amp;token&#x2F;==</SessionToken>
      <Expiration>2026-12-03T07:00:00Z</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#;

fn error_body(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    )
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

// --- SigV4 recomputed from the spec (docs.aws.amazon.com, "Create a signed AWS API request"),
// with ring's HMAC-SHA256 and SHA-256: nothing shared with aws-sigv4. ---

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        .as_ref()
        .to_vec()
}

struct Spec<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    /// (lower-case name, value) for every signed header.
    headers: Vec<(String, String)>,
    body: &'a [u8],
    amz_date: &'a str,
    region: &'a str,
    service: &'a str,
    secret: &'a str,
}

/// The signature the spec gives for `s`.
fn spec_signature(s: &Spec<'_>) -> String {
    let mut headers = s.headers.clone();
    headers.sort();
    let canonical_headers: String = headers
        .iter()
        .map(|(n, v)| {
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("{n}:{v}\n")
        })
        .collect();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let mut query: Vec<&str> = s.query.split('&').filter(|p| !p.is_empty()).collect();
    query.sort();
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        s.method,
        s.path,
        query.join("&"),
        canonical_headers,
        signed.join(";"),
        sha256_hex(s.body)
    );
    let date = &s.amz_date[..8];
    let scope = format!("{date}/{}/{}/aws4_request", s.region, s.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        s.amz_date,
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac_sha256(format!("AWS4{}", s.secret).as_bytes(), date);
    let k_region = hmac_sha256(&k_date, s.region);
    let k_service = hmac_sha256(&k_region, s.service);
    let k_signing = hmac_sha256(&k_service, "aws4_request");
    hex(&hmac_sha256(&k_signing, &to_sign))
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..`.
struct Authorization {
    credential: String,
    signed_headers: Vec<String>,
    signature: String,
}

fn authorization(value: &str) -> Authorization {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .expect("AWS4-HMAC-SHA256 scheme");
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=').expect("k=v");
        match k {
            "Credential" => credential = Some(v.to_string()),
            "SignedHeaders" => signed = Some(v.split(';').map(str::to_string).collect()),
            "Signature" => signature = Some(v.to_string()),
            other => panic!("unexpected Authorization part {other}"),
        }
    }
    Authorization {
        credential: credential.expect("Credential"),
        signed_headers: signed.expect("SignedHeaders"),
        signature: signature.expect("Signature"),
    }
}

/// What a server holding `secret` computes for a request it received (as moto does).
fn server_side_signature(r: &Received, region: &str, secret: &str) -> String {
    let auth = authorization(r.header("authorization").expect("authorization"));
    let headers = auth
        .signed_headers
        .iter()
        .map(|n| {
            let v = r
                .header(n)
                .unwrap_or_else(|| panic!("signed header {n} not sent"));
            (n.clone(), v.to_string())
        })
        .collect();
    let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
    spec_signature(&Spec {
        method: &r.method,
        path,
        query,
        headers,
        body: &r.body,
        amz_date: r.header("x-amz-date").expect("x-amz-date"),
        region,
        service: "sts",
        secret,
    })
}

#[test]
fn the_spec_recomputation_matches_the_published_example() {
    // AWS's worked example (IAM ListUsers, 2015-08-30): checks the checker.
    let s = Spec {
        method: "GET",
        path: "/",
        query: "Action=ListUsers&Version=2010-05-08",
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            ),
            ("host".into(), "iam.amazonaws.com".into()),
            ("x-amz-date".into(), "20150830T123600Z".into()),
        ],
        body: b"",
        amz_date: "20150830T123600Z",
        region: "us-east-1",
        service: "iam",
        secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    };
    assert_eq!(
        spec_signature(&s),
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    );
}

#[tokio::test]
async fn the_signature_at_a_fixed_time_is_the_one_the_spec_gives() {
    let c = client("http://127.0.0.1:9", 1000);
    let tags = [("metaguard:pod".to_string(), "a b&c".to_string())];
    let req = AssumeRoleRequest {
        role_arn: "arn:aws:iam::123456789012:role/app",
        session_name: "ns1.pod-a",
        duration_seconds: 3600,
        external_id: Some("ext"),
        policy: None,
        tags: &tags,
    };
    // 2026-12-03T07:00:00Z
    let request = c.signed_request(&node(), &req, at(1_796_281_200)).unwrap();
    let h = |n: &str| {
        request
            .headers()
            .get(n)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(h("x-amz-date"), "20261203T070000Z");
    assert_eq!(h("x-amz-security-token"), TOKEN);
    let auth = authorization(&h("authorization"));
    assert_eq!(
        auth.credential,
        "ASIANODEKEY/20261203/eu-west-3/sts/aws4_request"
    );
    assert_eq!(
        auth.signed_headers,
        ["content-type", "host", "x-amz-date", "x-amz-security-token"]
    );
    let body = form_body(&req);
    let spec = |region: &str, service: &str, secret: &str| {
        spec_signature(&Spec {
            method: "POST",
            path: "/",
            query: "",
            headers: auth
                .signed_headers
                .iter()
                .map(|n| (n.clone(), h(n)))
                .collect(),
            body: body.as_bytes(),
            amz_date: "20261203T070000Z",
            region,
            service,
            secret,
        })
    };
    assert_eq!(auth.signature, spec("eu-west-3", "sts", SECRET));
    // Controls: the checker tells a wrong region, service or key apart.
    assert_ne!(auth.signature, spec("us-east-1", "sts", SECRET));
    assert_ne!(auth.signature, spec("eu-west-3", "iam", SECRET));
    assert_ne!(auth.signature, spec("eu-west-3", "sts", "other"));
}

#[tokio::test]
async fn assume_role_sends_the_form_signed_and_reads_the_credentials() {
    let sts = FakeServer::start(|_| answer(200, "text/xml", SUCCESS.as_bytes())).await;
    let c = client(&format!("http://{}", sts.addr), 2000);
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}"#;
    let tags = [
        ("metaguard:namespace".to_string(), "ns1".to_string()),
        ("metaguard:pod".to_string(), "pod a+b=c&d/é".to_string()),
    ];
    let req = AssumeRoleRequest {
        role_arn: "arn:aws:iam::123456789012:role/app",
        session_name: "ns1.pod-a",
        duration_seconds: 900,
        external_id: Some("ext id&1"),
        policy: Some(policy),
        tags: &tags,
    };
    let got = c.assume_role(&node(), &req).await.unwrap();
    assert_eq!(
        got.assumed_role_arn,
        "arn:aws:sts::123456789012:assumed-role/app/ns1.pod-a"
    );
    assert_eq!(got.credentials.access_key_id, "ASIAROLEKEY");
    assert_eq!(got.credentials.secret_access_key, "role/secret+key");
    assert_eq!(
        got.credentials.session_token.as_deref(),
        Some("FwoG&token/==")
    );
    assert_eq!(got.credentials.expiration, Some(at(1_796_281_200)));

    let r = &sts.received()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded; charset=utf-8")
    );
    assert_eq!(r.header("host"), Some(sts.addr.to_string().as_str()));
    let expected: Vec<(String, String)> = [
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        ("RoleArn", "arn:aws:iam::123456789012:role/app"),
        ("RoleSessionName", "ns1.pod-a"),
        ("DurationSeconds", "900"),
        ("ExternalId", "ext id&1"),
        ("Policy", policy),
        ("Tags.member.1.Key", "metaguard:namespace"),
        ("Tags.member.1.Value", "ns1"),
        ("Tags.member.2.Key", "metaguard:pod"),
        ("Tags.member.2.Value", "pod a+b=c&d/é"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(r.form(), expected);
    // Reserved characters travel percent-encoded, never raw.
    let raw = String::from_utf8(r.body.clone()).unwrap();
    assert!(raw.contains("ExternalId=ext+id%261"), "{raw}");
    assert!(
        !raw.contains('{') && !raw.contains('"') && !raw.contains('é'),
        "{raw}"
    );
    assert!(raw.contains("%22s3%3AGet%2A%22"), "{raw}");

    assert_eq!(r.header("x-amz-security-token"), Some(TOKEN));
    let date = r.header("x-amz-date").unwrap();
    assert!(
        date.len() == 16 && date.ends_with('Z') && date.as_bytes()[8] == b'T',
        "{date}"
    );
    let auth = authorization(r.header("authorization").unwrap());
    assert_eq!(
        auth.credential,
        format!("ASIANODEKEY/{}/eu-west-3/sts/aws4_request", &date[..8])
    );
    for h in ["host", "x-amz-date", "x-amz-security-token", "content-type"] {
        assert!(auth.signed_headers.iter().any(|s| s == h), "{h} not signed");
    }
    assert_eq!(auth.signature.len(), 64);
    assert_eq!(
        auth.signature,
        server_side_signature(r, "eu-west-3", SECRET)
    );
    assert_ne!(
        auth.signature,
        server_side_signature(r, "eu-west-3", "wrong")
    );
}

#[tokio::test]
async fn long_term_keys_send_no_security_token() {
    let sts = FakeServer::start(|_| answer(200, "text/xml", SUCCESS.as_bytes())).await;
    let c = client(&format!("http://{}/", sts.addr), 2000);
    let mut keys = node();
    keys.session_token = None;
    let req = AssumeRoleRequest {
        role_arn: "arn:aws:iam::1:role/r",
        session_name: "s",
        duration_seconds: 3600,
        external_id: None,
        policy: None,
        tags: &[],
    };
    c.assume_role(&keys, &req).await.unwrap();
    let r = &sts.received()[0];
    assert_eq!(r.header("x-amz-security-token"), None);
    let auth = authorization(r.header("authorization").unwrap());
    assert!(!auth
        .signed_headers
        .iter()
        .any(|h| h == "x-amz-security-token"));
    assert_eq!(
        auth.signature,
        server_side_signature(r, "eu-west-3", SECRET)
    );
    let form = r.form();
    assert!(form
        .iter()
        .all(|(k, _)| !k.starts_with("Tags") && k != "ExternalId" && k != "Policy"));
}

fn simple_request() -> AssumeRoleRequest<'static> {
    AssumeRoleRequest {
        role_arn: "arn:aws:iam::1:role/r",
        session_name: "s",
        duration_seconds: 3600,
        external_id: None,
        policy: None,
        tags: &[],
    }
}

/// Each error class, over the wire: the answer is chosen by the session name.
#[tokio::test]
async fn error_answers_are_sorted_into_classes() {
    // (status, body, label, recoverable, code)
    let cases: Vec<(u16, String, &str, bool, Option<&str>)> = vec![
        (403, error_body("AccessDenied", "User: arn:aws:sts::1:assumed-role/node/i-1 is not authorized"), "denied", false, Some("AccessDenied")),
        (403, error_body("InvalidClientTokenId", "The security token included in the request is invalid."), "denied", false, Some("InvalidClientTokenId")),
        (403, error_body("SignatureDoesNotMatch", "The request signature we calculated does not match"), "denied", false, Some("SignatureDoesNotMatch")),
        (400, error_body("ExpiredToken", "The security token included in the request is expired"), "denied", false, Some("ExpiredToken")),
        (400, error_body("MalformedPolicyDocument", "bad policy"), "invalid_request", false, Some("MalformedPolicyDocument")),
        (400, error_body("ValidationError", "1 validation error detected"), "invalid_request", false, Some("ValidationError")),
        (400, error_body("Throttling", "Rate exceeded"), "throttled", true, Some("Throttling")),
        (400, error_body("RequestLimitExceeded", "slow down"), "throttled", true, Some("RequestLimitExceeded")),
        (400, error_body("IDPCommunicationError", "idp"), "server_error", true, Some("IDPCommunicationError")),
        (503, error_body("ServiceUnavailable", "try again"), "server_error", true, Some("ServiceUnavailable")),
        (500, error_body("InternalFailure", "oops"), "server_error", true, Some("InternalFailure")),
        (502, "<html>Bad Gateway</html>".into(), "server_error", true, Some("Unknown")),
        (429, String::new(), "throttled", true, Some("Unknown")),
        // moto's and EC2's shape: ErrorResponse/Errors/Error, CDATA message.
        (403, "<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message><![CDATA[no <way>]]></Message></Error></Errors></ErrorResponse>".into(), "denied", false, Some("AccessDenied")),
        (404, "<html>not found</html>".into(), "bad_response", false, None),
        // An unknown code that STS blames on itself (Type Receiver).
        (400, error_body("SomethingNew", "x").replace("Sender", "Receiver"), "server_error", true, Some("SomethingNew")),
        (400, error_body("SomethingNew", "x"), "invalid_request", false, Some("SomethingNew")),
        (403, error_body("SomethingNew", "x"), "denied", false, Some("SomethingNew")),
        (200, "<AssumeRoleResponse><AssumeRoleResult></AssumeRoleResult></AssumeRoleResponse>".into(), "bad_response", true, None),
        (200, "not xml".into(), "bad_response", true, None),
    ];
    let answers: Vec<(u16, String)> = cases.iter().map(|c| (c.0, c.1.clone())).collect();
    let sts = FakeServer::start(move |r| {
        let i: usize = r
            .form()
            .iter()
            .find(|(k, _)| k == "RoleSessionName")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap();
        answer(answers[i].0, "text/xml", answers[i].1.as_bytes())
    })
    .await;
    let c = client(&format!("http://{}", sts.addr), 2000);
    for (i, (status, _, label, recoverable, code)) in cases.iter().enumerate() {
        let name = i.to_string();
        let req = AssumeRoleRequest {
            session_name: &name,
            ..simple_request()
        };
        let e = c.assume_role(&node(), &req).await.unwrap_err();
        assert_eq!(e.result_label(), *label, "case {i}: {e}");
        assert!(crate::metrics::STS_RESULTS.contains(&e.result_label()));
        assert_eq!(e.recoverable(), *recoverable, "case {i}: {e}");
        assert_eq!(e.code(), *code, "case {i}: {e}");
        let shown = e.to_string();
        assert!(shown.contains(&status.to_string()), "case {i}: {shown}");
        if let Some(code) = code {
            assert!(shown.contains(code), "case {i}: {shown}");
        }
    }
    let e = c
        .assume_role(
            &node(),
            &AssumeRoleRequest {
                session_name: "0",
                ..simple_request()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not authorized"), "{e}");
}

#[tokio::test]
async fn messages_never_show_the_node_secret_or_token() {
    let echo = format!("bad signature for {SECRET} with token {TOKEN}\n\u{7}and more");
    let sts = FakeServer::start(move |_| {
        answer(
            403,
            "text/xml",
            error_body("SignatureDoesNotMatch", &echo).as_bytes(),
        )
    })
    .await;
    let c = client(&format!("http://{}", sts.addr), 2000);
    let e = c.assume_role(&node(), &simple_request()).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
    assert!(
        shown.contains("[redacted]") && !shown.contains('\u{7}'),
        "{shown}"
    );
}

#[tokio::test]
async fn an_oversized_answer_is_refused_and_a_cut_one_is_a_transport_error() {
    let big = format!("{}{}", SUCCESS, " ".repeat(MAX_ANSWER));
    let sts = FakeServer::start(move |r| {
        if r.form().iter().any(|(_, v)| v == "big") {
            answer(200, "text/xml", big.as_bytes())
        } else {
            let mut head =
                b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 1500\r\n\r\n"
                    .to_vec();
            head.extend_from_slice(&SUCCESS.as_bytes()[..200]);
            Reply::Close(head)
        }
    })
    .await;
    let c = client(&format!("http://{}", sts.addr), 2000);
    let big_req = AssumeRoleRequest {
        session_name: "big",
        ..simple_request()
    };
    let e = c.assume_role(&node(), &big_req).await.unwrap_err();
    assert!(
        matches!(e, StsError::BadResponse { status: 200, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("65536"), "{e}");
    let e = c.assume_role(&node(), &simple_request()).await.unwrap_err();
    assert!(matches!(e, StsError::Transport { .. }), "{e}");
    assert!(e.recoverable());
}

#[tokio::test]
async fn a_silent_sts_times_out_and_a_closed_port_is_a_transport_error() {
    let sts = FakeServer::start(|_| Reply::Hang).await;
    let c = client(&format!("http://{}", sts.addr), 300);
    let started = std::time::Instant::now();
    let e = c.assume_role(&node(), &simple_request()).await.unwrap_err();
    assert!(matches!(e, StsError::Timeout { after_ms: 300, .. }), "{e}");
    assert_eq!(e.result_label(), "timeout");
    assert!(e.recoverable());
    assert!(started.elapsed() < Duration::from_secs(3));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let c = client(&format!("http://{addr}"), 2000);
    let e = c.assume_role(&node(), &simple_request()).await.unwrap_err();
    assert_eq!(e.result_label(), "transport", "{e}");
    assert!(e.recoverable());
}

#[tokio::test]
async fn https_endpoints_speak_tls() {
    // A plain-HTTP server behind an https:// endpoint: the client starts a TLS handshake (it
    // never sends the form in clear), which fails.
    let sts = FakeServer::start(|_| answer(200, "text/xml", SUCCESS.as_bytes())).await;
    let c = client(&format!("https://{}", sts.addr), 500);
    let e = c.assume_role(&node(), &simple_request()).await.unwrap_err();
    assert!(
        matches!(e, StsError::Transport { .. } | StsError::Timeout { .. }),
        "{e}"
    );
    assert!(sts.received().is_empty(), "the form went out in clear");
}

#[test]
fn the_form_is_encoded_as_botocore_encodes_it() {
    // Python: urlencode([("Policy", "a b*~'!()/:é&=+%20\"{}")], doseq=True); moto checks the
    // signature over the form encoded that way again.
    let req = AssumeRoleRequest {
        policy: Some("a b*~'!()/:é&=+%20\"{}"),
        ..simple_request()
    };
    let body = form_body(&req);
    assert!(
        body.ends_with("&Policy=a+b%2A~%27%21%28%29%2F%3A%C3%A9%26%3D%2B%2520%22%7B%7D"),
        "{body}"
    );
    assert!(body.starts_with(
        "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&RoleSessionName=s&DurationSeconds=3600&"
    ), "{body}");
}

#[test]
fn endpoints_and_regions() {
    let cfg = StsConfig::default();
    let c = StsClient::new(&cfg, "eu-west-3").unwrap();
    assert_eq!(c.endpoint(), "https://sts.eu-west-3.amazonaws.com");
    assert_eq!(c.region(), "eu-west-3");
    assert_eq!(c.host, "sts.eu-west-3.amazonaws.com");
    let c = StsClient::new(&cfg, "cn-north-1").unwrap();
    assert_eq!(c.endpoint(), "https://sts.cn-north-1.amazonaws.com.cn");
    let with = |endpoint: &str| StsConfig {
        endpoint: endpoint.into(),
        ..StsConfig::default()
    };
    let c = StsClient::new(&with("http://10.0.0.1:5000/"), "us-east-1").unwrap();
    assert_eq!(c.endpoint(), "http://10.0.0.1:5000");
    assert_eq!(c.host, "10.0.0.1:5000");
    for bad in [
        "ftp://x",
        "sts.amazonaws.com",
        "https://x/path",
        "https://x/?a=b",
        "https://u@x",
        "http://",
    ] {
        let e = StsClient::new(&with(bad), "us-east-1").unwrap_err();
        assert_eq!(e.result_label(), "config", "{bad}: {e}");
        assert!(!e.recoverable());
    }
    let e = StsClient::new(&with("https://user:hunter2@sts.example"), "us-east-1").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    for bad in ["", "US-EAST-1", "us-east-1.evil.com", "a/b"] {
        assert!(StsClient::new(&cfg, bad).is_err(), "{bad}");
    }
}

#[test]
fn parsing_success_answers() {
    let got = parse::success(SUCCESS.as_bytes()).unwrap();
    assert_eq!(
        got.credentials.session_token.as_deref(),
        Some("FwoG&token/==")
    );
    // Fractional seconds, CDATA.
    let frac = SUCCESS
        .replace("2026-12-03T07:00:00Z", "2026-12-03T07:00:00.250Z")
        .replace("role/secret+key", "<![CDATA[role/secret+key]]>");
    let got = parse::success(frac.as_bytes()).unwrap();
    assert_eq!(
        got.credentials.expiration,
        Some(at(1_796_281_200) + Duration::from_millis(250))
    );
    assert_eq!(got.credentials.secret_access_key, "role/secret+key");
    assert_eq!(
        parse::parse_time("2026-12-03T07:00:00+00:00").unwrap(),
        at(1_796_281_200)
    );

    let cut = &SUCCESS[..SUCCESS.find("</Credentials>").unwrap()];
    let e = parse::success(cut.as_bytes()).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    for (broken, why) in [
        (
            SUCCESS
                .replace("<Arn>", "<Arn2>")
                .replace("</Arn>", "</Arn2>"),
            "no Arn",
        ),
        (
            SUCCESS.replace("2026-12-03T07:00:00Z", "tomorrow"),
            "expiration",
        ),
        (
            SUCCESS.replace(
                "<SessionToken>FwoG&amp;token&#x2F;==</SessionToken>",
                "<SessionToken/>",
            ),
            "no SessionToken",
        ),
        (
            SUCCESS.replace(
                "</AccessKeyId>",
                "</AccessKeyId><AccessKeyId>X</AccessKeyId>",
            ),
            "twice",
        ),
        (
            SUCCESS.replace("AssumeRoleResponse", "GetCallerIdentityResponse"),
            "no AccessKeyId",
        ),
        (SUCCESS.replace("</Credentials>", "</Credential>"), "XML"),
        (SUCCESS.replace("&amp;", "&bogus;"), "XML"),
    ] {
        let e = parse::success(broken.as_bytes()).unwrap_err();
        assert!(e.contains(why), "{why}: {e}");
        assert!(!e.contains("role/secret"), "{e}");
    }
    assert!(parse::success(b"\xff\xfe").unwrap_err().contains("UTF-8"));
    let deep = "<a>".repeat(100);
    assert!(parse::success(deep.as_bytes())
        .unwrap_err()
        .contains("deeper"));
}
