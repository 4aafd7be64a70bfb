#!/usr/bin/env bash
# Builds a pod "pause" image locally, as an OCI image-layout tarball that `ctr images import` takes,
# because no image registry is reachable here (the CRI needs a sandbox image for every pod).
#
#   scripts/build-pause-image.sh OUT.tar [IMAGE_NAME]     (IMAGE_NAME default metaguard.local/pause:cri)
#   ctr -n k8s.io images import OUT.tar                   (then point the CRI's sandbox_image at IMAGE_NAME)
#
# Used by tests/src/cri.rs (docs/cri.md).
#
# The image is one uncompressed layer holding busybox-static as /bin/busybox, with
# `busybox sleep inf` as the entrypoint: the sandbox's process only has to hold the pod's
# namespaces until the runtime kills it (containerd's StopPodSandbox sends SIGKILL). Every file is
# built in a temporary directory with fixed owners and times, so the same busybox gives the same
# digests.
set -euo pipefail

die() { printf 'build-pause-image: %s\n' "$*" >&2; exit 1; }

out=${1:?usage: scripts/build-pause-image.sh OUT.tar [IMAGE_NAME]}
name=${2:-metaguard.local/pause:cri}
[[ $name =~ ^[a-z0-9.-]+(/[a-z0-9._-]+)+:[A-Za-z0-9._-]+$ ]] || die "image name must look like host/path:tag (got '$name')"
case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac
for t in tar sha256sum stat; do command -v "$t" >/dev/null || die "'$t' not found"; done
bb=$(command -v busybox) || die "busybox not found (install busybox-static)"
# The image has no libraries: a dynamically linked busybox would not start.
if ldd "$bb" >/dev/null 2>&1; then die "$bb is dynamically linked: install busybox-static"; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mg-pause-image.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/layout/blobs/sha256"
cp "$bb" "$work/rootfs/bin/busybox"
chmod 0755 "$work/rootfs/bin/busybox"
# The CRI bind-mounts these over the sandbox's root; runc creates what is missing, but an image
# that has them is what a real pause image looks like.
mkdir -p "$work/rootfs/"{dev,proc,sys,etc}
touch "$work/rootfs/etc/"{hosts,resolv.conf,hostname}

blob() { # FILE -> moves it into blobs/sha256/<digest>, prints the digest
  local d
  d=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/layout/blobs/sha256/$d"
  echo "$d"
}
size() { stat -c %s "$work/layout/blobs/sha256/$1"; }

# Layer: uncompressed tar, so its digest is also its diff_id.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$work/rootfs" -cf "$work/layer.tar" .
layer=$(blob "$work/layer.tar")

cat >"$work/config.json" <<EOF
{"architecture":"$arch","os":"linux","config":{"Entrypoint":["/bin/busybox","sleep","inf"],"WorkingDir":"/","Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:$layer"]},"history":[{"created_by":"scripts/build-pause-image.sh"}]}
EOF
config=$(blob "$work/config.json")

cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$(size "$config")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer","size":$(size "$layer")}]}
EOF
manifest=$(blob "$work/manifest.json")

# ctr names the imported image after io.containerd.image.name; the OCI ref name is the tag.
cat >"$work/layout/index.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$(size "$manifest"),"platform":{"architecture":"$arch","os":"linux"},"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"${name##*:}"}}]}
EOF
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/layout" -cf "$work/image.tar" .
mv -f "$work/image.tar" "$out"
echo "$name sha256:$manifest"
