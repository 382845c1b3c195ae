#!/usr/bin/env bash
# Scenario 7: deleting the node plugin pod while a pod uses a volume. The
# DaemonSet starts a new one; it recovers as docs/operations.md ("When the
# node plugin restarts") says: the dead data path is cleaned up (no FUSE
# mount, loop device or mount of it left on the node), the volume is not
# re-attached by itself, and restarting the tenant's pod brings it back
# through a new attested publish, with the fsynced data intact.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
new_ns team-a-restart
marker="sealvol-e2e-restart-$RANDOM"
pvc team-a-restart data sealvol-ext4 64Mi
pod team-a-restart p data "echo $marker > /data/m && sync && sleep 100000"
wait_running team-a-restart p 180
vol=$(handle_of "$(pv_of team-a-restart data)")
fuse_dir=$node_state/volumes/$vol/fuse
# What the live data path holds on the node: its FUSE mount and loop device.
mountpoint -q "$fuse_dir" || fail "the volume's FUSE directory is not mounted"
old=$(node_pod)
kubectl -n "$driver_ns" delete pod "$old" --wait=true --timeout=120s >/dev/null || fail "delete the node plugin pod"
new=""
for _ in $(seq 180); do
  new=$(node_pod)
  [[ -n $new && $new != "$old" ]] &&
    kubectl -n "$driver_ns" wait --for=condition=Ready "pod/$new" --timeout=1s >/dev/null 2>&1 && break
  sleep 1
done
[[ -n $new && $new != "$old" ]] || fail "the DaemonSet did not start a new node plugin pod"
kubectl -n "$driver_ns" logs "$new" -c sealvol >"$work/node.log"
grep -q "recover: volume $vol" "$work/node.log" ||
  fail "the new node plugin did not report recovering $vol"
mountpoint -q "$fuse_dir" && fail "the dead data path's FUSE directory is still mounted"
grep " $node_state/volumes/$vol/" /proc/self/mounts | grep -q fuse && fail "a FUSE mount of $vol is left"
say "7: node plugin $old deleted, $new recovered $vol and left no FUSE mount"
# The tenant restarts its pod; the new publish attests and reattaches.
delete_pod team-a-restart p
pod team-a-restart p data "sleep 100000"
wait_running team-a-restart p 180
[[ $(kubectl -n team-a-restart exec p -- cat /data/m) == "$marker" ]] || fail "data lost across the restart"
say "7: the restarted pod reads its data back through a new publish"
