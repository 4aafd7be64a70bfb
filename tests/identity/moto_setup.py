"""Set-up of moto's IAM for the identity tests (run once by tests/src/moto.rs, with the venv's python).

Makes, with exactly 3 + len(roles) calls, or 6 + len(roles) with --node-role (moto counts them
against INITIAL_NO_AUTH_ACTION_COUNT, so the harness starts moto with that count and authentication
is on from the next request):
  1. CreateUser       the node's user
  2. CreateAccessKey  its key (the node's credentials, served by fake-metadata)
  3. PutUserPolicy    sts:AssumeRole and sts:TagSession on *
  with --node-role, the node's credentials are a session of a node role, as on EC2 (with a token):
  4. CreateRole       the node role, trusting the user
  5. PutRolePolicy    sts:AssumeRole and sts:TagSession on *
  6. AssumeRole       the user's session of it, named --node-session
  then:
  7. CreateRole       one per role, trusting the node user (and the node role's session) for
                      sts:AssumeRole and sts:TagSession
(moto matches a trust policy's AWS principal against the caller's ARN literally, so the user's ARN
and the session's assumed-role ARN are named, not the account root or the role: real STS would not
accept a session ARN there). Retries are off: a retried call would be counted twice.

Prints one JSON line: account_id, user_arn, access_key_id, secret_access_key, roles {name: arn},
node_session (null, or {arn, access_key_id, secret_access_key, session_token}), calls.

Usage: moto_setup.py --endpoint URL --user NAME [--node-role NAME --node-session NAME] [--role NAME]...
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
    ap.add_argument("--node-role")
    ap.add_argument("--node-session", default="i-0fa4e5c0ffee00001")
    args = ap.parse_args()

    session = botocore.session.Session()
    # Any key signs the unauthenticated set-up calls: moto checks nothing within the initial count.
    def client(service):
        return session.create_client(
            service,
            region_name="us-east-1",
            endpoint_url=args.endpoint,
            aws_access_key_id="AKIASETUPNOTCHECKED0",
            aws_secret_access_key="setup-not-checked",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
        )

    iam = client("iam")
    calls = 0

    def call(fn, **kw):
        nonlocal calls
        calls += 1
        return fn(**kw)

    user = call(iam.create_user, UserName=args.user)["User"]
    key = call(iam.create_access_key, UserName=args.user)["AccessKey"]
    may_assume = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole", "sts:TagSession"], "Resource": "*"}],
        }
    )
    call(iam.put_user_policy, UserName=args.user, PolicyName="assume-pod-roles", PolicyDocument=may_assume)

    def trusting(principals):
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": principals},
                        "Action": ["sts:AssumeRole", "sts:TagSession"],
                    }
                ],
            }
        )

    principals = [user["Arn"]]
    node_session = None
    if args.node_role:
        node_role = call(iam.create_role, RoleName=args.node_role, AssumeRolePolicyDocument=trusting(principals))
        call(
            iam.put_role_policy,
            RoleName=args.node_role,
            PolicyName="assume-pod-roles",
            PolicyDocument=may_assume,
        )
        r = call(
            client("sts").assume_role,
            RoleArn=node_role["Role"]["Arn"],
            RoleSessionName=args.node_session,
        )
        c = r["Credentials"]
        node_session = {
            "arn": r["AssumedRoleUser"]["Arn"],
            "access_key_id": c["AccessKeyId"],
            "secret_access_key": c["SecretAccessKey"],
            "session_token": c["SessionToken"],
        }
        principals.append(node_session["arn"])
    trust = trusting(principals)
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
                "node_session": node_session,
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
