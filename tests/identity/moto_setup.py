"""Set-up of moto's IAM for the identity tests (run once by tests/src/moto.rs, with the venv's python).

Makes, with exactly 3 + len(roles) IAM calls (moto counts them against INITIAL_NO_AUTH_ACTION_COUNT,
so the harness starts moto with that count and authentication is on from the next request):
  1. CreateUser       the node's user
  2. CreateAccessKey  its key (the node's credentials, served by fake-metadata)
  3. PutUserPolicy    sts:AssumeRole and sts:TagSession on *
  4. CreateRole       one per role, trusting the node user for sts:AssumeRole and sts:TagSession
(moto matches a trust policy's AWS principal against the caller's ARN literally, so the user's ARN
is named, not the account root). Retries are off: a retried call would be counted twice.

Prints one JSON line: account_id, user_arn, access_key_id, secret_access_key, roles {name: arn},
calls (how many calls were made).

Usage: moto_setup.py --endpoint URL --user NAME [--role NAME]...
"""

import argparse
import json
import sys

import botocore.session
from botocore.config import Config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--role", action="append", default=[])
    args = ap.parse_args()

    session = botocore.session.Session()
    # Any key signs the unauthenticated set-up calls: moto checks nothing within the initial count.
    iam = session.create_client(
        "iam",
        region_name="us-east-1",
        endpoint_url=args.endpoint,
        aws_access_key_id="AKIASETUPNOTCHECKED0",
        aws_secret_access_key="setup-not-checked",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )
    calls = 0

    def call(fn, **kw):
        nonlocal calls
        calls += 1
        return fn(**kw)

    user = call(iam.create_user, UserName=args.user)["User"]
    key = call(iam.create_access_key, UserName=args.user)["AccessKey"]
    call(
        iam.put_user_policy,
        UserName=args.user,
        PolicyName="assume-pod-roles",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["sts:AssumeRole", "sts:TagSession"], "Resource": "*"}
                ],
            }
        ),
    )
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": user["Arn"]},
                    "Action": ["sts:AssumeRole", "sts:TagSession"],
                }
            ],
        }
    )
    roles = {}
    for name in args.role:
        role = call(iam.create_role, RoleName=name, AssumeRolePolicyDocument=trust)["Role"]
        roles[name] = role["Arn"]
    print(
        json.dumps(
            {
                "account_id": user["Arn"].split(":")[4],
                "user_arn": user["Arn"],
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
                "roles": roles,
                "calls": calls,
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the harness shows this line with moto's log
        print(f"moto_setup: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
