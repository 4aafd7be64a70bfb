#!/usr/bin/env bash
# Runs the README's two set-up commands the way a newcomer would, on a fresh Debian: demo first,
# then the tests, then the demo again, and prints each one's exit code and time.
#
#   sudo scripts/fresh-machine.sh [--suite bookworm|trixie] [--keep] [--dir DIR] [--repo DIR]
#
# The "machine" is a clean Debian root made with mmdebstrap (minbase: Essential packages and apt,
# plus sudo and passwd to have a user), with a user `newcomer` who may sudo. Copied in from this
# host, because this machine's package registries need them: the apt sources (with the suite
# replaced when --suite differs) and apt's auth, key and Acquire (proxy, validity) settings, the
# resolver configuration, the local CA certificates (/usr/local/share/ca-certificates) and pip's
# configuration (/etc/pip.conf, root's ~/.config/pip, PIP_* variables). Nothing else of the host is
# in it but the Rust toolchain, bind-mounted read-only where rustup would have put it for the
# newcomer (~/.cargo/bin and ~/.rustup), and the repository's working tree (tracked and untracked,
# not ignored files; no target/), copied to ~/metaguard. --repo takes the tree of another checkout
# (for example a clean clone of a commit while this working tree is being edited).
#
# The commands are read from the README's first ```sh block and run as the newcomer through a
# login shell, so `sudo` resets PATH exactly as on a real machine. In a private mount namespace,
# /proc, /sys, /dev and a fresh /run are mounted into the root (the tests create network
# namespaces and run containerd) and the root is made that namespace's / with pivot_root (the
# host's tree is detached). Everything runs in its own PID namespace too: the mounts and every
# process started in there go away with the namespaces whatever happens, and the root is deleted
# unless --keep.
# Logs: DIR/logs/{1-demo,2-tests,3-demo}.log. Slow (the test suite on a cold build): 20-30 min
# on 2 cores. Exit status: 0 when all three commands exit 0.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$REPO/scripts/fresh-machine.sh
USER_NAME=newcomer

die() { printf 'fresh-machine: %s\n' "$*" >&2; exit 1; }
log() { printf '[fresh-machine] %s\n' "$*"; }

# --- inside the private mount namespace ---------------------------------------------------------
if [ "${1:-}" = --inner ]; then
  ROOT=$2 LOGS=$3 TOOL_BIN=$4 TOOL_RUSTUP=$5
  shift 5
  cmds=("$@")
  home=$ROOT/home/$USER_NAME
  mount --make-rprivate /
  # The root becomes / of this mount namespace (pivot_root, not chroot): `ip netns` remounts /, and
  # `nsenter -m` (the lab enters containerd's mount namespace) puts a process at the namespace's
  # root, which after a mere chroot would be the host's.
  mount --bind "$ROOT" "$ROOT"
  mount -t proc proc "$ROOT/proc"
  mount --rbind /sys "$ROOT/sys"
  mount --rbind /dev "$ROOT/dev"
  mount -t tmpfs -o mode=0755 tmpfs "$ROOT/run"
  mkdir -p "$ROOT/run/lock"
  mkdir -p "$home/.cargo/bin" "$home/.rustup"
  mount --bind "$TOOL_BIN" "$home/.cargo/bin"
  mount -o remount,bind,ro "$home/.cargo/bin"
  mount --bind "$TOOL_RUSTUP" "$home/.rustup"
  mount -o remount,bind,ro "$home/.rustup"
  # The logs, the one host directory the machine can write (it does not look there).
  mkdir -p "$ROOT/var/log/fresh-machine"
  mount --bind "$LOGS" "$ROOT/var/log/fresh-machine"
  mkdir -p "$ROOT/.host"
  cd "$ROOT"
  pivot_root . .host
  cd /
  umount -l /.host
  rmdir /.host
  trap 'log "stopped"; exit 143' TERM INT
  results=()
  overall=0
  n=0
  for c in "${cmds[@]}"; do
    n=$((n + 1))
    name=$(sed 's/.*scripts\///; s/\.sh.*//' <<<"$c")
    logf=$n-$name.log
    log "$n/${#cmds[@]}: $USER_NAME\$ $c   (log: $LOGS/$logf)"
    t0=$SECONDS
    set +e
    # A login shell as the newcomer, in the repository, with no terminal.
    /usr/sbin/runuser -l "$USER_NAME" -c "cd ~/metaguard && $c" </dev/null 2>&1 | tee "/var/log/fresh-machine/$logf"
    rc=${PIPESTATUS[0]}
    set -e
    secs=$((SECONDS - t0))
    results+=("$(printf '%-26s rc=%-3s %4ss (%dm%02ds)' "$c" "$rc" "$secs" $((secs / 60)) $((secs % 60)))")
    log "$c: rc=$rc after ${secs}s"
    [ "$rc" -eq 0 ] || overall=1
  done
  echo
  log "summary ($(. /etc/os-release && echo "$PRETTY_NAME"), python3 $(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo none)):"
  for r in "${results[@]}"; do log "  $r"; done
  exit "$overall"
fi

# --- outside -------------------------------------------------------------------------------------
SUITE=""
KEEP=0
DIR=""
SRC=$REPO
while [ $# -gt 0 ]; do
  case $1 in
    --suite) SUITE=${2:?--suite needs a value}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --repo) SRC=$(cd "${2:?--repo needs a value}" && pwd); shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run as root: sudo scripts/fresh-machine.sh"
. /etc/os-release
HOST_SUITE=${VERSION_CODENAME:-}
[ -n "$HOST_SUITE" ] || die "cannot tell this host's Debian codename from /etc/os-release"
SUITE=${SUITE:-$HOST_SUITE}

# The README's two commands: the first ```sh block, comments dropped.
mapfile -t README_CMDS < <(awk '/^```sh$/ { inblock = 1; next } inblock && /^```/ { exit } inblock' "$SRC/README.md" |
  sed 's/[[:space:]]*#.*$//; /^[[:space:]]*$/d')
[ "${#README_CMDS[@]}" -eq 2 ] || die "expected two commands in the README's first sh block, found: ${README_CMDS[*]:-none}"
CMDS=("${README_CMDS[0]}" "${README_CMDS[1]}" "${README_CMDS[0]}")

# The Rust toolchain: the directory holding cargo (rustup's proxies, unresolved: they are one binary
# named by argv[0]) and rustup's home with the toolchains.
TOOL_BIN=$(dirname "$(command -v cargo)") || die "cargo not found: this script bind-mounts the host's Rust toolchain"
TOOL_RUSTUP=${RUSTUP_HOME:-$HOME/.rustup}
[ -d "$TOOL_RUSTUP/toolchains" ] || die "no rustup home at $TOOL_RUSTUP (set RUSTUP_HOME); only a rustup toolchain can be mounted"

if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null; } ||
    die "could not install mmdebstrap"
fi

DIR=${DIR:-/var/tmp/metaguard-fresh-$(date +%Y%m%d-%H%M%S)}
ROOT=$DIR/root
LOGS=$DIR/logs
mkdir -p "$DIR" "$LOGS"
[ ! -e "$ROOT" ] || die "$ROOT exists (a previous run with --keep?): remove it or give another --dir"
STAGE=$DIR/stage
mkdir -p "$STAGE"

INNER=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # unshare --kill-child: when unshare goes, the namespace's first process is killed, and with it
  # every process of the PID namespace (tests, containerd, shims).
  if [ -n "$INNER" ] && kill -0 "$INNER" 2>/dev/null; then
    log "stopping the machine's processes"
    kill -TERM "$INNER" 2>/dev/null || true
    wait "$INNER" 2>/dev/null || true
  fi
  # The mounts lived in the private namespace; refuse to delete anything still mounted here.
  if grep -qF " $ROOT" /proc/self/mountinfo; then
    log "mounts still under $ROOT (left in place, not deleted):"
    grep -F " $ROOT" /proc/self/mountinfo | awk '{print "  " $5}'
  elif [ "$KEEP" -eq 1 ]; then
    log "kept $ROOT"
  elif [ -d "$ROOT" ]; then
    rm -rf --one-file-system "$ROOT" "$STAGE"
  fi
  log "logs in $LOGS"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- apt sources and settings of this host --------------------------------------------------------
mirrors=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && grep -qvE '^[[:space:]]*(#|$)' "$f" || continue
  out=$STAGE/$(basename "$f")
  [ "$(basename "$f")" != sources.list ] || out=$STAGE/host.list
  sed "s/\b$HOST_SUITE\b/$SUITE/g" "$f" >"$out"
  mirrors+=("$out")
done
[ "${#mirrors[@]}" -gt 0 ] || die "no apt sources found in /etc/apt"
aptopts=()
for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] && grep -q 'Acquire' "$f" && aptopts+=(--aptopt="$f")
done
# Keys and credentials apt may need, copied before the first download.
setup_copy='mkdir -p "$1/etc/apt/auth.conf.d" "$1/etc/apt/trusted.gpg.d" "$1/etc/apt/keyrings";
  for f in /etc/apt/auth.conf /etc/apt/trusted.gpg; do [ ! -f "$f" ] || cp -a "$f" "$1$f"; done;
  for d in auth.conf.d trusted.gpg.d keyrings; do cp -a /etc/apt/$d/. "$1/etc/apt/$d/" 2>/dev/null || true; done'

log "building a clean Debian $SUITE root (mmdebstrap, minbase) in $ROOT"
t0=$SECONDS
mmdebstrap --variant=minbase --include=sudo,passwd --mode=root --format=directory \
  "${aptopts[@]}" --setup-hook="$setup_copy" \
  "$SUITE" "$ROOT" "${mirrors[@]}" >"$LOGS/0-mmdebstrap.log" 2>&1 ||
  { tail -30 "$LOGS/0-mmdebstrap.log" >&2; die "mmdebstrap failed (log: $LOGS/0-mmdebstrap.log)"; }
log "root built in $((SECONDS - t0))s"

# --- what the registries here need: resolver, CA certificates, pip configuration ----------------
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# As an installer writes it (sudo warns when it cannot resolve the host's own name).
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$(hostname)" >"$ROOT/etc/hosts"
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi
[ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$ROOT/etc/pip.conf"
pip_env=$(env | grep -E '^PIP_[A-Z0-9_]+=' | sort || true)
if [ -n "$pip_env" ]; then
  # PIP_FOO_BAR=x is pip's option foo-bar; as a site-wide file it survives sudo's env_reset.
  mkdir -p "$ROOT/etc/xdg/pip"
  {
    echo "# PIP_* variables of the host that made this root (scripts/fresh-machine.sh)"
    echo "[global]"
    while IFS='=' read -r k v; do
      k=${k#PIP_}
      k=${k,,}
      echo "${k//_/-} = $v"
    done <<<"$pip_env"
  } >"$ROOT/etc/xdg/pip/pip.conf"
fi

# --- the newcomer: a user with sudo, rustup's PATH set-up, the repository -----------------------
chroot "$ROOT" useradd -m -s /bin/bash "$USER_NAME"
echo "$USER_NAME ALL=(ALL) NOPASSWD: ALL" >"$ROOT/etc/sudoers.d/$USER_NAME"
chmod 0440 "$ROOT/etc/sudoers.d/$USER_NAME"
home=$ROOT/home/$USER_NAME
mkdir -p "$home/.cargo"
# What rustup's installer adds for its user.
cat >"$home/.cargo/env" <<'EOF'
case ":${PATH}:" in
  *:"$HOME/.cargo/bin":*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac
EOF
echo '. "$HOME/.cargo/env"' >>"$home/.profile"
echo '. "$HOME/.cargo/env"' >>"$home/.bashrc"
mkdir -p "$home/metaguard"
(cd "$SRC" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  sort -zu | tar --null -T - -cf -) | tar -xf - -C "$home/metaguard"
chroot "$ROOT" chown -R "$USER_NAME:$USER_NAME" "/home/$USER_NAME"
log "user $USER_NAME with sudo; repository copied to /home/$USER_NAME/metaguard ($(cd "$home/metaguard" && find . -type f | wc -l) files)"
log "toolchain: $TOOL_BIN -> ~/.cargo/bin, $TOOL_RUSTUP -> ~/.rustup (read-only)"
log "commands (from README.md): ${CMDS[0]}; then ${CMDS[1]}; then ${CMDS[2]} again"

# Own mount and PID namespaces: nothing mounted or started in there outlives it. In the background
# so that an interrupt reaches cleanup (which stops it) at once.
unshare --mount --propagation private --pid --fork --kill-child -- bash "$SELF" --inner "$ROOT" "$LOGS" "$TOOL_BIN" "$TOOL_RUSTUP" "${CMDS[@]}" &
INNER=$!
set +e
wait "$INNER"
rc=$?
set -e
INNER=""
exit "$rc"
