#!/usr/bin/env bash
# Issue 12's third attack through the real controller, broker and node
# plugin: the image is rolled back (an earlier copy copied back while the
# volume is unstaged), published again and written (4 MiB). An XOR/nonce
# scan (build/tests/io/nonce_scan) over every stored copy of the image finds
# no (key, nonce) pair stored for two different blocks or for two different
# ciphertexts ("reused nonces: 0"); pairs shared only by identical copies of
# one block (data no life rewrote) are counted but harmless. (The first
# two attacks, a lost image and a rebuilt node, are refused outright:
# format_claim_test.sh.)
set -euo pipefail
source "$(dirname "$0")/node_test_lib.sh"
scan=${SEALVOL_NONCE_SCAN:-${SEALVOL_BUILD_DIR:-$src/build}/tests/io/nonce_scan}
[[ -x $scan ]] || fail "no nonce_scan at $scan"

start_controller
start_node node.log
read -r vol size < <("$sv" "${c[@]}" create rollback --size 64Mi --tenant team-a)
image=$work/state/volumes/$vol/image

# One life of the volume: publish, write 4 MiB (fsynced), unpublish,
# unstage, keep a copy of the image as it is now.
life() {
  local copy=$1
  stage "$vol" "$size"
  publish "$vol" "$size"
  note_ours
  dd if=/dev/urandom of="$target/data-$copy" bs=1M count=4 conv=fsync status=none
  unpublish "$vol"
  unstage "$vol"
  expect_counts 0 0 0 "after life $copy"
  cp --sparse=always "$image" "$work/copy-$copy"
}

life 1
life 2
# Rolled back to copy 1 (a restore from backup, a storage snapshot, or
# anyone with disk access), then used again: accepted on purpose by the
# operator, as the registry would refuse it otherwise (rollback_test.sh).
cp --sparse=always "$work/copy-1" "$image"
"$sv" restore --accept-rollback --volume "$vol" --kms "local:$work/kms" --by test >/dev/null
life 3
[[ -e $work/copy-3 ]] || fail "no third copy"

"$scan" "$work/copy-1" "$work/copy-2" "$work/copy-3" | tee "$work/scan"
slots=$(sed -n 's/^slots: //p' "$work/scan")
reused=$(sed -n 's/^reused nonces: //p' "$work/scan")
[[ $slots =~ ^[0-9]+$ && $reused =~ ^[0-9]+$ ]] || fail "nonce_scan printed no counts"
# 3 x 4 MiB of data plus the filesystem's own blocks were written.
((slots >= 3 * 1024)) || fail "only $slots written blocks found in the copies"
((reused == 0)) || fail "$reused nonces were used for two different blocks or ciphertexts"
"$sv" "${c[@]}" delete "$vol"
echo "$name: passed: three lives with a rollback, no nonce reused between copies"
