#!/usr/bin/env bash
# Scenario 6: a block-mode PVC (sealvol-block) in a pod. The kubelet (1.34,
# pkg/volume/csi/csi_block.go) sends the pod's name, namespace, uid and
# service account with a block volume's NodePublishVolume, but no
# service-account token; the e2e install runs the broker with
# broker.attestBlockPodsViaApiServer, so it confirms the pod through the API
# server instead (docs/attestation.md, "Block volumes"). Checked here:
#   - a pod with volumeDevices writes the raw device and reads it back, and a
#     second pod (a second key release) reads the same bytes;
#   - each grant is audited with attestation api_server, the pod's real name
#     and uid, and the node;
#   - a pod on the same node, in the same namespace, on the same claim, but
#     with a service account the StorageClass does not allow, never gets the
#     key: FailedMapVolume naming service_account_not_allowed, audited.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=team-a-block
new_ns $ns
pvc $ns raw sealvol-block 64Mi Block

# 1 MiB of random bytes at offset 4 MiB, written through the page cache with
# fsync and read back with O_DIRECT (from the sealed device, not the cache).
pod $ns p raw '
set -e
head -c 1048576 /dev/urandom > /tmp/pattern
dd if=/tmp/pattern of=/dev/sealvol bs=1M seek=4 conv=fsync,notrunc 2>/dev/null
dd if=/dev/sealvol of=/tmp/back bs=1M skip=4 count=1 iflag=direct 2>/dev/null
cmp /tmp/pattern /tmp/back
echo "written $(sha256sum < /tmp/pattern | cut -c1-64) size $(blockdev --getsize64 /dev/sealvol)"
sleep 100000' block
wait_running $ns p 180
line=$(pod_line $ns p written 30)
[[ -n $line ]] || fail "the pod did not write and verify the raw device: $(kubectl -n $ns logs p 2>&1 | tail -5)"
read -r _ sum _ size <<<"$line"
((size >= 64 * 1024 * 1024)) || fail "the raw device has $size bytes, the PVC asked for 64Mi"
uid_p=$(kubectl -n $ns get pod p -o jsonpath='{.metadata.uid}')
node=$(node_name)
say "6: pod p wrote 1 MiB to the raw device and read it back (device $size bytes)"

# A second pod, a second key release: the same bytes.
delete_pod $ns p
pod $ns p2 raw '
set -e
echo "read $(dd if=/dev/sealvol bs=1M skip=4 count=1 iflag=direct 2>/dev/null | sha256sum | cut -c1-64)"
sleep 100000' block
wait_running $ns p2 180
back=""
for _ in $(seq 30); do
  back=$(kubectl -n $ns logs p2 2>/dev/null | sed -n 's/^read //p')
  [[ -n $back ]] && break
  sleep 1
done
[[ $back == "$sum" ]] || fail "pod p2 read $back at offset 4 MiB, pod p wrote $sum"
uid_p2=$(kubectl -n $ns get pod p2 -o jsonpath='{.metadata.uid}')
say "6: pod p2 read the same bytes back"

# The grants: attested through the API server, naming each pod and the node.
records=$(audit)
for pair in "p:$uid_p" "p2:$uid_p2"; do
  jq -se --arg pod "${pair%%:*}" --arg uid "${pair#*:}" --arg node "$node" --arg ns $ns \
    'any(.[]; .decision == "grant" and .reason == "granted" and .attestation == "api_server"
              and .namespace == $ns and .pod == $pod and .pod_uid == $uid and .node == $node)' \
    <<<"$records" >/dev/null ||
    fail "no api_server grant for pod ${pair%%:*} (uid ${pair#*:}) on $node in the audit log"
done

# Same node, same namespace, same claim, another service account: refused.
kubectl -n $ns create serviceaccount other >/dev/null || fail "create service account other"
POD_SA=other pod $ns intruder raw 'sleep 100000' block
event=""
for _ in $(seq 120); do
  event=$(kubectl -n $ns get events --field-selector involvedObject.name=intruder,reason=FailedMapVolume \
    -o jsonpath='{.items[*].message}' 2>/dev/null)
  [[ -n $event ]] && break
  sleep 1
done
[[ -n $event ]] || fail "the intruder pod got no FailedMapVolume event: $(kubectl -n $ns get pod intruder -o jsonpath='{.status.phase}')"
grep -q "service_account_not_allowed" <<<"$event" || fail "FailedMapVolume without service_account_not_allowed: $event"
[[ $(kubectl -n $ns get pod intruder -o jsonpath='{.status.phase}') == Pending ]] || fail "the intruder pod left Pending"
uid_i=$(kubectl -n $ns get pod intruder -o jsonpath='{.metadata.uid}')
audit | jq -se --arg uid "$uid_i" \
  'any(.[]; .decision == "refuse" and .reason == "service_account_not_allowed" and .attestation == "api_server"
            and .pod == "intruder" and .pod_uid == $uid and .service_account == "other")' >/dev/null ||
  fail "the intruder's refusal is not in the audit log"
[[ $(audit | jq -s --arg uid "$uid_i" '[.[] | select(.pod_uid == $uid and .decision == "grant")] | length') == 0 ]] ||
  fail "the intruder pod was granted a key"
say "6: a pod of service account other on the same node and claim is refused (service_account_not_allowed, audited)"
