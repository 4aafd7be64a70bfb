#!/usr/bin/env bash
# Installs the Debian packages metaguard's tests, demo and benchmarks use. Safe to repeat: it only
# calls apt-get when something is missing.
set -euo pipefail
pkgs=(iptables nftables iproute2 containerd runc containernetworking-plugins busybox-static
      nginx wrk socat protobuf-compiler procps psmisc util-linux python3 python3-venv curl jq)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install the stable Rust toolchain" >&2; exit 1; }
