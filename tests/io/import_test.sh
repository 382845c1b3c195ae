#!/usr/bin/env bash
# `sealvol import` (docs/cli.md): a 1 GiB plain ext4 image with known files
# becomes a sealed volume under a new key that mounts with the same
# checksums and holds no plaintext; an import killed with -9 resumes from its
# progress record (and refuses a source that changed meanwhile); --overwrite
# replaces an existing sealed volume's contents, tail included; bad targets
# are refused with nothing changed. Needs root and loop devices for the
# ext4 parts. Env: SEALVOL_BIN.
set -uo pipefail
bin=${SEALVOL_BIN:?SEALVOL_BIN is not set}

if [[ $EUID -ne 0 || ! -w /dev/fuse || ! -e /dev/loop-control ]]; then
  echo "SKIP: needs root, /dev/fuse and /dev/loop-control"; exit 0
fi

T=$(mktemp -d /tmp/sealvol-import-test.XXXXXX)
S=$T/state
fails=0
importer=
cleanup() {
  [[ -n $importer ]] && kill -9 "$importer" 2>/dev/null
  for f in "$S"/run/*.json; do
    [[ -f $f ]] || continue
    pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' "$f")
    [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  done
  sleep 0.2
  grep " $T" /proc/self/mountinfo | awk '{print $5}' | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  losetup -a | grep "$T" | cut -d: -f1 | while read -r d; do losetup -d "$d"; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
pass() { echo "ok: $*"; }
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

# The plain volume: 1 GiB ext4, ~300 MiB of random files and a text file
# whose marker must never appear in a sealed image.
plain=$T/plain.img
truncate -s 1G "$plain"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$plain"
mkdir -p "$T/m"
mount -o loop "$plain" "$T/m" || { echo "FAIL: cannot loop-mount the plain image"; exit 1; }
for i in 1 2 3; do head -c 100M /dev/urandom >"$T/m/random$i"; done
mkdir "$T/m/dir"
for i in $(seq 1 50); do head -c $((i * 1000)) /dev/urandom >"$T/m/dir/small$i"; done
python3 -c 'print("SEALVOL-IMPORT-PLAINTEXT-MARKER " * 4000)' >"$T/m/marker.txt"
(cd "$T/m" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/sums"
umount "$T/m"
grep -q SEALVOL-IMPORT-PLAINTEXT-MARKER "$plain" || fail "the marker is not in the plain image"

# 1. A new sealed image under a new key.
if "$bin" import "$plain" "$T/a.img" --state-dir "$S" --tenant team-a >"$T/a.json" 2>"$T/err"; then
  pass "import into a new image"
else
  fail "import: $(cat "$T/err")"
fi
id_a=$(json "$T/a.json" volume_id)
[[ $(json "$T/a.json" created) == True ]] || fail "import did not say it created the image"
sealed=$(json "$T/a.json" bytes_sealed)
(( sealed >= 300 * 1024 * 1024 && sealed < 400 * 1024 * 1024 )) ||
  fail "bytes_sealed $sealed: the data (~300 MiB) was not sealed, or zeros were"
[[ -e $T/a.img.import ]] && fail "the progress record outlived a finished import"
grep -q SEALVOL-IMPORT-PLAINTEXT-MARKER "$T/a.img" && fail "plaintext in the sealed image"
alloc=$(( $(stat -c %b "$T/a.img") * 512 ))
(( alloc < 600 * 1024 * 1024 )) || fail "the sealed image is not sparse ($alloc bytes allocated)"
"$bin" check "$T/a.img" --state-dir "$S" >/dev/null 2>"$T/err" || fail "check: $(cat "$T/err")"

# It mounts with the same files.
mkdir -p "$T/ma"
if "$bin" open "$T/a.img" --mountpoint "$T/ma" --state-dir "$S" >/dev/null 2>"$T/err"; then
  if (cd "$T/ma" && sha256sum --quiet -c "$T/sums"); then
    pass "the sealed volume mounts with the same checksums"
  else
    fail "checksums differ after import"
  fi
  "$bin" close "$T/ma" --state-dir "$S" >/dev/null 2>&1 || fail "close"
else
  fail "open of the imported volume: $(cat "$T/err")"
fi

# 2. Killed with -9 in the middle: the progress record survives, a resume
# finishes it. The copy takes about a second; try until a kill lands in it.
killed=0
for attempt in 1 2 3 4 5 6; do
  rm -f "$T/b.img" "$T/b.img.import"
  "$bin" import "$plain" "$T/b.img" --state-dir "$S" >/dev/null 2>&1 &
  importer=$!
  for _ in $(seq 1 400); do
    if [[ -f $T/b.img.import ]] && grep -q '"next_offset":[1-9]' "$T/b.img.import"; then
      kill -9 "$importer" 2>/dev/null && killed=1
      break
    fi
    kill -0 "$importer" 2>/dev/null || break
    sleep 0.01
  done
  wait "$importer" 2>/dev/null
  importer=
  if ((killed)) && [[ -f $T/b.img.import ]]; then break; fi
  killed=0
done
if ((killed)); then
  pass "import killed with -9 after $(grep -o '"next_offset":[0-9]*' "$T/b.img.import")"
  # A source that changed since refuses to resume.
  mtime=$(stat -c %y "$plain")
  touch "$plain"
  if "$bin" import "$plain" "$T/b.img" --state-dir "$S" >/dev/null 2>"$T/err"; then
    fail "resumed an import whose source changed"
  else
    grep -q "not what the interrupted import" "$T/err" && pass "changed source refused" ||
      fail "changed source: wrong message: $(cat "$T/err")"
  fi
  touch -d "$mtime" "$plain"
  if "$bin" import "$plain" "$T/b.img" --state-dir "$S" >"$T/b.json" 2>"$T/err"; then
    [[ $(json "$T/b.json" resumed) == True ]] || fail "the second run did not resume"
    (( $(json "$T/b.json" resumed_from) > 0 )) || fail "resumed from 0"
    if "$bin" read "$T/b.img" --offset 0 --length $((1 << 30)) --state-dir "$S" 2>"$T/err" |
        cmp -s - "$plain"; then
      pass "resumed import: every byte equals the source"
    else
      fail "resumed import differs from the source: $(cat "$T/err")"
    fi
  else
    fail "resume: $(cat "$T/err")"
  fi
  [[ $(json "$T/b.json" volume_id) != "$id_a" ]] || fail "two imports share a volume id"
else
  fail "could not kill an import in the middle in 6 attempts"
fi

# 3. --overwrite into an existing, larger sealed volume: the source replaces
# its contents, and its tail beyond the source reads as zeros.
"$bin" format "$T/c.img" --size 2G --state-dir "$S" >"$T/c.json" 2>"$T/err" || fail "format c: $(cat "$T/err")"
id_c=$(json "$T/c.json" volume_id)
head -c 8192 /dev/urandom >"$T/junk"
"$bin" write "$T/c.img" --offset $((1536 << 20)) --state-dir "$S" <"$T/junk" 2>"$T/err" ||
  fail "write c: $(cat "$T/err")"
cp --sparse=always "$T/c.img" "$T/c.before"
if "$bin" import "$plain" "$T/c.img" --state-dir "$S" >/dev/null 2>"$T/err"; then
  fail "imported over a sealed volume without --overwrite"
else
  grep -q -- "--overwrite" "$T/err" && pass "existing sealed volume refused without --overwrite" ||
    fail "wrong message: $(cat "$T/err")"
fi
cmp -s "$T/c.img" "$T/c.before" || fail "a refused import changed the image"
[[ -e $T/c.img.import ]] && fail "a refused import left a progress record"
if "$bin" import "$plain" "$T/c.img" --overwrite --state-dir "$S" >"$T/c2.json" 2>"$T/err"; then
  [[ $(json "$T/c2.json" volume_id) == "$id_c" ]] || fail "--overwrite changed the volume id"
  [[ $(json "$T/c2.json" created) == False ]] || fail "--overwrite says it created the image"
  "$bin" read "$T/c.img" --offset 0 --length $((1 << 30)) --state-dir "$S" | cmp -s - "$plain" ||
    fail "--overwrite: contents differ from the source"
  "$bin" read "$T/c.img" --offset $((1536 << 20)) --length 8192 --state-dir "$S" |
    cmp -s - <(head -c 8192 /dev/zero) && pass "--overwrite: source in, old tail zeroed" ||
    fail "--overwrite left the old data beyond the source"
else
  fail "import --overwrite: $(cat "$T/err")"
fi

# 4. Refusals, each naming the problem, nothing changed.
head -c 4096 /dev/urandom >"$T/other"
cp "$T/other" "$T/other.before"
"$bin" import "$plain" "$T/other" --state-dir "$S" >/dev/null 2>"$T/err" &&
  fail "imported over a plain file"
grep -q "is not a sealed volume" "$T/err" && cmp -s "$T/other" "$T/other.before" &&
  pass "a plain file as target refused, unchanged" || fail "plain target: $(cat "$T/err")"
"$bin" import "$plain" "$plain" --state-dir "$S" >/dev/null 2>"$T/err" &&
  fail "imported a source into itself"
grep -q "is the source itself" "$T/err" && pass "source as its own target refused" ||
  fail "self target: $(cat "$T/err")"
rc=0
"$bin" import "$plain" "$T/d.img" --size 512M --state-dir "$S" >/dev/null 2>"$T/err" || rc=$?
[[ $rc -eq 7 ]] && grep -q "at least the source" "$T/err" && pass "--size below the source refused (exit 7)" ||
  fail "--size below the source: exit $rc: $(cat "$T/err")"
[[ -s $T/d.img ]] && fail "a refused --size left an image"
"$bin" import "$T/missing" "$T/e.img" --state-dir "$S" >/dev/null 2>"$T/err" &&
  fail "imported a missing source"
grep -q "missing" "$T/err" && pass "missing source named" || fail "missing source: $(cat "$T/err")"
[[ -e $T/e.img.import ]] && fail "a missing source left a progress record"

echo "import_test: $fails failure(s)"
((fails == 0))
