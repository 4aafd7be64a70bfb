#!/usr/bin/env bash
# Installs the Debian packages metaguard uses. Safe to repeat: apt-get runs only when something is
# missing.
#
#   bash scripts/lib/deps.sh          everything: tests, demo and benchmarks (scripts/test.sh runs this)
#   bash scripts/lib/deps.sh demo     only what scripts/demo.sh needs (no protoc, nginx, wrk, Python)
#
# Both include what a minimal Debian lacks for building Rust code: a C compiler and the C library's
# development files (rustc links through `cc`) and CA certificates (cargo and pip fetch over TLS).
# Prints one line per phase (apt-get update, apt-get install) with the time it took; apt's own
# output is shown only when it fails.
set -euo pipefail

what=${1:-all}
build=(gcc libc6-dev ca-certificates)
# scripts/lab.sh and scripts/demo.sh: namespaces, nftables, containerd + runc, Debian's CNI plugins,
# the container's busybox, and the tools the scripts call.
demo=(iproute2 nftables containerd runc containernetworking-plugins busybox-static procps util-linux
      mount curl jq)
# The test suite and the benchmarks on top: protoc for the CRI client (tests/src/cri.rs), iptables
# for the adversarial suite, nginx + wrk + socat for the benchmarks, Python (and its venv module) for
# the Kubernetes checks, the identity tests' moto and botocore (scripts/lib/identity-venv.sh) and the
# import-circle check, and Prometheus's Python client, whose exposition-format parser checks
# the proxy's /metrics output (proxy/src/metrics.rs).
rest=(iptables nginx wrk socat protobuf-compiler psmisc python3 python3-venv python3-prometheus-client)
case $what in
  demo) pkgs=("${build[@]}" "${demo[@]}") ;;
  all) pkgs=("${build[@]}" "${demo[@]}" "${rest[@]}") ;;
  *) echo "usage: scripts/lib/deps.sh [all|demo]" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/lib/deps.sh must run as root (it installs packages with apt-get)" >&2
  exit 1
fi
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null || {
  echo "apt-get not found: metaguard's scripts install their packages on Debian (12 or 13) or a derivative;" >&2
  echo "elsewhere install the equivalents of: ${pkgs[*]}" >&2
  exit 1
}

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "  system packages: all ${#pkgs[@]} present"
  exit 0
fi

LOG=$(mktemp "${TMPDIR:-/tmp}/metaguard-apt.XXXXXX")
trap 'rm -f "$LOG"' EXIT
# phase TITLE CMD...: one line, "TITLE ... Ns", with the command's output only when it fails.
phase() {
  local title=$1 t0=$SECONDS
  shift
  printf '  %-58s ' "$title ..."
  if "$@" >"$LOG" 2>&1; then
    printf '%ss\n' "$((SECONDS - t0))"
  else
    local rc=$?
    printf 'failed after %ss (exit %s)\n' "$((SECONDS - t0))" "$rc"
    cat "$LOG" >&2
    echo "scripts/lib/deps.sh: '$*' failed" >&2
    exit "$rc"
  fi
}

export DEBIAN_FRONTEND=noninteractive
phase "apt-get update" apt-get update -q
phase "apt-get install ${#missing[@]} packages (${missing[*]:0:4}$([ "${#missing[@]}" -gt 4 ] && echo ", ..."))" \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
