# shellcheck shell=bash
# Sourced by scripts/demo.sh and scripts/test.sh (bash): finds the Rust toolchain when they run as
# root under sudo.
#
# sudo resets PATH (Debian's `secure_path`), so a toolchain installed with rustup by the user who
# typed `sudo` (in ~/.cargo/bin, with its toolchains in ~/.rustup) is not found as is. cargo_env
# looks, in order: cargo on PATH; $CARGO_HOME/bin; the sudo user's ~/.cargo/bin (with RUSTUP_HOME
# set to their ~/.rustup, so the rustup proxies find the toolchain); root's ~/.cargo/bin. It exports
# what it found, or prints exactly what to run and returns 1.
#
# cargo still runs as root: the tests need root, and one owner for target/ keeps the demo and the
# tests usable in either order. Crates it downloads go to root's cargo home (not the user's).

cargo_env() {
  local home="" d
  if command -v cargo >/dev/null 2>&1; then
    return 0
  fi
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    home=$(getent passwd "$SUDO_USER" | cut -d: -f6 || true)
  fi
  for d in "${CARGO_HOME:+$CARGO_HOME/bin}" "${home:+$home/.cargo/bin}" "${HOME:+$HOME/.cargo/bin}" /root/.cargo/bin; do
    [ -n "$d" ] && [ -x "$d/cargo" ] || continue
    export PATH="$d:$PATH"
    # A rustup install: its proxies need the RUSTUP_HOME that belongs with this cargo.
    if [ -z "${RUSTUP_HOME:-}" ] && [ -d "$(dirname "$d")/../.rustup" ]; then
      RUSTUP_HOME=$(cd "$(dirname "$d")/../.rustup" && pwd)
      export RUSTUP_HOME
    fi
    if cargo --version >/dev/null 2>&1; then
      echo "  using the Rust toolchain in $d"
      return 0
    fi
    echo "found $d/cargo, but it does not run:" >&2
    cargo --version >&2 || true
    return 1
  done
  {
    echo "cargo not found (PATH=$PATH)."
    echo "Install the stable Rust toolchain as your own user (rustup, as on https://rustup.rs), then run"
    echo "this script again with sudo: it looks in \$SUDO_USER's ~/.cargo/bin. If cargo is somewhere else, pass"
    echo "your PATH through sudo:"
    echo "  sudo env \"PATH=\$PATH\" ${0#"$PWD"/}"
  } >&2
  return 1
}
