#!/usr/bin/env bash
# Scenario 7: a VolumeSnapshot of a PVC in use, a PVC restored from it and a
# PVC cloned from the source, through the real sidecars (csi-snapshotter,
# snapshot-controller, csi-provisioner) and the node's copy jobs:
#   * the restore holds exactly what was written before the snapshot was
#     cut (a file written after the VolumeSnapshot got its creationTime is
#     absent), the clone holds both;
#   * every copy has its own data key: no 4 KiB ciphertext block of the
#     source image appears in the restored or the cloned image, and the
#     registry holds a distinct wrapped key per record;
#   * deleting the source (crypto-shred) leaves the restore and the clone
#     readable; deleting the snapshot leaves the restore readable.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
kubectl get crd volumesnapshots.snapshot.storage.k8s.io >/dev/null 2>&1 ||
  skip "the cluster has no VolumeSnapshot CRDs (scripts/k8s up installs them)"
ns=team-a-snap
new_ns $ns

checksum() { kubectl -n $ns exec "$1" -- sh -c "cd /data && sha256sum $2" | awk '{print $1}'; }

pvc $ns data sealvol-ext4 256Mi
pod $ns src data "head -c 8M /dev/urandom > /data/before && sync && sleep 100000"
wait_running $ns src 180
sum_before=$(checksum src before)

snapshot $ns snap data
wait_cut $ns snap
# Written after the cut: must not be in the snapshot, must be in a later clone.
kubectl -n $ns exec src -- sh -c "head -c 1M /dev/urandom > /data/after && sync" || fail "write after the cut"
kubectl -n $ns wait --for=jsonpath='{.status.readyToUse}'=true volumesnapshot/snap --timeout=300s >/dev/null ||
  fail "snapshot not ready: $(kubectl -n $ns get volumesnapshot snap -o jsonpath='{.status}')"
say "snapshot cut and ready ($(kubectl -n $ns get volumesnapshot snap -o jsonpath='{.status.restoreSize}'))"

pvc_from $ns restored sealvol-ext4 512Mi VolumeSnapshot snap
pvc_from $ns cloned sealvol-ext4 256Mi PersistentVolumeClaim data
pod $ns r restored "sleep 100000"
pod $ns c cloned "sleep 100000"
wait_running $ns r 300
wait_running $ns c 300
[[ $(checksum r before) == "$sum_before" ]] || fail "the restored volume's file differs from the source's"
kubectl -n $ns exec r -- test -e /data/after && fail "a file written after the snapshot is in the restored volume"
[[ $(checksum c before) == "$sum_before" ]] || fail "the clone's file differs from the source's"
[[ $(checksum c after) == "$(checksum src after)" ]] || fail "the clone lacks the file written before it was made"
# The restore was asked 512Mi from a 256Mi snapshot: its file system grew.
size=$(kubectl -n $ns exec r -- df -B1 --output=size /data | tail -n 1)
((size > 384 * 1024 * 1024)) || fail "the restored file system was not grown to the request: $size bytes"
say "restore and clone give back the same files; the file written after the cut is only in the clone"

no_shared_blocks $ns data 2000 restored cloned
src_vol=$(handle_of "$(pv_of $ns data)")
# The embedded registry's records (sealvol keys shows everything but the
# wrapped key): source, snapshot, restore and clone, four wrapped keys.
content=$(kubectl -n $ns get volumesnapshot snap -o jsonpath='{.status.boundVolumeSnapshotContentName}')
snap_id=$(kubectl get volumesnapshotcontent "$content" -o jsonpath='{.status.snapshotHandle}')
ids=("$src_vol" "$snap_id" "$(handle_of "$(pv_of $ns restored)")" "$(handle_of "$(pv_of $ns cloned)")")
wrapped=$(for id in "${ids[@]}"; do
  kubectl -n "$driver_ns" exec "$(controller_pod)" -c sealvol -- cat "/tmp/kms/volumes/$id.json" | jq -r .wrapped_dek
done)
[[ $(grep -c . <<<"$wrapped") == 4 && $(grep -c null <<<"$wrapped") == 0 ]] ||
  fail "expected 4 wrapped keys (source, snapshot, restore, clone): $wrapped"
[[ $(sort <<<"$wrapped" | uniq -d) == "" ]] || fail "two registry records share a wrapped data key"
say "no ciphertext block shared between the source and either copy; every record has its own wrapped key"

# Crypto-shred the source: the copies stay readable.
delete_pod $ns src
kubectl -n $ns delete pvc data --wait=true --timeout=120s >/dev/null || fail "delete the source PVC"
for _ in $(seq 60); do keys show "$src_vol" >/dev/null 2>&1 || break; sleep 1; done
keys show "$src_vol" >/dev/null 2>&1 && fail "the source's key survived its deletion"
kubectl -n $ns exec r -- sh -c 'echo 3 > /proc/sys/vm/drop_caches' 2>/dev/null || true
[[ $(checksum r before) == "$sum_before" ]] || fail "the restore is unreadable after the source was shredded"
[[ $(checksum c before) == "$sum_before" ]] || fail "the clone is unreadable after the source was shredded"
# Delete the snapshot: the restore stays readable; its key is gone.
kubectl -n $ns delete volumesnapshot snap --wait=true --timeout=120s >/dev/null || fail "delete the snapshot"
delete_pod $ns r
pod $ns r2 restored "sleep 100000"
wait_running $ns r2 180
[[ $(checksum r2 before) == "$sum_before" ]] ||
  fail "the restore is unreadable (re-published) after the snapshot was deleted"
audit | jq -s -e 'any(.[]; .decision == "grant" and .reason == "copy_key_released")' >/dev/null ||
  fail "no copy key release in the audit log"
say "source shredded and snapshot deleted: restore and clone still read; copy key releases audited"
