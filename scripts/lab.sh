#!/usr/bin/env bash
# The metaguard lab: an isolated world on one machine, built from network namespaces.
#
#   cloud netns  ── veth ──  node netns ── bridge mgbr0 ── pods (containerd + runc, `ctr run --cni`)
#   fake-metadata at           containerd, metaguard-proxy,
#   169.254.169.254,           CNI: bridge + host-local + metaguard
#   [fd00:ec2::254],
#   100.100.100.200
#
# Nothing touches the root namespace's network: the two namespaces are joined only to each other,
# there is no default route anywhere, and the node routes only the metadata addresses to the cloud.
# containerd and ctr run in a private mount namespace where the lab's own directories are mounted
# over /etc/cni/net.d, /opt/cni/bin and /run/containerd (ctr 1.6 hard-codes the CNI paths), with
# throwaway overlays on /etc, /opt and /var/lib so nothing they write reaches the host's files.
#
# Usage (root): scripts/lab.sh [COMMAND] [ARGS]   (see `scripts/lab.sh help`)
# Environment:
#   LAB_NAME           lab name, also the prefix of its namespaces (default mglab; must start with "mg")
#   METAGUARD_BIN_DIR  directory with metaguard, metaguard-proxy, fake-metadata, mgcurl
#                      (default: the newest of $CARGO_TARGET_DIR/{release,debug} or target/{release,debug})
#   LAB_POLICY         policy file for metaguard-proxy (default conf/lab/policy.toml)
#   LAB_PROXY=0        do not start metaguard-proxy;  LAB_GUARD=0  conflist without metaguard
#   LAB_SANDBOX_IMAGE  CRI sandbox image name written in containerd's config
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$REPO/scripts/lab.sh
LAB_NAME=${LAB_NAME:-mglab}
LAB_ROOT=/run/metaguard-lab
LAB=$LAB_ROOT/$LAB_NAME
NODE_NS=$LAB_NAME-node
CLOUD_NS=$LAB_NAME-cloud
CTR_NS=$LAB_NAME
NET_NAME=metaguard-lab
SOCK=$LAB/containerd/containerd.sock
ROOTFS=$LAB/rootfs
RECORD=$LAB/fake-record.jsonl
DECISIONS=$LAB/decisions.jsonl
STATE_DIR=$LAB/state
ADMIN=127.0.0.1:9169

# Addresses. Pods: 10.89.0.0/24 and fd00:89::/64 behind the bridge mgbr0. Node <-> cloud link:
# 10.254.254.0/30 and fd00:254::/64.
POD4=10.89.0.0/24 GW4=10.89.0.1
POD6=fd00:89::/64 GW6=fd00:89::1
LINK4_NODE=10.254.254.1 LINK4_CLOUD=10.254.254.2
LINK6_NODE=fd00:254::1 LINK6_CLOUD=fd00:254::2
MD4=169.254.169.254 MD6=fd00:ec2::254 ALI=100.100.100.200
# fake-metadata also listens on this port, so "another port refused" is the guard's doing.
OTHER_PORT=8080

log() { printf '[lab] %s\n' "$*" >&2; }
die() { printf '[lab] error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, containerd)"; }

check_name() {
  [[ $LAB_NAME =~ ^mg[a-z0-9-]{1,20}$ ]] || die "LAB_NAME must match ^mg[a-z0-9-]{1,20}\$ (got '$LAB_NAME')"
}

# --- binaries ----------------------------------------------------------------------------------

bin_dir() {
  if [ -n "${METAGUARD_BIN_DIR:-}" ]; then
    echo "$METAGUARD_BIN_DIR"
    return
  fi
  local target=${CARGO_TARGET_DIR:-$REPO/target} best="" d
  for d in "$target/release" "$target/debug"; do
    [ -x "$d/metaguard" ] || continue
    if [ -z "$best" ] || [ "$d/metaguard" -nt "$best/metaguard" ]; then best=$d; fi
  done
  [ -n "$best" ] || die "no built binaries under $target: run 'cargo build --workspace --bins' (or set METAGUARD_BIN_DIR)"
  echo "$best"
}

check_tools() {
  local t
  for t in ip nsenter unshare containerd ctr runc busybox curl setsid; do
    command -v "$t" >/dev/null || die "'$t' not found (scripts/lib/deps.sh installs what the lab needs)"
  done
  for t in bridge host-local loopback; do
    [ -x "/usr/lib/cni/$t" ] || die "/usr/lib/cni/$t not found (package containernetworking-plugins)"
  done
}

# --- processes ---------------------------------------------------------------------------------

# pid from a pid file, only if that process is alive and still the program we started.
live_pid() { # FILE COMM
  local f=$1 comm=$2 pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
  echo "$pid"
}

# Whether PID is a live process (a zombie is not).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

containerd_pid() { live_pid "$LAB/containerd.pid" containerd; }
proxy_pid() { live_pid "$LAB/proxy.pid" metaguard-proxy; }
fake_pid() { live_pid "$LAB/fake.pid" fake-metadata; }

# Polls CMD until it succeeds or SECONDS pass; gives up at once when process PID has exited (a
# daemon that died on start).
wait_alive_until() { # SECONDS DESCRIPTION PID CMD...
  local secs=$1 what=$2 pid=$3
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    alive "$pid" || { log "$what: the process exited"; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 0.1
  done
}

# Runs a command in the node: containerd's mount and network namespaces when containerd runs,
# else the node's network namespace alone.
in_node() {
  local pid
  if pid=$(containerd_pid); then
    nsenter -t "$pid" -m -n -- "$@"
  else
    ip netns exec "$NODE_NS" "$@"
  fi
}

lab_ctr() { in_node ctr --address "$SOCK" --namespace "$CTR_NS" "$@"; }

# Sends TERM, waits, then KILL, to each pid given (only ones still alive).
stop_pids() { # PID...
  local p live=() deadline
  for p in "$@"; do alive "$p" && live+=("$p"); done
  [ "${#live[@]}" -gt 0 ] || return 0
  kill -TERM "${live[@]}" 2>/dev/null || true
  deadline=$((SECONDS + 5))
  while [ "$SECONDS" -lt "$deadline" ]; do
    local left=()
    for p in "${live[@]}"; do alive "$p" && left+=("$p"); done
    [ "${#left[@]}" -gt 0 ] || return 0
    sleep 0.1
  done
  kill -KILL "${live[@]}" 2>/dev/null || true
  for p in "${live[@]}"; do
    deadline=$((SECONDS + 5))
    while alive "$p" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
  done
}

# --- pieces of `up` ----------------------------------------------------------------------------

make_dirs() {
  mkdir -p "$LAB_ROOT"
  mkdir "$LAB" 2>/dev/null || die "$LAB exists: the lab '$LAB_NAME' is up (or half up); run 'scripts/lab.sh down' first"
  mkdir -p "$LAB"/{cni/net.d,cni/bin,cni/ipam,state,netns,run-containerd} \
    "$LAB"/containerd/{root,state,opt} \
    "$LAB"/overlay/{etc,opt,var-lib}/{upper,work}
  # metaguard refuses a state directory that group or others can write, whatever the umask.
  chmod 0755 "$LAB/state"
  : >"$RECORD"
  : >"$DECISIONS"
}

make_networks() {
  log "namespaces $NODE_NS and $CLOUD_NS"
  ip netns add "$NODE_NS"
  ip netns add "$CLOUD_NS"
  local ns
  for ns in "$NODE_NS" "$CLOUD_NS"; do
    ip -n "$ns" link set lo up
    # No duplicate address detection for the lab's own links and the bridge: addresses are usable
    # at once (pods' own interfaces keep the kernel default).
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  done
  # The veth pair is created inside the node namespace with its peer moved straight into the cloud
  # namespace: neither end ever exists in the root namespace.
  ip -n "$NODE_NS" link add cloud0 type veth peer name node0 netns "$CLOUD_NS"
  ip -n "$NODE_NS" addr add "$LINK4_NODE/30" dev cloud0
  ip -n "$NODE_NS" addr add "$LINK6_NODE/64" dev cloud0 nodad
  ip -n "$NODE_NS" link set cloud0 up
  ip -n "$CLOUD_NS" addr add "$LINK4_CLOUD/30" dev node0
  ip -n "$CLOUD_NS" addr add "$LINK6_CLOUD/64" dev node0 nodad
  ip -n "$CLOUD_NS" link set node0 up
  # The metadata addresses live in the cloud (on lo: this kernel has no dummy links).
  ip -n "$CLOUD_NS" addr add "$MD4/32" dev lo
  ip -n "$CLOUD_NS" addr add "$ALI/32" dev lo
  ip -n "$CLOUD_NS" addr add "$MD6/128" dev lo nodad
  # Node: only the metadata addresses go to the cloud. Cloud: only the pod ranges come back (so a
  # pod without metaguard really would reach the fake service: the lab shows what the guard stops).
  ip -n "$NODE_NS" route add "$MD4/32" via "$LINK4_CLOUD" dev cloud0
  ip -n "$NODE_NS" route add "$ALI/32" via "$LINK4_CLOUD" dev cloud0
  ip -n "$NODE_NS" route add "$MD6/128" via "$LINK6_CLOUD" dev cloud0
  ip -n "$CLOUD_NS" route add "$POD4" via "$LINK4_NODE" dev node0
  ip -n "$CLOUD_NS" route add "$POD6" via "$LINK6_NODE" dev node0
}

make_rootfs() {
  local bindir=$1 a lib
  log "container root filesystem (busybox-static + mgcurl) in $ROOTFS"
  mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,run,var}
  chmod 1777 "$ROOTFS/tmp"
  local bb
  bb=$(command -v busybox)
  # Must be static: the root filesystem has no libraries for it.
  if ldd "$bb" >/dev/null 2>&1; then die "$bb is dynamically linked: install busybox-static"; fi
  cp "$bb" "$ROOTFS/bin/busybox"
  # The equivalent of `busybox --install -s`, done from outside so no chroot is needed.
  while read -r a; do
    [ "$a" = bin/busybox ] && continue
    ln -sf /bin/busybox "$ROOTFS/$a"
  done < <("$ROOTFS/bin/busybox" --list-full)
  cp "$bindir/mgcurl" "$ROOTFS/bin/mgcurl"
  # mgcurl is a normal (dynamically linked) Rust binary: bring its libraries along.
  while read -r lib; do
    mkdir -p "$ROOTFS$(dirname "$lib")"
    cp -L "$lib" "$ROOTFS$lib"
  done < <(ldd "$bindir/mgcurl" | grep -o '/[^ ]*' | sort -u)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ROOTFS/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$ROOTFS/etc/hosts"
  : >"$ROOTFS/etc/resolv.conf"
}

write_cni() {
  local bindir=$1 p
  for p in bridge host-local loopback; do install -m 0755 "/usr/lib/cni/$p" "$LAB/cni/bin/$p"; done
  # Installed the way an operator would: write under a temporary name, then rename.
  install -m 0755 "$bindir/metaguard" "$LAB/cni/bin/.metaguard.tmp"
  mv -f "$LAB/cni/bin/.metaguard.tmp" "$LAB/cni/bin/metaguard"
  local guard=""
  if [ "${LAB_GUARD:-1}" != 0 ]; then
    guard=$(cat <<EOF
,
    {
      "type": "metaguard",
      "stateDir": "$STATE_DIR",
      "logFile": "$LAB/plugin.log",
      "capabilities": { "io.kubernetes.cri.pod-annotations": true }
    }
EOF
)
  fi
  cat >"$LAB/cni/net.d/10-metaguard-lab.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NET_NAME",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "mgbr0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$LAB/cni/ipam",
        "ranges": [
          [{ "subnet": "$POD4", "gateway": "$GW4" }],
          [{ "subnet": "$POD6", "gateway": "$GW6" }]
        ],
        "routes": [
          { "dst": "169.254.0.0/16" },
          { "dst": "$ALI/32" },
          { "dst": "fd00:ec2::/64" }
        ]
      }
    }$guard
  ]
}
EOF
}

write_containerd_config() {
  cat >"$LAB/containerd/config.toml" <<EOF
version = 2
root = "$LAB/containerd/root"
state = "$LAB/containerd/state"

[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = "$LAB/containerd/debug.sock"
[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$LAB/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "${LAB_SANDBOX_IMAGE:-metaguard.local/pause:lab}"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$LAB/cni/bin"
      conf_dir = "$LAB/cni/net.d"
EOF
}

start_containerd() {
  log "containerd in $NODE_NS (private mount namespace)"
  # /run/containerd is hard-coded in the 1.6 shims (sockets, runc state, FIFOs). A directory is
  # needed as a mount point; the lab's own directory is mounted over it in the private namespace.
  if [ ! -d /run/containerd ]; then
    mkdir /run/containerd
    touch "$LAB_ROOT/.made-run-containerd"
  fi
  # The private mount namespace: overlays catch every write to /etc, /opt and /var/lib (e.g. the
  # CNI result cache in /var/lib/cni), then the lab's directories are bound where ctr and the CRI
  # plugin look. /sys is remounted so it shows the node's network devices, with the cgroup
  # hierarchies moved back onto it (runc needs them; `ip netns exec` would drop them). nsenter,
  # unshare and bash all exec without forking, so the pid recorded is containerd's.
  # shellcheck disable=SC2016
  LAB="$LAB" setsid nsenter --net="/run/netns/$NODE_NS" unshare --mount --propagation private -- bash -c '
    set -e
    mkdir -p "$LAB/mnt/cgroup"
    mount --rbind /sys/fs/cgroup "$LAB/mnt/cgroup"
    mount -t sysfs sysfs /sys
    mount --move "$LAB/mnt/cgroup" /sys/fs/cgroup
    mount -t overlay overlay -o "lowerdir=/etc,upperdir=$LAB/overlay/etc/upper,workdir=$LAB/overlay/etc/work" /etc
    mount -t overlay overlay -o "lowerdir=/opt,upperdir=$LAB/overlay/opt/upper,workdir=$LAB/overlay/opt/work" /opt
    mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$LAB/overlay/var-lib/upper,workdir=$LAB/overlay/var-lib/work" /var/lib
    mkdir -p /etc/cni/net.d /opt/cni/bin
    mount --bind "$LAB/cni/net.d" /etc/cni/net.d
    mount --bind "$LAB/cni/bin" /opt/cni/bin
    mount --bind "$LAB/run-containerd" /run/containerd
    mount --bind "$LAB/netns" /run/netns
    exec containerd --config "$LAB/containerd/config.toml"
  ' </dev/null >"$LAB/containerd.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$LAB/containerd.pid"
  wait_alive_until 20 "containerd to start" "$pid" containerd_pid || { tail -20 "$LAB/containerd.log" >&2; return 1; }
  wait_alive_until 20 "containerd to answer" "$pid" lab_ctr version || { tail -20 "$LAB/containerd.log" >&2; return 1; }
}

start_fake() {
  local bindir=$1
  log "fake-metadata in $CLOUD_NS"
  setsid ip netns exec "$CLOUD_NS" "$bindir/fake-metadata" \
    --listen "$MD4:80" --listen "$MD4:$OTHER_PORT" \
    --listen "[$MD6]:80" --listen "[$MD6]:$OTHER_PORT" \
    --listen "$ALI:80" --record "$RECORD" </dev/null >"$LAB/fake.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$LAB/fake.pid"
  # Reached from the node, through the link and the routes.
  wait_alive_until 10 "fake-metadata on $MD4" "$pid" ip netns exec "$NODE_NS" curl -sf -m 1 -o /dev/null "http://$MD4/bench" ||
    { cat "$LAB/fake.log" >&2; return 1; }
  wait_alive_until 10 "fake-metadata on [$MD6]" "$pid" ip netns exec "$NODE_NS" curl -sf -m 1 -o /dev/null "http://[$MD6]/bench" ||
    { cat "$LAB/fake.log" >&2; return 1; }
  # The probes are not part of any experiment.
  : >"$RECORD"
}

proxy_start() {
  [ "${LAB_PROXY:-1}" != 0 ] || { log "LAB_PROXY=0: not starting metaguard-proxy"; return 0; }
  if proxy_pid >/dev/null; then log "metaguard-proxy already running"; return 0; fi
  local bindir policy
  bindir=$(bin_dir)
  policy=${LAB_POLICY:-$REPO/conf/lab/policy.toml}
  [ -f "$policy" ] || die "policy file $policy not found"
  log "metaguard-proxy in $NODE_NS (policy $policy)"
  # Listens on every address (freebind): the bridge gateway appears only with the first pod.
  setsid ip netns exec "$NODE_NS" "$bindir/metaguard-proxy" run \
    --state-dir "$STATE_DIR" --policy "$policy" --admin "$ADMIN" \
    --listen 0.0.0.0 --listen :: \
    --upstream "imds-v4=$MD4:80" --upstream "imds-v6=[$MD6]:80" --upstream "alibaba=$ALI:80" \
    --decision-log "$DECISIONS" </dev/null >>"$LAB/proxy.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$LAB/proxy.pid"
  wait_alive_until 15 "metaguard-proxy /healthz" "$pid" ip netns exec "$NODE_NS" curl -sf -m 1 -o /dev/null "http://$ADMIN/healthz" ||
    { tail -20 "$LAB/proxy.log" >&2; return 1; }
}

proxy_stop() {
  local pid
  if pid=$(proxy_pid); then
    log "stopping metaguard-proxy ($pid)"
    stop_pids "$pid"
  fi
  rm -f "$LAB/proxy.pid"
}

write_env() {
  local bindir=$1
  cat >"$LAB/lab.env" <<EOF
LAB_NAME=$LAB_NAME
LAB_DIR=$LAB
NODE_NS=$NODE_NS
CLOUD_NS=$CLOUD_NS
CTR_NS=$CTR_NS
CNI_NETWORK=$NET_NAME
CONTAINERD_SOCK=$SOCK
ROOTFS=$ROOTFS
CNI_CONF_DIR=$LAB/cni/net.d
CNI_BIN_DIR=$LAB/cni/bin
CONFLIST=$LAB/cni/net.d/10-metaguard-lab.conflist
STATE_DIR=$STATE_DIR
PLUGIN_LOG=$LAB/plugin.log
FAKE_RECORD=$RECORD
DECISION_LOG=$DECISIONS
PROXY_LOG=$LAB/proxy.log
PROXY_ADMIN=$ADMIN
BIN_DIR=$bindir
POD_SUBNET4=$POD4
POD_SUBNET6=$POD6
GATEWAY4=$GW4
GATEWAY6=$GW6
METADATA4=$MD4
METADATA6=$MD6
ALIBABA=$ALI
OTHER_PORT=$OTHER_PORT
EOF
}

usage_text() {
  cat <<EOF

The lab '$LAB_NAME' is up. Everything lives in $LAB.
  node namespace:   $NODE_NS  (containerd, metaguard-proxy, bridge mgbr0: $POD4, $POD6)
  cloud namespace:  $CLOUD_NS  (fake-metadata on $MD4, [$MD6], $ALI; port 80 and $OTHER_PORT)

Try:
  scripts/lab.sh run demo1 mgcurl http://$MD4/latest/meta-data/instance-id
  scripts/lab.sh run demo2 mgcurl -i http://$MD4/latest/meta-data/iam/security-credentials/
  scripts/lab.sh run demo3 mgcurl http://[$MD6]:$OTHER_PORT/
  scripts/lab.sh ctr task ls            # ctr with the lab's socket and namespace
  scripts/lab.sh exec-node nft list ruleset
  tail -f $DECISIONS                    # the proxy's decisions
  tail -f $RECORD                       # what reached the fake metadata service
  scripts/lab.sh status
  scripts/lab.sh down
EOF
}

cmd_up() {
  need_root
  check_name
  check_tools
  local bindir f
  bindir=$(bin_dir)
  for f in metaguard metaguard-proxy fake-metadata mgcurl; do
    [ -x "$bindir/$f" ] || die "$bindir/$f not found: run 'cargo build --workspace --bins'"
  done
  make_dirs
  # From here on, any failure tears down what was built.
  trap 'rc=$?; trap - EXIT; if [ $rc -ne 0 ]; then log "up failed: tearing down"; cmd_down || true; fi; exit $rc' EXIT
  log "lab '$LAB_NAME' in $LAB (binaries from $bindir)"
  write_env "$bindir"
  make_networks
  make_rootfs "$bindir"
  write_cni "$bindir"
  write_containerd_config
  start_fake "$bindir"
  start_containerd
  proxy_start
  trap - EXIT
  usage_text
}

# --- down ----------------------------------------------------------------------------------------

cgroup_dirs() {
  local d
  for d in /sys/fs/cgroup/*/"$CTR_NS" /sys/fs/cgroup/"$CTR_NS"; do
    [ -d "$d" ] && echo "$d"
  done
  return 0
}

cmd_down() {
  need_root
  check_name
  local pids=() p d
  # Containers first, while containerd still answers (bounded: a wedged containerd must not stop
  # the teardown).
  if containerd_pid >/dev/null; then
    local ids
    ids=$(LAB_NAME=$LAB_NAME timeout 10 "$SELF" ctr containers ls -q 2>/dev/null || true)
    for d in $ids; do
      LAB_NAME=$LAB_NAME timeout 10 "$SELF" ctr task kill -s SIGKILL "$d" >/dev/null 2>&1 || true
      LAB_NAME=$LAB_NAME timeout 10 "$SELF" ctr task rm -f "$d" >/dev/null 2>&1 || true
      LAB_NAME=$LAB_NAME timeout 10 "$SELF" ctr containers rm "$d" >/dev/null 2>&1 || true
    done
  fi
  # Every process of the lab, by pid: container processes (from their cgroups), then everything
  # in the node and cloud namespaces (containerd, shims, the proxy, fake-metadata, ctr clients),
  # then the pid files in case a process left the namespaces.
  while read -r d; do
    [ -n "$d" ] || continue
    for p in $(cat "$d"/*/cgroup.procs "$d"/cgroup.procs 2>/dev/null); do pids+=("$p"); done
  done < <(cgroup_dirs)
  for d in "$NODE_NS" "$CLOUD_NS"; do
    [ -e "/run/netns/$d" ] || continue
    for p in $(ip netns pids "$d" 2>/dev/null); do pids+=("$p"); done
  done
  p=$(containerd_pid) && pids+=("$p")
  p=$(proxy_pid) && pids+=("$p")
  p=$(fake_pid) && pids+=("$p")
  if [ "${#pids[@]}" -gt 0 ]; then
    stop_pids "${pids[@]}"
  fi
  # Cgroups runc left (deepest first).
  while read -r d; do
    [ -n "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done < <(cgroup_dirs)
  for d in "$NODE_NS" "$CLOUD_NS"; do
    if [ -e "/run/netns/$d" ]; then ip netns del "$d" 2>/dev/null || log "could not delete netns $d"; fi
  done
  if [ -d "$LAB" ]; then
    # Nothing of the lab is mounted in this namespace, but unmount defensively before deleting.
    awk -v lab="$LAB/" 'index($5, lab) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
      while read -r d; do umount -l "$d" 2>/dev/null || true; done
    case $LAB in /run/metaguard-lab/mg*) rm -rf --one-file-system "$LAB" ;; *) die "refusing to delete $LAB" ;; esac
  fi
  # The /run/containerd mount point, if the lab made it and no other lab still needs it.
  if [ -d "$LAB_ROOT" ] && [ -z "$(find "$LAB_ROOT" -mindepth 1 -maxdepth 1 -type d)" ]; then
    if [ -f "$LAB_ROOT/.made-run-containerd" ]; then
      rmdir /run/containerd 2>/dev/null || true
      rm -f "$LAB_ROOT/.made-run-containerd"
    fi
    rmdir "$LAB_ROOT" 2>/dev/null || true
  fi
  log "lab '$LAB_NAME' is down"
}

# --- other commands ------------------------------------------------------------------------------

require_up() { [ -f "$LAB/lab.env" ] || die "the lab '$LAB_NAME' is not up (scripts/lab.sh up)"; }

cmd_status() {
  need_root
  check_name
  if [ ! -d "$LAB" ]; then echo "lab '$LAB_NAME': down"; return 0; fi
  echo "lab '$LAB_NAME': $LAB"
  local ns
  for ns in "$NODE_NS" "$CLOUD_NS"; do
    if [ -e "/run/netns/$ns" ]; then echo "  netns $ns: present"; else echo "  netns $ns: MISSING"; fi
  done
  local p
  if p=$(containerd_pid); then echo "  containerd: running (pid $p)"; else echo "  containerd: not running"; fi
  if p=$(fake_pid); then echo "  fake-metadata: running (pid $p), $(wc -l <"$RECORD") requests recorded"; else echo "  fake-metadata: not running"; fi
  if p=$(proxy_pid); then
    local health
    health=$(ip netns exec "$NODE_NS" curl -s -m 1 "http://$ADMIN/healthz" 2>/dev/null || echo "no answer")
    echo "  metaguard-proxy: running (pid $p), healthz: $health"
  else
    echo "  metaguard-proxy: not running"
  fi
  echo "  pod records: $(find "$STATE_DIR/pods" -name '*.json' 2>/dev/null | wc -l)"
  if containerd_pid >/dev/null; then
    echo "  containers:"
    lab_ctr task ls 2>/dev/null | sed 's/^/    /' || true
  fi
}

# run [-d] NAME CMD...: a container on the lab's CNI network. Foreground runs are removed when the
# command ends (ctr then calls CNI DEL); -d leaves the task running, and ctr 1.6 never calls DEL for
# it (remove it with 'rm NAME', which does not call DEL either: that is what GC is for).
cmd_run() {
  need_root
  require_up
  local detach=()
  if [ "${1:-}" = "-d" ]; then detach=(-d); shift; fi
  [ $# -ge 2 ] || die "usage: scripts/lab.sh run [-d] NAME CMD [ARG]..."
  local name=$1
  shift
  # Without an image there is no image config: PATH must be given.
  local env=(--env PATH=/bin:/sbin:/usr/bin:/usr/sbin)
  if [ ${#detach[@]} -gt 0 ]; then
    lab_ctr run --cni -d "${env[@]}" --rootfs "$ROOTFS" "$name" "$@"
  else
    lab_ctr run --cni --rm "${env[@]}" --rootfs "$ROOTFS" "$name" "$@"
  fi
}

# rm NAME: kill and remove a container (ctr 1.6: no CNI DEL).
cmd_rm() {
  need_root
  require_up
  local name=${1:?usage: scripts/lab.sh rm NAME}
  lab_ctr task kill -s SIGKILL "$name" >/dev/null 2>&1 || true
  lab_ctr task rm -f "$name" >/dev/null 2>&1 || true
  lab_ctr containers rm "$name"
}

# gc: calls the plugin's GC the way a CNI 1.1 runtime does, with the containers containerd still
# has as the valid attachments.
cmd_gc() {
  need_root
  require_up
  local ids valid
  ids=$(lab_ctr containers ls -q)
  valid=$(for id in $ids; do printf '{"containerID":"%s-%s","ifname":"eth0"}\n' "$CTR_NS" "$id"; done | jq -sc .)
  jq -c --argjson valid "$valid" --arg name "$NET_NAME" '
    .plugins[] | select(.type == "metaguard")
    | . + {cniVersion: "1.1.0", name: $name, "cni.dev/valid-attachments": $valid, "cni.dev/attachments": $valid}
  ' "$LAB/cni/net.d/10-metaguard-lab.conflist" |
    in_node env CNI_COMMAND=GC CNI_PATH="$LAB/cni/bin" "$LAB/cni/bin/metaguard"
}

cmd_env() { require_up; cat "$LAB/lab.env"; }

cmd_help() {
  cat <<'EOF'
scripts/lab.sh COMMAND   (as root; LAB_NAME selects the lab, default mglab)
  up                  build the lab (binaries from the cargo target dir or METAGUARD_BIN_DIR)
  down                tear everything down (idempotent; also after a failed or partial up)
  status              what is running
  env                 the lab's paths and addresses as KEY=VALUE lines
  run [-d] NAME CMD…  start a container with `ctr run --cni` on the lab network
  rm NAME             kill and remove a container (no CNI DEL: ctr 1.6 never calls it here)
  ctr ARGS…           ctr with the lab's socket and namespace
  exec-node CMD…      run CMD in the node (containerd's mount and network namespaces)
  exec-cloud CMD…     run CMD in the cloud network namespace
  proxy start|stop|restart
  gc                  call metaguard's CNI GC with the containers containerd knows as valid
EOF
}

main() {
  local cmd=${1:-help}
  [ $# -gt 0 ] && shift
  case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    run) cmd_run "$@" ;;
    rm) cmd_rm "$@" ;;
    ctr) need_root; require_up; lab_ctr "$@" ;;
    exec-node) need_root; require_up; in_node "$@" ;;
    exec-cloud) need_root; require_up; ip netns exec "$CLOUD_NS" "$@" ;;
    proxy)
      need_root
      require_up
      case ${1:-} in
        start) proxy_start ;;
        stop) proxy_stop ;;
        restart) proxy_stop; proxy_start ;;
        *) die "usage: scripts/lab.sh proxy start|stop|restart" ;;
      esac
      ;;
    gc) cmd_gc ;;
    help | -h | --help) cmd_help ;;
    *) cmd_help >&2; exit 2 ;;
  esac
}

main "$@"
