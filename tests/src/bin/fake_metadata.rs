//! `fake-metadata`: a stand-in for the cloud instance metadata services, for tests, the lab and
//! benchmarks. It answers AWS-, GCP-, Azure-, Alibaba- and OpenStack-shaped requests with fake
//! content (secrets are marked `FAKE-SECRET` so a leak is easy to spot) and records every request
//! it receives, as received, before answering.
//!
//! Usage:
//!   fake-metadata --listen ADDR:PORT [--listen ADDR:PORT]... [--record FILE.jsonl] [--bench]
//!                 [--aws-credentials FILE.json] [--require-imdsv2] [--aws-region REGION]
//!
//! `--aws-credentials` serves the credentials in FILE (`AccessKeyId`, `SecretAccessKey`, optional
//! `Token` and `Expiration`; read at every request, so rewriting it rotates them) at
//! `/latest/meta-data/iam/security-credentials/<role>` instead of the `FAKE-SECRET` ones: the
//! identity tests serve a moto IAM user's key there (tests/src/moto.rs). `--require-imdsv2` answers
//! 401 to AWS requests without a valid token (an instance with `HttpTokens=required`).
//! `--aws-region` changes the region (default us-east-1).
//!
//! `--record` appends one JSON line per request (see `record.rs`); the line is written with one
//! `write` to an `O_APPEND` file before the answer is sent, so a reader that got the answer finds the
//! line. `--bench` answers every request with a small fixed body (the benchmark ceiling); the path
//! `/bench` does the same without the flag. Fault paths: `/fault/hang`, `/fault/reset`,
//! `/fault/500`, `/fault/slow?ms=N`, `/fault/big?bytes=N`. GCE long polls (`wait_for_change`,
//! `last_etag`, `timeout_sec`) are held like GCE holds them; `/fake-control/gcp-set?path=P&value=V`
//! changes a GCP value (and ends the long polls on it).
//!
//! HTTP/1.1 is parsed here rather than by hyper on purpose: a recorder in front of a security proxy
//! must record what arrived even when it is malformed (a proxy bug that forwards garbage must show up
//! in the record, not be refused by a strict parser before anything is written), with header names
//! in their original case and the request target byte for byte. No name is ever resolved.

// A bin crate's root resolves modules next to itself, so point at the sub-directory explicitly.
#[path = "fake_metadata/content.rs"]
mod content;
#[path = "fake_metadata/http1.rs"]
mod http1;
#[path = "fake_metadata/record.rs"]
mod record;
#[path = "fake_metadata/server.rs"]
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: fake-metadata --listen ADDR:PORT [--listen ADDR:PORT]... [--record FILE] [--bench] \
     [--aws-credentials FILE] [--require-imdsv2] [--aws-region REGION]";

struct Args {
    listen: Vec<SocketAddr>,
    record: Option<PathBuf>,
    bench: bool,
    aws: content::AwsOptions,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = Vec::new();
    let mut record = None;
    let mut bench = false;
    let mut aws = content::AwsOptions::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => {
                let v = it.next().ok_or("--listen needs ADDR:PORT")?;
                // Only literal addresses: parsing never resolves a name.
                let sa: SocketAddr = v
                    .parse()
                    .map_err(|e| format!("--listen {v}: not an IP:port ({e})"))?;
                listen.push(sa);
            }
            "--record" => record = Some(PathBuf::from(it.next().ok_or("--record needs FILE")?)),
            "--bench" => bench = true,
            "--aws-credentials" => {
                let v = it.next().ok_or("--aws-credentials needs FILE")?;
                // Checked now so a typo fails at start, not at the first credentials request.
                std::fs::metadata(&v).map_err(|e| format!("--aws-credentials {v}: {e}"))?;
                aws.credentials = Some(PathBuf::from(v));
            }
            "--require-imdsv2" => aws.require_token = true,
            "--aws-region" => {
                let v = it.next().ok_or("--aws-region needs REGION")?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(format!("--aws-region {v:?}: letters, digits and '-' only"));
                }
                aws.region = v;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if listen.is_empty() {
        return Err(format!("at least one --listen is required\n{USAGE}"));
    }
    Ok(Args {
        listen,
        record,
        bench,
        aws,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fake-metadata: {e}");
            return ExitCode::from(2);
        }
    };
    let recorder = match record::Recorder::open(args.record.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fake-metadata: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-metadata: tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cfg = server::Config {
        bench: args.bench,
        aws: args.aws,
    };
    match rt.block_on(server::serve(args.listen, recorder, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-metadata: {e}");
            ExitCode::from(1)
        }
    }
}
