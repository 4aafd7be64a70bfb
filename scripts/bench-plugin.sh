#!/usr/bin/env bash
# Benchmark of the metaguard CNI plugin (issue 2): whole-process wall time of ADD and DEL for
# metaguard, Debian's bridge (with host-local) and portmap, with 0 and with N (default 200) pods
# already on the node, in one run; plus metaguard's peak memory.
#
#   sudo scripts/bench-plugin.sh [--samples 30] [--pods 200] [--warmup 3] [--no-metaguard] [--no-build] [--keep]
#
# Setup: a throwaway "node" network namespace (loopback only, no route out) and one namespace per
# pod. Every plugin runs inside the node namespace (the timing driver is started with
# `ip netns exec <node>` and its children inherit it), so the bridge, portmap's iptables rules and
# metaguard's host-side guard all land in the node namespace; the root namespace is never touched.
# Each pod is attached with the chain bridge(+host-local) -> portmap (one portMappings entry via
# runtimeConfig) -> metaguard, the way a runtime does (see tests/src/bin/cni_bench.rs). Measured
# pods are attached and detached one at a time (ADD chain then DEL chain), so the node keeps its
# pod count during the measurement. Background pods stay until the end.
#
# The timing driver (cni-bench) starts each plugin with posix_spawn/fork+exec from a compiled
# process and reads the monotonic clock around spawn..wait4: the figure is what a runtime waits for,
# with no shell or `ip netns exec` in between. Peak memory is wait4's ru_maxrss (the process and the
# children it waited for). Environment: CARGO_TARGET_DIR (binaries in $CARGO_TARGET_DIR/release),
# METAGUARD_BIN_DIR overrides the binary directory, CNI_PLUGIN_DIR (default /usr/lib/cni).
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "$0")/lib/bench-common.sh"

SAMPLES=30 PODS=200 WARMUP=3 WITH_MG=1
while [ $# -gt 0 ]; do
  case $1 in
    --samples) SAMPLES=$2; shift 2 ;;
    --pods) PODS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --no-metaguard) WITH_MG=0; shift ;;
    --no-build) BENCH_NO_BUILD=1; shift ;;
    --keep) BENCH_KEEP=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done

bench_require_root
bench_require_cmds ip iptables nft timeout
CNI_PLUGIN_DIR=${CNI_PLUGIN_DIR:-/usr/lib/cni}
for p in bridge host-local portmap; do
  [ -x "$CNI_PLUGIN_DIR/$p" ] || die "$CNI_PLUGIN_DIR/$p missing (apt-get install containernetworking-plugins)"
done

builds=("-p metaguard-tests --bin cni-bench")
[ "$WITH_MG" = 1 ] && builds+=("-p metaguard-plugin --bin metaguard")
bench_build "${builds[@]}"
CNI_BENCH=$(bench_bin cni-bench)

bench_trap_cleanup
bench_mkwork bench-plugin
W=$BENCH_WORK
mkdir -p -m 0755 "$W/cni-bin" "$W/cache" "$W/ipam" "$W/state"
# One plugin directory, like a runtime's bin dir: Debian's plugins plus the metaguard under test.
for p in bridge host-local portmap; do ln -s "$CNI_PLUGIN_DIR/$p" "$W/cni-bin/$p"; done
SKIP=()
if [ "$WITH_MG" = 1 ]; then
  ln -s "$(bench_bin metaguard)" "$W/cni-bin/metaguard"
else
  SKIP=(--skip metaguard)
fi
sed "s|@WORK@|$W|g" "$BENCH_REPO/conf/bench/chain.conflist" >"$W/chain.conflist"
RES=$W/results.jsonl

root_rules_before=$(nft list ruleset 2>/dev/null | md5sum)

TAG=mgbp$$
NODE=${TAG}node
bench_netns_add "$NODE"

pod_seq=0
# Usage: run_pod add|cycle LABEL  (creates the pod's namespace; deletes it again after a cycle)
run_pod() {
  local sub=$1 label=$2
  pod_seq=$((pod_seq + 1))
  local pod=${TAG}p$pod_seq
  bench_netns_add "$pod"
  ip netns exec "$NODE" timeout 120 "$CNI_BENCH" "$sub" --conflist "$W/chain.conflist" \
    --netns "/var/run/netns/$pod" --cid "$pod" --ifname eth0 --host-port $((20000 + pod_seq)) \
    --cache "$W/cache" --cni-path "$W/cni-bin" --out "$RES" --label "$label" "${SKIP[@]}" ||
    die "$sub of pod $pod failed (label $label)"
  [ "$sub" = cycle ] && bench_netns_del "$pod"
  return 0
}

bench_machine_info
echo "plugins: bridge+host-local, portmap from $CNI_PLUGIN_DIR ($(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo '?')); metaguard: $([ "$WITH_MG" = 1 ] && bench_bin metaguard || echo skipped)"
echo "iptables: $(iptables --version)"
echo "samples per level: $SAMPLES, background pods: $PODS, warm-up cycles: $WARMUP"
echo

t0=$SECONDS
log "warm-up: $WARMUP pod cycles (not counted)"
for ((i = 0; i < WARMUP; i++)); do run_pod cycle warmup; done

log "level 0: $SAMPLES pod cycles (ADD then DEL) on an empty node"
for ((i = 0; i < SAMPLES; i++)); do run_pod cycle 0; done

log "adding $PODS background pods"
for ((i = 0; i < PODS; i++)); do
  run_pod add bg
  if (((i + 1) % 50 == 0)); then log "  $((i + 1)) background pods"; fi
done
echo "node after $PODS background pods: $(ip netns exec "$NODE" iptables-save 2>/dev/null | grep -c '^-A') iptables rules," \
  "$(ip netns exec "$NODE" nft list tables 2>/dev/null | wc -l) nftables tables," \
  "$(ip -n "$NODE" -o link show | wc -l) links"

log "level $PODS: $SAMPLES pod cycles (ADD then DEL) with $PODS pods on the node"
for ((i = 0; i < SAMPLES; i++)); do run_pod cycle "$PODS"; done
log "measurements done in $((SECONDS - t0))s"

echo
echo "== CNI plugin wall time per process (median and p90 by linear interpolation; bridge includes its host-local exec)"
"$CNI_BENCH" stats --in "$RES" --base 0 --load "$PODS"
ip netns exec "$NODE" "$CNI_BENCH" floor --runs 30
echo
bg_rows=$(grep -c '"label":"bg"' "$RES" || true)
echo "raw samples: $RES ($(wc -l <"$RES") lines, $bg_rows from background pods)$([ "${BENCH_KEEP:-0}" = 1 ] || echo '; use --keep to keep them')"

root_rules_after=$(nft list ruleset 2>/dev/null | md5sum)
if [ "$root_rules_before" = "$root_rules_after" ]; then
  echo "root namespace ruleset: unchanged"
else
  echo "WARNING: the root namespace's nftables ruleset changed during the run (another process, or a bug)"
fi
