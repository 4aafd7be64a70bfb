#!/usr/bin/env bash
# Makes the Python venv of the identity tests (tests/src/moto.rs): moto[server] as STS and IAM, and
# botocore as the pods' client, pinned by tests/identity/requirements.txt. Safe to repeat: the venv is
# remade only when that file changes. scripts/test.sh runs this before `cargo test`.
#
# Where: $METAGUARD_IDENTITY_VENV, else $CARGO_TARGET_DIR/identity-venv, else target/identity-venv
# (where tests/src/moto.rs looks). PYTHON=... picks the interpreter (3.11 or newer: Debian 12's 3.11.2
# and Debian 13's 3.13 are checked).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REQ=$ROOT/tests/identity/requirements.txt
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${METAGUARD_IDENTITY_VENV:-$TARGET/identity-venv}
PY=${PYTHON:-python3}

want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements-sha256" 2>/dev/null || true)" = "$want" ] && [ -x "$VENV/bin/moto_server" ]; then
    echo "  identity venv: up to date ($VENV)"
    exit 0
fi
command -v "$PY" >/dev/null || {
    echo "identity-venv: $PY not found: install python3 and python3-venv (Debian: scripts/lib/deps.sh), or set PYTHON=" >&2
    exit 1
}
pyver=$("$PY" -c 'import platform; print(platform.python_version())')
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "identity-venv: $PY is Python $pyver; the pins in $REQ need 3.11 or newer (set PYTHON=)" >&2
    exit 1
fi
LOG=$(mktemp "${TMPDIR:-/tmp}/mg-identity-venv.XXXXXX")
trap 'rm -f "$LOG"' EXIT
t0=$SECONDS
echo "  installing moto[server] and botocore into $VENV with Python $pyver (once; pinned by $REQ)"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV" >"$LOG" 2>&1 || {
    cat "$LOG" >&2
    echo "identity-venv: '$PY -m venv' failed: on Debian, apt-get install python3-venv (scripts/lib/deps.sh does)" >&2
    exit 1
}
"$VENV/bin/pip" install --disable-pip-version-check -r "$REQ" >"$LOG" 2>&1 || {
    tail -n 30 "$LOG" >&2
    echo "identity-venv: pip could not install $REQ for Python $pyver." >&2
    if grep -q "from versions: none" "$LOG"; then
        # A pin that does not fit this Python still lists the versions the index has; none at all
        # means the index gave nothing.
        echo "  pip found no version at all of a package: it could not reach the package index" >&2
        echo "  ($(grep -m1 "Looking in indexes" "$LOG" || echo "PyPI")). Check the network, the proxy settings" >&2
        echo "  (HTTPS_PROXY) or PIP_INDEX_URL, then run again." >&2
    else
        echo "  A pin does not support Python $pyver (the pins are checked on 3.11.2 and 3.13.5): set PYTHON=" >&2
        echo "  to one of those, or re-pin as $REQ explains." >&2
    fi
    rm -rf "$VENV"
    exit 1
}
echo "$want" >"$VENV/.requirements-sha256"
echo "  identity venv ready in $((SECONDS - t0))s"
