#!/usr/bin/env bash
# Builds the test cluster's images as OCI archives in $cache/images (imported
# into the cluster's containerd by scripts/k8s; pods use them without a
# registry):
#   base     pause (the pod sandbox), csi-provisioner, csi-resizer,
#            csi-snapshotter, snapshot-controller and the test
#            sidecar (registrar + livenessprobe): one static binary each
#   sealvol  the sealvol image, from the same recipe as deploy/Dockerfile:
#            Debian 12 with deploy/image/packages.txt and the packages that
#            own the binary's libraries (deploy/image/runtime-packages.sh),
#            the binary, the non-root user 65532. Built with debootstrap
#            from this machine's apt mirror; the binary is $SEALVOL_BIN or
#            build/cmd/sealvol (scripts/test builds it).
#   all      both
#   fio      (benchmarks only; not part of `all`) the sealvol image's Debian
#            root file system with fio added (bench/k8s/fio_pod.sh), in
#            $cache/images-bench so that `scripts/k8s up` does not import it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/versions.env"
cache=${SEALVOL_K8S_CACHE:-/var/cache/sealvol-k8s}
bin=$cache/bin
out=$cache/images
mkdir -p "$out"

# one_binary_image NAME:TAG BINARY ENTRYPOINT...: a root file system holding
# only BINARY (static) as /ENTRYPOINT[0].
one_binary_image() {
  local name=$1 binary=$2 file=$out/${1//[\/:]/_}.tar dir
  shift 2
  if [[ -f $file && $file -nt $binary ]]; then return 0; fi
  [[ -x $binary ]] || { echo "images: $binary is not built (scripts/k8s build)" >&2; exit 1; }
  dir=$(mktemp -d)
  mkdir -p "$dir/tmp" "$dir/etc"
  chmod 1777 "$dir/tmp"
  echo "nobody:x:65534:65534:nobody:/:/nonexistent" >"$dir/etc/passwd"
  install -m 0755 "$binary" "$dir/$(basename "$binary")"
  local ep
  ep=$(IFS=,; echo "$*")
  "$here/mkimage.py" "$dir" "$name" "$file" --entrypoint "$ep" >/dev/null
  rm -rf "$dir"
  echo "images: $name"
}

build_base() {
  one_binary_image sealvol.test/pause:1 "$bin/static/pause" /pause
  one_binary_image "sealvol.test/csi-provisioner:$EXTERNAL_PROVISIONER_VERSION" \
    "$bin/static/csi-provisioner" /csi-provisioner
  one_binary_image "sealvol.test/csi-resizer:$EXTERNAL_RESIZER_VERSION" \
    "$bin/static/csi-resizer" /csi-resizer
  one_binary_image "sealvol.test/csi-snapshotter:$EXTERNAL_SNAPSHOTTER_VERSION" \
    "$bin/static/csi-snapshotter" /csi-snapshotter
  one_binary_image "sealvol.test/snapshot-controller:$EXTERNAL_SNAPSHOTTER_VERSION" \
    "$bin/static/snapshot-controller" /snapshot-controller
  one_binary_image sealvol.test/node-driver-registrar:test \
    "$bin/static/sealvol-test-sidecar" /sealvol-test-sidecar registrar
  one_binary_image sealvol.test/livenessprobe:test \
    "$bin/static/sealvol-test-sidecar" /sealvol-test-sidecar livenessprobe
}

# The apt mirror this machine uses for Debian 12 (deb822 or one-line sources).
debian_mirror() {
  local m
  m=$(awk '/^URIs:/ {u = $2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -n $m ]] || m=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  echo "${m:-http://deb.debian.org/debian}"
}

build_sealvol() {
  local sv=${SEALVOL_BIN:-$root/build/cmd/sealvol}
  [[ -x $sv ]] || { echo "images: no sealvol binary at $sv (scripts/test builds it)" >&2; exit 1; }
  local pkgs
  pkgs=$( { grep -v '^#' "$root/deploy/image/packages.txt"; "$root/deploy/image/runtime-packages.sh" "$sv"; } |
    sort -u | paste -sd, -)
  # The Debian part depends only on the package list: cached under its hash.
  local key base
  key=$(echo "$pkgs" | sha256sum | cut -c1-16)
  base=$cache/rootfs/sealvol-base-$key
  if [[ ! -f $base.done ]]; then
    local t=$SECONDS
    rm -rf "$base"
    mkdir -p "$cache/rootfs"
    nice -n 10 debootstrap --variant=minbase --include="$pkgs" bookworm "$base" "$(debian_mirror)" \
      >"$base.log" 2>&1 || { tail -n 20 "$base.log" >&2; echo "images: debootstrap failed" >&2; exit 1; }
    # As deploy/Dockerfile: no apt lists, the non-root user 65532.
    chroot "$base" groupadd --system --gid 65532 sealvol
    chroot "$base" useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin sealvol
    rm -rf "$base"/var/lib/apt/lists/* "$base"/var/cache/apt/*.bin "$base"/var/cache/apt/archives/*.deb
    touch "$base.done"
    echo "images: Debian root file system ($pkgs) in $((SECONDS - t)) s"
  fi
  local file=$out/sealvol.test_sealvol_e2e.tar sum
  sum=$(sha256sum <"$sv" | cut -c1-16)
  if [[ -f $file && $(cat "$file.binary" 2>/dev/null) == "$sum-$key" ]]; then return 0; fi
  local dir t=$SECONDS
  dir=$(mktemp -d "$cache/rootfs/sealvol-image.XXXXXX")
  cp -a "$base/." "$dir/"
  install -D -m 0755 -s "$sv" "$dir/usr/bin/sealvol"
  "$here/mkimage.py" "$dir" sealvol.test/sealvol:e2e "$file" --keep-owners \
    --entrypoint /usr/bin/sealvol --cmd=--help --user 65532:65532 >/dev/null
  rm -rf "$dir"
  echo "$sum-$key" >"$file.binary"
  echo "images: sealvol.test/sealvol:e2e in $((SECONDS - t)) s ($(du -h "$file" | cut -f1))"
}

# The fio image: the cached Debian root file system of the sealvol image
# (deploy/image/packages.txt and the binary's libraries) plus the Debian fio
# package, installed with apt-get inside a copy of it, from the mirror
# debootstrap wrote into it. Rebuilt when that root file system changes.
build_fio() {
  local base
  base=$(ls -td "$cache"/rootfs/sealvol-base-*.done 2>/dev/null | head -n 1)
  [[ -n $base ]] || { build_sealvol; base=$(ls -td "$cache"/rootfs/sealvol-base-*.done | head -n 1); }
  base=${base%.done}
  local file=$cache/images-bench/sealvol.test_fio_bench.tar
  if [[ -f $file && $(cat "$file.base" 2>/dev/null) == "${base##*/}" ]]; then return 0; fi
  mkdir -p "$cache/images-bench"
  local dir t=$SECONDS
  dir=$(mktemp -d "$cache/rootfs/fio-image.XXXXXX")
  cp -a "$base/." "$dir/"
  { chroot "$dir" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -qq --no-install-recommends fio; } \
    >"$cache/rootfs/fio-image.log" 2>&1 ||
    { tail -n 20 "$cache/rootfs/fio-image.log" >&2; rm -rf "$dir"; echo "images: apt-get install fio failed" >&2; exit 1; }
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
  "$here/mkimage.py" "$dir" sealvol.test/fio:bench "$file" --keep-owners \
    --entrypoint /usr/bin/fio --cmd=--version >/dev/null
  rm -rf "$dir"
  echo "${base##*/}" >"$file.base"
  echo "images: sealvol.test/fio:bench in $((SECONDS - t)) s ($(du -h "$file" | cut -f1))"
}

case ${1:-all} in
  base) build_base ;;
  sealvol) build_sealvol ;;
  all) build_base; build_sealvol ;;
  fio) build_fio ;;
  *) echo "images.sh: unknown target '$1' (base, sealvol, all, fio)" >&2; exit 2 ;;
esac
