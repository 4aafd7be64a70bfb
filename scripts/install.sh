#!/usr/bin/env bash
# Installs metaguard on a plain containerd host (no Kubernetes): builds the binaries, copies the
# CNI plugin into the CNI bin directory and chains it into the CNI configuration containerd uses,
# and optionally installs metaguard-proxy as a hardened systemd service. See docs/install.md.
#
# usage: scripts/install.sh [OPTIONS] [install|uninstall|status] [metaguard-install options...]
#
#   --with-proxy   also install (or, with uninstall, remove) metaguard-proxy, its systemd unit
#                  (conf/metaguard-proxy.service) and a starting configuration in /etc/metaguard
#                  (existing files there are never overwritten)
#   --root DIR     act on a host tree under DIR instead of / (for trying it out; no systemctl)
#   --no-build     use binaries already built (in $METAGUARD_BIN_DIR or the cargo target dir)
#   --debug        build and use the debug profile (default: release)
#
# Everything after the command goes to metaguard-install, e.g.
#   scripts/install.sh install --config '{"proxy": {"ipv4": "10.0.0.1"}}'
#   scripts/install.sh --root /tmp/node install --cni-conf-dir /tmp/node/etc/cni/net.d
# Defaults: --cni-bin-dir /opt/cni/bin --cni-conf-dir /etc/cni/net.d (under --root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOSTROOT=/
WITH_PROXY=0
BUILD=1
PROFILE=release

die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
    --with-proxy) WITH_PROXY=1 ;;
    --root)
        [ $# -ge 2 ] || die "--root needs a directory"
        HOSTROOT=$2
        shift
        ;;
    --root=*) HOSTROOT=${1#--root=} ;;
    --no-build) BUILD=0 ;;
    --debug) PROFILE=debug ;;
    -h | --help)
        sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) break ;;
    esac
    shift
done
CMD=${1:-install}
[ $# -gt 0 ] && shift
case "$CMD" in
install | uninstall | status) ;;
*) die "unknown command '$CMD' (install, uninstall or status)" ;;
esac
[ -d "$HOSTROOT" ] || die "--root $HOSTROOT: no such directory"
HOSTROOT=$(cd "$HOSTROOT" && pwd)
host() { # path on the host tree
    if [ "$HOSTROOT" = / ]; then echo "$1"; else echo "$HOSTROOT$1"; fi
}

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=${METAGUARD_BIN_DIR:-$TARGET/$PROFILE}
if [ "$BUILD" = 1 ] && [ "$CMD" = install ]; then
    pkgs=(-p metaguard-plugin -p metaguard-installer)
    [ "$WITH_PROXY" = 1 ] && pkgs+=(-p metaguard-proxy)
    flags=()
    [ "$PROFILE" = release ] && flags+=(--release)
    echo "building (${PROFILE})..."
    (cd "$ROOT" && cargo build --locked "${flags[@]}" "${pkgs[@]}")
fi
INSTALLER=$BIN_DIR/metaguard-install
if [ ! -x "$INSTALLER" ]; then
    # status and uninstall may run without a build from an installed copy.
    INSTALLER=$(command -v metaguard-install || true)
fi
if [ -z "$INSTALLER" ] || [ ! -x "$INSTALLER" ]; then
    die "metaguard-install not found in $BIN_DIR (build first, or drop --no-build)"
fi

DIRS=(--cni-bin-dir "$(host /opt/cni/bin)" --cni-conf-dir "$(host /etc/cni/net.d)")
systemd_live() { [ "$HOSTROOT" = / ] && [ -d /run/systemd/system ]; }

install_proxy() {
    local proxy=$BIN_DIR/metaguard-proxy
    [ -x "$proxy" ] || die "$proxy not found (build with --with-proxy, or drop --no-build)"
    local bin unit etc
    bin=$(host /usr/local/bin)
    unit=$(host /etc/systemd/system)
    etc=$(host /etc/metaguard)
    mkdir -p "$bin" "$unit" "$etc"
    # Write then rename: a running daemon keeps its old inode until restarted.
    install -m 0755 "$proxy" "$bin/.metaguard-proxy.new" && mv -f "$bin/.metaguard-proxy.new" "$bin/metaguard-proxy"
    install -m 0644 "$ROOT/conf/metaguard-proxy.service" "$unit/metaguard-proxy.service"
    if [ ! -e "$etc/policy.toml" ]; then
        cat >"$etc/policy.toml" <<'EOF'
# metaguard-proxy policy (docs/policy.md). Pods get no metadata unless a selector or their
# annotation (limited to annotation_policies) says otherwise.
default = "deny-all"
annotation_key = "metaguard.io/policy"
annotation_policies = ["deny-all", "aws"]
EOF
        chmod 0644 "$etc/policy.toml"
        echo "wrote $etc/policy.toml"
    fi
    if [ ! -e "$etc/proxy.toml" ]; then
        cat >"$etc/proxy.toml" <<'EOF'
# metaguard-proxy configuration. Every key, with its default: conf/metaguard-proxy.toml in the
# metaguard repository; reference: docs/proxy.md.
state_dir = "/run/metaguard"
policy = "/etc/metaguard/policy.toml"
admin = "127.0.0.1:9169"
# By default the proxy listens on 0.0.0.0 and :: (ports 8169-8171). To serve only the pods,
# listen on the bridge gateway instead (the plugin's default proxy address), e.g.:
# listen = ["10.88.0.1"]
EOF
        chmod 0644 "$etc/proxy.toml"
        echo "wrote $etc/proxy.toml"
    fi
    "$bin/metaguard-proxy" check-policy "$etc/policy.toml" >/dev/null || die "$etc/policy.toml does not check"
    echo "installed $bin/metaguard-proxy and $unit/metaguard-proxy.service"
    if systemd_live; then
        systemctl daemon-reload
        systemctl enable --now metaguard-proxy.service
        systemctl reload-or-restart metaguard-proxy.service
        systemctl --no-pager --lines=0 status metaguard-proxy.service || true
    else
        echo "(systemd not running here or --root given: start it with systemctl enable --now metaguard-proxy)"
    fi
}

remove_proxy() {
    if systemd_live; then
        systemctl disable --now metaguard-proxy.service 2>/dev/null || true
    fi
    rm -f "$(host /etc/systemd/system/metaguard-proxy.service)" "$(host /usr/local/bin/metaguard-proxy)"
    systemd_live && systemctl daemon-reload
    echo "removed metaguard-proxy and its unit (configuration in $(host /etc/metaguard) kept)"
}

case "$CMD" in
install)
    # The proxy first: pods chained from the next second on are served at once.
    [ "$WITH_PROXY" = 1 ] && install_proxy
    "$INSTALLER" install "${DIRS[@]}" --plugin "$BIN_DIR/metaguard" "$@"
    ;;
uninstall)
    "$INSTALLER" uninstall "${DIRS[@]}" "$@"
    [ "$WITH_PROXY" = 1 ] && remove_proxy
    ;;
status)
    rc=0
    "$INSTALLER" status "${DIRS[@]}" "$@" || rc=$?
    if systemd_live; then
        echo "metaguard-proxy.service: $(systemctl is-active metaguard-proxy.service || true)"
    fi
    exit "$rc"
    ;;
esac
exit 0
