"""Figure 2 of scripts/bench-identity.sh: the first credential request of pods just attached.

Driver (run as root in the root network namespace, by the script):
  bench_identity_pods.py drive --mode at-once|pod-start|sdk-start --pods NS1,NS2,... --node NODE_NS
      --cni-bench PATH --conflist F --cache DIR --cni-path DIR --role ROLE --extra K --out FILE.jsonl --mgcurl PATH
For each pod namespace in turn (made empty by the script, which also deletes them): the pod is
attached with `ip netns exec NODE cni-bench add` (bridge + host-local + metaguard, as a runtime
does), and when ADD returns its first credential request is made:
  at-once    by this process, which entered the pod's namespace (setns) before ADD: the token PUT
             and the credential GET start the instant ADD returns, with no process start: sooner
             than any container can ask.
  pod-start  by new processes started in the pod after ADD returns (mgcurl, spawned from the
             pod's namespace, one for the PUT, one for the GET: a compiled client whose start
             costs about a millisecond, far less than a container's): the earliest a real
             container can ask.
  sdk-start  by botocore's default credential chain in a new Python process started in the pod
             after ADD returns (--python: the identity venv's): what a container's application
             does; the process start and botocore's import come first, as in a real container.
Then K more GETs (the same connection at-once, new mgcurl processes pod-start), for the
STS-calls-per-pod count. One JSON line per pod: {pod, mode, add_ms, put_ms, get_ms, since_add_ms,
status, key, extra_ok}: get_ms is the client-side time of the first credential GET (pod-start: of
the whole mgcurl process, its start included), since_add_ms when that GET (or its process) started
after ADD returned.

Only the standard library: it runs with the system python3. Nothing is ever resolved; the only
address asked is 169.254.169.254, from pod namespaces (the pod's metaguard rules redirect it).
"""

import argparse
import ctypes
import http.client
import json
import os
import subprocess
import sys
import time

IMDS = "169.254.169.254"
CREDS = "/latest/meta-data/iam/security-credentials/"
CLONE_NEWNET = 0x40000000


def first_request(role, extra):
    """PUT token, GET the role's credentials, then `extra` more GETs on the same connection."""
    out = {}
    conn = http.client.HTTPConnection(IMDS, 80, timeout=5)
    t0 = time.monotonic()
    conn.request("PUT", "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    r = conn.getresponse()
    token = r.read().decode()
    t1 = time.monotonic()
    out["put_status"] = r.status
    out["put_ms"] = (t1 - t0) * 1000
    if r.status != 200:
        out["status"] = 0
        return out
    hdr = {"X-aws-ec2-metadata-token": token}
    t2 = time.monotonic()
    conn.request("GET", CREDS + role, headers=hdr)
    r = conn.getresponse()
    body = r.read()
    t3 = time.monotonic()
    out["get_sent"] = t2
    out["get_ms"] = (t3 - t2) * 1000
    out["status"] = r.status
    try:
        c = json.loads(body)
        ok = c.get("Code") == "Success" and c.get("Type") == "AWS-HMAC" and bool(c.get("AccessKeyId"))
        out["key"] = c.get("AccessKeyId") if ok else None
    except ValueError:
        out["key"] = None
        out["body"] = body[:200].decode(errors="replace")
    extra_ok = 0
    for _ in range(extra):
        conn.request("GET", CREDS + role, headers=hdr)
        r = conn.getresponse()
        r.read()
        extra_ok += r.status == 200
    out["extra_ok"] = extra_ok
    conn.close()
    return out


def setns(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
    finally:
        os.close(fd)


def mgcurl(a, pod, *args):
    """One request by a new process in the pod: (answer, seconds from spawn to exit)."""
    # The driver is in the pod's network namespace here (see drive), so the child inherits it
    # with no `ip netns exec` (its mount namespace and /sys remount cost ~5 ms) and no
    # preexec_fn (which forbids the vfork fast path: ~2.5 ms more).
    t0 = time.monotonic()
    c = subprocess.run([a.mgcurl, "-m", "5", "--json", *args], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    t1 = time.monotonic()
    if c.returncode != 0:
        sys.exit(f"mgcurl in {pod} failed: {c.stderr.decode(errors='replace')}")
    return json.loads(c.stdout), t0, t1


def pod_start(a, pod):
    """The pod's first requests, each by a new process started after ADD returned (mgcurl: a
    compiled client, so the process start costs about a millisecond, far less than a container's)."""
    url = f"http://{IMDS}"
    put, t0, t1 = mgcurl(a, pod, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 21600", url + "/latest/api/token")
    out = {"put_status": put.get("status", 0), "put_ms": (t1 - t0) * 1000}
    if put.get("status") != 200:
        out["status"] = 0
        out["body"] = put
        return out
    hdr = "X-aws-ec2-metadata-token: " + put["body"]
    get, t2, t3 = mgcurl(a, pod, "-H", hdr, url + CREDS + a.role)
    out["get_sent"] = t2
    out["get_ms"] = (t3 - t2) * 1000
    out["status"] = get.get("status", 0)
    out["key"] = None
    try:
        c = json.loads(get.get("body", ""))
        if c.get("Code") == "Success" and c.get("Type") == "AWS-HMAC":
            out["key"] = c.get("AccessKeyId")
    except ValueError:
        out["body"] = get
    out["extra_ok"] = 0
    for _ in range(a.extra):
        g, _, _ = mgcurl(a, pod, "-H", hdr, url + CREDS + a.role)
        out["extra_ok"] += g.get("status") == 200
    return out


SDK_CLIENT = r"""
import json, sys, time
t0 = time.monotonic()
import botocore.session
s = botocore.session.get_session()
c = s.get_credentials()
f = c.get_frozen_credentials() if c else None
print(json.dumps({"key": f.access_key if f else None, "method": c.method if c else None,
                  "ms": (time.monotonic() - t0) * 1000}))
"""


def sdk_start(a, pod):
    """The pod's first request by the AWS SDK in a new process started after ADD returned:
    botocore's default credential chain (IMDSv2: token PUT, role list, credentials), the way a
    container's application asks. Nothing but IMDS to find credentials in."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent/c",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/s", "AWS_EC2_METADATA_V1_DISABLED": "true",
           "AWS_METADATA_SERVICE_TIMEOUT": "5", "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "1"}
    t0 = time.monotonic()
    c = subprocess.run([a.python, "-c", SDK_CLIENT], stdin=subprocess.DEVNULL, capture_output=True,
                       env=env, timeout=60)
    t1 = time.monotonic()
    if c.returncode != 0:
        sys.exit(f"botocore in {pod} failed: {c.stderr.decode(errors='replace')}")
    r = json.loads(c.stdout)
    # The GET's own time is the proxy's latency_ms (the report reads it); here the whole process.
    return {"get_sent": t0, "get_ms": (t1 - t0) * 1000, "status": 200 if r.get("key") else 0,
            "key": r.get("key"), "extra_ok": 0}


def drive(a):
    pods = [p for p in a.pods.split(",") if p]
    root_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    with open(a.out, "a") as out:
        for pod in pods:
            # at-once: this process waits in the pod's namespace for ADD to return. pod-start:
            # it spawns the pod's processes from there (they inherit it); it opens no socket.
            setns(f"/var/run/netns/{pod}")
            add = [
                "ip", "netns", "exec", a.node, "timeout", "60", a.cni_bench, "add",
                "--conflist", a.conflist, "--netns", f"/var/run/netns/{pod}", "--cid", pod,
                "--ifname", "eth0", "--cache", a.cache, "--cni-path", a.cni_path, "--skip", "portmap",
            ]
            t0 = time.monotonic()
            p = subprocess.run(add, stdin=subprocess.DEVNULL, capture_output=True)
            t_add = time.monotonic()
            if p.returncode != 0:
                sys.exit(f"ADD of {pod} failed: {p.stderr.decode(errors='replace')}")
            try:
                if a.mode == "at-once":
                    r = first_request(a.role, a.extra)
                elif a.mode == "pod-start":
                    r = pod_start(a, pod)
                else:
                    r = sdk_start(a, pod)
            finally:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(root_ns, CLONE_NEWNET) != 0:
                    sys.exit("setns back to the root namespace failed")
            r["pod"] = pod
            r["mode"] = a.mode
            r["add_ms"] = (t_add - t0) * 1000
            if "get_sent" in r:
                r["since_add_ms"] = (r.pop("get_sent") - t_add) * 1000
            out.write(json.dumps(r) + "\n")
            out.flush()
            if r.get("status") != 200 or not r.get("key"):
                sys.exit(f"{pod}: the first credential request did not get credentials: {r}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drive")
    d.add_argument("--mode", choices=["at-once", "pod-start", "sdk-start"], required=True)
    d.add_argument("--python", help="sdk-start: a python with botocore (the identity venv's)")
    d.add_argument("--pods", required=True)
    d.add_argument("--node", required=True)
    d.add_argument("--cni-bench", required=True)
    d.add_argument("--conflist", required=True)
    d.add_argument("--cache", required=True)
    d.add_argument("--cni-path", required=True)
    d.add_argument("--role", required=True)
    d.add_argument("--extra", type=int, default=10)
    d.add_argument("--out", required=True)
    d.add_argument("--mgcurl", required=True)
    a = ap.parse_args()
    drive(a)


if __name__ == "__main__":
    main()
