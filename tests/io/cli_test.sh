#!/usr/bin/env bash
# Exercises `sealvol format|dump|check|read|write` and their exit codes
# (docs/cli.md) against real image files and the embedded key provider.
set -euo pipefail
bin=${SEALVOL_BIN:?SEALVOL_BIN is not set}
work=$(mktemp -d /tmp/sealvol-cli-XXXXXX)
holder=
cleanup() {
  if [[ -n "$holder" ]]; then kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
state="$work/state"
img="$work/v.img"
fails=0

# expect CODE DESCRIPTION -- COMMAND...: runs COMMAND, checks its exit code
# and that it printed exactly one line on stderr when it failed.
expect() {
  local want=$1 what=$2; shift 3
  local rc=0
  "$@" >"$work/out" 2>"$work/err" || rc=$?
  if [[ $rc -ne $want ]]; then
    echo "FAIL: $what: exit $rc, want $want; stderr: $(cat "$work/err")"; fails=$((fails+1)); return
  fi
  if [[ $want -ne 0 && $(wc -l <"$work/err") -lt 1 ]]; then
    echo "FAIL: $what: no error line on stderr"; fails=$((fails+1)); return
  fi
  echo "ok: $what (exit $rc)"
}

# Patches the image header like an attacker or a future version would,
# re-sealing the unkeyed digest so only the keyed checks can object.
patch_header() {  # IMAGE OFFSET HEXBYTES [reseal]
  python3 - "$@" <<'PY'
import hashlib, sys
path, off, data = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
reseal = len(sys.argv) > 4
with open(path, 'r+b') as f:
    for copy in (0, 1):
        f.seek(copy * 4096)
        b = bytearray(f.read(4096))
        b[off:off + len(data)] = data
        if reseal:
            b[256:288] = hashlib.sha256(bytes(b[:256])).digest()
        f.seek(copy * 4096)
        f.write(b)
PY
}

expect 0 "format" -- "$bin" format "$img" --size 64M --state-dir "$state" --tenant team-a
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["volume_id"])' "$work/out")
[[ $id == sv-* ]] || { echo "FAIL: format printed no volume id"; fails=$((fails+1)); }
alloc=$(( $(stat -c %b "$img") * $(stat -c %B "$img") ))
if (( alloc > 2 * 1024 * 1024 )); then echo "FAIL: image not sparse ($alloc bytes)"; fails=$((fails+1)); fi

expect 0 "dump" -- "$bin" dump "$img"
grep -q "\"volume_id\":\"$id\"" "$work/out" || { echo "FAIL: dump lacks the volume id"; fails=$((fails+1)); }
if grep -qi 'key_check\|dek\|secret' "$work/out"; then echo "FAIL: dump shows key material"; fails=$((fails+1)); fi

# Unaligned write and read back through the engine.
printf 'hello, sealed world' > "$work/msg"
expect 0 "write unaligned" -- bash -c "\"$bin\" write \"$img\" --offset 4090 --state-dir \"$state\" < \"$work/msg\""
expect 0 "read unaligned" -- "$bin" read "$img" --offset 4090 --length 19 --state-dir "$state"
cmp -s "$work/out" "$work/msg" || { echo "FAIL: read returned $(cat "$work/out")"; fails=$((fails+1)); }
head -c 3000000 /dev/urandom > "$work/big"
expect 0 "write 3 MB" -- bash -c "\"$bin\" write \"$img\" --offset 1048576 --state-dir \"$state\" < \"$work/big\""
expect 0 "read 3 MB" -- "$bin" read "$img" --offset 1048576 --length 3000000 --state-dir "$state"
cmp -s "$work/out" "$work/big" || { echo "FAIL: 3 MB read back differs"; fails=$((fails+1)); }
if grep -q 'hello, sealed world' "$img"; then echo "FAIL: plaintext on disk"; fails=$((fails+1)); fi
expect 0 "check clean image" -- "$bin" check "$img" --state-dir "$state"

# Tamper with the ciphertext of volume block 300 (image block groups_start +
# 16 tag blocks + 300, from the layout `dump` prints).
groups_start=$("$bin" dump "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layout"]["groups_start"])')
cp "$img" "$work/tampered.img"
printf '\x5a' | dd of="$work/tampered.img" bs=1 seek=$(( (groups_start + 16 + 300) * 4096 + 77 )) conv=notrunc status=none
expect 9 "check lists the tampered block" -- "$bin" check "$work/tampered.img" --state-dir "$state"
grep -q '"failed_blocks":\[300\]' "$work/out" || { echo "FAIL: check output: $(cat "$work/out")"; fails=$((fails+1)); }
expect 9 "read of a tampered block" -- "$bin" read "$work/tampered.img" --offset $((300 * 4096)) --length 10 --state-dir "$state"

# Wipe block 300's tag entry (64 bytes at groups_start + 300*64): it must
# fail, not read as never written, and check must name its group.
cp "$img" "$work/wiped.img"
dd if=/dev/zero of="$work/wiped.img" bs=1 count=64 seek=$(( groups_start * 4096 + 300 * 64 )) conv=notrunc status=none
expect 9 "read of a block whose tag entry was wiped" -- "$bin" read "$work/wiped.img" --offset $((300 * 4096)) --length 10 --state-dir "$state"
expect 9 "check lists the wiped block" -- "$bin" check "$work/wiped.img" --state-dir "$state"
python3 - "$work/out" <<'PY' || { echo "FAIL: check output after a wiped tag: $(cat "$work/out")"; fails=$((fails+1)); }
import json, sys
out = json.load(open(sys.argv[1]))
assert out["mismatched_groups"] == [0], out["mismatched_groups"]
assert 300 in out["failed_blocks"], "block 300 not listed"
PY
grep -q 'group 0 (blocks 0-1023)' "$work/err" || { echo "FAIL: check did not name the group: $(cat "$work/err")"; fails=$((fails+1)); }

# Wrong key: the header names another volume (digest re-sealed), so the KMS
# hands out that volume's key, whose key check value differs.
expect 0 "format second volume" -- "$bin" format "$work/other.img" --size 8M --state-dir "$state" --tenant team-a
other=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["volume_id"])' "$work/out")
cp "$img" "$work/wrongkey.img"
patch_header "$work/wrongkey.img" 16 "${other#sv-}" reseal
expect 3 "wrong key" -- "$bin" check "$work/wrongkey.img" --state-dir "$state"
grep -q "wrong key" "$work/err" || { echo "FAIL: wrong key message: $(cat "$work/err")"; fails=$((fails+1)); }

head -c 1048576 /dev/urandom > "$work/junk.img"
expect 4 "not a sealvol image (dump)" -- "$bin" dump "$work/junk.img"
expect 4 "not a sealvol image (check)" -- "$bin" check "$work/junk.img" --state-dir "$state"

cp "$img" "$work/short.img"
truncate -s 8M "$work/short.img"
expect 5 "truncated image" -- "$bin" dump "$work/short.img"
expect 5 "truncated image (read)" -- "$bin" read "$work/short.img" --offset 0 --length 1 --state-dir "$state"

cp "$img" "$work/v9.img"
patch_header "$work/v9.img" 8 09000000
expect 6 "unsupported version" -- "$bin" dump "$work/v9.img"
# A format-1 image is refused by every command, naming the upgrade command.
cp "$img" "$work/v1.img"
patch_header "$work/v1.img" 8 01000000
expect 6 "format version 1 (dump)" -- "$bin" dump "$work/v1.img"
grep -q "sealvol upgrade" "$work/err" || { echo "FAIL: the format-1 refusal does not name sealvol upgrade"; fails=$((fails+1)); }
expect 6 "format version 1 (read)" -- "$bin" read "$work/v1.img" --offset 0 --length 4096 --state-dir "$state"
# An image with an incompatible feature this binary does not know.
cp "$img" "$work/feat.img"
patch_header "$work/feat.img" 68 00000080 reseal
expect 6 "unknown incompatible feature" -- "$bin" dump "$work/feat.img"

expect 7 "size not a multiple of 4 KiB" -- "$bin" format "$work/odd.img" --size 10000 --state-dir "$state"
expect 7 "size zero" -- "$bin" format "$work/zero.img" --size 0 --state-dir "$state"

flock -x -o "$img" sleep 30 &
holder=$!
sleep 0.3
expect 8 "image in use" -- "$bin" check "$img" --state-dir "$state"
grep -q "in use" "$work/err" || { echo "FAIL: in-use message: $(cat "$work/err")"; fails=$((fails+1)); }
kill "$holder"; wait "$holder" 2>/dev/null || true; holder=

# The key is gone from this provider: crypto-shredded.
expect 10 "key destroyed" -- "$bin" check "$img" --state-dir "$work/empty-state"
grep -q "crypto-shredded" "$work/err" || { echo "FAIL: key destroyed message: $(cat "$work/err")"; fails=$((fails+1)); }

expect 0 "check after all that" -- "$bin" check "$img" --state-dir "$state"

if (( fails > 0 )); then echo "cli_test: $fails failure(s)"; exit 1; fi
echo "cli_test: all passed"
