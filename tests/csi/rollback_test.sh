#!/usr/bin/env bash
# Offline rollback detection (issue 13; docs/security.md, "Rollback") through
# the real controller (embedded KMS registry, KeyBroker, audit log) and node
# plugin, and through the one-shot CLI:
#   1. a volume's image is copied while unstaged, written again and
#      unstaged; the copy is put back: publish is FAILED_PRECONDITION naming
#      the volume and "rolled back", audited (rolled_back), with nothing
#      mounted, attached or connected. Every open and close was committed
#      (state_opened / state_committed) and the registry's epoch only rose.
#   2. `sealvol restore --accept-rollback --volume` (the operator's restore):
#      the next publish serves the old image (its data), the broker audits
#      rollback_accepted and rollback_consumed; the newer copy is then
#      refused in its turn.
#   3. the CLI with the embedded provider: write, copy, write, put the copy
#      back: read, check and write exit 13 with "rolled back"; `sealvol
#      restore --accept-rollback IMAGE` re-commits it and read works again.
set -euo pipefail
source "$(dirname "$0")/node_test_lib.sh"

record() { cat "$work/kms/volumes/$1.json"; }
audit_count() { # REASON VOLUME
  grep -F "\"reason\":\"$1\"" "$audit_log" | grep -cF "\"volume\":\"$2\"" || true
}

start_controller
start_node node.log
read -r vol size < <("$sv" "${c[@]}" create rollback --size 64Mi --tenant team-a)
image=$work/state/volumes/$vol/image

# Life 1: formatted on first publish; the format claim records the first
# state, the session's start and close are committed.
stage "$vol" "$size"
publish "$vol" "$size"
note_ours
write_marker "life-1"
unpublish "$vol"
unstage "$vol"
expect_counts 0 0 0 "after life 1"
[[ $(record "$vol" | jq -r .state_open) == false ]] || fail "life 1: the close was not committed"
epoch1=$(record "$vol" | jq -r .state_epoch)
root1=$(record "$vol" | jq -r .state_root)
[[ $root1 =~ ^[0-9a-f]{64}$ ]] || fail "life 1: no state root in the registry ('$root1')"
cp --sparse=always "$image" "$work/copy-1"

# Life 2: written again.
stage "$vol" "$size"
publish "$vol" "$size"
note_ours
write_marker "life-2"
unpublish "$vol"
unstage "$vol"
expect_counts 0 0 0 "after life 2"
epoch2=$(record "$vol" | jq -r .state_epoch)
((epoch2 > epoch1)) || fail "life 2: the epoch did not rise ($epoch1 -> $epoch2)"
[[ $(record "$vol" | jq -r .state_open) == false ]] || fail "life 2: the close was not committed"
(($(audit_count state_opened "$vol") >= 2)) || fail "the sessions' starts were not audited"
(($(audit_count state_committed "$vol") >= 2)) || fail "the sessions' closes were not audited"
cp --sparse=always "$image" "$work/copy-2"

# 1. Rolled back to copy 1 while unstaged.
cp --sparse=always "$work/copy-1" "$image"
stage "$vol" "$size"
rc=0
publish "$vol" "$size" 2>"$work/err" || rc=$?
((rc != 0)) || fail "rolled-back image: publish succeeded"
grep -q "FAILED_PRECONDITION" "$work/err" || fail "not FAILED_PRECONDITION: $(cat "$work/err")"
grep -qF "volume $vol" "$work/err" || fail "the refusal does not name the volume: $(cat "$work/err")"
grep -qF "rolled back" "$work/err" || fail "the refusal does not say rolled back: $(cat "$work/err")"
expect_counts 0 0 0 "after the refused publish"
[[ ! -d $target ]] || [[ -z $(ls -A "$target" 2>/dev/null) ]] || fail "something is visible at the target"
[[ $(audit_count rolled_back "$vol") == 1 ]] || fail "no rolled_back record in the audit log"
[[ $(record "$vol" | jq -r .state_epoch) == "$epoch2" ]] || fail "the refused open changed the registry"
echo "$name: rolled back to epoch $epoch1 (registry at $epoch2): refused: $(head -c 300 "$work/err")"

# 2. The operator restores copy 1 on purpose.
"$sv" restore --accept-rollback --volume "$vol" --kms "local:$work/kms" --by "test-operator" >"$work/out"
[[ $(jq -r .pending "$work/out") == true ]] || fail "restore did not mark the record"
[[ $(record "$vol" | jq -r .rollback_pending) == true ]] || fail "restore: no pending acceptance in the record"
publish "$vol" "$size" || fail "publish after restore --accept-rollback"
note_ours
[[ $(cat "$target/marker") == life-1 ]] || fail "restored image: not the old data"
[[ $(audit_count rollback_accepted "$vol") == 1 ]] || fail "no rollback_accepted audit record"
grep -F '"reason":"rollback_accepted"' "$audit_log" | grep -qF "test-operator" ||
  fail "the rollback_accepted record does not say who accepted"
[[ $(audit_count rollback_consumed "$vol") == 1 ]] || fail "no rollback_consumed audit record"
[[ $(record "$vol" | jq -r .rollback_pending) == false ]] || fail "the acceptance was not consumed"
unpublish "$vol"
unstage "$vol"
expect_counts 0 0 0 "after the restored life"
# Accepted once only: the newer copy is now the rolled-forward stranger.
cp --sparse=always "$work/copy-2" "$image"
stage "$vol" "$size"
publish "$vol" "$size" 2>"$work/err" && fail "copy 2 after the restore: publish succeeded"
grep -qF "rolled back" "$work/err" || fail "copy 2: not refused as rolled back: $(cat "$work/err")"
expect_counts 0 0 0 "after copy 2 was refused"
unstage "$vol"
stop_node
"$sv" "${c[@]}" delete "$vol"

# 3. The one-shot CLI with the embedded provider.
cli=$work/cli
mkdir -p "$cli"
k=(--state-dir "$cli/kms")
"$sv" format "$cli/v.img" --size 4M "${k[@]}" --tenant team-a >"$work/out"
cli_vol=$(jq -r .volume_id "$work/out")
echo "one" | "$sv" write "$cli/v.img" --offset 0 "${k[@]}"
cp --sparse=always "$cli/v.img" "$work/cli-copy"
echo "two" | "$sv" write "$cli/v.img" --offset 0 "${k[@]}"
[[ $(jq -r .state_open "$cli/kms/volumes/$cli_vol.json") == false ]] || fail "cli: the write's close was not committed"
cp --sparse=always "$work/cli-copy" "$cli/v.img"
for cmd in read check write; do
  rc=0
  case $cmd in
    read) "$sv" read "$cli/v.img" --offset 0 --length 3 "${k[@]}" >/dev/null 2>"$work/err" || rc=$? ;;
    check) "$sv" check "$cli/v.img" "${k[@]}" >/dev/null 2>"$work/err" || rc=$? ;;
    write) echo "three" | "$sv" write "$cli/v.img" --offset 0 "${k[@]}" 2>"$work/err" || rc=$? ;;
  esac
  ((rc == 13)) || fail "cli $cmd of the rolled-back image: exit $rc, not 13: $(cat "$work/err")"
  grep -qF "rolled back" "$work/err" || fail "cli $cmd: no 'rolled back' line: $(cat "$work/err")"
done
"$sv" restore --accept-rollback "$cli/v.img" "${k[@]}" --by test-operator >"$work/out"
[[ $(jq -r .accepted_by "$work/out") == test-operator ]] || fail "cli restore: who accepted is not recorded"
[[ $("$sv" read "$cli/v.img" --offset 0 --length 3 "${k[@]}") == one ]] ||
  fail "cli: read after restore --accept-rollback"
echo "$name: cli: rolled-back image refused with exit 13 by read, check and write; restore re-committed it"

"$sv" audit verify "$audit_log" >/dev/null || fail "the audit chain does not verify"
global_counts
echo "$name: passed"
