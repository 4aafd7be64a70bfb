#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks formatting and lints, builds, then runs unit,
# integration (real netns, nftables, bridge/host-local plugins) and end-to-end (containerd) tests.
# Run as root on a disposable Linux machine: `sudo scripts/test.sh`. Fails loudly on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh must run as root (it creates network namespaces and runs containerd)" >&2
  exit 1
fi

step "installing system packages"
bash scripts/lib/deps.sh

# Under sudo, PATH no longer has the user's ~/.cargo/bin: find the toolchain (or say what to run).
# shellcheck source=lib/cargo-env.sh
. scripts/lib/cargo-env.sh
cargo_env

step "cargo fmt --check"
cargo fmt --all -- --check

step "no import circles between modules (plugin/src, proxy/src)"
python3 scripts/check-import-cycles.py --self-test
python3 scripts/check-import-cycles.py plugin/src proxy/src

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "building binaries"
cargo build --workspace --bins

step "identity tests' Python venv (moto[server], botocore; once, under the target directory)"
bash scripts/lib/identity-venv.sh

step "unit, integration and end-to-end tests"
# The adversarial corpus runs on its own below, uncaptured, so its summary table is in the output.
cargo test --workspace --no-fail-fast -- --test-threads=2 --skip adversarial_corpus

step "adversarial suite (summary: cases by category, passed, failed, requests that reached the fake upstream)"
cargo test -p metaguard-tests --test adversarial -- --nocapture

if [ -x scripts/check-kubernetes.sh ]; then
  step "Kubernetes manifest checks"
  bash scripts/check-kubernetes.sh
fi

step "all test steps passed"
