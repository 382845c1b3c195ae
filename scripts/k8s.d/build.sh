#!/usr/bin/env bash
# Builds the one-node cluster's binaries from the Go module proxy at the versions
# pinned in versions.env, into a cache outside the source tree:
#   $SEALVOL_K8S_CACHE (default /var/cache/sealvol-k8s)/bin, one stamp per stage.
# A stage whose stamp matches its pinned version is skipped, so a second run is
# a no-op. Builds are niced and limited to two parallel compiles.
#   usage: build.sh [all|core|sidecars|snapshotter|coredns|test-sidecar]...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
cache=${SEALVOL_K8S_CACHE:-/var/cache/sealvol-k8s}
bin=$cache/bin src=$cache/src stamps=$cache/stamps
mkdir -p "$bin" "$bin/static" "$src" "$stamps"
export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS="-buildvcs=false -p=${SEALVOL_K8S_JOBS:-2}" GOMAXPROCS=${GOMAXPROCS:-2}
export GOTOOLCHAIN=local

# stage NAME KEY: true when NAME must be (re)built for KEY.
need() { [[ "$(cat "$stamps/$1" 2>/dev/null)" != "$2" ]]; }
done_stage() { echo "$2" >"$stamps/$1"; echo "build: $1 done ($2) in $3 s"; }
gobuild() { nice -n 10 go build -trimpath "$@"; }

build_core() {
  local key="etcd=$ETCD_VERSION k8s=$K8S_VERSION" t=$SECONDS
  need core "$key" || return 0
  # etcd's server module has replace directives, which `go install mod@version`
  # refuses: build its main package from a small wrapper module instead.
  local w=$src/etcd-$ETCD_VERSION
  rm -rf "$w"; mkdir -p "$w"
  (cd "$w"
    go mod init sealvol.test/etcdbuild >/dev/null 2>&1
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/etcdctl/v3"\n\t_ "go.etcd.io/etcd/server/v3"\n)\n' >tools.go
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
    gobuild -ldflags='-s -w' -o "$bin/etcd" go.etcd.io/etcd/server/v3
    gobuild -ldflags='-s -w' -o "$bin/etcdctl" go.etcd.io/etcd/etcdctl/v3)
  # Kubernetes: the module zip drops staging/ (nested modules) and vendor/; point
  # each `k8s.io/X => ./staging/src/k8s.io/X` at the published k8s.io/X module.
  local dir k=$src/kubernetes-$K8S_VERSION minor
  dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$k"; cp -r "$dir" "$k"; chmod -R u+w "$k"
  rm -rf "$k/go.work" "$k/go.work.sum" "$k/vendor"
  sed -i -E "s#^(\s*k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+\$#\1 => \1 $K8S_STAGING_VERSION#" "$k/go.mod"
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  local v ldf="-s -w"
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  done
  (cd "$k" && gobuild -mod=mod -ldflags="$ldf" -o "$bin/" ./cmd/kube-apiserver \
    ./cmd/kube-controller-manager ./cmd/kube-scheduler ./cmd/kubelet ./cmd/kubectl ./cmd/kube-proxy)
  # The pod sandbox ("pause") image's program, from the same source tree.
  gcc -Os -static -o "$bin/static/pause" "$k/build/pause/linux/pause.c"
  done_stage core "$key" $((SECONDS - t))
}

build_sidecars() {
  local key="provisioner=$EXTERNAL_PROVISIONER_VERSION resizer=$EXTERNAL_RESIZER_VERSION" t=$SECONDS
  need sidecars "$key" || return 0
  export CGO_ENABLED=0
  # external-provisioner has replace directives too: build it as the main module.
  local dir p=$src/external-provisioner-$EXTERNAL_PROVISIONER_VERSION
  dir=$(go mod download -json "$EXTERNAL_PROVISIONER_MODULE@$EXTERNAL_PROVISIONER_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$p"; cp -r "$dir" "$p"; chmod -R u+w "$p"; rm -rf "$p/vendor"
  (cd "$p" && gobuild -mod=mod -ldflags="-s -w -X main.version=$EXTERNAL_PROVISIONER_VERSION" \
    -o "$bin/static/csi-provisioner" ./cmd/csi-provisioner)
  GOBIN=$bin/static nice -n 10 go install -trimpath \
    -ldflags="-s -w -X main.version=$EXTERNAL_RESIZER_VERSION" \
    "$EXTERNAL_RESIZER_MODULE/cmd/csi-resizer@$EXTERNAL_RESIZER_VERSION"
  unset CGO_ENABLED
  done_stage sidecars "$key" $((SECONDS - t))
}

# csi-snapshotter (the controller pod's sidecar) and snapshot-controller (the
# cluster's VolumeSnapshot controller, a pod in kube-system), and the
# VolumeSnapshot CRDs, which ship in the nested client module.
build_snapshotter() {
  local key="snapshotter=$EXTERNAL_SNAPSHOTTER_VERSION crds=snapshot,groupsnapshot" t=$SECONDS
  need snapshotter "$key" || return 0
  export CGO_ENABLED=0
  local dir cdir p=$src/external-snapshotter-$EXTERNAL_SNAPSHOTTER_VERSION
  local client=${EXTERNAL_SNAPSHOTTER_MODULE%/v*}/client/${EXTERNAL_SNAPSHOTTER_VERSION%%.*}
  dir=$(go mod download -json "$EXTERNAL_SNAPSHOTTER_MODULE@$EXTERNAL_SNAPSHOTTER_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cdir=$(go mod download -json "$client@$EXTERNAL_SNAPSHOTTER_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$p"; cp -r "$dir" "$p"; chmod -R u+w "$p"; rm -rf "$p/vendor"
  # The module zip leaves out the nested client module that go.mod replaces
  # with ./client: point the replace at the published module instead.
  sed -i -E "s#^replace $client => \./client\$#replace $client => $client $EXTERNAL_SNAPSHOTTER_VERSION#" "$p/go.mod"
  (cd "$p" && gobuild -mod=mod -ldflags="-s -w -X main.version=$EXTERNAL_SNAPSHOTTER_VERSION" \
    -o "$bin/static/" ./cmd/csi-snapshotter ./cmd/snapshot-controller)
  # The group snapshot CRDs too: snapshot-controller waits for them while its
  # (GA, default on) VolumeGroupSnapshot feature is on.
  rm -rf "$cache/snapshot"; mkdir -p "$cache/snapshot"
  cp "$cdir"/config/crd/*snapshot.storage.k8s.io_*.yaml "$cache/snapshot/"
  cp "$p"/deploy/kubernetes/snapshot-controller/{rbac,setup}-snapshot-controller.yaml "$cache/snapshot/"
  chmod u+w "$cache"/snapshot/*
  unset CGO_ENABLED
  done_stage snapshotter "$key" $((SECONDS - t))
}

build_coredns() {
  local key="coredns=$COREDNS_VERSION" t=$SECONDS
  need coredns "$key" || return 0
  GOBIN=$bin nice -n 10 go install -trimpath -ldflags='-s -w' "github.com/coredns/coredns@$COREDNS_VERSION"
  done_stage coredns "$key" $((SECONDS - t))
}

build_test_sidecar() {
  local key t=$SECONDS
  key="sidecar=$(sha256sum <"$here/test-sidecar/main.go" | cut -c1-16) kubelet=$KUBELET_API_VERSION grpc=$GRPC_VERSION csi=$CSI_SPEC_VERSION"
  need test-sidecar "$key" || return 0
  local r=$src/test-sidecar
  rm -rf "$r"; mkdir -p "$r"; cp "$here/test-sidecar/main.go" "$r/"
  (cd "$r"
    go mod init sealvol.test/sidecar >/dev/null 2>&1
    go get "k8s.io/kubelet@$KUBELET_API_VERSION" "google.golang.org/grpc@$GRPC_VERSION" "github.com/container-storage-interface/spec@$CSI_SPEC_VERSION"
    go mod tidy
    CGO_ENABLED=0 gobuild -ldflags='-s -w' -o "$bin/static/sealvol-test-sidecar" .)
  done_stage test-sidecar "$key" $((SECONDS - t))
}

stages=("${@:-all}")
for s in "${stages[@]}"; do
  case $s in
    all) build_core; build_test_sidecar; build_sidecars; build_snapshotter; build_coredns ;;
    core) build_core ;;
    sidecars) build_sidecars ;;
    snapshotter) build_snapshotter ;;
    coredns) build_coredns ;;
    test-sidecar) build_test_sidecar ;;
    *) echo "build.sh: unknown stage '$s' (all, core, sidecars, snapshotter, coredns, test-sidecar)" >&2; exit 2 ;;
  esac
done
