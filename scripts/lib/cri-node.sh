#!/usr/bin/env bash
# Runs containerd for the CRI end-to-end test (tests/src/cri.rs), which starts it as
#   nsenter --net=/run/netns/<node> unshare --mount --propagation private -- bash cri-node.sh DIR
# i.e. already inside the test's node network namespace and a private mount namespace. Here the
# mounts containerd needs are made in that mount namespace only, so nothing reaches the host's
# files, then containerd replaces this shell (the pid the test holds is containerd's):
#   - /sys: a sysfs of the node namespace (its network devices), with the cgroup hierarchies moved
#     back onto it (runc needs them);
#   - /var/lib: a throwaway overlay (libcni's result cache, /var/lib/cni, is written there);
#   - /run: a private tmpfs holding /run/containerd (hard-coded in the 1.6 shims: sockets, runc
#     state) and /run/netns (where the CRI bind-mounts pod network namespaces). Those netns paths
#     therefore exist only in this mount namespace; the test enters pods through /proc/PID/ns/net.
# Everything vanishes with the mount namespace when its last process exits.
set -euo pipefail
dir=${1:?usage: cri-node.sh DIR}
[ -f "$dir/containerd.toml" ] || { echo "cri-node.sh: $dir/containerd.toml missing" >&2; exit 2; }
# The directory must stay visible after the mounts below.
case $(realpath "$dir")/ in
  /run/* | /var/run/* | /var/lib/* | /sys/*) echo "cri-node.sh: $dir is hidden by the node's own mounts" >&2; exit 2 ;;
esac
mkdir -p "$dir/mnt/cgroup" "$dir/overlay/var-lib/upper" "$dir/overlay/var-lib/work"
mount --rbind /sys/fs/cgroup "$dir/mnt/cgroup"
mount -t sysfs sysfs /sys
mount --move "$dir/mnt/cgroup" /sys/fs/cgroup
mount -t overlay overlay \
  -o "lowerdir=/var/lib,upperdir=$dir/overlay/var-lib/upper,workdir=$dir/overlay/var-lib/work" /var/lib
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/containerd /run/netns
exec containerd --config "$dir/containerd.toml"
