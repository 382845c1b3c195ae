#!/usr/bin/env bash
# End-to-end tests of `sealvol open|close|status` with the real engine:
# data survives close/reopen, e2fsck is clean, kill -9 during writes loses no
# fsynced data, both transports, two volumes at once, wrong key and double
# open are refused, and an injected failure between any two attach steps
# leaves no mount, loop device, FUSE connection or server behind.
# Needs root, /dev/fuse and loop devices. Env: SEALVOL_BIN, SEALVOL_BUILD_DIR.
set -uo pipefail

SEALVOL=${SEALVOL_BIN:?}
HELPER=${SEALVOL_BUILD_DIR:?}/tests/io/frontend/create_key_helper
KILL_ITERATIONS=${KILL_ITERATIONS:-10}

if [[ $EUID -ne 0 || ! -w /dev/fuse || ! -e /dev/loop-control ]]; then
  echo "SKIP: needs root, /dev/fuse and /dev/loop-control"; exit 0
fi

T=$(mktemp -d /tmp/sealvol-mount-test.XXXXXX)
S=$T/state
failures=0

cleanup() {
  # Stop every server of this test, then whatever they left.
  for f in "$S"/run/*.json "$T"/state2/run/*.json; do
    [[ -f $f ]] || continue
    pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' "$f")
    [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  done
  sleep 0.3
  grep " $T" /proc/self/mountinfo | awk '{print $5}' | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  losetup -a | grep "$T" | cut -d: -f1 | while read -r d; do losetup -d "$d"; done
  rm -rf "$T"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

mounts_of_test() { grep -c " $T" /proc/self/mountinfo; }
loops_of_test() { losetup -a | grep -c "$T"; }
servers_of_test() { pgrep -f -- "--state-dir $S" | wc -l; }

fmt() {  # fmt IMAGE SIZE [STATE]
  "$SEALVOL" format "$1" --size "$2" --state-dir "${3:-$S}" >/dev/null
}
open_fs() {  # open_fs IMAGE MOUNTPOINT TRANSPORT [extra...]
  local img=$1 mnt=$2 tr=$3; shift 3
  "$SEALVOL" open "$img" --mountpoint "$mnt" --transport "$tr" --state-dir "$S" "$@"
}
close_vol() { "$SEALVOL" close "$1" --state-dir "$S"; }
fsck_image() {  # fsck_image IMAGE -> 0 when e2fsck -fn is clean
  local dev rc
  dev=$("$SEALVOL" open "$1" --block --state-dir "$S") || return 1
  e2fsck -fn "$dev" >"$T/fsck.log" 2>&1; rc=$?
  close_vol "$1" || rc=1
  [[ $rc -eq 0 ]] || cat "$T/fsck.log"
  return $rc
}
server_pid() {  # server_pid IMAGE
  "$SEALVOL" status --json --state-dir "$S" |
    python3 -c "import json,sys; print([r['pid'] for r in json.load(sys.stdin) if r['image']=='$1'][0])"
}

mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null || true

# --- both transports: write, close, fsck, reopen, verify -------------------
transports=(dev)
if [[ -e /sys/module/fuse/parameters/enable_uring ]]; then
  transports+=(uring)
else
  echo "SKIP uring: kernel has no fuse enable_uring parameter (needs 6.14+)"
fi
for tr in "${transports[@]}"; do
  img=$T/$tr.img; mnt=$T/mnt-$tr
  fmt "$img" 256M
  if ! open_fs "$img" "$mnt" "$tr" >/dev/null; then fail "$tr: open"; continue; fi
  got=$("$SEALVOL" status --json --state-dir "$S" | python3 -c \
    "import json,sys; print([r['transport'] for r in json.load(sys.stdin) if r['image']=='$img'][0])")
  [[ $got == "$tr" ]] && pass "$tr: status reports transport $got" || fail "$tr: status says $got"
  mkdir -p "$mnt/d"
  for i in 1 2 3; do head -c $((i * 3))M /dev/urandom >"$mnt/d/f$i"; done
  (cd "$mnt" && sha256sum d/*) >"$T/$tr.sum"
  sync
  close_vol "$mnt" && pass "$tr: close" || fail "$tr: close"
  grep -q " $mnt " /proc/self/mountinfo && fail "$tr: still mounted after close"
  fsck_image "$img" && pass "$tr: e2fsck -fn clean" || fail "$tr: e2fsck"
  open_fs "$img" "$mnt" "$tr" >/dev/null || fail "$tr: reopen"
  (cd "$mnt" && sha256sum -c --quiet "$T/$tr.sum") && pass "$tr: checksums after reopen" \
    || fail "$tr: checksums after reopen"
  close_vol "$mnt" || fail "$tr: second close"
done

# --- two volumes at once; double open refused; status lists both ---------
fmt "$T/a.img" 128M; fmt "$T/b.img" 128M
open_fs "$T/a.img" "$T/ma" auto >/dev/null || fail "two: open a"
open_fs "$T/b.img" "$T/mb" auto >/dev/null || fail "two: open b"
echo alpha >"$T/ma/x"; echo beta >"$T/mb/x"; sync
[[ $(cat "$T/ma/x") == alpha && $(cat "$T/mb/x") == beta ]] && pass "two volumes at once" \
  || fail "two volumes at once"
[[ $("$SEALVOL" status --json --state-dir "$S" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') == 2 ]] \
  && pass "status lists two" || fail "status lists two"
open_fs "$T/a.img" "$T/ma2" auto >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 8 ]] && pass "double open refused (exit 8: $(head -1 "$T/err"))" || fail "double open: exit $rc"
[[ $(mounts_of_test) -eq 4 ]] || fail "double open left mounts ($(mounts_of_test))"
# close finds an open volume without open's --state-dir (mount table).
"$SEALVOL" close "$T/ma" 2>"$T/err" && pass "close by mountpoint without --state-dir" \
  || fail "close by mountpoint without --state-dir: $(cat "$T/err")"
grep -q " $T/ma " /proc/self/mountinfo && fail "close without --state-dir left $T/ma mounted"
# ... but not through a state directory others may write (its records would
# name what close signals and unmounts).
chmod 0777 "$S"
"$SEALVOL" close "$T/b.img" --state-dir "$T/elsewhere" 2>"$T/err" \
  && fail "close used a world-writable state directory found in the mount table" \
  || pass "close ignores a world-writable state directory"
chmod 0700 "$S"
"$SEALVOL" close "$T/b.img" --state-dir "$T/elsewhere" 2>"$T/err" \
  && pass "close by image with another --state-dir" \
  || fail "close by image with another --state-dir: $(cat "$T/err")"
[[ $(mounts_of_test) -eq 0 ]] || fail "two: mounts left after close ($(mounts_of_test))"
"$SEALVOL" close "$T/ma" 2>"$T/err"; rc=$?
[[ $rc -eq 1 ]] && grep -q -- "--state-dir" "$T/err" \
  && pass "close of what is not open says which state dir to give" \
  || fail "close of a closed volume: exit $rc: $(cat "$T/err")"

# --- wrong key ---------------------------------------------------------------
mkdir -p "$T/state2"
vid=$("$SEALVOL" dump "$T/a.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["volume_id"])')
"$HELPER" "$T/state2" "$vid" || fail "wrong key: helper"
"$SEALVOL" open "$T/a.img" --mountpoint "$T/ma" --state-dir "$S" --kms "local:$T/state2" \
  >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 3 ]] && pass "wrong key refused (exit 3: $(head -1 "$T/err"))" || fail "wrong key: exit $rc"
[[ $(mounts_of_test) -eq 0 && $(loops_of_test) -eq 0 ]] || fail "wrong key left state behind"

# open's exit codes come from the volume commands' mapping (error kinds).
fmt "$T/trunc.img" 64M
truncate -s 1M "$T/trunc.img"
open_fs "$T/trunc.img" "$T/mt" auto >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 5 ]] && pass "open of a truncated image: exit 5" \
  || fail "open of a truncated image: exit $rc: $(head -1 "$T/err")"
[[ $(mounts_of_test) -eq 0 && $(loops_of_test) -eq 0 ]] || fail "truncated open left state behind"

# --- kill -9 during writes, then reopen ------------------------------------
img=$T/crash.img; mnt=$T/mc
fmt "$img" 256M
for it in $(seq 1 "$KILL_ITERATIONS"); do
  tr=${transports[$((it % ${#transports[@]}))]}
  open_fs "$img" "$mnt" "$tr" >/dev/null || { fail "kill $it: open"; continue; }
  # Durable part: written and fsynced before the kill.
  head -c 2M /dev/urandom >"$T/durable.$it"
  cp "$T/durable.$it" "$mnt/durable.$it"
  sync -f "$mnt/durable.$it"; python3 -c "import os; fd=os.open('$mnt/durable.$it', os.O_RDONLY); os.fsync(fd)"
  sync "$mnt"
  # In-flight part: a writer still going when the server dies.
  (while :; do head -c 1M /dev/urandom >"$mnt/churn.$RANDOM" 2>/dev/null || break; done) &
  writer=$!
  sleep 0.3
  pid=$(server_pid "$img")
  kill -9 "$pid"
  kill -9 "$writer" 2>/dev/null; wait "$writer" 2>/dev/null
  # A killed process exits only once its in-flight I/O is torn down.
  for _ in $(seq 100); do
    [[ -e /proc/$pid && $(awk '{print $3}' /proc/$pid/stat 2>/dev/null) != Z ]] || break
    sleep 0.1
  done
  # Reopen: cleans the dead server's mount/loop, the engine recovers.
  open_fs "$img" "$mnt" "$tr" >/dev/null 2>"$T/err" || { fail "kill $it: reopen: $(cat "$T/err")"; continue; }
  for j in $(seq 1 "$it"); do
    [[ -e $T/durable.$j ]] || continue
    cmp -s "$T/durable.$j" "$mnt/durable.$j" || fail "kill $it: durable.$j differs after kill -9"
  done
  rm -f "$mnt"/churn.*
  close_vol "$mnt" || fail "kill $it: close"
  fsck_image "$img" || fail "kill $it: e2fsck after recovery"
done
pass "kill -9 x$KILL_ITERATIONS done"

# --- failure injection between every pair of steps -------------------------
fmt "$T/inj.img" 128M
inj_vid=$("$SEALVOL" dump "$T/inj.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["volume_id"])')
for step in header key engine fuse-mount fuse-serve loop mkfs mount record; do
  m0=$(mounts_of_test); l0=$(loops_of_test)
  SEALVOL_FAIL_AFTER_STEP=$step open_fs "$T/inj.img" "$T/mi" auto >/dev/null 2>"$T/err"; rc=$?
  sleep 0.2
  m1=$(mounts_of_test); l1=$(loops_of_test); s1=$(servers_of_test)
  if [[ $rc -ne 0 && $m1 -eq $m0 && $l1 -eq $l0 && $s1 -eq 0 &&
        ! -e $S/run/$inj_vid.json ]] && grep -q "injected failure after step $step" "$T/err"; then
    pass "inject after $step: exit $rc, nothing left (mounts $m1, loops $l1, servers $s1)"
  else
    fail "inject after $step: rc=$rc mounts $m0->$m1 loops $l0->$l1 servers $s1: $(cat "$T/err")"
  fi
done
# And the image still opens afterwards.
open_fs "$T/inj.img" "$T/mi" auto >/dev/null && close_vol "$T/mi" && pass "opens after injections" \
  || fail "open after injections"
echo "fuse connections now: $(ls /sys/fs/fuse/connections 2>/dev/null | wc -l)"

if [[ $failures -ne 0 ]]; then echo "$failures failure(s)"; exit 1; fi
echo "all passed"
