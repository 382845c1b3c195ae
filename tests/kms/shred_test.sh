#!/usr/bin/env bash
# Crypto-shredding end to end with the embedded provider: after
# `sealvol keys destroy`, the volume cannot be opened with any credential and
# `sealvol check` says why (exit 10, "crypto-shredded"). Also: keys list/show
# print no key material, and rotation keeps the volume readable.
set -euo pipefail
bin=${SEALVOL_BIN:?}
work=$(mktemp -d /tmp/sealvol-shred-XXXXXX)
trap 'rm -rf "$work"' EXIT
state=$work/state
img=$work/vol.img
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$("$bin" format "$img" --size 16M --tenant team-a --name pvc-1 --state-dir "$state")
id=$(sed -n 's/.*"volume_id":"\([^"]*\)".*/\1/p' <<<"$out")
[[ -n "$id" ]] || fail "format printed no volume id: $out"

secret="sealvol-shred-test-$RANDOM$RANDOM"
printf '%s' "$secret" | "$bin" write "$img" --offset 8192 --state-dir "$state"
got=$("$bin" read "$img" --offset 8192 --length ${#secret} --state-dir "$state")
[[ "$got" == "$secret" ]] || fail "read back '$got'"
grep -qa "$secret" "$img" && fail "plaintext found in the image"

# list/show: the record, without key material.
list=$("$bin" keys list --state-dir "$state" --tenant team-a)
grep -q "\"$id\"" <<<"$list" || fail "keys list lacks $id: $list"
show=$("$bin" keys show "$id" --state-dir "$state")
grep -q '"key_name": "sealvol-team-a"' <<<"$show" || fail "keys show: $show"
if grep -q -e wrapped -e 'local:v' <<<"$list$show"; then
  fail "keys list/show printed the wrapped key"
fi
[[ "$("$bin" keys list --state-dir "$state" --tenant team-b)" == "[]" ]] ||
  fail "another tenant's list is not empty"

# Rotation rewraps without touching data.
rot=$("$bin" rotate --tenant team-a --state-dir "$state")
grep -q '"volumes_rewrapped": 1' <<<"$rot" || fail "rotate: $rot"
grep -q '"new_key_version": 2' <<<"$rot" || fail "rotate: $rot"
got=$("$bin" read "$img" --offset 8192 --length ${#secret} --state-dir "$state")
[[ "$got" == "$secret" ]] || fail "read after rotation gave '$got'"
"$bin" check "$img" --state-dir "$state" >/dev/null || fail "check before destroy"

# Destroy needs confirmation.
set +e
"$bin" keys destroy "$id" --state-dir "$state" 2>/dev/null
rc=$?
set -e
[[ $rc == 2 ]] || fail "destroy without --yes exited $rc, expected 2"
"$bin" keys show "$id" --state-dir "$state" >/dev/null || fail "key gone without --yes"
"$bin" keys destroy "$id" --tenant team-b --yes --state-dir "$state" 2>/dev/null &&
  fail "destroy with the wrong tenant succeeded"
"$bin" keys destroy "$id" --yes --state-dir "$state" | grep -q '"destroyed": true' ||
  fail "destroy did not report success"

# Nothing in the state directory names the volume any more.
if grep -rqa "$id" "$state"; then fail "state still mentions $id"; fi

expect_destroyed() {  # expect_destroyed WHAT CMD...
  local what=$1 rc err
  shift
  set +e
  err=$("$@" 2>&1 >/dev/null)
  rc=$?
  set -e
  [[ $rc == 10 ]] || fail "$what exited $rc, expected 10 (key destroyed): $err"
  grep -q "crypto-shredded\|destroyed" <<<"$err" || fail "$what did not say why: $err"
}
expect_destroyed "check" "$bin" check "$img" --state-dir "$state"
expect_destroyed "read" "$bin" read "$img" --offset 0 --length 16 --state-dir "$state"
expect_destroyed "keys show" "$bin" keys show "$id" --state-dir "$state"
expect_destroyed "second destroy" "$bin" keys destroy "$id" --yes --state-dir "$state"
# Any other credential: the tenant's KEK survives, but no wrapped DEK does;
# a fresh provider directory knows nothing of the volume either.
ls "$state"/keks/sealvol-team-a.v*.key >/dev/null || fail "tenant KEK missing"
expect_destroyed "check with another key store" "$bin" check "$img" --state-dir "$work/other"
echo "shred test: OK"
