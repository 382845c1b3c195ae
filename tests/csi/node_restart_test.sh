#!/usr/bin/env bash
# kill -9 of the node plugin with a published volume: the restarted plugin
# reports the volume abnormal, leaves no mount or loop device of the dead
# data path behind, and the next publish re-attests and reattaches with the
# data intact.
set -euo pipefail
src=${SEALVOL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
sv=${SEALVOL_BIN:-$src/build/cmd/sealvol}
[[ $(id -u) == 0 ]] || { echo "node_restart_test: needs root" >&2; exit 1; }

work=$(mktemp -d /tmp/sealvol-restart.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
  ((rc == 0)) || tail -n 20 "$work"/node*.log >&2
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
fail() { echo "node_restart_test: $*" >&2; exit 1; }

issuer=https://issuer.restart.test node=restart-node
"$sv" token keygen --out "$work/issuer.pem" >/dev/null 2>&1
"$sv" token jwks --issuer-key "$work/issuer.pem" >"$work/jwks.json"
"$sv" token mint --issuer-key "$work/issuer.pem" --issuer "$issuer" --namespace sealvol-system \
  --service-account sealvol-node --node "$node" >"$work/node.token"
"$sv" token mint --issuer-key "$work/issuer.pem" --issuer "$issuer" --namespace team-a \
  --service-account default --pod p0 --pod-uid u0 --node "$node" >"$work/pod.token"
"$sv" controller --endpoint "unix://$work/c.sock" --kms "local:$work/kms" \
  --broker-listen "unix://$work/b.sock" --jwks-file "$work/jwks.json" --issuer "$issuer" \
  --audit-log "$work/audit.jsonl" >"$work/controller.log" 2>&1 &
pids+=($!)
start_node() {
  "$sv" node --endpoint "unix://$work/n.sock" --node-id "$node" --state-dir "$work/state" \
    --kubelet-dir "$work" --broker "unix://$work/b.sock" --node-token-file "$work/node.token" >>"$work/node$1.log" 2>&1 &
  node_pid=$!
  pids+=($node_pid)
  for _ in $(seq 100); do
    "$sv" csi --endpoint "unix://$work/n.sock" info >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "node did not start"
}
start_node 1
c=(csi --endpoint "unix://$work/c.sock") n=(csi --endpoint "unix://$work/n.sock")
read -r vol size < <("$sv" "${c[@]}" create r1 --size 64Mi --tenant team-a)
staging=$work/staging target=$work/target
mkdir -p "$staging"
publish() {
  "$sv" "${n[@]}" publish "$vol" --staging-path "$staging" --target "$target" --size "$size" \
    --pod team-a/p0 --pod-uid u0 --token-file "$work/pod.token"
}
"$sv" "${n[@]}" stage "$vol" --staging-path "$staging" --size "$size"
publish
echo "before-the-kill" >"$target/marker"
sync -f "$target/marker"
loop=$(findmnt -n -o SOURCE --target "$staging")
[[ $loop == /dev/loop* ]] || fail "staging path not on a loop device ($loop)"

kill -9 "$node_pid"
wait "$node_pid" 2>/dev/null || true
start_node 2

"$sv" "${n[@]}" stats "$vol" --path "$staging" | grep -q "condition.abnormal.*restarted" ||
  fail "the lost volume is not reported abnormal"
grep -q " $target " /proc/self/mounts && fail "the dead target mount was left behind"
grep -q " $staging " /proc/self/mounts && fail "the dead staging mount was left behind"
grep -q " $work/state/volumes/$vol/fuse " /proc/self/mounts && fail "the dead FUSE mount was left behind"
for _ in $(seq 50); do
  losetup -n -O BACK-FILE "$loop" 2>/dev/null | grep -q "$work" || break
  sleep 0.1
done
losetup -n -O BACK-FILE "$loop" 2>/dev/null | grep -q "$work" && fail "loop device $loop leaked"

publish
[[ $(cat "$target/marker") == before-the-kill ]] || fail "data lost across the restart"
"$sv" "${n[@]}" stats "$vol" --path "$target" | grep -q "condition.normal" || fail "not normal after reattach"
"$sv" "${n[@]}" unpublish "$vol" --target "$target"
"$sv" "${n[@]}" unstage "$vol" --staging-path "$staging"
"$sv" "${c[@]}" delete "$vol"
grep -q " $work" /proc/self/mounts && fail "mounts left after unstage"
echo "node_restart_test: passed"
