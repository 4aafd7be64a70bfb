# Shared helpers of scripts/bench-plugin.sh, scripts/bench-proxy.sh and scripts/bench-identity.sh (sourced, not run).
#
# Everything the benchmarks create lives in network namespaces named "mg<tag><pid>..." and in one
# temporary directory; bench_cleanup removes them on any exit. Nothing is done in the root network
# namespace except creating and deleting those namespaces.

BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_TARGET=${CARGO_TARGET_DIR:-$BENCH_REPO/target}
BENCH_BIN=${METAGUARD_BIN_DIR:-$BENCH_TARGET/release}
BENCH_NETNS=()      # namespaces to delete on exit
BENCH_PIDS=()       # background processes to stop on exit
BENCH_WORK=""       # temporary directory (removed on exit unless BENCH_KEEP=1)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bench_require_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (it creates network namespaces)"
}

bench_require_cmds() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null || die "missing command: $c (see scripts/lib/deps.sh)"; done
}

# Builds the named binaries in release mode, unless BENCH_NO_BUILD=1.
# Usage: bench_build "-p metaguard-plugin --bin metaguard" "-p metaguard-tests --bin cni-bench" ...
bench_build() {
  [ "${BENCH_NO_BUILD:-0}" = 1 ] && return 0
  local spec
  for spec in "$@"; do
    log "cargo build --release $spec"
    # shellcheck disable=SC2086
    (cd "$BENCH_REPO" && cargo build --release --quiet $spec) || die "build failed: $spec"
  done
}

bench_bin() {
  local p="$BENCH_BIN/$1"
  [ -x "$p" ] || die "$p not built (cargo build --release, or set METAGUARD_BIN_DIR)"
  printf '%s\n' "$p"
}

bench_mkwork() {
  BENCH_WORK=$(mktemp -d "/tmp/mg-$1.XXXXXX")
  chmod 755 "$BENCH_WORK"
}

bench_netns_add() {
  ip netns add "$1" || die "ip netns add $1"
  BENCH_NETNS+=("$1")
  ip -n "$1" link set lo up
}

# bench_node_cloud NODE CLOUD CLOUD_IP IMDS: a "node" and a "cloud" namespace joined by a veth
# (10.254.0.1/30 on the node, CLOUD_IP/30 in the cloud); the cloud holds the metadata address IMDS
# on its loopback, the node routes IMDS to it and forwards, the cloud routes the pods' 10.99/16 back.
bench_node_cloud() {
  local node=$1 cloud=$2 cloud_ip=$3 imds=$4
  bench_netns_add "$node"
  bench_netns_add "$cloud"
  ip -n "$node" link add up0 type veth peer name up1 netns "$cloud"
  ip -n "$node" addr add 10.254.0.1/30 dev up0
  ip -n "$node" link set up0 up
  ip -n "$cloud" addr add "$cloud_ip/30" dev up1
  ip -n "$cloud" link set up1 up
  ip -n "$cloud" addr add "$imds/32" dev lo
  ip -n "$node" route add "$imds/32" via "$cloud_ip"
  ip -n "$cloud" route add 10.99.0.0/16 via 10.254.0.1
  ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
}

# in_ns NS CMD...: run a command in one of our namespaces (foreground only: a background job must be
# started with `ip netns exec` itself, so that $! is the server's own pid, ip having exec'd it).
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# http_code NS URL: the status code a request gets (000 when it fails).
http_code() { in_ns "$1" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$2" || true; }
code_is() { [ "$(http_code "$1" "$2")" = "$3" ]; }

bench_netns_del() {
  ip netns del "$1" 2>/dev/null || true
  local i
  for i in "${!BENCH_NETNS[@]}"; do
    [ "${BENCH_NETNS[$i]}" = "$1" ] && unset 'BENCH_NETNS[i]'
  done
  return 0
}

# Stops a process we started: SIGTERM, wait up to 5 s, then SIGKILL.
bench_stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
  local rc=$? pid ns i idx=()
  trap - EXIT INT TERM
  for pid in "${BENCH_PIDS[@]}"; do bench_stop_pid "$pid"; done
  # Pods first, the node (with its bridge, iptables and nftables state) last: reverse creation order.
  idx=("${!BENCH_NETNS[@]}")
  for ((i = ${#idx[@]} - 1; i >= 0; i--)); do
    ns=${BENCH_NETNS[${idx[$i]}]}
    # Backstop: anything still running inside our own namespace was started by us.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  if [ -n "$BENCH_WORK" ] && [ -d "$BENCH_WORK" ]; then
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $BENCH_WORK"; else rm -rf "$BENCH_WORK"; fi
  fi
  exit "$rc"
}

bench_trap_cleanup() {
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# Polls a command until it succeeds or the deadline (seconds) passes.
# Usage: bench_wait_for SECONDS DESCRIPTION CMD...
bench_wait_for() {
  local secs=$1 what=$2
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$end" ] && die "timed out after ${secs}s waiting for $what"
    sleep 0.05
  done
}

bench_machine_info() {
  printf 'machine: %s CPUs (%s), kernel %s, load average %s\n' "$(nproc)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(uname -r)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# --- CPU accounting (bench-proxy.sh, bench-identity.sh) ---------------------------------------
# ms VALUE: wrk's "1.23ms" / "456.00us" / "1.02s" in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

# server_pids PID: PID and its child processes (nginx's workers).
server_pids() { echo "$1" "$(cat /proc/"$1"/task/*/children 2>/dev/null | tr '\n' ' ')"; }

# cpu_ns PID: CPU time (ns) used so far by the threads of PID and of its child processes (nginx's
# workers), from schedstat: nanosecond resolution, unlike the clock ticks of /proc/PID/stat.
cpu_ns() {
  local p t ns rest sum=0
  for p in $(server_pids "$1"); do
    for t in /proc/"$p"/task/*/schedstat; do
      read -r ns rest <"$t" 2>/dev/null || continue
      sum=$((sum + ns))
    done
  done
  echo "$sum"
}

# cpu_ticks PID: "user system" clock ticks used so far by PID and its child processes, from
# /proc/PID/stat (coarse, but it splits the time between the server's code and the kernel's).
cpu_ticks() {
  local p u=0 k=0 f
  for p in $(server_pids "$1"); do
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    f=$(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null) || continue
    read -r -a f <<<"$f"
    u=$((u + f[11])) k=$((k + f[12]))
  done
  echo "$u $k"
}

# machine_busy: busy clock ticks of the whole machine so far (all CPUs; /proc/stat without idle
# and iowait): wrk, the server, the fake upstream and the kernel's network work together.
machine_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# wrk_results KEY FILE: the figures of one `wrk --latency` run (FILE) into the caller's RPS, P50,
# P99, REQS, NON2XX and ERRS arrays (declared -A by the caller) under KEY. Dies when FILE holds no
# request rate (wrk failed).
wrk_results() {
  local k=$1 out=$2
  RPS[$k]=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  P50[$k]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  P99[$k]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  REQS[$k]=$(awk '/requests in/ { print $1 }' "$out")
  NON2XX[$k]=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  NON2XX[$k]=${NON2XX[$k]:-0}
  ERRS[$k]=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
  ERRS[$k]=${ERRS[$k]:-0}
  [ -n "${RPS[$k]}" ] || die "could not parse wrk output for $k: $(cat "$out")"
}
