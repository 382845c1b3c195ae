#!/usr/bin/env bash
# Issue 16: kill -9 of the node plugin in the middle of a snapshot copy
# (SEALVOL_KILL_AFTER_STEP at each step of a copy job: the partial cut
# written, the cut in place, a progress report, the copy done but not yet
# reported). While the node is down the snapshot is never listed ready; after
# the restart its job completes (or, had it been lost, fails cleanly: never
# ready with half an image), and a volume restored from it holds the file
# that was synced before the snapshot was taken and not the one written after.
# Needs root and /dev/fuse.
set -euo pipefail
source "$(dirname "$0")/node_test_lib.sh"

start_controller --enable-snapshots --snapshot-cut-timeout 2s
# 256 MiB: the copy reports progress every 64 MiB, so "copy-progress" kills
# it in the middle.
read -r vol size < <("$sv" "${c[@]}" create kill-source --size 256Mi --tenant team-a --node "$node")
restore_staging=$work/restore-staging
restore_target=$work/restore-target
mkdir -p "$restore_staging"

# snapshot_state ID: "ready=true", "ready=false" or "" (not listed).
snapshot_state() {
  "$sv" "${c[@]}" snapshots --id "$1" | awk '{ print $4 }'
}
# Calls CreateSnapshot until it answers (the sidecar's retries); prints the id.
take_snapshot() {
  local out
  for _ in $(seq 60); do
    if out=$("$sv" "${c[@]}" snapshot "$1" --source "$vol" 2>>"$work/snapshot.err"); then
      echo "${out%%$'\t'*}"
      return 0
    fi
    sleep 0.5
  done
  fail "CreateSnapshot $1 never answered: $(tail -n 3 "$work/snapshot.err")"
}

for step in copy-partial-cut copy-cut copy-progress copy-copied; do
  log=node-$step.log
  start_node "$log" SEALVOL_KILL_AFTER_STEP="$step"
  killed_pid=$node_pid
  stage "$vol" "$size"
  publish "$vol" "$size"
  note_ours
  write_marker "before-$step"

  # The cut happens while the node is alive; the kill comes at $step.
  "$sv" "${c[@]}" snapshot "snap-$step" --source "$vol" >/dev/null 2>>"$work/snapshot.err" || true
  for _ in $(seq 300); do
    kill -0 "$killed_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$killed_pid" 2>/dev/null && fail "$step: the node was not killed at the step"
  wait "$killed_pid" 2>/dev/null || true
  grep -q "injected kill after step $step" "$work/$log" || fail "$step: killed elsewhere"
  # Listed once CreateSnapshot has cut it (a pending one is not listed).
  listed=$("$sv" "${c[@]}" snapshots --source "$vol" | awk -v v="$vol" '$2 == v { print $1 " " $4 }')
  [[ $listed != *ready=true* ]] || fail "$step: listed ready while its node is down: $listed"
  echo "$name: $step: node killed; listed: ${listed:-nothing}"

  start_node "node-$step-restarted.log"
  # The source's dead mounts: undo them the CSI way.
  unpublish "$vol"
  unstage "$vol"
  expect_counts 0 0 0 "$step: source unstaged"
  snap=$(take_snapshot "snap-$step")
  [[ -z $listed || ${listed%% *} == "$snap" ]] || fail "$step: a retry took another snapshot"
  for _ in $(seq 300); do
    [[ $(snapshot_state "$snap") == ready=true ]] && break
    sleep 0.1
  done
  [[ $(snapshot_state "$snap") == ready=true ]] ||
    fail "$step: snapshot $snap not ready after the restart ($(snapshot_state "$snap"))"

  # A restore from it: placed on this node, ABORTED while its copy runs.
  restored=""
  for _ in $(seq 300); do
    if out=$("$sv" "${c[@]}" create "restore-$step" --size 256Mi --tenant team-a \
        --node "$node" --from-snapshot "$snap" 2>>"$work/restore.err"); then
      restored=${out%%$'\t'*}
      break
    fi
    sleep 0.1
  done
  [[ -n $restored ]] || fail "$step: the restore never completed: $(tail -n 2 "$work/restore.err")"
  "$sv" "${n[@]}" stage "$restored" --staging-path "$restore_staging" --size "$size"
  "$sv" "${n[@]}" publish "$restored" --staging-path "$restore_staging" --target "$restore_target" \
    --size "$size" --pod team-a/p0 --pod-uid u0 --token-file "$work/pod.token"
  [[ $(cat "$restore_target/marker") == "before-$step" ]] ||
    fail "$step: the restore holds '$(cat "$restore_target/marker")', not before-$step"
  "$sv" "${n[@]}" unpublish "$restored" --target "$restore_target"
  "$sv" "${n[@]}" unstage "$restored" --staging-path "$restore_staging"
  "$sv" "${c[@]}" delete "$restored"
  "$sv" "${c[@]}" delete-snapshot "$snap"
  stop_node
  expect_counts 0 0 0 "$step: after the restore"
  # Nothing of the job is left beside the images.
  left=$(find "$work/state" -name '*.partial' -o -name 'cut' -o -name '*.copy' | head -n 3)
  [[ -z $left ]] || fail "$step: copy files left behind: $left"
  echo "$name: $step: killed, restarted, snapshot ready, restore holds the data"
done
echo "$name: passed"
