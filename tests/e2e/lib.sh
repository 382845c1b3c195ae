# Shared by the end-to-end tests (sourced, not run). They drive the one-node
# cluster of scripts/k8s with kubectl, against sealvol installed by its chart
# (scripts/k8s up --with-sealvol). Without that cluster a test exits 77,
# which ctest reports as skipped, after printing why.
#
# Each test works in namespaces of its own (deleted at exit, with their pods
# and PVCs), so tests do not see each other's objects.
src=${SEALVOL_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
name=$(basename "$0" .sh)
# SEALVOL_E2E_REQUIRED=1 (.ci/run, once the cluster is up): a skip is a failure.
skip() {
  echo "$name: SKIP: $*"
  [[ -z ${SEALVOL_E2E_REQUIRED:-} ]] || { echo "$name: FAIL: SEALVOL_E2E_REQUIRED is set" >&2; exit 1; }
  exit 77
}
[[ $(id -u) == 0 ]] || skip "needs root (the cluster runs as root)"
"$src/scripts/k8s" status -q ||
  skip "the test cluster is not up (scripts/k8s up --with-sealvol)"
eval "$("$src/scripts/k8s" env)"
state=${SEALVOL_K8S_STATE:-/var/lib/sealvol-k8s}
node_state=$state/node-state
driver_ns=sealvol
image=sealvol.test/sealvol:e2e
kubectl -n "$driver_ns" get daemonset sealvol-node >/dev/null 2>&1 ||
  skip "sealvol is not installed in the test cluster (scripts/k8s install)"

namespaces=()
work=$(mktemp -d "/tmp/sealvol-$name.XXXXXX")
e2e_cleanup() {
  local rc=$? n
  set +e
  if ((rc != 0 && rc != 77)); then
    echo "--- $name failed; the cluster's view:" >&2
    for n in "${namespaces[@]}" "$driver_ns"; do
      kubectl -n "$n" get pods,pvc -o wide >&2
      kubectl -n "$n" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2
    done
    kubectl -n "$driver_ns" logs "$(controller_pod)" -c sealvol --tail=30 >&2
    kubectl -n "$driver_ns" logs -l app.kubernetes.io/component=node -c sealvol --tail=30 >&2
  fi
  for n in "${namespaces[@]}"; do kubectl delete ns "$n" --wait=false >/dev/null 2>&1; done
  for n in "${namespaces[@]}"; do kubectl wait --for=delete "ns/$n" --timeout=180s >/dev/null 2>&1; done
  rm -rf "$work"
  exit $rc
}
trap e2e_cleanup EXIT
fail() { echo "$name: FAIL: $*" >&2; exit 1; }
say() { echo "$name: $*"; }

# new_ns NAME: a namespace deleted when the test ends.
new_ns() {
  kubectl create ns "$1" >/dev/null || fail "create namespace $1"
  namespaces+=("$1")
  for _ in $(seq 60); do
    kubectl -n "$1" get serviceaccount default >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "namespace $1 has no default service account"
}

# pvc NS NAME CLASS SIZE [Filesystem|Block] [DATA_SOURCE]: DATA_SOURCE is
# the claim's dataSource as a YAML flow mapping (pvc_from).
pvc() {
  kubectl apply -f - >/dev/null <<YAML || fail "create PVC $1/$2${6:+ from $6}"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $2, namespace: $1}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: $3
  volumeMode: ${5:-Filesystem}
  resources: {requests: {storage: $4}}
${6:+  dataSource: $6}
YAML
}

# pod NS NAME CLAIM SCRIPT [block]: a pod running SCRIPT with the claim at
# /data (or, for block, the raw device at /dev/sealvol), as service account
# $POD_SA (default: default).
pod() {
  local volume_line="volumeMounts: [{name: data, mountPath: /data}]"
  [[ ${5:-} == block ]] && volume_line="volumeDevices: [{name: data, devicePath: /dev/sealvol}]"
  kubectl apply -f - >/dev/null <<YAML || fail "create pod $1/$2"
apiVersion: v1
kind: Pod
metadata: {name: $2, namespace: $1}
spec:
  serviceAccountName: ${POD_SA:-default}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: $image
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", $(printf '%s' "$4" | jq -Rs .)]
    securityContext: {runAsUser: 0}
    $volume_line
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: $3}
YAML
}

wait_running() { # NS POD [SECONDS]
  kubectl -n "$1" wait --for=condition=Ready "pod/$2" --timeout="${3:-120}s" >/dev/null ||
    fail "pod $1/$2 not running"
}
delete_pod() { kubectl -n "$1" delete pod "$2" --wait=true --timeout=120s >/dev/null || fail "delete pod $1/$2"; }
controller_pod() {
  kubectl -n "$driver_ns" get pods -l app.kubernetes.io/component=controller \
    -o jsonpath='{.items[0].metadata.name}'
}
node_pod() {
  kubectl -n "$driver_ns" get pods -l app.kubernetes.io/component=node \
    -o jsonpath='{.items[0].metadata.name}'
}
# The controller's audit log (all records).
audit() {
  kubectl -n "$driver_ns" exec "$(controller_pod)" -c sealvol -- sh -c 'cat /var/log/sealvol/audit-*.jsonl'
}
# The key provider as the controller sees it: sealvol keys ARGS...
keys() {
  kubectl -n "$driver_ns" exec "$(controller_pod)" -c sealvol -- sealvol keys "$@" --kms local:/tmp/kms
}
pv_of() { kubectl -n "$1" get pvc "$2" -o jsonpath='{.spec.volumeName}'; }
handle_of() { kubectl get pv "$1" -o jsonpath='{.spec.csi.volumeHandle}'; }
node_name() { kubectl get nodes -o jsonpath='{.items[0].metadata.name}'; }

# pvc_from NS NAME CLASS SIZE KIND SOURCE [Filesystem|Block]: a claim
# restored from a VolumeSnapshot (KIND VolumeSnapshot) or cloned from a
# claim (KIND PersistentVolumeClaim).
pvc_from() {
  local group=""
  [[ $5 == VolumeSnapshot ]] && group="apiGroup: snapshot.storage.k8s.io, "
  pvc "$1" "$2" "$3" "$4" "${7:-Filesystem}" "{${group}kind: $5, name: $6}"
}
# snapshot NS NAME PVC: a VolumeSnapshot (class sealvol) of the claim.
snapshot() {
  kubectl apply -f - >/dev/null <<YAML || fail "create VolumeSnapshot $1/$2"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: $2, namespace: $1}
spec:
  volumeSnapshotClassName: sealvol
  source: {persistentVolumeClaimName: $3}
YAML
}
# wait_cut NS NAME: until the snapshot has its creationTime (CreateSnapshot
# returned: the point in time is cut on the node).
wait_cut() {
  for _ in $(seq 240); do
    [[ -n $(kubectl -n "$1" get volumesnapshot "$2" -o jsonpath='{.status.creationTime}' 2>/dev/null) ]] &&
      return 0
    sleep 0.5
  done
  fail "snapshot $1/$2 was never cut: $(kubectl -n "$1" get volumesnapshot "$2" -o jsonpath='{.status}')"
}
# shared_blocks IMAGE_A IMAGE_B: prints how many non-zero 4 KiB blocks of A
# also appear in B, then the counts of non-zero blocks of A and of B (both
# images on the node's state directory, which this host sees).
shared_blocks() {
  python3 - "$1" "$2" <<'PY'
import sys
def blocks(path):
    out = set()
    with open(path, "rb") as f:
        while True:
            b = f.read(4096)
            if not b:
                return out
            if b.count(0) != len(b):
                out.add(b)
a, b = blocks(sys.argv[1]), blocks(sys.argv[2])
print(len(a & b), len(a), len(b))
PY
}
# no_shared_blocks NS SOURCE_CLAIM MIN_BLOCKS CLAIM...: every CLAIM is a
# volume of its own whose image shares no 4 KiB ciphertext block with the
# source's (each image holding more than MIN_BLOCKS data blocks to compare).
no_shared_blocks() {
  local ns=$1 src_vol min=$3 claim vol shared n_src n_copy
  src_vol=$(handle_of "$(pv_of "$ns" "$2")")
  for claim in "${@:4}"; do
    vol=$(handle_of "$(pv_of "$ns" "$claim")")
    [[ $vol != "$src_vol" ]] || fail "$claim has the source's volume id"
    read -r shared n_src n_copy < <(shared_blocks "$node_state/volumes/$src_vol/image" "$node_state/volumes/$vol/image")
    ((n_src > min && n_copy > min)) || fail "too few data blocks to compare ($n_src, $n_copy)"
    ((shared == 0)) || fail "$shared 4 KiB ciphertext blocks of the source image appear in the $claim image"
  done
}
# pod_line NS POD PREFIX SECONDS: waits for the pod's log line that starts
# with "PREFIX " and prints it; empty when none came in time.
pod_line() {
  local line="" i
  for ((i = 0; i < $4 * 2; i++)); do
    line=$(kubectl -n "$1" logs "$2" 2>/dev/null | grep "^$3 " || true)
    [[ -n $line ]] && break
    sleep 0.5
  done
  echo "$line"
}
