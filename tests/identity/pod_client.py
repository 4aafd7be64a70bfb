"""A pod's AWS client: botocore's default credential chain, then sts get_caller_identity.

Run inside a pod's network namespace with the identity venv's python (tests/src/moto.rs,
`pod_client`). Nothing but the instance metadata service can supply credentials: every AWS_*
variable is cleared and the config and credentials files point at paths that do not exist, so the
chain ends at IMDS (169.254.169.254, or [fd00:ec2::254] with --ipv6), IMDSv2 first as botocore does.

Prints one JSON line and exits 0, whatever happened (the tests assert on the line):
  method          botocore's credential method ("iam-role" from IMDS), or null without credentials
  access_key_id   the key it got, or null
  token_present   whether the credentials carry a session token
  imds_token      whether botocore obtained an IMDSv2 token (false: it fell back to IMDSv1 or failed)
  credentials_ms  time to resolve the credentials
  arn, account    get_caller_identity's answer, when it succeeded
  error           {"stage": "credentials" | "sts", "class", "code", "message"} when something failed
  sts_ms          time of the get_caller_identity call
Exit 2 for bad usage only.

Usage: pod_client.py --sts-endpoint URL [--region R] [--imds v2|v2-only|v1-only] [--ipv6]
                     [--timeout SECONDS] [--attempts N]
  --imds v2       botocore's default: IMDSv2, falling back to IMDSv1 when the token PUT is refused
  --imds v2-only  AWS_EC2_METADATA_V1_DISABLED=true: no fallback
  --imds v1-only  never ask for a token (an old SDK): plain GETs
"""

import argparse
import json
import os
import sys
import time


def clean_env(args):
    for k in list(os.environ):
        if k.startswith("AWS_") or k.startswith("BOTO_"):
            del os.environ[k]
    os.environ["AWS_CONFIG_FILE"] = "/nonexistent/metaguard-pod-client/config"
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/metaguard-pod-client/credentials"
    os.environ["AWS_METADATA_SERVICE_TIMEOUT"] = str(args.timeout)
    os.environ["AWS_METADATA_SERVICE_NUM_ATTEMPTS"] = str(args.attempts)
    if args.imds == "v2-only":
        os.environ["AWS_EC2_METADATA_V1_DISABLED"] = "true"
    if args.ipv6:
        os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"] = "IPv6"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sts-endpoint", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--imds", choices=["v2", "v2-only", "v1-only"], default="v2")
    ap.add_argument("--ipv6", action="store_true")
    ap.add_argument("--timeout", type=int, default=2)
    ap.add_argument("--attempts", type=int, default=1)
    args = ap.parse_args()
    clean_env(args)

    # Imported after the environment is set: nothing may be read from the caller's.
    import botocore.session
    import botocore.utils
    from botocore.config import Config
    from botocore.exceptions import ClientError

    fetcher = botocore.utils.InstanceMetadataFetcher
    original = fetcher._fetch_metadata_token
    seen = {"token": False}

    def fetch_token(self):
        if args.imds == "v1-only":
            return None
        tok = original(self)
        seen["token"] = seen["token"] or tok is not None
        return tok

    fetcher._fetch_metadata_token = fetch_token

    out = {"method": None, "access_key_id": None, "token_present": False, "imds_token": False}
    session = botocore.session.Session()
    t0 = time.perf_counter()
    try:
        creds = session.get_credentials()
        frozen = creds.get_frozen_credentials() if creds is not None else None
    except Exception as e:
        creds = frozen = None
        out["error"] = {"stage": "credentials", "class": type(e).__name__, "code": None, "message": str(e)}
    out["credentials_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    out["imds_token"] = seen["token"]
    if frozen is None:
        out.setdefault(
            "error",
            {"stage": "credentials", "class": "NoCredentialsError", "code": None, "message": "no credentials"},
        )
        print(json.dumps(out))
        return
    out.update(method=creds.method, access_key_id=frozen.access_key, token_present=bool(frozen.token))

    sts = session.create_client(
        "sts",
        region_name=args.region,
        endpoint_url=args.sts_endpoint,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )
    t0 = time.perf_counter()
    try:
        r = sts.get_caller_identity()
        out.update(arn=r["Arn"], account=r["Account"])
    except ClientError as e:
        err = e.response.get("Error", {})
        out["error"] = {"stage": "sts", "class": type(e).__name__, "code": err.get("Code"), "message": err.get("Message")}
    except Exception as e:
        out["error"] = {"stage": "sts", "class": type(e).__name__, "code": None, "message": str(e)}
    out["sts_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
