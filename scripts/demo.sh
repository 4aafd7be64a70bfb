#!/usr/bin/env bash
# The metaguard demo: containerd starts a container on a CNI network chaining bridge + metaguard,
# and the container tries the cloud metadata service (a fake one, in a throwaway namespace).
#
#   sudo scripts/demo.sh
#
# It sets itself up first: installs the Debian packages it needs (scripts/lib/deps.sh demo), finds
# the Rust toolchain (also the sudo user's, scripts/lib/cargo-env.sh) and builds the four binaries it
# runs (metaguard, metaguard-proxy, fake-metadata, mgcurl; debug profile, no protoc needed), one line
# per phase with the time taken. Then it brings up the lab (scripts/lab.sh), shows an allowed
# request answered, a credentials request denied with the reason, another port refused, the same
# over IPv6, the proxy's decision log, and what happens when the proxy is down; then tears
# everything down, even when interrupted. Exits non-zero if anything did not behave as shown.
#
# Environment: DEMO_NO_BUILD=1 skips the packages and the build and uses the binaries lab.sh finds
# (METAGUARD_BIN_DIR or the newest cargo build: what CI does after the tests); DEMO_RELEASE=1
# builds the release profile instead (slower to build: link-time optimisation).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export LAB_NAME=${LAB_NAME:-mgdemo}
LAB=scripts/lab.sh
POD=web
CID=$LAB_NAME-$POD
FAILED=0

if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'; else B="" G="" R="" D="" N=""; fi
heading() { printf '\n%s%s%s\n' "$B" "$*" "$N"; }
say() { printf '  %s\n' "$*"; }
cmdline() { printf '  %s$ %s%s\n' "$D" "$*" "$N"; }
ok() { printf '  %s✔ %s%s\n' "$G" "$*" "$N"; }
bad() { printf '  %s✘ %s%s\n' "$R" "$*" "$N"; FAILED=1; }

[ "$(id -u)" -eq 0 ] || { echo "run as root: sudo scripts/demo.sh (it creates network namespaces and runs containerd)" >&2; exit 1; }

heading "metaguard demo"
say "A container asks the cloud metadata service for things. metaguard (a CNI plugin) sends its"
say "metadata traffic to metaguard-proxy, which answers what the policy allows and refuses the rest."

SETUP_START=$SECONDS
if [ "${DEMO_NO_BUILD:-0}" = 1 ]; then
  # The binaries lab.sh finds (METAGUARD_BIN_DIR or the newest cargo build); packages as they are.
  heading "Set-up skipped (DEMO_NO_BUILD=1)"
  command -v jq >/dev/null || { echo "jq not found: run scripts/lib/deps.sh demo (or drop DEMO_NO_BUILD)" >&2; exit 1; }
else
  heading "Setting up (first run: packages, crates and a build; later runs: seconds)"
  bash scripts/lib/deps.sh demo
  # shellcheck source=lib/cargo-env.sh
  . scripts/lib/cargo-env.sh
  cargo_env
  profile=dev profile_dir=debug
  if [ "${DEMO_RELEASE:-0}" = 1 ]; then profile=release profile_dir=release; fi
  BUILD_LOG=$(mktemp /tmp/metaguard-demo-build.XXXXXX)
  # cargo_phase TITLE ARGS...: one line with the time taken; cargo's output only when it fails.
  cargo_phase() {
    local title=$1 t0=$SECONDS
    shift
    printf '  %-58s ' "$title ..."
    if cargo "$@" >"$BUILD_LOG" 2>&1; then
      printf '%ss\n' "$((SECONDS - t0))"
    else
      printf 'failed after %ss\n' "$((SECONDS - t0))"
      cat "$BUILD_LOG" >&2
      rm -f "$BUILD_LOG"
      exit 1
    fi
  }
  # Only the binaries the lab runs. metaguard-tests without its default "cri" feature: the CRI
  # client's build script needs protoc, which only the test suite installs.
  host=$(rustc -vV | sed -n 's/^host: //p')
  cargo_phase "cargo fetch (downloads crates on the first run)" fetch --target "$host"
  cargo_phase "cargo build: metaguard, metaguard-proxy, fake-metadata, mgcurl" \
    build --profile "$profile" --no-default-features \
    -p metaguard-plugin -p metaguard-proxy -p metaguard-tests \
    --bin metaguard --bin metaguard-proxy --bin fake-metadata --bin mgcurl
  rm -f "$BUILD_LOG"
  export METAGUARD_BIN_DIR=${CARGO_TARGET_DIR:-$REPO/target}/$profile_dir
  ok "set up in $((SECONDS - SETUP_START))s (binaries in $METAGUARD_BIN_DIR)"
fi
DEMO_START=$SECONDS

FG_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  heading "Tearing down"
  if [ -n "$FG_PID" ]; then kill "$FG_PID" 2>/dev/null || true; fi
  "$LAB" down >/dev/null 2>&1 || true
  ok "namespaces, containerd, proxy, fake service and files removed"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

heading "Bringing up the lab"
"$LAB" down >/dev/null 2>&1 || true # leftovers of an interrupted run
"$LAB" up >/dev/null 2>"/tmp/metaguard-demo-up.$$.log" || { cat "/tmp/metaguard-demo-up.$$.log" >&2; rm -f "/tmp/metaguard-demo-up.$$.log"; exit 1; }
rm -f "/tmp/metaguard-demo-up.$$.log"
eval "$("$LAB" env | sed 's/^/export /')"
say "node namespace $NODE_NS: containerd 1.6 + runc, metaguard-proxy, CNI conflist bridge + metaguard"
say "cloud namespace $CLOUD_NS: a fake metadata service on $METADATA4 and [$METADATA6] (ports 80 and $OTHER_PORT)"
say "policy: conf/lab/policy.toml (built-in preset 'aws': identity yes, credentials and user-data no)"

heading "Starting a container: ctr run --cni --rootfs <busybox> $POD"
# Foreground `ctr run`, in the background: when the task ends ctr calls CNI DEL and removes it.
"$LAB" run "$POD" sleep 600 >/dev/null 2>&1 &
FG_PID=$!
deadline=$((SECONDS + 30))
until [ -f "$STATE_DIR/pods/$CNI_NETWORK:$CID:eth0.json" ] && "$LAB" ctr task ls 2>/dev/null | grep -qE "^$POD +[0-9]+ +RUNNING"; do
  [ "$SECONDS" -lt "$deadline" ] || { bad "the container did not start (see $PLUGIN_LOG)"; exit 1; }
  sleep 0.1
done
IPS=$(jq -r '.ips | join(", ")' "$STATE_DIR/pods/$CNI_NETWORK:$CID:eth0.json")
ok "running; metaguard wrote its pod record: container $CID, addresses $IPS"

EXEC_N=0
# Runs mgcurl in the container; prints its one JSON line. The line comes back through a file in
# the container's root filesystem: `ctr task exec` (1.6) sometimes loses a short-lived process's
# stdout.
pod_get() {
  EXEC_N=$((EXEC_N + 1))
  local file=/tmp/demo-$EXEC_N.json
  "$LAB" ctr task exec --exec-id "demo$EXEC_N" "$POD" mgcurl --json -m 5 -o "$file" "$@" >/dev/null 2>&1 || true
  cat "$ROOTFS$file" 2>/dev/null || true
  rm -f "$ROOTFS$file"
}
record_count() { # PATH-SUBSTRING
  jq -r --arg p "$1" 'select(.target | contains($p)) | .target' "$FAKE_RECORD" | wc -l
}

# expect_allowed URL: 200 from the fake service, through the proxy.
expect_allowed() {
  local url=$1 out
  cmdline "mgcurl $url"
  out=$(pod_get "$url")
  if [ "$(jq -r .status <<<"$out" 2>/dev/null)" = 200 ]; then
    ok "200 OK, answer: $(jq -r .body <<<"$out")"
  else
    bad "expected 200, got: ${out:-nothing}"
  fi
}

# expect_denied URL PATH: 403 with the proxy's reason, and the fake service never saw it.
expect_denied() {
  local url=$1 path=$2 out
  cmdline "mgcurl $url"
  out=$(pod_get "$url")
  if [ "$(jq -r .status <<<"$out" 2>/dev/null)" = 403 ]; then
    ok "403 Forbidden, reason: $(jq -r '.body | rtrimstr("\n")' <<<"$out")"
  else
    bad "expected 403, got: ${out:-nothing}"
  fi
  if [ "$(record_count "$path")" -eq 0 ]; then
    ok "the metadata service never saw this request"
  else
    bad "the metadata service received $path"
  fi
}

# expect_refused URL WHY: the connection is refused in the pod.
expect_refused() {
  local url=$1 why=$2 out
  cmdline "mgcurl $url"
  out=$(pod_get "$url")
  if [ "$(jq -r .error <<<"$out" 2>/dev/null)" = refused ]; then
    ok "connection refused ($why)"
  else
    bad "expected connection refused, got: ${out:-nothing}"
  fi
}

heading "1. Allowed: the instance ID"
expect_allowed "http://$METADATA4/latest/meta-data/instance-id"

heading "2. Denied: the node's IAM credentials"
expect_denied "http://$METADATA4/latest/meta-data/iam/security-credentials/" "security-credentials"

heading "3. Another port on the metadata address"
expect_refused "http://$METADATA4:$OTHER_PORT/" "the fake service listens there; metaguard's rules in the pod reject it"

heading "4. The same over IPv6: [$METADATA6]"
expect_allowed "http://[$METADATA6]/latest/meta-data/placement/availability-zone"
expect_denied "http://[$METADATA6]/latest/user-data" "user-data"
expect_refused "http://[$METADATA6]:$OTHER_PORT/" "same rules for IPv6"

heading "5. The proxy's decision log (one JSON line per request)"
jq -r --arg cid "$CID" 'select(.container_id == $cid)
  | [(.decision | ascii_upcase), .method, .endpoint, .path, (.status | tostring), (.rule // "-")] | @tsv' \
  "$DECISION_LOG" | while IFS=$'\t' read -r decision method endpoint path status rule; do
  printf '    %-5s %-4s %-8s %-48s -> %s  (rule %s)\n' "$decision" "$method" "$endpoint" "$path" "$status" "$rule"
done
say "${D}the first one in full:${N}"
printf '  %s%s%s\n' "$D" "$(grep -m1 "\"$CID\"" "$DECISION_LOG" || true)" "$N"
if [ "$(grep -c "\"$CID\"" "$DECISION_LOG" || true)" -ge 4 ]; then
  ok "every request that reached the proxy has its line"
else
  bad "decision lines missing in $DECISION_LOG"
fi

heading "6. The proxy is stopped: the door stays shut"
"$LAB" proxy stop >/dev/null 2>&1
before=$(wc -l <"$FAKE_RECORD")
expect_refused "http://$METADATA4/latest/meta-data/instance-id" "the redirect stays; nobody listens behind it"
if [ "$(wc -l <"$FAKE_RECORD")" -eq "$before" ]; then
  ok "nothing reached the metadata service"
else
  bad "the metadata service was reached with the proxy down"
fi
if "$LAB" proxy start >/dev/null 2>&1; then ok "proxy started again"; else bad "the proxy did not start again"; fi
expect_allowed "http://$METADATA4/latest/meta-data/instance-id"

heading "7. The container is removed: metaguard cleans up"
"$LAB" ctr task kill -s SIGKILL "$POD" >/dev/null 2>&1 || true
deadline=$((SECONDS + 20))
while [ -f "$STATE_DIR/pods/$CNI_NETWORK:$CID:eth0.json" ] || kill -0 "$FG_PID" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || break
  sleep 0.1
done
FG_PID=""
if [ ! -f "$STATE_DIR/pods/$CNI_NETWORK:$CID:eth0.json" ]; then ok "CNI DEL ran: pod record gone"; else bad "pod record still there after DEL"; fi
left=$("$LAB" exec-node nft list tables 2>/dev/null | grep metaguard || true)
if [ -z "$left" ]; then ok "host-side guard removed from the node"; else bad "metaguard tables left on the node: $left"; fi

heading "Result"
if [ "$FAILED" -eq 0 ]; then
  ok "everything behaved as shown (demo took $((SECONDS - DEMO_START))s after the build)"
else
  bad "something did not behave as expected (lab logs are in /run/metaguard-lab/$LAB_NAME until teardown)"
fi
exit "$FAILED"
