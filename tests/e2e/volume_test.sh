#!/usr/bin/env bash
# The volume's life in a real cluster (issue 15, scenarios 1-4 and 8):
#  1. a PVC in team-a on sealvol-ext4 is provisioned (external-provisioner,
#     --extra-create-metadata, CreateVolume) and bound;
#  2. a pod mounts it (kubelet NodeStage/NodePublish with podInfoOnMount and
#     tokenRequests), writes a file and is deleted; a second pod reads it
#     back; the audit log holds a grant naming each pod's name, uid and node;
#  3. the backing image on the node holds no plaintext;
#  4. a team-b pod bound by an admin's static PV to team-a's volume handle
#     never mounts: its events give the refusal, the audit log records it;
#  8. deleting the PVC crypto-shreds the key (sealvol keys no longer has it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
new_ns team-a
new_ns team-b
marker="sealvol-e2e-plaintext-$RANDOM$RANDOM"

# 1. Provisioned and bound (WaitForFirstConsumer: the writer pod triggers it).
pvc team-a data sealvol-ext4 256Mi
pod team-a writer data "for i in \$(seq 64); do echo $marker; done > /data/hello.txt && sync && sleep 100000"
wait_running team-a writer 180
[[ $(kubectl -n team-a get pvc data -o jsonpath='{.status.phase}') == Bound ]] || fail "PVC not Bound"
pv=$(pv_of team-a data)
vol=$(handle_of "$pv")
[[ $vol == sv-* ]] || fail "unexpected volume handle '$vol'"
# --extra-create-metadata: the PVC's namespace reached CreateVolume.
keys show "$vol" >"$work/record.json" || fail "sealvol keys show $vol"
jq -e '.tenant == "team-a"' "$work/record.json" >/dev/null ||
  fail "volume record does not name tenant team-a: $(cat "$work/record.json")"
say "1: PVC team-a/data bound to $pv ($vol, tenant team-a)"

# 2. Written by one pod, read back by another.
kubectl -n team-a exec writer -- grep -c "$marker" /data/hello.txt | grep -qx 64 || fail "writer cannot read its file"
kubectl -n team-a exec writer -- sh -c 'mount | grep " /data "' | grep -q ext4 || fail "/data is not the ext4 volume"
writer_uid=$(kubectl -n team-a get pod writer -o jsonpath='{.metadata.uid}')
delete_pod team-a writer
pod team-a reader data "sleep 100000"
wait_running team-a reader 180
reader_uid=$(kubectl -n team-a get pod reader -o jsonpath='{.metadata.uid}')
[[ $(kubectl -n team-a exec reader -- grep -c "$marker" /data/hello.txt) == 64 ]] ||
  fail "the second pod does not read the first pod's file"
nodename=$(node_name)
audit >"$work/audit.jsonl"
for p in "writer $writer_uid" "reader $reader_uid"; do
  set -- $p
  jq -s -e --arg v "$vol" --arg p "$1" --arg u "$2" --arg n "$nodename" \
    'any(.[]; .decision == "grant" and .volume == $v and .pod == $p and .pod_uid == $u
            and .node == $n and .namespace == "team-a")' "$work/audit.jsonl" >/dev/null ||
    fail "no audit grant for pod $1 (uid $2) on node $nodename: $(tail -n 3 "$work/audit.jsonl")"
done
say "2: written by pod writer, read back by pod reader; grants audited with both pods' uids and node $nodename"

# 3. The backing image holds ciphertext only.
img=$node_state/volumes/$vol/image
[[ -f $img ]] || fail "no backing image at $img"
if grep -aq "$marker" "$img"; then fail "the backing image holds the plaintext marker"; fi
# The same search finds the marker where it is in clear (the pod's view).
kubectl -n team-a exec reader -- cat /data/hello.txt | grep -aq "$marker" || fail "control search failed"
say "3: $(du -h --apparent-size "$img" | cut -f1) image on the node, no plaintext in it"

# 4. team-b, bound by an admin's static PV to team-a's volume, is refused.
# Retain: deleting it must not delete team-a's volume.
kubectl get pv "$pv" -o json | jq --arg name "stolen-$vol" '
  {apiVersion: "v1", kind: "PersistentVolume", metadata: {name: $name},
   spec: (.spec | .storageClassName = "" | .persistentVolumeReclaimPolicy = "Retain" |
          .claimRef = {namespace: "team-b", name: "stolen"})}' |
  kubectl apply -f - >/dev/null || fail "create the static PV"
kubectl apply -f - >/dev/null <<YAML || fail "create team-b's PVC"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: stolen, namespace: team-b}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: stolen-$vol
  resources: {requests: {storage: 256Mi}}
YAML
pod team-b thief stolen "cat /data/hello.txt; sleep 100000"
refusal=""
for _ in $(seq 120); do
  refusal=$(kubectl -n team-b get events --field-selector involvedObject.name=thief,reason=FailedMount \
    -o jsonpath='{.items[*].message}' 2>/dev/null)
  [[ -n $refusal ]] && break
  sleep 1
done
[[ -n $refusal ]] || fail "no FailedMount event for team-b's pod"
grep -q "namespace_mismatch" <<<"$refusal" || fail "FailedMount does not give the refusal reason: $refusal"
[[ $(kubectl -n team-b get pod thief -o jsonpath='{.status.phase}') == Pending ]] || fail "team-b's pod left Pending"
audit | jq -s -e --arg v "$vol" 'any(.[]; .decision == "refuse" and .reason == "namespace_mismatch"
    and .volume == $v and .namespace == "team-b" and .pod == "thief")' >/dev/null ||
  fail "the refusal is not in the audit log"
say "4: team-b's pod refused: $(grep -o 'namespace_mismatch[^"]*' <<<"$refusal" | head -n 1 | cut -c1-100)"
delete_pod team-b thief
kubectl delete pvc -n team-b stolen --wait=true >/dev/null
kubectl delete pv "stolen-$vol" --wait=true >/dev/null

# 8. Deleting the PVC crypto-shreds the key.
delete_pod team-a reader
keys list | jq -e --arg v "$vol" 'map(select(.volume_id == $v)) | length == 1' >/dev/null ||
  fail "sealvol keys list does not list $vol before the delete"
kubectl -n team-a delete pvc data --wait=true --timeout=120s >/dev/null || fail "delete PVC"
for _ in $(seq 120); do
  kubectl get pv "$pv" >/dev/null 2>&1 || break
  sleep 0.5
done
kubectl get pv "$pv" >/dev/null 2>&1 && fail "PV $pv still exists after the PVC was deleted"
keys list | jq -e --arg v "$vol" 'map(select(.volume_id == $v)) | length == 0' >/dev/null ||
  fail "sealvol keys still lists $vol after DeleteVolume"
if keys show "$vol" >/dev/null 2>&1; then fail "sealvol keys show $vol still finds a record"; fi
say "8: PVC deleted: PV gone, $vol's key destroyed (sealvol keys no longer lists it)"
