#!/usr/bin/env bash
# Checks the Kubernetes manifests in conf/kubernetes/ without a cluster:
#   1. schema: every manifest validates (strict: unknown fields are errors) against the Kubernetes
#      API schemas of several versions, with kubernetes-validate (it ships the schemas: offline);
#   2. security scan: checkov finds nothing in the manifests (and the Containerfile) that is not
#      skipped with a written reason (`checkov.io/skipN` annotations, `# checkov:skip=` comments);
#   3. cross-checks with the built binaries, when they exist: the ConfigMap's policy passes
#      `metaguard-proxy check-policy`, the plugin configuration the DaemonSet passes to the
#      installer is accepted by `metaguard-install install` on a fake node (Calico fixture), and the
#      uninstall Job's command (conf/kubernetes/uninstall/) restores that node byte for byte; the
#      DaemonSet's installer keeps metaguard in the chain on exit (restarts fail closed).
# The manifests are conf/kubernetes/*.yaml (what `kubectl apply -f conf/kubernetes/` applies) and
# conf/kubernetes/uninstall/*.yaml (the removal Job template).
# Each tool is also fed a deliberately broken control manifest, which must fail: a check that
# cannot fail proves nothing.
#
# The tools are installed once into a virtualenv under the cargo target directory, pinned by
# conf/kubernetes/check-requirements.txt (reinstalled when that file changes), with python3 3.11 or
# newer (Debian 12's 3.11.2 and Debian 13's 3.13 work; PYTHON=... picks another). As root, the checks
# run inside a throwaway network namespace with no interfaces, which proves they work offline
# (checkov also gets --skip-download so it does not try to phone home).
#
# Usage: scripts/check-kubernetes.sh      (env: CARGO_TARGET_DIR, METAGUARD_BIN_DIR,
#                                          K8S_VERSIONS="1.28.0 1.30.0 1.33.0", METAGUARD_K8S_VENV)
# Ends with "check-kubernetes: N passed, M failed" and exits non-zero when M > 0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
K8S_DIR=$ROOT/conf/kubernetes
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
REQ=$K8S_DIR/check-requirements.txt
VENV=${METAGUARD_K8S_VENV:-$TARGET/k8s-check-venv}
K8S_VERSIONS=${K8S_VERSIONS:-"1.28.0 1.30.0 1.33.0"}
PY=${PYTHON:-python3}

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mg-k8s-check.XXXXXX")
NETNS=""
cleanup() {
    if [ -n "$NETNS" ]; then ip netns del "$NETNS" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

T0=$(now)

# --- tools ----------------------------------------------------------------------------------
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements-sha256" 2>/dev/null || true)" != "$want" ]; then
    t=$(now)
    # The pins need Python 3.11 or newer (numpy 2.4, pulled in by checkov, does).
    command -v "$PY" >/dev/null || {
        echo "check-kubernetes: $PY not found: install python3 and python3-venv (Debian), or set PYTHON=/path/to/python3.11+"
        exit 1
    }
    pyver=$("$PY" -c 'import platform; print(platform.python_version())')
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "check-kubernetes: $PY is Python $pyver; the pinned tools ($REQ) need Python 3.11 or newer."
        echo "  Debian 12's python3 (3.11.2) and Debian 13's (3.13) work. Install one, then run"
        echo "  PYTHON=/path/to/python3.11 scripts/check-kubernetes.sh"
        exit 1
    fi
    echo "installing checkov and kubernetes-validate into $VENV with Python $pyver (once; pinned by $REQ)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" >"$WORK/venv.log" 2>&1 || {
        cat "$WORK/venv.log"
        echo "check-kubernetes: '$PY -m venv' failed: on Debian, apt-get install python3-venv (scripts/lib/deps.sh does)"
        exit 1
    }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >"$WORK/pip.log" 2>&1 || {
        cat "$WORK/pip.log"
        echo "check-kubernetes: pip could not install the pinned tools for Python $pyver."
        echo "  The pins are checked on Python 3.11.2 (Debian 12) and 3.13.5 (Debian 13). 'Requires-Python' or"
        echo "  'No matching distribution' above means a pin does not support $pyver: run with PYTHON= set to"
        echo "  one of those versions, or re-pin as $REQ explains. Otherwise pip could not reach the index."
        rm -rf "$VENV"
        exit 1
    }
    echo "$want" >"$VENV/.requirements-sha256"
    echo "tools installed in $(since "$t")"
fi

# Offline: a network namespace with nothing in it, when we may make one.
RUN=()
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
    NETNS="mgk8scheck$$"
    if ip netns add "$NETNS" 2>/dev/null; then
        RUN=(ip netns exec "$NETNS")
        echo "running the checks offline (network namespace $NETNS, no interfaces)"
    else
        NETNS=""
    fi
fi

# --- staging: the manifests plus controls that must fail -------------------------------------
# scan/ is what checkov reads in one pass: the manifests, the Containerfile (checkov knows it by
# the name Dockerfile only) and the insecure control.
mkdir -p "$WORK/manifests" "$WORK/controls" "$WORK/scan"
cp "$K8S_DIR"/*.yaml "$WORK/manifests/"
cp "$K8S_DIR"/*.yaml "$WORK/scan/"
for f in "$K8S_DIR"/uninstall/*.yaml; do
    cp "$f" "$WORK/manifests/uninstall-$(basename "$f")"
    cp "$f" "$WORK/scan/uninstall-$(basename "$f")"
done
cp "$ROOT/Containerfile" "$WORK/scan/Dockerfile"
cat >"$WORK/controls/control-invalid.yaml" <<'EOF'
# Control: "containerz" is not a field of PodSpec; strict validation must reject it.
apiVersion: v1
kind: Pod
metadata:
  name: control
spec:
  containerz:
    - name: c
      image: example/c:1
EOF
cat >"$WORK/controls/control-insecure.yaml" <<'EOF'
# Control: privileged, root, no limits, host PID; checkov must flag it.
apiVersion: v1
kind: Pod
metadata:
  name: control-insecure
  namespace: control
spec:
  hostPID: true
  containers:
    - name: c
      image: example/c:latest
      securityContext:
        privileged: true
EOF
cp "$WORK/controls/control-insecure.yaml" "$WORK/scan/"

# --- 1. schema ------------------------------------------------------------------------------
t=$(now)
for v in $K8S_VERSIONS; do
    if "${RUN[@]}" "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$WORK"/manifests/*.yaml \
        >"$WORK/validate-$v.log" 2>&1; then
        pass "schema: $(cd "$WORK/manifests" && echo *.yaml) valid against Kubernetes $v (strict)"
    else
        cat "$WORK/validate-$v.log"
        fail "schema: manifests invalid against Kubernetes $v"
    fi
done
if "${RUN[@]}" "$VENV/bin/kubernetes-validate" --strict --quiet "$WORK/controls/control-invalid.yaml" \
    >"$WORK/validate-control.log" 2>&1; then
    fail "schema: the invalid control manifest was accepted (the validator checks nothing)"
else
    pass "schema: the invalid control manifest is rejected"
fi
echo "schema checks: $(since "$t")"

# --- 2. security scan -----------------------------------------------------------------------
t=$(now)
set +e
"${RUN[@]}" "$VENV/bin/checkov" --compact --skip-download --output json \
    --framework kubernetes dockerfile -d "$WORK/scan" \
    >"$WORK/checkov.json" 2>"$WORK/checkov.err"
rc=$?
set -e
# checkov exits 1 when anything fails (the control does); anything else is a crash.
# (--quiet is not used: it drops the skipped checks, whose reasons we print.)
if [ "$rc" -gt 1 ] || ! [ -s "$WORK/checkov.json" ]; then
    cat "$WORK/checkov.err"
    fail "checkov did not run (exit $rc)"
else
    "$VENV/bin/python" - "$WORK/checkov.json" >"$WORK/checkov.verdict" <<'EOF' || true
import json, sys
# One JSON document per scanned directory/file, concatenated (each may itself be a list).
text, dec, pos, reports = open(sys.argv[1]).read(), json.JSONDecoder(), 0, []
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    doc, pos = dec.raw_decode(text, pos)
    reports.extend(doc if isinstance(doc, list) else [doc])
failed, skipped, control_failed, frameworks = [], {}, set(), set()
for r in reports:
    res = r.get("results", {})
    frameworks.add(r.get("check_type"))
    for c in res.get("failed_checks", []):
        path = c.get("file_path", "")
        if path.lstrip("/").startswith("control-"):
            control_failed.add(c["check_id"])
        else:
            failed.append(c)
    for c in res.get("skipped_checks", []):
        skipped[(c["check_id"], c.get("resource"))] = c
ok = True
for c in failed:
    print(f"FINDING {c['check_id']} {c.get('check_name','')} in {c.get('file_path')} {c.get('resource')}")
    ok = False
for c in skipped.values():
    why = (c.get("check_result", {}) or {}).get("suppress_comment", "") or ""
    print(f"SKIPPED {c['check_id']} ({c.get('resource')}): {why}")
    if not why.strip() or why.strip().lower() == "no comment provided":
        print(f"UNEXPLAINED {c['check_id']}")
        ok = False
print(f"CONTROL {len(control_failed)} {' '.join(sorted(control_failed))}")
for fw in ("kubernetes", "dockerfile"):
    if fw not in frameworks:
        print(f"FINDING none: checkov produced no {fw} report (nothing scanned?)")
        ok = False
print("VERDICT " + ("ok" if ok else "bad"))
EOF
    sed -n 's/^\(FINDING\|SKIPPED\|UNEXPLAINED\) /  \1 /p' "$WORK/checkov.verdict"
    if grep -q '^VERDICT ok' "$WORK/checkov.verdict"; then
        pass "checkov: no finding in conf/kubernetes or the Containerfile without a written reason"
    else
        fail "checkov: findings without a reason (listed above)"
    fi
    if grep -q '^CONTROL .*CKV_K8S_16' "$WORK/checkov.verdict"; then
        pass "checkov: the insecure control is flagged ($(sed -n 's/^CONTROL \([0-9]*\).*/\1/p' "$WORK/checkov.verdict") checks)"
    else
        fail "checkov: the insecure control manifest was not flagged (the scan checks nothing)"
    fi
fi
echo "security scan: $(since "$t")"

# --- 3. cross-checks with the built binaries --------------------------------------------------
find_bin() {
    local d
    for d in "${METAGUARD_BIN_DIR:-}" "$TARGET/debug" "$TARGET/release"; do
        if [ -n "$d" ] && [ -x "$d/$1" ]; then
            echo "$d/$1"
            return 0
        fi
    done
    return 1
}
# One value of the manifests, extracted with the venv's PyYAML.
yq() {
    "$VENV/bin/python" -c '
import sys, yaml
doc = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
print(eval(sys.argv[2], {"d": doc}), end="")' "$@"
}

t=$(now)
if proxy=$(find_bin metaguard-proxy); then
    yq "$K8S_DIR/20-config.yaml" 'd["ConfigMap"]["data"]["policy.toml"]' >"$WORK/policy.toml"
    if "$proxy" check-policy "$WORK/policy.toml" >"$WORK/policy.log" 2>&1; then
        pass "ConfigMap policy.toml passes metaguard-proxy check-policy ($(grep -m1 'default policy' "$WORK/policy.log" || true))"
    else
        cat "$WORK/policy.log"
        fail "ConfigMap policy.toml is refused by metaguard-proxy check-policy"
    fi
else
    echo "SKIP: metaguard-proxy not built (cargo build --workspace --bins); policy not cross-checked"
fi
# Restarts fail closed: the install container must not restore the configuration on SIGTERM
# (`--on-exit=keep`, or no --on-exit at all: keep is the default).
on_exit=$(yq "$K8S_DIR/30-daemonset.yaml" \
    '",".join(a for a in d["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["args"] if a.startswith("--on-exit"))')
if [ -z "$on_exit" ] || [ "$on_exit" = "--on-exit=keep" ]; then
    pass "the DaemonSet's installer leaves metaguard in the chain on SIGTERM (${on_exit:-default keep})"
else
    fail "the DaemonSet's installer has $on_exit: a restart would leave new pods unguarded"
fi
if installer=$(find_bin metaguard-install); then
    # The --config argument of the install container, with the kubelet's $(HOST_IP) expanded.
    cfg=$(yq "$K8S_DIR/30-daemonset.yaml" \
        '[a for a in d["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["args"] if a.startswith("--config=")][0][len("--config="):]')
    cfg=${cfg//\$(HOST_IP)/192.0.2.10}
    # The uninstall Job's arguments, with the node's /host mounts mapped onto the fake node.
    node=$WORK/node
    mapfile -t job_args < <(yq "$K8S_DIR/uninstall/uninstall-job.yaml" \
        '"\n".join(d["Job"]["spec"]["template"]["spec"]["containers"][0]["args"])')
    job_args=("${job_args[@]//=\/host\//=$node/}")
    mkdir -p "$node/etc/cni/net.d" "$node/opt/cni/bin"
    cp "$ROOT"/installer/tests/fixtures/calico/* "$node/etc/cni/net.d/"
    before=$(cd "$node" && find . -type f -exec sha256sum {} + | sort)
    dirs=(--cni-bin-dir "$node/opt/cni/bin" --cni-conf-dir "$node/etc/cni/net.d")
    if "$installer" install "${dirs[@]}" --plugin "$installer" --config "$cfg" >"$WORK/install.log" 2>&1 &&
        "$installer" status "${dirs[@]}" >>"$WORK/install.log" 2>&1 &&
        grep -q '"ipv4": "192.0.2.10"' "$node/etc/cni/net.d/10-calico.conflist" &&
        [ "${job_args[0]:-}" = uninstall ] &&
        "$installer" "${job_args[@]}" >>"$WORK/install.log" 2>&1 &&
        [ "$(cd "$node" && find . -type f -exec sha256sum {} + | sort)" = "$before" ]; then
        pass "the DaemonSet's plugin config installs on a Calico node and the uninstall Job's command (${job_args[*]}) restores it"
    else
        cat "$WORK/install.log"
        fail "the DaemonSet's plugin config ($cfg) or the uninstall Job's command (${job_args[*]}) does not work on a Calico node"
    fi
else
    echo "SKIP: metaguard-install not built; DaemonSet plugin config and uninstall Job not cross-checked"
fi
echo "cross-checks: $(since "$t")"

echo "total: $(since "$T0")"
echo "check-kubernetes: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
