#!/usr/bin/env bash
# kill -9 of the node plugin in the middle of NodePublishVolume,
# NodeUnpublishVolume and NodeUnstageVolume, after every step of the attach
# and of the detach (SEALVOL_KILL_AFTER_STEP, io/frontend/volume_attach.h).
# For each point: the RPC fails, the kill leaves what it leaves (counted),
# the restarted node reconciles so that none of this test's mounts, loop
# devices or FUSE connections remain, a publish then succeeds with the data
# written (and fsynced) before intact, and unpublish + unstage return every
# count to zero.
set -euo pipefail
source "$(dirname "$0")/node_test_lib.sh"

start_controller
read -r vol size < <("$sv" "${c[@]}" create crash --size 64Mi --tenant team-a)
read -r fresh fresh_size < <("$sv" "${c[@]}" create crash-fresh --size 64Mi --tenant team-a)
global_counts
expect_counts 0 0 0 "baseline"

# A first life of the volume: filesystem made, a marker written.
start_node node0.log
stage "$vol" "$size"
publish "$vol" "$size"
note_ours
expect_counts 3 1 1 "published"
generation=0
write_marker "generation-$generation"
unpublish "$vol"
unstage "$vol"
expect_counts 0 0 0 "after the first unstage"
stop_node

# Kills the node with SEALVOL_KILL_AFTER_STEP=$step during `$rpc`, checks what
# it left (`$left` of our mounts), restarts it and checks the reconciliation.
crash_at() {
  local rpc=$1 step=$2 left=$3 id=$vol sz=$size
  [[ $step == mkfs ]] && id=$fresh sz=$fresh_size  # Only a first use runs mkfs.
  local log=node-$step.log
  start_node "$log" SEALVOL_KILL_AFTER_STEP="$step"
  local dead=$node_pid
  stage "$id" "$sz"
  if [[ $rpc != publish ]]; then
    publish "$id" "$sz"
    note_ours
    generation=$((generation + 1))
    write_marker "generation-$generation"
  fi
  [[ $rpc == unstage ]] && unpublish "$id"
  if "$rpc" "$id" "$sz" 2>"$work/rpc.err"; then
    fail "$step: $rpc succeeded although the node was to be killed"
  fi
  local rc=0
  wait "$dead" 2>/dev/null || rc=$?
  ((rc == 137)) || fail "$step: node exit status $rc, not 137 (SIGKILL)"
  grep -q "injected kill after step $step" "$work/$log" || fail "$step: not killed at that step"
  note_ours
  local after_kill
  after_kill=$(counts)
  [[ $(our_mounts) == "$left" ]] ||
    fail "$step: the kill left $(our_mounts) mounts, expected $left ($after_kill)"

  start_node "$log"
  expect_counts 0 0 0 "$step: after the restart"
  if [[ $id == "$vol" ]]; then
    "$sv" "${n[@]}" stats "$id" --path "$staging" | grep -q "condition.abnormal" ||
      fail "$step: the interrupted volume is not reported abnormal"
  fi
  publish "$id" "$sz" || fail "$step: publish after the restart"
  note_ours
  expect_counts 3 1 1 "$step: republished"
  if [[ $id == "$vol" ]]; then
    [[ $(cat "$target/marker") == "generation-$generation" ]] ||
      fail "$step: marker is '$(cat "$target/marker")', expected generation-$generation"
    generation=$((generation + 1))
    write_marker "generation-$generation"
  else
    write_marker "fresh"  # The filesystem mkfs made before the kill works.
  fi
  unpublish "$id"
  unstage "$id"
  expect_counts 0 0 0 "$step: after unpublish and unstage"
  stop_node
  echo "$name: $rpc killed after $step: left $after_kill; restart cleared all;" \
    "republished with data intact"
}

# NodePublishVolume: key released, engine opened, FUSE mounted, FUSE served,
# loop attached, mkfs (first use), staging mounted, target bind-mounted.
crash_at publish key 0
crash_at publish engine 0
crash_at publish fuse-mount 1
crash_at publish fuse-serve 1
crash_at publish loop 1
crash_at publish mkfs 1
crash_at publish mount 2
crash_at publish bind 3
# NodeUnpublishVolume: target unmounted (record not yet updated).
crash_at unpublish target-unmount 2
# NodeUnstageVolume: staging unmounted, loop detached, FUSE unmounted, FUSE
# server stopped, engine closed (record not yet removed).
crash_at unstage staging-unmount 1
crash_at unstage loop-detach 1
crash_at unstage fuse-unmount 0
crash_at unstage server-stop 0
crash_at unstage engine-close 0

global_counts
"$sv" "${c[@]}" delete "$vol"
"$sv" "${c[@]}" delete "$fresh"
echo "$name: passed"
