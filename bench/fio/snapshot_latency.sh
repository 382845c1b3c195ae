#!/usr/bin/env bash
# Issue 16: the write latency a pod sees while its volume is snapshotted.
# The real `sealvol controller` (snapshots on, the embedded KMS) and `sealvol
# node` processes; a 2 GiB ext4 volume staged and published the way a pod
# gets it, with 1 GiB written; then fio's 4 KiB random write + fsync at QD1
# (bench/fio/randwrite_4k_qd1_fsync.fio's job) runs for RUNTIME seconds
# with a per-I/O latency log, and a third of the way in a snapshot is taken
# (CreateSnapshot: FIFREEZE, the engine's write hold, the cut; then the
# node's copy under a fresh key until ready). Prints the completion latency
# (p50, p99, max, IOPS) before the snapshot, from CreateSnapshot to its
# return (the cut), from the cut to ready (the copy), and after. The node's
# state directory (the images) on tmpfs (the cut is a sparse copy), or with
# --state-fs xfs on an xfs with reflink in a loop-mounted file (the cut is a
# FICLONE). Needs root and /dev/fuse. Not a test.
#
#   bench/fio/snapshot_latency.sh [--runtime S] [--state-fs tmpfs|xfs] [--out DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runtime=30
state_fs=tmpfs
out=""
while (($#)); do
  case "$1" in
    --runtime) runtime=$2; shift ;;
    --out) out=$2; shift ;;
    --state-fs) state_fs=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "snapshot_latency: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-$here/results/snapshot-latency-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

# shellcheck source=../../tests/csi/node_test_lib.sh
source "$here/../../tests/csi/node_test_lib.sh"
mkdir -p "$work/state"
case $state_fs in
  tmpfs) mount -t tmpfs -o size=8G tmpfs "$work/state" ;;
  xfs)
    truncate -s 8G "$work/state.xfs"
    mkfs.xfs -q -m reflink=1 "$work/state.xfs"
    mount -o loop "$work/state.xfs" "$work/state"
    ;;
  *) fail "--state-fs $state_fs: expected tmpfs or xfs" ;;
esac

start_controller --enable-snapshots
start_node node.log
read -r vol vol_size < <("$sv" "${c[@]}" create bench --size 2Gi --tenant team-a --node "$node")
stage "$vol" "$vol_size" >/dev/null
publish "$vol" "$vol_size" >/dev/null
note_ours
fio --name=written --filename="$target/written.dat" --size=768M --rw=write --bs=1M \
  --direct=1 --ioengine=io_uring --iodepth=16 --output=/dev/null
fio --name=prefill --filename="$target/fio.dat" --size=256M --rw=write --bs=1M \
  --direct=1 --ioengine=io_uring --iodepth=16 --output=/dev/null
sync
echo "# $(nproc) CPU, kernel $(uname -r), $(fio --version); state on $state_fs; load before: $(uptime)" >"$out/machine.txt"

now_ms() { date +%s%3N; }
start_ms=$(now_ms)
TARGET=$target RUNTIME=$runtime SIZE=256M \
  fio --output-format=json --output="$out/fio.json" --write_lat_log="$out/pod" \
  --log_avg_msec=0 --log_unix_epoch=1 "$here/randwrite_4k_qd1_fsync.fio" &
fio_pid=$!
pids+=("$fio_pid")
sleep $((runtime / 3 + 2))  # fio's 2 s ramp, then a third of the run
snap_start=$(now_ms)
read -r snap _ < <("$sv" "${c[@]}" snapshot bench-snapshot --source "$vol")
snap_cut=$(now_ms)
until "$sv" "${c[@]}" snapshots --id "$snap" | grep -q "ready=true"; do sleep 0.05; done
snap_ready=$(now_ms)
wait "$fio_pid"
echo "# load after: $(uptime)" >>"$out/machine.txt"
"$sv" "${c[@]}" delete-snapshot "$snap"
unpublish "$vol" >/dev/null
unstage "$vol" >/dev/null

python3 - "$out" "$start_ms" "$snap_start" "$snap_cut" "$snap_ready" <<'PY'
import glob, json, sys
out, start, s0, s1, s2 = sys.argv[1], *map(int, sys.argv[2:])
# fio's clat log (log_unix_epoch): time (Unix ms), latency (ns), direction, bs.
lat = []
for path in glob.glob(f"{out}/pod_clat.*.log"):
    for line in open(path):
        t, ns = line.split(",")[:2]
        lat.append((int(t), int(ns)))
lat.sort()
windows = [("before the snapshot", start, s0), ("CreateSnapshot (freeze, hold, cut)", s0, s1),
           ("cut to ready (the copy)", s1, s2), ("after ready", s2, 10**15)]
rows = ["| window | ms | writes | IOPS | p50 µs | p99 µs | max µs |", "|---|---|---|---|---|---|---|"]
result = {"create_snapshot_ms": s1 - s0, "copy_ms": s2 - s1, "windows": []}
for name, lo, hi in windows:
    xs = sorted(ns for t, ns in lat if lo <= t < hi)
    span = (min(hi, lat[-1][0]) - max(lo, lat[0][0])) if lat else 0
    if not xs:
        rows.append(f"| {name} | {span} | 0 | - | - | - | - |")
        continue
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))] / 1000
    iops = len(xs) / (span / 1000) if span > 0 else 0
    rows.append(f"| {name} | {span} | {len(xs)} | {iops:.0f} | {q(0.5):.0f} | {q(0.99):.0f} | {xs[-1] / 1000:.0f} |")
    result["windows"].append({"name": name, "ms": span, "writes": len(xs), "iops": round(iops),
                              "p50_us": q(0.5), "p99_us": q(0.99), "max_us": xs[-1] / 1000})
table = "\n".join(rows)
print(open(f"{out}/machine.txt").read().strip())
print(f"CreateSnapshot took {s1 - s0} ms; the copy to ready {s2 - s1} ms")
print(table)
open(f"{out}/table.md", "w").write(table + "\n")
json.dump(result, open(f"{out}/result.json", "w"), indent=1)
PY
