#!/usr/bin/env bash
# Scenario 5: expanding a PVC grows the file system the pod sees
# (external-resizer ControllerExpandVolume, then the kubelet's
# NodeExpandVolume). xfs: online ext4 growth needs CAP_SYS_RESOURCE, which
# the machine the cluster was built on lacks (docs/testing.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
new_ns team-a-expand
pvc team-a-expand data sealvol-xfs 512Mi
pod team-a-expand p data "echo kept > /data/kept && sync && sleep 100000"
wait_running team-a-expand p 180
before=$(kubectl -n team-a-expand exec p -- df -B1 --output=size /data | tail -n 1)
kubectl -n team-a-expand patch pvc data --type=merge -p '{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}' >/dev/null ||
  fail "patch the PVC"
after=$before
for _ in $(seq 180); do
  after=$(kubectl -n team-a-expand exec p -- df -B1 --output=size /data | tail -n 1)
  ((after > before + 256 * 1024 * 1024)) && break
  sleep 1
done
((after > before + 256 * 1024 * 1024)) ||
  fail "the pod's file system did not grow: $before -> $after bytes; PVC: $(kubectl -n team-a-expand get pvc data -o jsonpath='{.status}')"
for _ in $(seq 60); do
  [[ $(kubectl -n team-a-expand get pvc data -o jsonpath='{.status.capacity.storage}') == 1Gi ]] && break
  sleep 1
done
[[ $(kubectl -n team-a-expand get pvc data -o jsonpath='{.status.capacity.storage}') == 1Gi ]] ||
  fail "PVC capacity not 1Gi"
[[ $(kubectl -n team-a-expand exec p -- cat /data/kept) == kept ]] || fail "data lost across the expansion"
say "5: xfs PVC expanded 512Mi -> 1Gi: the pod's file system $before -> $after bytes, data kept"
