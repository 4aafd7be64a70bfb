#!/usr/bin/env bash
# Benchmark of metaguard-proxy (issue 3), in one run, with wrk from a pod namespace through the
# plugin's redirect (169.254.169.254:80 -> gateway:8169), against:
#   metaguard    metaguard-proxy with conf/bench/policy.toml (or --policy FILE), 10,000 extra pod records;
#                no caching: every allowed request is forwarded upstream
#   metaguard-cached  the same daemon with conf/bench/policy-aws.toml (or --cached-policy FILE): the
#                built-in `aws` preset, whose instance-id rule has cache_ttl_ms, so the allowed path
#                is answered from the proxy's cache (upstream asked once per worker per 60 s)
#   nginx-seed   nginx as in the seed article: 403 by default, plain `proxy_pass` (conf/bench/nginx-seed.conf)
#   nginx-tuned  the same with upstream keepalive (conf/bench/nginx-tuned.conf)
#   direct       wrk straight to the fake upstream, not redirected (the ceiling)
# on an allowed path (/latest/meta-data/instance-id) and a denied one
# (/latest/meta-data/iam/security-credentials/); plus the daemon's resident memory.
#
#   sudo scripts/bench-proxy.sh [--duration 10] [--warmup 2] [--threads 2] [--connections 64]
#        [--records 10000] [--policy FILE] [--cached-policy FILE] [--log file|null]
#        [--only "metaguard metaguard-cached nginx-seed nginx-tuned direct"]
#        [--emulate-redirect] [--no-build] [--keep]
#
# Topology (all in namespaces this script creates and deletes; nothing in the root namespace):
#   pod  --veth-- [bridge mgbench0 10.99.0.1/16]  node  --veth 10.254.0.1/30--10.254.0.2/30--  cloud
# The pod is attached with Debian's bridge + host-local and metaguard (conf/bench/chain.conflist
# without portmap), run like a runtime by cni-bench. The proxy / nginx listens on 10.99.0.1:8169
# in the node namespace. The fake metadata server (fake-metadata --bench: a small fixed body for
# every path, no request recording) runs in the cloud namespace on 169.254.169.254:80 and
# 10.254.0.2:80; the node routes 169.254.169.254 to the cloud. "direct" targets 10.254.0.2, which
# the pod's metaguard rules leave alone. --emulate-redirect replaces the metaguard plugin by one nft
# DNAT rule in the pod (to validate the script while the plugin is unfinished; says so in the output).
#
# Logging: metaguard's decision log and nginx's access log both go to a file in the temporary
# directory (--log file, the default) or both to /dev/null (--log null).
#
# Besides req/s and latency it prints each server's CPU time per request (split into its own code
# and the kernel) and the whole machine's. Profiling hooks (environment): BENCH_PROXY_ARGS adds
# flags to metaguard-proxy's command line; BENCH_BEFORE_RUN is run with CONFIG PATH SERVER_PID
# before each measured run; METAGUARD_BIN_DIR may hold a wrapper in place of the binary.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "$0")/lib/bench-common.sh"

DURATION=10 WARMUP=2 THREADS=2 CONNS=64 RECORDS=10000 LOG=file EMULATE=0
POLICY=$BENCH_REPO/conf/bench/policy.toml
CACHED_POLICY=$BENCH_REPO/conf/bench/policy-aws.toml
ONLY="metaguard metaguard-cached nginx-seed nginx-tuned direct"
ALLOW_PATH=/latest/meta-data/instance-id
DENY_PATH=/latest/meta-data/iam/security-credentials/
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --records) RECORDS=$2; shift 2 ;;
    --policy) POLICY=$(realpath "$2"); shift 2 ;;
    --cached-policy) CACHED_POLICY=$(realpath "$2"); shift 2 ;;
    --log) LOG=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --emulate-redirect) EMULATE=1; shift ;;
    --no-build) BENCH_NO_BUILD=1; shift ;;
    --keep) BENCH_KEEP=1; shift ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
case $LOG in file|null) ;; *) die "--log must be file or null" ;; esac
# metaguard-proxy's default limits.max_connections_per_source is 64. wrk opens one connection more
# than -c before it starts (wrk.resolve connects to the address to check it, then closes), so the
# daemon under test gets a cap of 2 x --connections (--config in the work directory; nginx has no
# such cap). Past 64, a real node's default cap would refuse (429) by design.
# bench pod would be refused by design (429) and the run marked invalid.
[ "$CONNS" -le 64 ] || log "note: --connections $CONNS exceeds metaguard-proxy's default per-pod cap of 64 (raised for this run)"

bench_require_root
bench_require_cmds ip nft wrk nginx curl timeout awk
CNI_PLUGIN_DIR=${CNI_PLUGIN_DIR:-/usr/lib/cni}
want() { [[ " $ONLY " == *" $1 "* ]]; }

builds=("-p metaguard-tests --bin cni-bench --bin gen-records --bin fake-metadata")
[ "$EMULATE" = 0 ] && builds+=("-p metaguard-plugin --bin metaguard")
{ want metaguard || want metaguard-cached; } && builds+=("-p metaguard-proxy --bin metaguard-proxy")
bench_build "${builds[@]}"
CNI_BENCH=$(bench_bin cni-bench)
FAKE=$(bench_bin fake-metadata)

bench_trap_cleanup
bench_mkwork bench-proxy
W=$BENCH_WORK
mkdir -p -m 0755 "$W/cni-bin" "$W/cache" "$W/ipam" "$W/state"
for p in bridge host-local; do ln -s "$CNI_PLUGIN_DIR/$p" "$W/cni-bin/$p"; done
SKIP=(--skip portmap)
if [ "$EMULATE" = 0 ]; then
  ln -s "$(bench_bin metaguard)" "$W/cni-bin/metaguard"
else
  SKIP+=(--skip metaguard)
fi
sed "s|@WORK@|$W|g" "$BENCH_REPO/conf/bench/chain.conflist" >"$W/chain.conflist"
if [ "$LOG" = file ]; then LOGFILE_MG=$W/metaguard-decisions.log; else LOGFILE_MG=/dev/null; fi

GW=10.99.0.1 PROXY_PORT=8169 IMDS=169.254.169.254 CLOUD_IP=10.254.0.2
TAG=mgbx$$
NODE=${TAG}node CLOUD=${TAG}cloud POD=${TAG}pod

# --- namespaces --------------------------------------------------------------------------------
bench_node_cloud "$NODE" "$CLOUD" "$CLOUD_IP" "$IMDS"
bench_netns_add "$POD"

# --- fake upstream -------------------------------------------------------------------------------
ip netns exec "$CLOUD" "$FAKE" --listen "$IMDS:80" --listen "$CLOUD_IP:80" --bench >"$W/fake.log" 2>&1 &
FAKE_PID=$!
BENCH_PIDS+=("$FAKE_PID")
bench_wait_for 20 "fake-metadata on $IMDS:80" code_is "$NODE" "http://$IMDS$ALLOW_PATH" 200

# --- pod records and the pod ---------------------------------------------------------------------
if want metaguard || want metaguard-cached; then
  "$(bench_bin gen-records)" --state-dir "$W/state" --count "$RECORDS" --network mgbench --first-ip 10.200.0.1 >&2
fi
in_ns "$NODE" timeout 60 "$CNI_BENCH" add --conflist "$W/chain.conflist" --netns "/var/run/netns/$POD" \
  --cid "$POD" --ifname eth0 --cache "$W/cache" --cni-path "$W/cni-bin" "${SKIP[@]}" ||
  die "attaching the pod failed"
POD_IP=$(ip -n "$POD" -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]; exit}')
[ -n "$POD_IP" ] || die "the pod got no IPv4 address"
if [ "$EMULATE" = 1 ]; then
  in_ns "$POD" nft -f - <<EOF
table ip mgbench_emulated {
  chain out { type nat hook output priority -100; policy accept; ip daddr $IMDS tcp dport 80 dnat to $GW:$PROXY_PORT; }
}
EOF
  REDIRECT="EMULATED (one nft DNAT rule in the pod; the metaguard plugin was not used)"
else
  pod_rules=$(in_ns "$POD" nft list ruleset)
  [[ $pod_rules == *":$PROXY_PORT"* ]] ||
    die "the pod's ruleset has no redirect to port $PROXY_PORT after metaguard ADD: $pod_rules"
  REDIRECT="metaguard plugin (bridge + host-local + metaguard)"
fi
# With nothing on the proxy port the pod must get a refused connection: the redirect does not leak
# to the real upstream, and no server from an earlier configuration is still answering.
assert_no_listener() {
  local c
  c=$(http_code "$POD" "http://$IMDS$ALLOW_PATH")
  [ "$c" = 000 ] || die "$1: the pod got HTTP $c from $IMDS with no server on the proxy port (expected a refused connection)"
}
assert_no_listener "before any server"

# --- measurement helpers -------------------------------------------------------------------------
declare -A RPS P50 P99 NON2XX ERRS REQS CPU CPU_USER MACHINE
# server_conns: connections the server under test still holds on the proxy port (any state but
# LISTEN/TIME-WAIT), so a run never starts while the previous one's connections are being closed
# (metaguard caps connections per source address: 64 leftovers + 64 new ones would be refused).
server_conns() {
  in_ns "$NODE" ss -Htn state all "( sport = :$PROXY_PORT )" | awk '$1 != "LISTEN" && $1 != "TIME-WAIT"' | wc -l
}
settled() {
  [ "$(server_conns)" = 0 ] || return 1
  if [ -n "${MG_METRICS:-}" ]; then
    [ "$(metric metaguard_proxy_connections_open)" = 0 ] || return 1
  fi
}
# metric NAME: one unlabelled value (or the sum over labels) from metaguard-proxy's /metrics.
metric() {
  in_ns "$NODE" curl -s --max-time 2 "$MG_METRICS" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2; f = 1 } END { if (f) print s + 0 }'
}

# run_wrk CONFIG PATHNAME URL [SERVER_PID]: one measured wrk run (after a warm-up); with
# SERVER_PID, also the server's CPU time per request over the run.
run_wrk() {
  local cfg=$1 pname=$2 url=$3 pid=${4:-} out=$W/wrk-$1-$2.txt cpu0="" ticks0=""
  [ "$cfg" = direct ] || bench_wait_for 20 "$cfg to close the previous run's connections" settled
  if [ "$WARMUP" -gt 0 ]; then
    in_ns "$POD" timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true
  fi
  [ "$cfg" = direct ] || bench_wait_for 20 "$cfg to close the warm-up's connections" settled
  # BENCH_BEFORE_RUN: a command run with CONFIG PATHNAME SERVER_PID before each measured run
  # (for profiling: e.g. to start a profiler or dump a callgrind profile per phase).
  [ -z "${BENCH_BEFORE_RUN:-}" ] || "$BENCH_BEFORE_RUN" "$cfg" "$pname" "$pid"
  log "$cfg $pname: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency $url"
  local refused0=""
  [ -z "${MG_METRICS:-}" ] || refused0=$(metric metaguard_proxy_connections_refused_total)
  [ -z "$pid" ] || { cpu0=$(cpu_ns "$pid"); ticks0=$(cpu_ticks "$pid"); }
  local busy0 busy1
  busy0=$(machine_busy)
  in_ns "$POD" timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$out" 2>&1 ||
    die "wrk failed for $cfg $pname: $(cat "$out")"
  local cpu1="" ticks1=""
  busy1=$(machine_busy)
  [ -z "$pid" ] || { cpu1=$(cpu_ns "$pid"); ticks1=$(cpu_ticks "$pid"); }
  if [ -n "$refused0" ]; then
    local refused1
    refused1=$(metric metaguard_proxy_connections_refused_total)
    [ "$refused1" = "$refused0" ] || log "  metaguard refused $((refused1 - refused0)) connection(s) during this run (429/503)"
  fi
  local k="$cfg/$pname"
  wrk_results "$k" "$out"
  MACHINE[$k]=$(awk -v a="$busy0" -v b="$busy1" -v hz="$(getconf CLK_TCK)" -v n="${REQS[$k]:-0}" \
    'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "n/a" }')
  CPU[$k]=n/a
  if [ -n "$cpu0" ] && [ "${REQS[$k]:-0}" -gt 0 ]; then
    # Total from schedstat; its split between the server's own code and the kernel from the
    # tick counts' proportions.
    CPU[$k]=$(awk -v a="$cpu0" -v b="$cpu1" -v n="${REQS[$k]}" -v t0="$ticks0" -v t1="$ticks1" 'BEGIN {
      split(t0, x, " "); split(t1, y, " ")
      u = y[1] - x[1]; s = y[2] - x[2]; us = (b - a) / 1000 / n
      if (u + s > 0) printf "%.1f (%.1f user, %.1f kernel)", us, us * u / (u + s), us * s / (u + s)
      else printf "%.1f", us
    }')
    CPU_USER[$k]=$(awk '{ gsub(/[(,]/, " "); print $2 }' <<<"${CPU[$k]}")
  fi
}

# measure CONFIG: both paths through the redirect, after checking the decisions are right.
measure() {
  local cfg=$1 pid=$2
  bench_wait_for 20 "$cfg to answer the pod" code_is "$POD" "http://$IMDS$ALLOW_PATH" 200
  local d
  d=$(http_code "$POD" "http://$IMDS$DENY_PATH")
  [ "$d" = 403 ] || die "$cfg answered the denied path with $d (expected 403)"
  # The answers' headers, for the record (keep-alive or not matters to throughput).
  in_ns "$POD" curl -s -D - -o /dev/null --max-time 2 "http://$IMDS$ALLOW_PATH" >"$W/headers-$cfg-allowed.txt" || true
  in_ns "$POD" curl -s -D - -o /dev/null --max-time 2 "http://$IMDS$DENY_PATH" >"$W/headers-$cfg-denied.txt" || true
  run_wrk "$cfg" allowed "http://$IMDS$ALLOW_PATH" "$pid"
  run_wrk "$cfg" denied "http://$IMDS$DENY_PATH" "$pid"
  kill -0 "$pid" 2>/dev/null || die "$cfg (pid $pid) died during the run"
}

stop_server() {
  bench_stop_pid "$1"
  local i
  for i in "${!BENCH_PIDS[@]}"; do [ "${BENCH_PIDS[$i]}" = "$1" ] && unset 'BENCH_PIDS[i]'; done
  return 0
}

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

echo "== metaguard-proxy benchmark"
bench_machine_info
echo "redirect: $REDIRECT; pod $POD_IP -> $IMDS:80 -> $GW:$PROXY_PORT"
echo "wrk: -t$THREADS -c$CONNS -d${DURATION}s --latency (after a ${WARMUP}s warm-up); upstream: fake-metadata --bench in its own namespace"
echo "logs: $([ "$LOG" = file ] && echo "decision/access log to a file in $W" || echo "decision/access log to /dev/null")"
echo "allowed path: $ALLOW_PATH; denied path: $DENY_PATH"
echo

# --- (a) metaguard-proxy, without and with the answer cache -------------------------------------
RSS_IDLE="" RSS_AFTER="" HWM_AFTER="" MG_INFO="" MG_METRICS="" CACHE_INFO=""
# run_metaguard CONFIG POLICY: start the daemon with POLICY, measure both paths, stop it.
run_metaguard() {
  local cfg=$1 policy=$2
  PROXY=$(bench_bin metaguard-proxy)
  assert_no_listener "$cfg"
  in_ns "$NODE" "$PROXY" check-policy "$policy" >&2 || die "policy $policy does not validate"
  printf '[limits]\nmax_connections_per_source = %d\n' $((CONNS * 2)) >"$W/metaguard-proxy.toml"
  # shellcheck disable=SC2086 # BENCH_PROXY_ARGS: extra flags, split on spaces on purpose
  ip netns exec "$NODE" "$PROXY" run --config "$W/metaguard-proxy.toml" ${BENCH_PROXY_ARGS:-} --state-dir "$W/state" --policy "$policy" --listen "$GW" \
    --admin 127.0.0.1:9169 --decision-log "$LOGFILE_MG" >"$W/$cfg.out" 2>"$W/$cfg.err" &
  MG_PID=$!
  BENCH_PIDS+=("$MG_PID")
  bench_wait_for 30 "metaguard-proxy /readyz" code_is "$NODE" "http://127.0.0.1:9169/readyz" 200
  MG_METRICS=http://127.0.0.1:9169/metrics
  bench_wait_for 20 "metaguard-proxy to answer the pod" code_is "$POD" "http://$IMDS$ALLOW_PATH" 200
  if [ "$cfg" = metaguard ]; then RSS_IDLE=$(status_kib "$MG_PID" VmRSS); fi
  measure "$cfg" "$MG_PID"
  if [ "$cfg" = metaguard ]; then
    RSS_AFTER=$(status_kib "$MG_PID" VmRSS)
    HWM_AFTER=$(status_kib "$MG_PID" VmHWM)
    MG_INFO="threads $(status_kib "$MG_PID" Threads), records loaded $(metric metaguard_proxy_records_loaded), connections refused $(metric metaguard_proxy_connections_refused_total), decision log lines dropped $(metric metaguard_proxy_decision_log_dropped_total)"
  fi
  # What the cache did over the whole configuration (warm-ups included): an honest label for
  # the allowed-path figure (metaguard: all "off"; metaguard-cached: nearly all "hit").
  local m
  m=$(in_ns "$NODE" curl -s --max-time 2 "$MG_METRICS")
  CACHE_INFO+="$cfg: cache $(awk '/^metaguard_cache_total\{/ { sub(/^metaguard_cache_total\{result="/, ""); sub(/"\}/, ""); printf "%s=%s ", $1, $2 }' <<<"$m")"$'\n'
  MG_METRICS=""
  stop_server "$MG_PID"
}
want metaguard && run_metaguard metaguard "$POLICY"
want metaguard-cached && run_metaguard metaguard-cached "$CACHED_POLICY"

# --- (b), (c) nginx ------------------------------------------------------------------------------
for cfg in nginx-seed nginx-tuned; do
  want "$cfg" || continue
  d=$W/$cfg
  mkdir -p "$d/tmp"
  chmod 755 "$d" "$d/tmp"
  if [ "$LOG" = file ]; then access=$d/access.log; else access=/dev/null; fi
  sed -e "s|@DIR@|$d|g" -e "s|@ACCESS_LOG@|$access|g" -e "s|@LISTEN@|$GW:$PROXY_PORT|g" \
    -e "s|@UPSTREAM@|$IMDS|g" -e "s|@ALLOW_PATH@|$ALLOW_PATH|g" \
    "$BENCH_REPO/conf/bench/$cfg.conf" >"$d/nginx.conf"
  assert_no_listener "$cfg"
  in_ns "$NODE" nginx -t -q -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" ||
    die "nginx rejects $d/nginx.conf: $(cat "$d/error.log" 2>/dev/null)"
  ip netns exec "$NODE" nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;' >"$d/stdout" 2>&1 &
  NGINX_PID=$!
  BENCH_PIDS+=("$NGINX_PID")
  measure "$cfg" "$NGINX_PID"
  stop_server "$NGINX_PID"
done

# --- (d) direct ----------------------------------------------------------------------------------
if want direct; then
  bench_wait_for 10 "the fake upstream from the pod" code_is "$POD" "http://$CLOUD_IP$ALLOW_PATH" 200
  run_wrk direct allowed "http://$CLOUD_IP$ALLOW_PATH"
fi

# --- report --------------------------------------------------------------------------------------
echo
echo "| config | path | req/s | p50 ms | p99 ms | requests | non-2xx/3xx | socket errors | server CPU us/req (user, kernel) | machine CPU us/req | valid |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for cfg in metaguard metaguard-cached nginx-seed nginx-tuned direct; do
  for pname in allowed denied; do
    k="$cfg/$pname"
    [ -n "${RPS[$k]:-}" ] || continue
    # A run counts only if every answer was the expected one and no connection failed.
    if [ "$pname" = allowed ]; then ok=$([ "${NON2XX[$k]}" = 0 ] && echo yes || echo NO)
    else ok=$([ "${NON2XX[$k]}" = "${REQS[$k]}" ] && echo yes || echo NO); fi
    [ "${ERRS[$k]}" = 0 ] || ok=NO
    echo "| $cfg | $pname | ${RPS[$k]} | ${P50[$k]} | ${P99[$k]} | ${REQS[$k]} | ${NON2XX[$k]} | ${ERRS[$k]} | ${CPU[$k]:-n/a} | ${MACHINE[$k]:-n/a} | $ok |"
  done
done
echo

# ratio WHAT A B LIMIT ge|le: prints A/B against the target.
ratio() {
  local what=$1 a=$2 b=$3 limit=$4 dir=$5
  if [ -z "$a" ] || [ -z "$b" ]; then echo "  $what: n/a (not measured)"; return; fi
  awk -v w="$what" -v a="$a" -v b="$b" -v l="$limit" -v d="$dir" 'BEGIN {
    r = (b > 0) ? a / b : 0
    ok = (d == "ge") ? (r >= l) : (r <= l)
    printf "  %s = %s / %s = %.3f  (target %s %s)  %s\n", w, a, b, r, (d == "ge" ? ">=" : "<="), l, ok ? "PASS" : "FAIL"
  }'
}
max_of() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { print (a > b) ? a : b }'; }
echo "Targets (issue 3):"
for mg in metaguard metaguard-cached; do
  ratio "$mg allowed req/s / nginx-tuned allowed req/s" "${RPS[$mg/allowed]:-}" "${RPS[nginx-tuned/allowed]:-}" 1.2 ge
  ratio "$mg allowed req/s / nginx-seed allowed req/s" "${RPS[$mg/allowed]:-}" "${RPS[nginx-seed/allowed]:-}" 2.5 ge
  ratio "$mg allowed p99 / nginx-tuned allowed p99" "${P99[$mg/allowed]:-}" "${P99[nginx-tuned/allowed]:-}" 1.0 le
done
nginx_denied=""
if [ -n "${RPS[nginx-seed/denied]:-}${RPS[nginx-tuned/denied]:-}" ]; then
  nginx_denied=$(max_of "${RPS[nginx-seed/denied]:-}" "${RPS[nginx-tuned/denied]:-}")
fi
ratio "metaguard denied req/s / best nginx denied req/s" "${RPS[metaguard/denied]:-}" "$nginx_denied" 1.0 ge
ratio "metaguard-cached denied req/s / best nginx denied req/s" "${RPS[metaguard-cached/denied]:-}" "$nginx_denied" 1.0 ge
if [ -n "${RPS[metaguard/allowed]:-}" ] && [ -n "${RPS[direct/allowed]:-}" ]; then
  awk -v a="${RPS[metaguard/allowed]}" -v b="${RPS[direct/allowed]}" \
    'BEGIN { printf "  (no target) metaguard allowed req/s / direct req/s (the ceiling) = %.3f\n", a / b }'
fi
# What the uncached allowed path could reach if metaguard-proxy's own code cost nothing: the
# machine's CPU time per request (wrk, upstream, kernel, server) without the server's user time,
# spread over every CPU. Counting all CPUs as busy overstates this ceiling when they were not.
if [ -n "${CPU_USER[metaguard/allowed]:-}" ] && [ -n "${RPS[nginx-tuned/allowed]:-}" ]; then
  awk -v m="${MACHINE[metaguard/allowed]}" -v u="${CPU_USER[metaguard/allowed]}" -v n="$(nproc)" \
    -v t="${RPS[nginx-tuned/allowed]}" 'BEGIN {
    c = n * 1e6 / (m - u)
    printf "  (no target) metaguard allowed, ceiling with zero user-space CPU in the proxy: %d CPUs * 1e6 / (%.1f - %.1f us/req) = %.0f req/s = %.3f x nginx-tuned\n", n, m, u, c, c / t
  }'
fi
if [ -n "$RSS_AFTER" ]; then
  awk -v i="$RSS_IDLE" -v a="$RSS_AFTER" -v h="$HWM_AFTER" -v n="$RECORDS" 'BEGIN {
    printf "metaguard-proxy memory with %d extra pod records: VmRSS %.1f MiB when ready, %.1f MiB after the runs (VmHWM %.1f MiB)  (target <= 20 MiB)  %s\n",
      n, i / 1024, a / 1024, h / 1024, (a / 1024 <= 20) ? "PASS" : "FAIL"
  }'
fi
[ -z "$MG_INFO" ] || echo "metaguard-proxy metrics after the runs: $MG_INFO"
[ -z "$CACHE_INFO" ] || printf 'answer cache (metaguard_cache_total, warm-ups included):\n%s' "$CACHE_INFO"
echo "wrk outputs: $W/wrk-*.txt$([ "${BENCH_KEEP:-0}" = 1 ] || echo ' (removed on exit; --keep to keep them)')"
