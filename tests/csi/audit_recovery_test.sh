#!/usr/bin/env bash
# Issue 14: after one audit-write failure the broker refused every key until
# restarted, while Probe said ready. Through the real controller (broker)
# and node plugin, with the audit log on a small tmpfs: fill it, and a
# publish fails with UNAVAILABLE naming the audit log, nothing is mounted,
# no grant is recorded, CSI Probe says ready=false and /readyz answers 503;
# free the space, and without a restart /readyz is 200, Probe ready=true,
# the same publish succeeds and `sealvol audit verify` accepts the chain.
set -euo pipefail
source "$(dirname "$0")/node_test_lib.sh"

mkdir "$work/auditfs"
mount -t tmpfs -o size=1m sealvol-audit "$work/auditfs"  # cleanup unmounts it
audit_log=$work/auditfs/audit.jsonl
start_controller --metrics-listen 127.0.0.1:0
port=$(sed -n 's/.*(\/metrics, \/readyz) on port \([0-9]*\).*/\1/p' "$work/controller.log" | tail -n 1)
[[ -n $port ]] || fail "controller did not log its metrics port"
start_node node.log
readyz() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz"; }
probe() { "$sv" "${c[@]}" info | sed -n 's/.*ready=\([a-z]*\).*/\1/p'; }
# Key releases granted (a first publish also records a format claim, reason
# format_claimed, which is a grant too).
grants() { grep -c '"reason":"granted"' "$audit_log" || true; }

read -r vol size < <("$sv" "${c[@]}" create audited --size 64Mi --tenant team-a)
stage "$vol" "$size"
publish "$vol" "$size"
note_ours
unpublish "$vol"
[[ $(readyz) == 200 && $(probe) == true ]] || fail "not ready before the fault"
[[ $(grants) == 1 ]] || fail "expected one grant"

# The audit log's file system fills up. The log's last page may still hold
# a few records: publish until one cannot be recorded.
dd if=/dev/zero of="$work/auditfs/filler" bs=4k 2>/dev/null || true
rc=0
for i in $(seq 40); do
  rc=0
  publish "$vol" "$size" 2>"$work/err" || rc=$?
  ((rc == 0)) || break
  unpublish "$vol"
done
echo "$name: $((i - 1)) grant(s) still fitted the log's last page"
((rc == 12)) || fail "publish with a full audit log: exit $rc, expected 12: $(cat "$work/err")"
grep -q "UNAVAILABLE" "$work/err" && grep -q "audit log" "$work/err" ||
  fail "not UNAVAILABLE naming the audit log: $(cat "$work/err")"
mountpoint -q "$target" && fail "the target is mounted although no record was written"
[[ $(readyz) == 503 ]] || fail "/readyz says $(readyz) with a full audit log"
[[ $(probe) == false ]] || fail "Probe says ready with a full audit log"
sleep 1
[[ $(readyz) == 503 && $(probe) == false ]] || fail "ready again while the log is still full"
granted=$(grants)
echo "$name: full audit log: UNAVAILABLE, /readyz 503, Probe ready=false"

# Room again: no restart.
rm "$work/auditfs/filler"
for _ in $(seq 50); do
  [[ $(readyz) == 200 ]] && break
  sleep 0.2
done
[[ $(readyz) == 200 ]] || fail "/readyz still $(readyz) after the space came back"
[[ $(probe) == true ]] || fail "Probe still not ready after the space came back"
publish "$vol" "$size" || fail "publish after recovery"
[[ $(grants) == $((granted + 1)) ]] || fail "expected $((granted + 1)) grants, have $(grants)"
"$sv" audit verify "$audit_log" || fail "the audit chain does not verify after recovery"
grep -q "writable again" "$work/controller.log" || fail "the recovery was not logged"
echo "$name: space back: ready, publish granted and audited, chain verifies"

unpublish "$vol"
unstage "$vol"
expect_counts 1 0 0 "after unpublish and unstage (the audit tmpfs stays)"
echo "$name: OK"
