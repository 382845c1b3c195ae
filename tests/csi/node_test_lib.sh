# Shared by the node plugin's process tests (sourced, not run): a controller
# with the embedded KMS and the broker on unix sockets, a node plugin that can
# be started, killed and restarted, and counts of what the test's volumes
# hold on the machine. Needs root and /dev/fuse.
#
# The counts are of this test's own resources, because other tests may create
# mounts, loop devices and FUSE connections on the same machine meanwhile:
#   our_mounts  entries of /proc/self/mountinfo whose mount point is under $work
#   our_conns   FUSE connections (/sys/fs/fuse/connections/N) that one of our
#               FUSE mounts had (noted with note_ours while it was mounted,
#               with the inode of that directory) and that still exist
#   our_loops   loop devices bound to a file under $work or on one of those
#               connections (backing device 0:N), or seen so (note_ours) and
#               still bound to our export after its FUSE mount was detached
# Global totals (losetup -a, mountinfo, connections) are printed alongside.

src=${SEALVOL_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
sv=${SEALVOL_BIN:-$src/build/cmd/sealvol}
name=$(basename "$0" .sh)
[[ $(id -u) == 0 ]] || { echo "$name: needs root" >&2; exit 1; }
[[ -w /dev/fuse ]] || { echo "$name: needs /dev/fuse" >&2; exit 1; }

work=$(mktemp -d /tmp/sealvol-$name.XXXXXX)
pids=()
node_pid=""
controller_pid=""

# Connections are listed only with fusectl mounted (systemd mounts it on most
# hosts). Mounted here when missing and left mounted, as
# tests/io/frontend/mount_test.sh does: a test running beside this one may
# be counting connections through it.
if ! grep -q " /sys/fs/fuse/connections fusectl " /proc/self/mounts; then
  mount -t fusectl none /sys/fs/fuse/connections
fi

cleanup() {
  local rc=$?
  set +e
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  # Whatever a failure left: abort our connections, unmount, free our loops.
  for c in $(our_conn_numbers); do
    echo 1 >"/sys/fs/fuse/connections/$c/abort"
  done
  awk -v w="$work" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m"; done
  for l in $(our_loop_names); do losetup -d "$l"; done
  ((rc == 0)) || { echo "--- node logs:" >&2; tail -n 30 "$work"/node*.log >&2; }
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
fail() { echo "$name: FAIL: $*" >&2; exit 1; }

# Remembers the FUSE connections of our mounts (call while they exist) as
# "N INODE": the inode of /sys/fs/fuse/connections/N tells our connection
# from a later one that reuses the number.
note_ours() {
  local c
  for c in $(awk -v w="$work" 'index($5, w) == 1 {
      for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) ~ /^fuse/) { split($3, d, ":"); print d[2] } break }
    }' /proc/self/mountinfo); do
    echo "$c $(stat -c %i "/sys/fs/fuse/connections/$c" 2>/dev/null)" >>"$work/conns.seen"
  done
  sort -u -o "$work/conns.seen" "$work/conns.seen" 2>/dev/null || true
  our_loop_names >>"$work/loops.seen"
  sort -u -o "$work/loops.seen" "$work/loops.seen"
}
our_mounts() { awk -v w="$work" 'index($5, w) == 1' /proc/self/mountinfo | wc -l; }
# Our connections that still exist (same number, same inode).
our_conn_numbers() {
  local c ino
  [[ -e $work/conns.seen ]] || return 0
  while read -r c ino; do
    if [[ -n $ino && $(stat -c %i "/sys/fs/fuse/connections/$c" 2>/dev/null) == "$ino" ]]; then
      echo "$c"
    fi
  done <"$work/conns.seen"
}
our_conns() { our_conn_numbers | wc -l; }
our_loop_names() {
  local l f
  {
    for f in /sys/block/loop*/loop/backing_file; do
      [[ -e $f ]] || continue
      l=${f#/sys/block/}
      l=/dev/${l%%/*}
      # Ours: bound to a file under $work, or, once our FUSE mount is detached
      # and its connection dead (no BACK-MAJ:MIN then), a device we saw bound
      # to our export whose file now reads as "/volume".
      case $(cat "$f" 2>/dev/null) in
        "$work"/*) echo "$l" ;;
        /volume) if grep -qx "$l" "$work/loops.seen" 2>/dev/null; then echo "$l"; fi ;;
      esac
    done
    # Or bound to a file on one of our connections.
    local devs
    devs=$(our_conn_numbers | sed 's/^/0:/' | paste -sd'|')
    losetup -l -n -O NAME,BACK-MAJ:MIN 2>/dev/null | awk -v devs="^(${devs:-none})\$" '$2 ~ devs { print $1 }'
  } | sort -u
}
our_loops() { our_loop_names | wc -l; }
counts() { echo "mounts $(our_mounts) loops $(our_loops) fuse-connections $(our_conns)"; }
global_counts() {
  echo "machine: mountinfo $(wc -l </proc/self/mountinfo), losetup -a $(losetup -a | wc -l)," \
    "fuse connections $(ls /sys/fs/fuse/connections | wc -l)"
}
# Waits up to 10 s for our counts to reach "mounts M loops L fuse-connections C".
expect_counts() {
  local want="mounts $1 loops $2 fuse-connections $3" what=$4 got
  for _ in $(seq 100); do
    got=$(counts)
    [[ $got == "$want" ]] && return 0
    sleep 0.1
  done
  fail "$what: expected $want, have $got"
}

issuer=https://issuer.$name.test
node=$name-node
"$sv" token keygen --out "$work/issuer.pem" >/dev/null 2>&1
"$sv" token jwks --issuer-key "$work/issuer.pem" >"$work/jwks.json"
"$sv" token mint --issuer-key "$work/issuer.pem" --issuer "$issuer" --namespace sealvol-system \
  --service-account sealvol-node --node "$node" >"$work/node.token"
"$sv" token mint --issuer-key "$work/issuer.pem" --issuer "$issuer" --namespace team-a \
  --service-account default --pod p0 --pod-uid u0 --node "$node" >"$work/pod.token"

# The broker's audit log; a test may point it elsewhere before starting.
audit_log=$work/audit.jsonl
# start_controller [FLAG...]: extra flags go to `sealvol controller`.
start_controller() {
  "$sv" controller --endpoint "unix://$work/c.sock" --kms "local:$work/kms" \
    --broker-listen "unix://$work/b.sock" --jwks-file "$work/jwks.json" --issuer "$issuer" \
    --audit-log "$audit_log" "$@" >>"$work/controller.log" 2>&1 &
  controller_pid=$!
  pids+=("$controller_pid")
  for _ in $(seq 100); do
    [[ -S $work/b.sock ]] && "$sv" csi --endpoint "unix://$work/c.sock" info >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "controller did not start"
}
stop_controller() {
  kill "$controller_pid"
  wait "$controller_pid" 2>/dev/null || true
}
# start_node LOG [VAR=VALUE...]: the node plugin with extra environment; it
# has run Recover() once it answers.
start_node() {
  local log=$1
  shift
  env "$@" "$sv" node --endpoint "unix://$work/n.sock" --node-id "$node" --state-dir "$work/state" \
    --kubelet-dir "$work" --broker "unix://$work/b.sock" --node-token-file "$work/node.token" >>"$work/$log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  for _ in $(seq 150); do
    "$sv" csi --endpoint "unix://$work/n.sock" info >/dev/null 2>&1 && return 0
    kill -0 "$node_pid" 2>/dev/null || fail "node exited at start-up ($log)"
    sleep 0.1
  done
  fail "node did not start"
}
stop_node() {
  kill "$node_pid"
  wait "$node_pid" 2>/dev/null || true
}

c=(csi --endpoint "unix://$work/c.sock")
n=(csi --endpoint "unix://$work/n.sock")
staging=$work/staging
target=$work/target
mkdir -p "$staging"
stage() { "$sv" "${n[@]}" stage "$1" --staging-path "$staging" --size "$2"; }
publish() {
  "$sv" "${n[@]}" publish "$1" --staging-path "$staging" --target "$target" --size "$2" \
    --pod team-a/p0 --pod-uid u0 --token-file "$work/pod.token"
}
unpublish() { "$sv" "${n[@]}" unpublish "$1" --target "$target"; }
unstage() { "$sv" "${n[@]}" unstage "$1" --staging-path "$staging"; }
# Writes a line to the volume's marker file and fsyncs it.
write_marker() {
  echo "$1" >"$target/marker"
  sync -f "$target/marker"
  python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)" "$target/marker"
}
