#!/usr/bin/env bash
# Runs scripts/bench-proxy.sh several times and prints every round's target ratios and, per
# target, their median. On a shared VM whose speed drifts by tens of percent from one minute to
# the next, one pass compares configurations measured a minute apart; the median of several
# rounds' ratios is the steadier figure. Each round is a whole bench-proxy.sh run (its own
# namespaces, servers and cleanup); options other than --rounds are passed to it.
#
#   sudo scripts/bench-proxy-rounds.sh [--rounds 5] [bench-proxy.sh options, e.g. --only "metaguard nginx-tuned"]
set -euo pipefail
ROUNDS=5
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive number" >&2; exit 2; }
DIR=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d /tmp/mg-bench-rounds.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

for r in $(seq 1 "$ROUNDS"); do
  build=()
  # Build once (unless told not to at all), then reuse the binaries.
  [ "$r" = 1 ] || build=(--no-build)
  echo "== round $r/$ROUNDS ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
  if ! bash "$DIR/bench-proxy.sh" "${build[@]}" "${ARGS[@]}" >"$OUT/round-$r.txt" 2>&1; then
    cat "$OUT/round-$r.txt"
    echo "round $r failed" >&2
    exit 1
  fi
  grep -E '^\| (metaguard|nginx|direct)' "$OUT/round-$r.txt" || true
  # "  WHAT = A / B = RATIO  (target OP LIMIT)  PASS|FAIL" -> WHAT<TAB>RATIO<TAB>OP LIMIT
  awk -F' = ' '/\(target (>=|<=) / && $3 != "" {
      what = $1; sub(/^ +/, "", what)
      split($3, v, " "); t = $3; sub(/.*\(target /, "", t); sub(/\).*/, "", t)
      printf "%s\t%s\t%s\n", what, v[1], t
    }' "$OUT/round-$r.txt" >>"$OUT/ratios.tsv"
  grep -E '^  .*\(target' "$OUT/round-$r.txt" | grep -v 'n/a' || true
done

echo
echo "== medians over $ROUNDS rounds"
[ -s "$OUT/ratios.tsv" ] || { echo "no target was measured"; exit 0; }
awk -F'\t' '
  { key[$1] = 1; n[$1]++; v[$1, n[$1]] = $2; t[$1] = $3; if (!($1 in order)) { order[$1] = ++k; name[k] = $1 } }
  END {
    for (i = 1; i <= k; i++) {
      w = name[i]; m = n[w]
      for (a = 1; a <= m; a++) x[a] = v[w, a]
      for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (x[b] < x[a]) { s = x[a]; x[a] = x[b]; x[b] = s }
      med = (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
      all = ""; for (a = 1; a <= m; a++) all = all sprintf("%s%.3f", a > 1 ? " " : "", v[w, a])
      split(t[w], op, " ")
      ok = (op[1] == ">=") ? (med >= op[2]) : (med <= op[2])
      printf "  %s: median %.3f of [%s]  (target %s)  %s\n", w, med, all, t[w], ok ? "PASS" : "FAIL"
    }
  }' "$OUT/ratios.tsv"
