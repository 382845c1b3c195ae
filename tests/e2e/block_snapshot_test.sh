#!/usr/bin/env bash
# Scenario 8: a VolumeSnapshot of a raw block PVC (volumeMode: Block) while
# its pod writes the device, a Block PVC restored from it and one cloned
# from the source. A raw block volume has no file system to freeze: the
# engine's write hold alone makes the cut (docs/csi.md, "Snapshots and
# clones (node side)"). Checked:
#   * the restore reads the bytes written (O_DIRECT, fsync) before the
#     snapshot was cut, not those written after it, at the same offset or
#     another; the clone, made later, reads both;
#   * each copy has its own data key: no 4 KiB ciphertext block of the
#     source image appears in the restored or the cloned image.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
kubectl get crd volumesnapshots.snapshot.storage.k8s.io >/dev/null 2>&1 ||
  skip "the cluster has no VolumeSnapshot CRDs (scripts/k8s up installs them)"
ns=team-a-blksnap
new_ns $ns
mib=1048576

# A pod with the source device at /dev/sealvol: 4 MiB of random bytes at
# offset 8 MiB, direct and synced, then waits.
pvc $ns raw sealvol-block 64Mi Block
pod $ns src raw '
set -e
head -c 4194304 /dev/urandom > /tmp/before
dd if=/tmp/before of=/dev/sealvol bs=1M seek=8 oflag=direct conv=fsync,notrunc 2>/dev/null
echo "before $(sha256sum < /tmp/before | cut -c1-64)"
sleep 100000' block
wait_running $ns src 180
line=$(pod_line $ns src before 30)
[[ -n $line ]] || fail "the pod did not write the raw device: $(kubectl -n $ns logs src 2>&1 | tail -5)"
sum_before=${line#before }
# sums NS POD DEVICE: the sha256 of the 4 MiB at offsets 8 MiB and 24 MiB.
sums() {
  kubectl -n "$1" exec "$2" -- sh -c "
    dd if=$3 bs=1M skip=8 count=4 iflag=direct 2>/dev/null | sha256sum | cut -c1-64
    dd if=$3 bs=1M skip=24 count=4 iflag=direct 2>/dev/null | sha256sum | cut -c1-64" |
    tr '\n' ' ' || fail "read $3 in pod $1/$2"
  echo
}
zeros=$(head -c $((4 * mib)) /dev/zero | sha256sum | cut -c1-64)

asked=$(date +%s%N)
snapshot $ns snap raw
wait_cut $ns snap
cut_ms=$((($(date +%s%N) - asked) / 1000000))
# After the cut, while the pod still runs: 1 MiB over the start of the
# region written before, and 4 MiB at another offset (24 MiB).
kubectl -n $ns exec src -- sh -c '
set -e
head -c 1048576 /dev/urandom > /tmp/over
dd if=/tmp/over of=/dev/sealvol bs=1M seek=8 oflag=direct conv=fsync,notrunc 2>/dev/null
head -c 4194304 /dev/urandom > /tmp/after
dd if=/tmp/after of=/dev/sealvol bs=1M seek=24 oflag=direct conv=fsync,notrunc 2>/dev/null' ||
  fail "write the device after the cut"
read -r src_8 src_24 < <(sums $ns src /dev/sealvol)
[[ $src_8 != "$sum_before" && $src_24 != "$zeros" ]] || fail "the writes after the cut did not reach the source"
kubectl -n $ns wait --for=jsonpath='{.status.readyToUse}'=true volumesnapshot/snap --timeout=300s >/dev/null ||
  fail "snapshot not ready: $(kubectl -n $ns get volumesnapshot snap -o jsonpath='{.status}')"
say "block snapshot cut (creationTime seen) $cut_ms ms after the VolumeSnapshot was created, and ready"

pvc_from $ns restored sealvol-block 64Mi VolumeSnapshot snap Block
pvc_from $ns cloned sealvol-block 64Mi PersistentVolumeClaim raw Block
# One reader pod with both copies as raw devices.
kubectl apply -f - >/dev/null <<YAML || fail "create pod $ns/reader"
apiVersion: v1
kind: Pod
metadata: {name: reader, namespace: $ns}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: $image
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "sleep 100000"]
    securityContext: {runAsUser: 0}
    volumeDevices:
    - {name: restored, devicePath: /dev/restored}
    - {name: cloned, devicePath: /dev/cloned}
  volumes:
  - {name: restored, persistentVolumeClaim: {claimName: restored}}
  - {name: cloned, persistentVolumeClaim: {claimName: cloned}}
YAML
wait_running $ns reader 300
read -r r_8 r_24 < <(sums $ns reader /dev/restored)
[[ $r_8 == "$sum_before" ]] || fail "the restore does not hold the bytes written before the snapshot at 8 MiB"
[[ $r_24 == "$zeros" ]] || fail "the restore holds bytes at 24 MiB, written only after the snapshot"
read -r c_8 c_24 < <(sums $ns reader /dev/cloned)
[[ $c_8 == "$src_8" && $c_24 == "$src_24" ]] || fail "the clone differs from the source it was cloned from"
say "the restore reads the bytes of before the cut, not those written after it; the clone reads the source's"

no_shared_blocks $ns raw 1000 restored cloned
say "no 4 KiB ciphertext block of the source image is in the restore or the clone"
