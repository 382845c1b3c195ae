#!/usr/bin/env bash
# Never format twice with one key (docs/csi.md, "Format claims"), through the
# real controller (embedded KMS registry, KeyBroker, audit log) and node
# plugin:
#   1. image deleted while unstaged, then publish: FAILED_PRECONDITION naming
#      the volume, the image and docs/operations.md; nothing mounted,
#      attached or served; no image or temp file made; an already_formatted
#      refusal in the audit log; the registry's format id unchanged. The
#      image restored from a copy publishes again with its data.
#   2. node rebuilt with the same node id and an empty state dir: the same.
#   3. kill -9 of the node between format and claim, and between claim and
#      rename, of a first format: the restarted node publishes an empty fresh
#      volume, and the registry holds exactly one format id (one
#      format_claimed record), the image's.
#   4. the one-shot `sealvol format` records the claim with a local provider,
#      and `sealvol write` refuses an image of another format (adopting one
#      the registry has no format for).
set -euo pipefail
source "$(dirname "$0")/node_test_lib.sh"

registry_format() { jq -r '.format_id // ""' "$work/kms/volumes/$1.json"; }
image_of() { echo "$work/state/volumes/$1/image"; }
audit_count() { # REASON VOLUME
  grep -F "\"reason\":\"$1\"" "$work/audit.jsonl" | grep -cF "\"volume\":\"$2\"" || true
}
image_format() { "$sv" dump "$1" | jq -r '.format_id'; }

# Publish must be refused: FAILED_PRECONDITION naming the volume and image,
# an audited refusal, nothing of the volume left on the machine.
expect_refused() {
  local what=$1 id=$2 sz=$3 want=$4 rc=0 image before
  image=$(image_of "$id")
  before=$(audit_count already_formatted "$id")
  publish "$id" "$sz" 2>"$work/err" || rc=$?
  ((rc != 0)) || fail "$what: publish succeeded"
  grep -q "FAILED_PRECONDITION" "$work/err" || fail "$what: not FAILED_PRECONDITION: $(cat "$work/err")"
  grep -qF "volume $id" "$work/err" || fail "$what: the message does not name the volume: $(cat "$work/err")"
  grep -qF "$image" "$work/err" || fail "$what: the message does not name the image: $(cat "$work/err")"
  grep -qF "docs/operations.md" "$work/err" || fail "$what: the message does not say what to do"
  expect_counts 0 0 0 "$what: after the refusal"
  [[ ! -e $image.formatting ]] || fail "$what: a temporary image was left behind"
  [[ $(audit_count already_formatted "$id") == $((before + 1)) ]] ||
    fail "$what: no already_formatted record in the audit log"
  [[ $(registry_format "$id") == "$want" ]] || fail "$what: the registry's format id changed"
  echo "$name: $what: refused: $(head -c 300 "$work/err")"
}

start_controller
start_node node.log
read -r vol size < <("$sv" "${c[@]}" create claim --size 64Mi --tenant team-a)
image=$(image_of "$vol")
[[ -z $(registry_format "$vol") ]] || fail "a new volume already has a format id"
stage "$vol" "$size"
publish "$vol" "$size"
note_ours
expect_counts 3 1 1 "published"
write_marker "first-life"
unpublish "$vol"
unstage "$vol"
expect_counts 0 0 0 "after the first unstage"
first=$(registry_format "$vol")
[[ $first =~ ^[0-9a-f]{32}$ ]] || fail "the first format was not claimed ('$first')"
[[ $(image_format "$image") == "$first" ]] || fail "the image's format id is not the registry's"
[[ $(audit_count format_claimed "$vol") == 1 ]] || fail "no format_claimed audit record"
cp --sparse=always "$image" "$work/saved-image"

# 1. The image is lost.
rm "$image"
stage "$vol" "$size"
expect_refused "image deleted" "$vol" "$size" "$first"
[[ ! -e $image ]] || fail "image deleted: a new image was formatted"
# Emptied or overwritten instead: the same.
: >"$image"
expect_refused "image emptied" "$vol" "$size" "$first"
head -c 1M /dev/urandom >"$image"
expect_refused "image overwritten" "$vol" "$size" "$first"
# The operator restores it from the copy (docs/operations.md).
cp --sparse=always "$work/saved-image" "$image"
publish "$vol" "$size"
note_ours
[[ $(cat "$target/marker") == first-life ]] || fail "restored image: data lost"
unpublish "$vol"
unstage "$vol"
expect_counts 0 0 0 "after the restored image was unstaged"

# 2. The node is rebuilt: same node id, empty state directory.
stop_node
rm -rf "$work/state"
start_node node-rebuilt.log
stage "$vol" "$size"
expect_refused "node rebuilt" "$vol" "$size" "$first"
[[ ! -e $image ]] || fail "node rebuilt: a new image was formatted"
unstage "$vol"
stop_node

# 3. kill -9 in the middle of a first format.
crash_first_format() {
  local step=$1
  local log=node-$step.log id sz dead rc=0 at_kill
  read -r id sz < <("$sv" "${c[@]}" create "fresh-$step" --size 64Mi --tenant team-a)
  start_node "$log" SEALVOL_KILL_AFTER_STEP="$step"
  dead=$node_pid
  stage "$id" "$sz"
  publish "$id" "$sz" 2>"$work/err" && fail "$step: publish succeeded although the node was to be killed"
  wait "$dead" 2>/dev/null || rc=$?
  ((rc == 137)) || fail "$step: node exit status $rc, not 137 (SIGKILL)"
  grep -q "injected kill after step $step" "$work/$log" || fail "$step: not killed at that step"
  [[ -e $(image_of "$id").formatting ]] || fail "$step: no temporary image at the kill"
  [[ ! -e $(image_of "$id") ]] || fail "$step: the image was in place before the claim was done"
  at_kill=$(registry_format "$id")
  case $step in
    format) [[ -z $at_kill ]] || fail "format: claimed before the kill point" ;;
    claim) [[ $at_kill =~ ^[0-9a-f]{32}$ ]] || fail "claim: not claimed at the kill point" ;;
  esac
  start_node "$log"
  publish "$id" "$sz" || fail "$step: publish after the restart"
  note_ours
  expect_counts 3 1 1 "$step: published after the restart"
  [[ $(find "$target" -mindepth 1 -maxdepth 1 ! -name lost+found | wc -l) == 0 ]] ||
    fail "$step: the fresh volume is not empty"
  write_marker "fresh-$step"
  local now
  now=$(registry_format "$id")
  [[ $now =~ ^[0-9a-f]{32}$ ]] || fail "$step: no format id in the registry"
  [[ $step != claim || $now == "$at_kill" ]] || fail "claim: the claimed format was not the one completed"
  [[ $(image_format "$(image_of "$id")") == "$now" ]] || fail "$step: the image is not the claimed format"
  [[ $(audit_count format_claimed "$id") == 1 ]] || fail "$step: $(audit_count format_claimed "$id") format claims recorded, expected 1"
  [[ $(audit_count already_formatted "$id") == 0 ]] || fail "$step: a claim was refused"
  [[ ! -e $(image_of "$id").formatting ]] || fail "$step: the temporary image was left behind"
  unpublish "$id"
  unstage "$id"
  expect_counts 0 0 0 "$step: after unpublish and unstage"
  stop_node
  "$sv" "${c[@]}" delete "$id"
  echo "$name: killed after $step of a first format: restart published a fresh volume, one format id ($now)"
}
crash_first_format format
crash_first_format claim

"$sv" "${c[@]}" delete "$vol"

# 4. The one-shot CLI with the embedded provider.
cli=$work/cli
mkdir -p "$cli"
"$sv" format "$cli/v.img" --size 4M --state-dir "$cli/kms" --tenant team-a >"$work/out"
cli_vol=$(jq -r .volume_id "$work/out")
cli_format=$(jq -r .format_id "$work/out")
[[ $cli_format =~ ^[0-9a-f]{32}$ ]] || fail "cli: format printed no format id"
[[ $(jq -r .format_id "$cli/kms/volumes/$cli_vol.json") == "$cli_format" ]] ||
  fail "cli: format did not record the claim"
[[ $(image_format "$cli/v.img") == "$cli_format" ]] || fail "cli: the image's format id is not the claimed one"
echo "first" | "$sv" write "$cli/v.img" --offset 0 --state-dir "$cli/kms"
# The registry says another format: the image is not the volume's.
jq '.format_id = "00000000000000000000000000000001"' "$cli/kms/volumes/$cli_vol.json" >"$work/rec"
cp "$work/rec" "$cli/kms/volumes/$cli_vol.json"
if echo "second" | "$sv" write "$cli/v.img" --offset 0 --state-dir "$cli/kms" 2>"$work/err"; then
  fail "cli: write to an image of another format succeeded"
fi
grep -qF "$cli_vol" "$work/err" && grep -qF "registry recorded format id" "$work/err" ||
  fail "cli: the refusal does not say why: $(cat "$work/err")"
# A record from before format claims: the image is adopted.
jq 'del(.format_id, .formatted_node, .formatted_unix)' "$work/rec" >"$cli/kms/volumes/$cli_vol.json"
echo "third" | "$sv" write "$cli/v.img" --offset 0 --state-dir "$cli/kms"
[[ $(jq -r .format_id "$cli/kms/volumes/$cli_vol.json") == "$cli_format" ]] ||
  fail "cli: write did not adopt the image's format"
echo "$name: cli: format recorded $cli_format; write refused another format, adopted an unclaimed one"

"$sv" audit verify "$work/audit.jsonl" >/dev/null || fail "the audit chain does not verify"
global_counts
echo "$name: passed"
