#!/usr/bin/env bash
# fio inside a pod on a sealvol PVC in the one-node test cluster, beside the
# same jobs on ext4 over a plain loop device on the node, in one run:
#   (a) node: ext4 on a loop device (direct I/O) over a file in the node
#       plugin's state directory (the file system sealvol's images live on);
#   (b) pod:  ext4 on a sealvol PVC (StorageClass sealvol-ext4), fio in a
#       pod of the image sealvol.test/fio:bench (scripts/k8s.d/images.sh fio:
#       the sealvol image's Debian root file system plus the fio package).
# Jobs: bench/fio/randread_4k.fio (4 KiB random read, QD32) and
# bench/fio/seq_write_1m.fio (1 MiB sequential write, QD16), io_uring,
# O_DIRECT, time-based. Prints a Markdown table (MB/s, IOPS, p50/p99
# completion latency, ratio b/a) and writes it, the fio JSON and the load
# average before and after each job into the output directory. Needs root and
# the cluster up with sealvol (scripts/k8s up --with-sealvol). Not a test.
#
#   bench/k8s/fio_pod.sh [--runtime S] [--size N] [--out DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
runtime=20
size=1G
out=""
while (($#)); do
  case "$1" in
    --runtime) runtime=$2; shift ;;
    --size) size=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "fio_pod: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $EUID -eq 0 ]] || { echo "fio_pod: needs root" >&2; exit 2; }
command -v fio >/dev/null || { echo "fio_pod: no fio on the node (Debian: fio)" >&2; exit 2; }
"$root/scripts/k8s" status -q || { echo "fio_pod: the test cluster is not up (scripts/k8s up --with-sealvol)" >&2; exit 2; }
eval "$("$root/scripts/k8s" env)"
kubectl -n sealvol get daemonset sealvol-node >/dev/null 2>&1 ||
  { echo "fio_pod: sealvol is not installed in the test cluster (scripts/k8s install)" >&2; exit 2; }
cache=${SEALVOL_K8S_CACHE:-/var/cache/sealvol-k8s}
state=${SEALVOL_K8S_STATE:-/var/lib/sealvol-k8s}
out=${out:-$root/bench/k8s/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
jobs=(randread_4k seq_write_1m)
# The PVC holds fio's file and ext4's own metadata.
pvc_size=$(( $(numfmt --from=iec "$size") * 3 / 2 / 1048576 ))Mi

ns=bench-fio-$$
work=$(mktemp -d /tmp/sealvol-fio-pod.XXXXXX)
loop="" mnt=""
cleanup() {
  set +e
  kubectl delete ns "$ns" --wait=true --timeout=180s >/dev/null 2>&1
  [[ -n $mnt ]] && umount "$mnt" 2>/dev/null
  [[ -n $loop ]] && losetup -d "$loop" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$root/scripts/k8s.d/images.sh" fio
ctr --address "$state/containerd/containerd.sock" -n k8s.io images import \
  "$cache/images-bench/sealvol.test_fio_bench.tar" >/dev/null

{
  echo "date: $(date -u +%FT%TZ)"
  echo "machine: $(nproc) vCPU $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1), $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "fio: $(fio --version) on the node; $(kubectl version -o json 2>/dev/null | jq -r '"Kubernetes " + .serverVersion.gitVersion')"
  echo "runtime ${runtime}s per job, file size $size, PVC $pvc_size (sealvol-ext4)"
} >"$out/machine.txt"

# (a) the plain loop device on the node, beside sealvol's images.
img=$state/node-state/fio-baseline-$$.img
truncate -s "$(( $(numfmt --from=iec "$size") * 3 / 2 ))" "$img"
loop=$(losetup --direct-io=on -f --show "$img")
mkfs.ext4 -q -F "$loop"
mnt=$work/mnt
mkdir -p "$mnt"
mount "$loop" "$mnt"
for job in "${jobs[@]}"; do
  echo "a $job before: $(cat /proc/loadavg)" >>"$out/machine.txt"
  TARGET=$mnt RUNTIME=$runtime SIZE=$size fio --output-format=json \
    --output="$out/a-$job.json" "$root/bench/fio/$job.fio"
  echo "a $job after: $(cat /proc/loadavg)" >>"$out/machine.txt"
done
umount "$mnt"; mnt=""
losetup -d "$loop"; loop=""
rm -f "$img"

# (b) the same jobs in a pod on a sealvol PVC.
kubectl create ns "$ns" >/dev/null
for _ in $(seq 60); do kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done
kubectl -n "$ns" create configmap jobs \
  --from-file="$root/bench/fio/randread_4k.fio" --from-file="$root/bench/fio/seq_write_1m.fio" >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: $ns}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: sealvol-ext4
  resources: {requests: {storage: $pvc_size}}
---
apiVersion: v1
kind: Pod
metadata: {name: fio, namespace: $ns}
spec:
  serviceAccountName: default
  terminationGracePeriodSeconds: 1
  containers:
  - name: fio
    image: sealvol.test/fio:bench
    imagePullPolicy: Never
    command: ["sleep", "infinity"]
    securityContext: {runAsUser: 0}
    volumeMounts: [{name: data, mountPath: /data}, {name: jobs, mountPath: /jobs}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
  - {name: jobs, configMap: {name: jobs}}
YAML
kubectl -n "$ns" wait --for=condition=Ready pod/fio --timeout=180s >/dev/null
for job in "${jobs[@]}"; do
  echo "b $job before: $(cat /proc/loadavg)" >>"$out/machine.txt"
  kubectl -n "$ns" exec fio -- env TARGET=/data RUNTIME="$runtime" SIZE="$size" \
    fio --output-format=json "/jobs/$job.fio" >"$out/b-$job.json"
  echo "b $job after: $(cat /proc/loadavg)" >>"$out/machine.txt"
done

# The table.
row() { # TARGET JOB
  jq -r --arg t "$1" '.jobs[0] as $j | ($j.read.io_bytes > 0) as $r | (if $r then $j.read else $j.write end) as $d |
    [$t, ($d.bw_bytes / 1e6 | floor), ($d.iops | floor),
     ($d.clat_ns.percentile["50.000000"] / 1000 | floor), ($d.clat_ns.percentile["99.000000"] / 1000 | floor)] | @tsv' "$out/$1-$2.json"
}
{
  echo "| job | target | MB/s | IOPS | p50 us | p99 us | b/a (MB/s) |"
  echo "|---|---|---|---|---|---|---|"
  for job in "${jobs[@]}"; do
    IFS=$'\t' read -r _ abw aiops ap50 ap99 < <(row a "$job")
    IFS=$'\t' read -r _ bbw biops bp50 bp99 < <(row b "$job")
    ratio=$(awk -v a="$abw" -v b="$bbw" 'BEGIN { printf "%.2f", (a > 0 ? b / a : 0) }')
    echo "| $job | (a) node: ext4 on plain loop | $abw | $aiops | $ap50 | $ap99 | |"
    echo "| $job | (b) pod: ext4 on sealvol PVC | $bbw | $biops | $bp50 | $bp99 | $ratio |"
  done
} | tee "$out/table.md"
cat "$out/machine.txt"
echo "fio_pod: results in $out"
