#!/usr/bin/env bash
# Key hygiene of running sealvol processes: a volume served by `sealvol open`
# (the node's data path: engine, FUSE server, loop device) keeps its keys in
# locked memory (VmLck > 0), cannot write a core file (RLIMIT_CORE 0, and a
# SIGSEGV leaves none), and the controller and node plugin are not dumpable.
# One-shot commands are hardened too: `write` waiting on its stdin and
# `read` blocked on a full stdout while it holds the volume's key are not
# dumpable, have core limit 0 (and the reader keeps the key locked).
#
# Dumpability is observed from outside: for a process that is not dumpable
# the kernel makes /proc/PID/* owned by root instead of the process's uid. So
# the plugins are started as an unprivileged uid (they mark themselves
# non-dumpable first thing, before needing any privilege) beside a `sleep`
# of the same uid as the control. (For root processes the ownership is root
# either way, and root keeps CAP_SYS_PTRACE: see docs/security.md.)
set -euo pipefail
src=${SEALVOL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${SEALVOL_BIN:-$src/build/cmd/sealvol}
# The ASan build (see below for what it changes here). Not `ldd | grep -q`:
# under pipefail, grep's early exit can fail the pipeline with SIGPIPE.
asan_build=0
[[ $(ldd "$bin") == *libasan* ]] && asan_build=1
[[ -x $bin ]] || { echo "hygiene: no sealvol binary at $bin" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "hygiene: needs root" >&2; exit 1; }
[[ -e /dev/fuse ]] || { echo "SKIP: no /dev/fuse"; exit 0; }

work=$(mktemp -d /tmp/sealvol-hygiene.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  "$bin" close --state-dir "$work/state" "$work/v.img" >/dev/null 2>&1 || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # grep finds nothing when every mount is gone: not a failure of the test.
  { grep -o " $work[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  ((rc == 0)) || tail -n 20 "$work"/*.log >&2 2>/dev/null || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
fail() { echo "hygiene: FAIL: $*" >&2; exit 1; }

nobody=65534
as_nobody=(setpriv --reuid=$nobody --regid=$nobody --clear-groups)
owner() { stat -c %u "/proc/$1/status"; }

# The binary and the work directory must be reachable by the unprivileged uid.
chmod 755 "$work"
install -m 755 "$bin" "$work/sealvol"
"${as_nobody[@]}" sleep 300 &
control=$!
pids+=($control)
sleep 0.2
[[ $(owner $control) == $nobody ]] ||
  fail "control: a dumpable process of uid $nobody should own its /proc entry"

# Cores would land here if anything dumped.
cd "$work"

# --- One-shot commands, as the unprivileged uid, observed while blocked.
hardened() {  # NAME PID: not dumpable and core limit 0
  [[ $(owner "$2") == 0 ]] || fail "$1 (pid $2) is dumpable"
  grep -E '^Max core file size +0 +' "/proc/$2/limits" >/dev/null ||
    fail "$1 core limit is not 0: $(grep 'core file' "/proc/$2/limits")"
}
wait_blocked() {  # PID pipe_read|pipe_write: until its main thread waits there
  for _ in $(seq 300); do
    [[ $(cat "/proc/$1/wchan" 2>/dev/null) == *$2 ]] && return 0
    sleep 0.1
  done
  fail "pid $1 did not block in $2 (wchan $(cat "/proc/$1/wchan" 2>/dev/null))"
}
mkdir -p "$work/cli"
chown $nobody:$nobody "$work/cli"
# Under ASan its run-time would set the core limit to 0 itself.
cli_env=()
[[ -n ${ASAN_OPTIONS:-} ]] && cli_env=(env "ASAN_OPTIONS=$ASAN_OPTIONS:disable_coredump=0")
cli=("${cli_env[@]}" "${as_nobody[@]}" "$work/sealvol")
"${cli[@]}" format --size 16M --state-dir "$work/cli/state" "$work/cli/v.img" \
  >"$work/cli-format.log" 2>&1 || fail "format as uid $nobody: $(cat "$work/cli-format.log")"
# write: stdin is a FIFO that this shell holds open, so it waits for data.
mkfifo "$work/cli/in" "$work/cli/out"
exec 4<>"$work/cli/in"
"${cli[@]}" write --offset 0 --state-dir "$work/cli/state" "$work/cli/v.img" \
  <"$work/cli/in" 4>&- 2>"$work/cli-write.log" &
writer=$!
pids+=($writer)
wait_blocked $writer pipe_read
hardened "write" $writer
head -c 1048576 /dev/urandom >"$work/cli/data"
cat "$work/cli/data" >&4
exec 4>&-
wait $writer || fail "write: $(cat "$work/cli-write.log")"
# read: stdout is a FIFO nobody drains; 1 MiB does not fit, so it blocks in
# write(2) with the volume open and its key in memory.
exec 5<>"$work/cli/out"
"${cli[@]}" read --offset 0 --length 1048576 --state-dir "$work/cli/state" \
  "$work/cli/v.img" >"$work/cli/out" 5>&- 2>"$work/cli-read.log" &
reader=$!
pids+=($reader)
wait_blocked $reader pipe_write
hardened "read" $reader
reader_locked=$(awk '/^VmLck:/ {print $2}' "/proc/$reader/status")
if ((!asan_build)); then  # ASan ignores mlock (see below)
  ((reader_locked > 0)) || fail "read holds its key in unlocked memory (VmLck 0)"
fi
kill $reader
wait $reader 2>/dev/null || true
exec 5>&-
echo "hygiene: write and read (uid $nobody) not dumpable, core limit 0; read VmLck ${reader_locked} kB"

"$bin" format --size 64M --state-dir "$work/state" "$work/v.img" >"$work/format.log" 2>&1
# In the ASan build the runtime would catch the SIGSEGV sent below (a report,
# not the kernel's default action this test is about) and would itself set
# the core limit to 0; neither may stand in for the server's own hardening.
open_env=()
[[ -n ${ASAN_OPTIONS:-} ]] &&
  open_env=(env "ASAN_OPTIONS=$ASAN_OPTIONS:handle_segv=0:disable_coredump=0")
"${open_env[@]}" "$bin" open --block --state-dir "$work/state" "$work/v.img" >"$work/open.log" 2>&1 ||
  fail "open: $(cat "$work/open.log")"
server=$("$bin" status --state-dir "$work/state" --json |
         python3 -c 'import json,sys; d=json.load(sys.stdin); v=d if isinstance(d,list) else d.get("volumes",[]); print(v[0]["pid"])')
[[ -d /proc/$server ]] || fail "no server process $server"
locked=$(awk '/^VmLck:/ {print $2}' "/proc/$server/status")
echo "hygiene: open server pid $server VmLck ${locked} kB"
# ASan's run-time turns mlock into a no-op that succeeds: VmLck shows nothing
# in that build (the default build checks it).
if ((asan_build)); then
  echo "hygiene: ASan build: VmLck not checked (ASan ignores mlock)"
else
  ((locked > 0)) || fail "open server $server holds its keys in unlocked memory (VmLck 0)"
fi
# RLIMIT_CORE of the server is 0.
grep -E '^Max core file size +0 +' "/proc/$server/limits" >/dev/null ||
  fail "server core limit is not 0: $(grep 'core file' /proc/$server/limits)"

# A crash of the server leaves no core file (SIGSEGV's default action dumps
# core when the process is dumpable and the limit allows it).
kill -SEGV "$server"
for _ in $(seq 50); do [[ -d /proc/$server ]] || break; sleep 0.1; done
sleep 0.5
cores=$(find "$work" / -maxdepth 1 -name 'core*' -newer "$work/v.img" 2>/dev/null | wc -l)
((cores == 0)) || fail "a core file appeared after SIGSEGV of the server"
"$bin" close --state-dir "$work/state" "$work/v.img" >/dev/null 2>&1 || true

# The controller (holds KMS access, unwraps keys) and the node plugin (holds
# DEKs) are not dumpable.
"$bin" token keygen --out "$work/issuer.pem" >/dev/null
"$bin" token jwks --issuer-key "$work/issuer.pem" >"$work/jwks.json"
"$bin" token mint --issuer-key "$work/issuer.pem" --issuer https://issuer.test \
  --namespace sealvol-system --service-account sealvol-node --node n1 \
  --ttl 1h >"$work/node.token"
mkdir -p "$work/ctl" "$work/node"
cp "$work/jwks.json" "$work/node.token" "$work/ctl/"
chown -R $nobody:$nobody "$work/ctl" "$work/node"
"${as_nobody[@]}" "$work/sealvol" controller --endpoint "unix://$work/ctl/controller.sock" \
  --kms "local:$work/ctl/kms" --broker-listen "unix://$work/ctl/broker.sock" \
  --jwks-file "$work/ctl/jwks.json" --issuer https://issuer.test --audience sealvol \
  --node-service-account sealvol-system:sealvol-node \
  --audit-log "$work/ctl/audit.jsonl" >"$work/controller.log" 2>&1 &
controller=$!
pids+=($controller)
"${as_nobody[@]}" "$work/sealvol" node --endpoint "unix://$work/node/node.sock" --node-id n1 \
  --state-dir "$work/node/state" --broker "unix://$work/ctl/broker.sock" \
  --node-token-file "$work/ctl/node.token" >"$work/node.log" 2>&1 &
node=$!
pids+=($node)
for _ in $(seq 100); do
  [[ -S $work/ctl/controller.sock && -S $work/node/node.sock ]] && break
  sleep 0.1
done
[[ -S $work/ctl/controller.sock ]] || fail "controller did not start"
[[ -S $work/node/node.sock ]] || fail "node plugin did not start"
[[ $(owner $controller) == 0 ]] || fail "controller $controller is dumpable"
[[ $(owner $node) == 0 ]] || fail "node plugin $node is dumpable"
echo "hygiene: PASS (control dumpable; write, read, controller and node not; open server VmLck ${locked} kB, core limit 0, no core after SIGSEGV)"
