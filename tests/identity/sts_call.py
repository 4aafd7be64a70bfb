"""One signed STS call to moto with given credentials, for the harness's authentication checks and
the AssumeRole latency figure (tests/src/moto.rs).

Prints one JSON line: {"ok": true, "arn": ..., "access_key_id": ..., "latencies_ms": [...]} or
{"ok": false, "code": ..., "message": ..., "class": ...}. Exit code 0 either way (the caller asserts on
the line); 2 for bad usage.

Usage: sts_call.py --endpoint URL --access-key K --secret S [--token T]
         (caller-identity | assume-role --role-arn ARN --session-name N [--tag K=V]... [--repeat N])
"""

import argparse
import json
import time

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--token")
    sub = ap.add_subparsers(dest="op", required=True)
    sub.add_parser("caller-identity")
    ar = sub.add_parser("assume-role")
    ar.add_argument("--role-arn", required=True)
    ar.add_argument("--session-name", required=True)
    ar.add_argument("--tag", action="append", default=[])
    ar.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    sts = botocore.session.Session().create_client(
        "sts",
        region_name=args.region,
        endpoint_url=args.endpoint,
        aws_access_key_id=args.access_key,
        aws_secret_access_key=args.secret,
        aws_session_token=args.token,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )
    out = {"ok": True}
    try:
        if args.op == "caller-identity":
            r = sts.get_caller_identity()
            out.update(arn=r["Arn"], account=r["Account"])
        else:
            tags = [dict(zip(("Key", "Value"), t.split("=", 1))) for t in args.tag]
            kw = {"RoleArn": args.role_arn, "RoleSessionName": args.session_name}
            if tags:
                kw["Tags"] = tags
            lat = []
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                r = sts.assume_role(**kw)
                lat.append(round((time.perf_counter() - t0) * 1000, 3))
            c = r["Credentials"]
            out.update(
                arn=r["AssumedRoleUser"]["Arn"],
                access_key_id=c["AccessKeyId"],
                secret_access_key=c["SecretAccessKey"],
                session_token=c["SessionToken"],
                expiration=c["Expiration"].isoformat(),
                latencies_ms=lat,
            )
    except ClientError as e:
        err = e.response.get("Error", {})
        out = {"ok": False, "class": type(e).__name__, "code": err.get("Code"), "message": err.get("Message")}
    except Exception as e:
        out = {"ok": False, "class": type(e).__name__, "code": None, "message": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
