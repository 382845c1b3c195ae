#!/usr/bin/env bash
# Where a QD1 write+fsync goes on sealvol: opens a volume on a tmpfs image
# (`sealvol open`: FUSE + loop + ext4, as bench/fio/compare.sh's target b),
# runs randwrite_4k_qd1_fsync on it, and records one window of kernel
# tracepoints with perf (FUSE requests sent and answered, io_uring
# submissions with their opcode and whether they went to an io-wq worker,
# the scheduler's switches of the sealvol threads, jbd2 commits). Then
# prints, per fio write+fsync cycle: the FUSE requests by opcode and their
# time from send to answer, the backing-store operations of the sealvol
# threads by opcode, how many of those were punted to io_uring's worker
# threads, and the context switches of the serving threads. Needs root and
# perf. Not a test.
#
#   bench/fio/trace_qd1.sh [--sealvol PATH] [--seconds S] [--job NAME]
#                          [--out DIR]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
SEALVOL=${SEALVOL:-$root/build/cmd/sealvol}
seconds=1
job=randwrite_4k_qd1_fsync
out=""
while (($#)); do
  case "$1" in
    --sealvol) SEALVOL=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --job) job=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "trace_qd1: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $EUID -eq 0 ]] || { echo "trace_qd1: needs root" >&2; exit 2; }
[[ -x $SEALVOL ]] || { echo "trace_qd1: no sealvol binary at $SEALVOL" >&2; exit 2; }
command -v perf >/dev/null || { echo "trace_qd1: no perf (Debian: linux-perf)" >&2; exit 2; }
[[ -f $here/$job.fio ]] || { echo "trace_qd1: no job $job" >&2; exit 2; }

W=$(mktemp -d /tmp/sealvol-trace.XXXXXX)
out=${out:-$W/out}
mkdir -p "$out"
tracefs=""
fio_pid=""
cleanup() {
  set +e
  [[ -n $fio_pid ]] && kill "$fio_pid" 2>/dev/null && wait "$fio_pid" 2>/dev/null
  mountpoint -q "$W/b" && umount "$W/b"
  [[ -e $W/state/run ]] && "$SEALVOL" close "$W/tmpfs/sealvol.img" --state-dir "$W/state"
  [[ -n $tracefs ]] && umount "$tracefs"
  mountpoint -q "$W/tmpfs" && umount "$W/tmpfs"
  [[ $out == $W/* ]] || rm -rf "$W"
}
trap cleanup EXIT

# perf finds tracepoint formats through a mounted tracefs; mount a private
# one if there is none.
if ! grep -q " tracefs " /proc/mounts; then
  tracefs=$W/tracefs
  mkdir -p "$tracefs"
  mount -t tracefs nodev "$tracefs"
fi

mkdir -p "$W/tmpfs" "$W/b"
mount -t tmpfs -o size=4G tmpfs "$W/tmpfs"
"$SEALVOL" format "$W/tmpfs/sealvol.img" --size 2G --state-dir "$W/state" >/dev/null
"$SEALVOL" open "$W/tmpfs/sealvol.img" --mountpoint "$W/b" --state-dir "$W/state"
sv_pid=$("$SEALVOL" status --json --state-dir "$W/state" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pid"])')
fio --name=prefill --filename="$W/b/fio.dat" --size=256M --rw=write --bs=1M \
  --direct=1 --ioengine=io_uring --iodepth=16 --output=/dev/null
TARGET=$W/b RUNTIME=$((seconds + 6)) SIZE=256M \
  fio --output-format=json --output="$out/fio.json" "$here/$job.fio" &
fio_pid=$!
sleep 4  # Past fio's 2 s ramp.
events=fuse:fuse_request_send,fuse:fuse_request_end
events+=,io_uring:io_uring_submit_req,io_uring:io_uring_queue_async_work
events+=,io_uring:io_uring_complete,sched:sched_switch,jbd2:jbd2_start_commit
perf record -q -a -e "$events" -o "$out/perf.data" -- sleep "$seconds" 2>/dev/null
wait "$fio_pid"; fio_pid=""
perf script -i "$out/perf.data" -F comm,tid,time,event,trace >"$out/perf.txt" 2>/dev/null

python3 - "$out/perf.txt" "$sv_pid" <<'PY'
import collections, os, re, sys
path, sv_pid = sys.argv[1], sys.argv[2]
sv_tids = set(os.listdir(f"/proc/{sv_pid}/task")) if os.path.isdir(f"/proc/{sv_pid}/task") else set()
line_re = re.compile(r"^\s*(.+?)\s+(\d+)\s+(\d+\.\d+):\s+(\S+):\s*(.*)$")
fuse_start, fuse_op = {}, {}
fuse_time = collections.defaultdict(list)
fio_writes = fio_fsyncs = 0
sv_ops = collections.Counter()
sv_async = collections.Counter()
fio_async = collections.Counter()
switches = collections.Counter()
commits = 0
req_owner = {}
for line in open(path):
    m = line_re.match(line)
    if not m:
        continue
    comm, tid, t, event, rest = m.group(1), m.group(2), float(m.group(3)), m.group(4), m.group(5)
    if event == "fuse:fuse_request_send":
        uniq = re.search(r"req (\d+)", rest).group(1)
        op = re.search(r"\((FUSE_\w+)\)", rest)
        fuse_start[uniq] = t
        fuse_op[uniq] = op.group(1) if op else "?"
    elif event == "fuse:fuse_request_end":
        uniq = re.search(r"req (\d+)", rest).group(1)
        if uniq in fuse_start:
            fuse_time[fuse_op[uniq]].append((t - fuse_start.pop(uniq)) * 1e6)
    elif event == "io_uring:io_uring_submit_req":
        op = re.search(r"opcode (\w+)", rest)
        req = re.search(r"req (0x[0-9a-f]+)", rest)
        name = op.group(1) if op else "?"
        if comm.startswith("fio"):
            if name in ("WRITE", "WRITEV"):
                fio_writes += 1
            elif name == "FSYNC":
                fio_fsyncs += 1
            owner = "fio"
        elif tid in sv_tids:
            sv_ops[name] += 1
            owner = "sv"
        else:
            owner = None
        if req and owner:
            req_owner[req.group(1)] = (owner, name)
    elif event == "io_uring:io_uring_queue_async_work":
        req = re.search(r"request (0x[0-9a-f]+)", rest)
        if req and req.group(1) in req_owner:
            owner, name = req_owner[req.group(1)]
            (sv_async if owner == "sv" else fio_async)[name] += 1
    elif event == "sched:sched_switch":
        if tid in sv_tids:
            switches["sealvol threads switched out"] += 1
        if comm.startswith("iou-wrk"):
            switches["io_uring workers switched out"] += 1
    elif event == "jbd2:jbd2_start_commit":
        commits += 1
cycles = max(1, fio_fsyncs)
print(f"window: {fio_writes} fio writes, {fio_fsyncs} fio fsyncs, {commits} jbd2 commits")
print("FUSE requests per fio write+fsync cycle, and their time from send to answer:")
for op, ts in sorted(fuse_time.items(), key=lambda kv: -len(kv[1])):
    ts.sort()
    print(f"  {op:12s} {len(ts) / cycles:5.2f} per cycle, median {ts[len(ts) // 2]:7.1f} us, "
          f"mean {sum(ts) / len(ts):7.1f} us")
print("io_uring submissions of the sealvol threads per cycle (punted to io-wq):")
for op, n in sv_ops.most_common():
    print(f"  {op:14s} {n / cycles:5.2f} ({sv_async[op] / cycles:.2f})")
print("io_uring submissions of fio per cycle (punted to io-wq):",
      ", ".join(f"{op} ({fio_async[op] / cycles:.2f})" for op in ("WRITE", "FSYNC")))
for what, n in switches.items():
    print(f"{what}: {n / cycles:.1f} per cycle")
PY
echo "fio: $(python3 -c "
import json,sys; t=open('$out/fio.json').read(); r=json.loads(t[t.index('{'):])['jobs'][0]
w=r['write']; s=r['sync']['lat_ns']
print(f\"{w['iops']:.0f} IOPS, write clat p50 {w['clat_ns']['percentile']['50.000000']/1000:.0f} us, fsync p50 {s['percentile']['50.000000']/1000:.0f} us\")")" >&2
echo "perf data and its script in $out" >&2
