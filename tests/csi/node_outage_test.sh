#!/usr/bin/env bash
# The key broker or the KMS behind it unavailable during NodePublishVolume,
# through the real node plugin: the caller gets UNAVAILABLE with a message
# naming the key broker (or, for the KMS, kms_error and its cause), nothing of the
# volume is mounted, attached or served (none of this test's mounts, loop
# devices or FUSE connections), and once the broker or KMS is back the same
# publish succeeds with the data intact.
set -euo pipefail
source "$(dirname "$0")/node_test_lib.sh"

start_controller
start_node node.log
read -r vol size < <("$sv" "${c[@]}" create outage --size 64Mi --tenant team-a)
stage "$vol" "$size"
publish "$vol" "$size"
note_ours
write_marker "before-the-outage"
unpublish "$vol"
# Unstaged too, so that every publish below has to attach from scratch.
unstage "$vol"
expect_counts 0 0 0 "after the first unstage"
stage "$vol" "$size"

# Publish must fail with exit 12 (UNAVAILABLE) and a message matching $2.
publish_unavailable() {
  local what=$1 pattern=$2 rc=0
  publish "$vol" "$size" 2>"$work/err" || rc=$?
  ((rc == 12)) || fail "$what: publish exit status $rc, expected 12: $(cat "$work/err")"
  grep -q "UNAVAILABLE" "$work/err" || fail "$what: not UNAVAILABLE: $(cat "$work/err")"
  grep -Eq "$pattern" "$work/err" || fail "$what: message does not match '$pattern': $(cat "$work/err")"
  expect_counts 0 0 0 "$what: after the failed publish"
  [[ -e $work/state/volumes/$vol/fuse ]] &&
    mountpoint -q "$work/state/volumes/$vol/fuse" && fail "$what: FUSE directory mounted"
  echo "$name: $what: $(head -n 1 "$work/err")"
}
# The retry succeeds and reads what was written before.
publish_again() {
  local what=$1
  publish "$vol" "$size" || fail "$what: publish after recovery"
  note_ours
  [[ $(cat "$target/marker") == before-the-outage ]] || fail "$what: data lost"
  expect_counts 3 1 1 "$what: republished"
  unpublish "$vol"
  unstage "$vol"
  expect_counts 0 0 0 "$what: after unpublish and unstage"
  stage "$vol" "$size"
  echo "$name: $what: retry published with the data intact"
}

# 1. The controller (and with it the broker) is stopped. The node's channel
# is then in gRPC's reconnect backoff; the retry must not wait that out.
stop_controller
publish_unavailable "controller stopped" "key broker"
start_controller
publish_again "controller back"

# 2. The KMS cannot unwrap: the embedded provider's key store is unreadable.
mv "$work/kms/keks" "$work/kms/keks.away"
publish_unavailable "KMS key store unreadable" "kms_error: unwrap: KEK"
mv "$work/kms/keks.away" "$work/kms/keks"
publish_again "KMS back"

unstage "$vol"
"$sv" "${c[@]}" delete "$vol"
expect_counts 0 0 0 "end"
echo "$name: passed"
