#!/usr/bin/env bash
# Fairness benchmark of metaguard-proxy's per-pod rate limits (issue 14, part 3): one pod floods the
# proxy with wrk while a second pod sends a steady 200 req/s (paced-client, open loop). Target: the
# steady pod's p99 under the flood stays within 1.5x of its p99 alone, and the flooder gets 429s.
#
#   sudo scripts/bench-fairness.sh [--duration 10] [--rounds 3] [--rate 200] [--wrk-threads 1]
#        [--wrk-connections 32] [--no-control] [--no-build] [--keep]
#
# Topology as in scripts/bench-proxy.sh (namespaces this script creates and deletes; nothing in the
# root namespace): two pods on a bridge in a node namespace, attached with Debian's bridge +
# host-local and the metaguard plugin by cni-bench; metaguard-proxy on the bridge gateway; the fake
# metadata server (fake-metadata --bench) in a cloud namespace at 169.254.169.254.
#
# Policy (written by this script): both pods may GET /latest/meta-data/instance-id (forwarded to the
# fake). The flooder (pod name *flood*) gets the built-in default limit (100 req/s, burst 1000); the
# steady pod a policy with `rate = 400` (its 200 req/s are ordinary for it). Each round measures the
# steady pod alone, then under the flood. The control (unless --no-control) runs the flood once
# more with the flooder's policy at `rate = 1000000` (no effective limit), for comparison.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "$0")/lib/bench-common.sh"

DURATION=10 ROUNDS=3 RATE=200 WRK_THREADS=1 WRK_CONNS=32 CONTROL=1
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --wrk-threads) WRK_THREADS=$2; shift 2 ;;
    --wrk-connections) WRK_CONNS=$2; shift 2 ;;
    --no-control) CONTROL=0; shift ;;
    --no-build) BENCH_NO_BUILD=1; shift ;;
    --keep) BENCH_KEEP=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
# The flooder stays under the proxy's default cap of 64 connections per pod (wrk opens one more
# than -c to check the address): its requests are refused by the rate limit, not at accept.
[ "$WRK_CONNS" -lt 64 ] || die "--wrk-connections must be below 64 (the per-pod connection cap)"

bench_require_root
bench_require_cmds ip nft wrk curl timeout awk python3
CNI_PLUGIN_DIR=${CNI_PLUGIN_DIR:-/usr/lib/cni}
bench_build "-p metaguard-tests --bin cni-bench --bin fake-metadata --bin paced-client" \
  "-p metaguard-plugin --bin metaguard" "-p metaguard-proxy --bin metaguard-proxy"
CNI_BENCH=$(bench_bin cni-bench)
FAKE=$(bench_bin fake-metadata)
PACED=$(bench_bin paced-client)
PROXY=$(bench_bin metaguard-proxy)

bench_trap_cleanup
bench_mkwork bench-fairness
W=$BENCH_WORK
mkdir -m 0755 "$W/cni-bin" "$W/cache" "$W/ipam" "$W/state"
for p in bridge host-local; do ln -s "$CNI_PLUGIN_DIR/$p" "$W/cni-bin/$p"; done
ln -s "$(bench_bin metaguard)" "$W/cni-bin/metaguard"
sed "s|@WORK@|$W|g" "$BENCH_REPO/conf/bench/chain.conflist" >"$W/chain.conflist"

GW=10.99.0.1 IMDS=169.254.169.254 CLOUD_IP=10.254.0.2
PATHNAME=/latest/meta-data/instance-id
URL=http://$IMDS$PATHNAME
TAG=mgbf$$
NODE=${TAG}node CLOUD=${TAG}cloud FLOOD=${TAG}flood STEADY=${TAG}steady

bench_node_cloud "$NODE" "$CLOUD" "$CLOUD_IP" "$IMDS"

ip netns exec "$CLOUD" "$FAKE" --listen "$IMDS:80" --bench >"$W/fake.log" 2>&1 &
BENCH_PIDS+=("$!")
bench_wait_for 20 "fake-metadata on $IMDS:80" code_is "$NODE" "$URL" 200

# Pods: cni-bench names each pod after its container id (K8S_POD_NAME), which the policy selects on.
for pod in "$FLOOD" "$STEADY"; do
  bench_netns_add "$pod"
  in_ns "$NODE" timeout 60 "$CNI_BENCH" add --conflist "$W/chain.conflist" --netns "/var/run/netns/$pod" \
    --cid "$pod" --ifname eth0 --cache "$W/cache" --cni-path "$W/cni-bin" --skip portmap ||
    die "attaching $pod failed"
done

# write_policy FLOOD_LIMIT: the policy file, with FLOOD_LIMIT as the flooder policy's limit keys.
write_policy() {
  cat >"$W/policy.toml" <<EOF
default = "steady"

[[selector]]
pod = "*flood*"
policy = "flood"

[[policy]]
name = "steady"
rate = 400

[[policy.rule]]
id = "instance-id"
path = "$PATHNAME"
action = "allow"

[[policy]]
name = "flood"
$1
fallback = "steady"
EOF
}

MG_PID=""
start_proxy() {
  in_ns "$NODE" "$PROXY" check-policy "$W/policy.toml" >&2 || die "policy does not validate"
  : >"$W/metaguard-proxy.toml"
  ip netns exec "$NODE" "$PROXY" run --config "$W/metaguard-proxy.toml" --state-dir "$W/state" \
    --policy "$W/policy.toml" --listen "$GW" --admin 127.0.0.1:9169 \
    --decision-log "$W/decisions.log" >"$W/proxy.out" 2>"$W/proxy.err" &
  MG_PID=$!
  BENCH_PIDS+=("$MG_PID")
  bench_wait_for 30 "metaguard-proxy /readyz" code_is "$NODE" "http://127.0.0.1:9169/readyz" 200
  bench_wait_for 20 "metaguard-proxy to answer the steady pod" code_is "$STEADY" "$URL" 200
}
stop_proxy() {
  bench_stop_pid "$MG_PID"
  local i
  for i in "${!BENCH_PIDS[@]}"; do [ "${BENCH_PIDS[$i]}" = "$MG_PID" ] && unset 'BENCH_PIDS[i]'; done
  MG_PID=""
}
# metric SERIES: one sample of /metrics (0 when absent).
metric() {
  in_ns "$NODE" curl -s --max-time 2 http://127.0.0.1:9169/metrics |
    awk -v s="$1" 'index($0, s " ") == 1 { v = $NF } END { print v + 0 }'
}
json_field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
# cpu_ns PID: CPU time (ns) of the process's threads so far.
cpu_ns() {
  local t ns rest sum=0
  for t in /proc/"$1"/task/*/schedstat; do
    read -r ns rest <"$t" 2>/dev/null || continue
    sum=$((sum + ns))
  done
  echo "$sum"
}

# steady OUT: the steady pod's paced run; prints its JSON line (also kept in OUT).
steady() {
  in_ns "$STEADY" timeout $((DURATION + 30)) "$PACED" --rate "$RATE" --duration "$DURATION" --warmup 1 "$URL" >"$1" ||
    die "paced-client failed: $(cat "$1")"
  cat "$1"
}

# flood LABEL: the steady run while the flooder runs wrk; prints
# "p99 p50 wrk_reqs wrk_non2xx limited_delta cpu_us_per_req".
flood() {
  local label=$1 out=$W/wrk-$1.txt limited0 limited1 cpu0 cpu1 wrk_pid line p99 reqs non2xx
  limited0=$(metric 'metaguard_proxy_requests_total{decision="rate-limited",policy="flood",rule=""}')
  cpu0=$(cpu_ns "$MG_PID")
  ip netns exec "$FLOOD" timeout $((DURATION + 40)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$((DURATION + 3))s" "$URL" >"$out" 2>&1 &
  wrk_pid=$!
  sleep 1 # let the flood reach full speed before measuring
  line=$(steady "$W/steady-$label.json")
  wait "$wrk_pid" || die "wrk failed: $(cat "$out")"
  cpu1=$(cpu_ns "$MG_PID")
  limited1=$(metric 'metaguard_proxy_requests_total{decision="rate-limited",policy="flood",rule=""}')
  p99=$(json_field "$line" p99_ms)
  reqs=$(awk '/requests in/ { print $1 }' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  non2xx=${non2xx:-0}
  local sent
  sent=$(json_field "$line" sent)
  awk -v p="$p99" -v m="$(json_field "$line" p50_ms)" -v r="$reqs" -v n="$non2xx" -v l="$((limited1 - limited0))" \
    -v c0="$cpu0" -v c1="$cpu1" -v s="$sent" \
    'BEGIN { printf "%.3f %.3f %s %s %s %.1f\n", p, m, r, n, l, (c1 - c0) / 1000 / (r + s) }'
  echo "  $label: steady $line" >&2
  echo "  $label: wrk $(grep -E 'requests in|Requests/sec|Non-2xx' "$out" | tr -s ' \n' ' ')" >&2
}

echo "== metaguard-proxy fairness benchmark"
bench_machine_info
echo "steady pod: paced-client --rate $RATE --duration $DURATION (one kept-alive connection, open loop, latency from each request's due time)"
echo "flooder: wrk -t$WRK_THREADS -c$WRK_CONNS, same path; flooder policy: built-in default limit (100 req/s, burst 1000)"
echo

# row LABEL P99_ALONE P99_FLOOD P50_ALONE P50_FLOOD REQS NON2XX LIMITED CPU: one table row.
row() {
  awk -v l="$1" -v a="$2" -v f="$3" -v a5="$4" -v f5="$5" -v r="$6" -v n="$7" -v m="$8" -v c="$9" \
    'BEGIN { printf "| %s | %.3f | %.3f | %.2f | %.3f | %.3f | %s | %s | %s | %s |\n", l, a, f, f / a, a5, f5, r, n, m, c }'
}

write_policy "# no rate or burst: the built-in default"
start_proxy
declare -a ALONE FLOODED ROWS
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r: steady pod alone"
  alone=$(steady "$W/steady-alone-$r.json")
  a=$(json_field "$alone" p99_ms) a50=$(json_field "$alone" p50_ms)
  log "round $r: steady pod under the flood"
  flood "limited-$r" >"$W/flood-$r.txt"
  read -r f f50 reqs non2xx limited cpu <"$W/flood-$r.txt"
  ALONE+=("$a") FLOODED+=("$f")
  ROWS+=("$(row "$r" "$a" "$f" "$a50" "$f50" "$reqs" "$non2xx" "$limited" "$cpu")")
done
stop_proxy

CONTROL_ROW=""
if [ "$CONTROL" = 1 ]; then
  write_policy "rate = 1000000"
  start_proxy
  log "control: the flooder without an effective limit"
  alone=$(steady "$W/steady-alone-control.json")
  a=$(json_field "$alone" p99_ms) a50=$(json_field "$alone" p50_ms)
  flood control >"$W/flood-control.txt"
  read -r f f50 reqs non2xx limited cpu <"$W/flood-control.txt"
  CONTROL_ROW=$(row "control (flooder rate = 1000000)" "$a" "$f" "$a50" "$f50" "$reqs" "$non2xx" "$limited" "$cpu")
  stop_proxy
fi

echo
echo "| round | steady p99 alone ms | steady p99 under flood ms | ratio | p50 alone ms | p50 under flood ms | flooder requests | flooder non-2xx | rate-limited (metric) | proxy CPU us/req |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
[ -z "$CONTROL_ROW" ] || echo "$CONTROL_ROW"
echo
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ma=$(median "${ALONE[@]}") mf=$(median "${FLOODED[@]}")
awk -v a="$ma" -v f="$mf" 'BEGIN {
  r = f / a
  printf "Target: steady p99 under the flood / alone (medians over rounds) = %s / %s = %.2f  (target <= 1.5)  %s\n", f, a, r, (r <= 1.5) ? "PASS" : "FAIL"
}'
echo "The flooder got 429s in every round: $(printf '%s\n' "${ROWS[@]}" | awk -F'|' '{ if ($9 + 0 == 0) bad = 1 } END { print bad ? "NO" : "yes" }')"
