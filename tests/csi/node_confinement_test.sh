#!/usr/bin/env bash
# Issue 14, through the real controller (broker) and node plugin:
#  * paths: a publish to /etc or through a planted link is refused with
#    INVALID_ARGUMENT before any key is asked for; NodeUnpublishVolume with an
#    unknown id, a malformed id ("../../x") or another volume's id leaves a
#    planted file, a planted directory and a foreign mount alone, and
#    NodeUnstageVolume at a path the volume is not staged at unmounts nothing;
#  * cheap validation first: an unsupported fs type or mount flag is refused
#    before the key is requested (no audit record at all);
#  * the node's log escapes control characters: a newline in a pod name
#    cannot forge a log line.
set -euo pipefail
source "$(dirname "$0")/node_test_lib.sh"

start_controller
start_node node.log
read -r vol size < <("$sv" "${c[@]}" create confine --size 64Mi --tenant team-a)
read -r vol2 _ < <("$sv" "${c[@]}" create confine-2 --size 64Mi --tenant team-a)
audit_lines() { if [[ -e $audit_log ]]; then wc -l <"$audit_log"; else echo 0; fi; }
# Key releases granted (a first publish also records a format claim, reason
# format_claimed, which is a grant too).
grants() { grep -c '"reason":"granted"' "$audit_log" || true; }

# Runs "$@" (a sealvol call), which must fail with INVALID_ARGUMENT and a
# message matching $2.
expect_invalid() {
  local what=$1 pattern=$2 rc=0
  shift 2
  "$@" 2>"$work/err" || rc=$?
  ((rc != 0)) || fail "$what: accepted"
  grep -q "INVALID_ARGUMENT" "$work/err" || fail "$what: not INVALID_ARGUMENT: $(cat "$work/err")"
  grep -Eq "$pattern" "$work/err" || fail "$what: message does not match '$pattern': $(cat "$work/err")"
  echo "$name: $what: refused: $(head -c 200 "$work/err")"
}
publish_to() {  # publish_to TARGET [EXTRA...]
  local to=$1
  shift
  "$sv" "${n[@]}" publish "$vol" --staging-path "$staging" --target "$to" --size "$size" \
    --pod team-a/p0 --pod-uid u0 --token-file "$work/pod.token" "$@"
}

# --- Cheap validation before the key.
expect_invalid "stage with fs type btrfs" "fs_type" \
  "$sv" "${n[@]}" stage "$vol" --staging-path "$staging" --size "$size" \
  --context sealvol.csi.dev/fs-type=btrfs
expect_invalid "stage with mount flag suid" "mount flag" \
  "$sv" "${n[@]}" stage "$vol" --staging-path "$staging" --size "$size" --mount-flag suid
stage "$vol" "$size"
expect_invalid "publish with mount flag dev" "mount flag" publish_to "$target" --mount-flag dev
[[ $(audit_lines) == 0 ]] || fail "a key was asked for before cheap validation: $(cat "$audit_log")"

# --- Paths outside the kubelet directory or through a link.
outside=$(mktemp -d /tmp/sealvol-outside.XXXXXX)
ln -s "$outside" "$work/pods-link"
expect_invalid "publish to /etc" "not beneath the kubelet directory" publish_to /etc
expect_invalid "publish to a .. path" "component" publish_to "$work/a/../../etc"
expect_invalid "publish through a planted link" "symbolic link" publish_to "$work/pods-link/t"
expect_invalid "stage through a planted link" "symbolic link" \
  "$sv" "${n[@]}" stage "$vol2" --staging-path "$work/pods-link/s" --size "$size"
[[ -z $(ls -A "$outside") ]] || fail "something was created through the link: $(ls -A "$outside")"
rm -rf "$outside"
mountpoint -q /etc && [[ $(awk '$5 == "/etc"' /proc/self/mountinfo | grep -c "$vol") != 0 ]] &&
  fail "/etc has our volume mounted"
[[ $(audit_lines) == 0 ]] || fail "a key was asked for a refused publish"

publish_to "$target"
note_ours
[[ $(grants) == 1 ]] || fail "expected one grant, have $(grants)"
expect_counts 3 1 1 "published"

# --- Unpublish and unstage only undo what the node recorded.
echo keep >"$work/victim-file"
mkdir "$work/victim-dir"
mkdir "$work/foreign"
mount -t tmpfs -o size=1m sealvol-foreign "$work/foreign"
echo keep >"$work/foreign/f"
unknown=sv-0000000000000000000000000000c0de
for t in "$work/victim-file" "$work/victim-dir" "$work/foreign"; do
  "$sv" "${n[@]}" unpublish "$unknown" --target "$t" ||
    fail "unpublish of an unknown volume at $t: expected a no-op"
  rc=0
  "$sv" "${n[@]}" unpublish "../../x" --target "$t" 2>"$work/err" || rc=$?
  ((rc != 0)) && grep -q NOT_FOUND "$work/err" ||
    fail "unpublish with id ../../x at $t: expected NOT_FOUND, rc $rc: $(cat "$work/err")"
  "$sv" "${n[@]}" unpublish "$vol" --target "$t" ||
    fail "unpublish of $vol where it is not published ($t): expected a no-op"
done
# Another volume's id at our volume's target.
"$sv" "${n[@]}" unpublish "$vol2" --target "$target" || fail "unpublish with another id"
# Unstage at a path the volume is not staged at.
rc=0
"$sv" "${n[@]}" unstage "$vol" --staging-path "$work/foreign" 2>"$work/err" || rc=$?
((rc != 0)) && grep -q NOT_FOUND "$work/err" ||
  fail "unstage at a foreign path: expected NOT_FOUND: $(cat "$work/err")"
[[ $(cat "$work/victim-file") == keep ]] || fail "the planted file is gone"
[[ -d $work/victim-dir ]] || fail "the planted directory is gone"
mountpoint -q "$work/foreign" && [[ $(cat "$work/foreign/f") == keep ]] ||
  fail "the foreign mount was unmounted"
mountpoint -q "$target" || fail "our target was unmounted by a request for another volume"
umount "$work/foreign"
echo "$name: unpublish/unstage left the planted file, directory, foreign mount and our target alone"

# --- Log forging: a newline in a pod name.
forged=$'p0\n[2026-01-01 00:00:00.000] [info] FORGED-LINE by a pod name'
rc=0
"$sv" "${n[@]}" publish "$vol" --staging-path "$staging" --target "$work/target-2" \
  --size "$size" --pod "team-a/$forged" --pod-uid u0 --token-file "$work/pod.token" \
  2>/dev/null || rc=$?
((rc != 0)) || fail "a publish naming another pod was granted"
grep -q 'FORGED-LINE' "$work/node.log" || fail "the refusal with the pod name was not logged"
if grep -q '^\[2026-01-01 00:00:00.000\] \[info\] FORGED-LINE' "$work/node.log"; then
  fail "a pod name forged a line in the node's log"
fi
grep -q 'p0\\n\[2026-01-01' "$work/node.log" || fail "the newline was not escaped as \\n"
echo "$name: the newline in the pod name is logged as \\n, no forged line"

unpublish "$vol"
unstage "$vol"
expect_counts 0 0 0 "after unpublish and unstage"
[[ -e $target ]] && fail "the target we created was not removed"
"$sv" audit verify "$audit_log" >/dev/null
echo "$name: OK"
