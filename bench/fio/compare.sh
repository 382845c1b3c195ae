#!/usr/bin/env bash
# Runs the fio jobs of this directory, in one run, on four targets:
#   (a) ext4 on a plain loop device (direct I/O) over a tmpfs file;
#   (b) ext4 on sealvol (FUSE front-end + loop) over a tmpfs image;
#   (c) ext4 on a loop device over an image file inside a gocryptfs mount
#       whose cipher directory is on tmpfs;
#   (d) ext4 on a loop device (direct I/O) over QEMU's LUKS driver (a LUKS
#       image on tmpfs made by qemu-img) exported as one file through FUSE by
#       qemu-storage-daemon;
# then prints, per job and target, MB/s, IOPS, p50/p99 completion latency
# (and the fsync's for the fsync job), CPU seconds per GiB moved of the
# serving process (sealvol, gocryptfs, qemu-storage-daemon; from
# /proc/PID/stat) and of fio itself, and the ratios b/a, b/c, b/d. Writes
# table.md and chart.svg (gnuplot: throughput and p99 per job and target)
# into the output directory with the raw fio JSON, and the load average
# (uptime) before and after every job into machine.txt. Needs root. Not a
# test.
#
#   bench/fio/compare.sh [--transport auto|uring|dev] [--runtime S] [--size N]
#                        [--out DIR] [--sealvol PATH] [--only a,b,c,d]
#                        [--jobs seq_write_1m,seq_read_1m,...]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
SEALVOL=${SEALVOL:-$root/build/cmd/sealvol}
transport=auto
runtime=10
size=1G
out=""
only=a,b,c,d
job_list=""
while (($#)); do
  case "$1" in
    --transport) transport=$2; shift ;;
    --runtime) runtime=$2; shift ;;
    --size) size=$2; shift ;;
    --out) out=$2; shift ;;
    --sealvol) SEALVOL=$2; shift ;;
    --only) only=$2; shift ;;
    --jobs) job_list=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "compare: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $EUID -eq 0 ]] || { echo "compare: needs root" >&2; exit 2; }
[[ $only != *b* || -x $SEALVOL ]] || { echo "compare: no sealvol binary at $SEALVOL" >&2; exit 2; }
if [[ $only == *d* ]]; then
  for tool in qemu-img qemu-storage-daemon; do
    command -v "$tool" >/dev/null ||
      { echo "compare: no $tool (Debian: qemu-utils, qemu-system-common; scripts/setup)" >&2; exit 2; }
  done
fi
command -v gnuplot >/dev/null ||
  { echo "compare: no gnuplot (Debian: gnuplot-nox; scripts/setup)" >&2; exit 2; }
out=${out:-$here/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
all_jobs=(seq_write_1m seq_read_1m randwrite_4k randread_4k randwrite_4k_qd1_fsync
          randread_4k_qd1 randrw_70_30_4k)
jobs=("${all_jobs[@]}")
if [[ -n $job_list ]]; then
  IFS=, read -r -a jobs <<<"$job_list"
  for job in "${jobs[@]}"; do
    [[ -f $here/$job.fio ]] || { echo "compare: no job $job" >&2; exit 2; }
  done
fi
image_size=3G  # Room for ext4 metadata around the fio file.

W=$(mktemp -d /tmp/sealvol-fio.XXXXXX)
loop_a="" loop_c="" loop_d="" sv_state=$W/state qsd_pid=""
cleanup() {
  set +e
  for m in "$W/a" "$W/b" "$W/c" "$W/d"; do mountpoint -q "$m" && umount "$m"; done
  [[ -n $loop_a ]] && losetup -d "$loop_a"
  [[ -n $loop_c ]] && losetup -d "$loop_c"
  [[ -n $loop_d ]] && losetup -d "$loop_d"
  [[ -e $sv_state/run ]] && "$SEALVOL" close "$W/tmpfs/sealvol.img" --state-dir "$sv_state" 2>/dev/null
  mountpoint -q "$W/gc_plain" && fusermount -u "$W/gc_plain" 2>/dev/null || umount -l "$W/gc_plain" 2>/dev/null
  if [[ -n $qsd_pid ]]; then
    # The daemon removes its FUSE export when it exits on SIGTERM.
    kill "$qsd_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$qsd_pid" 2>/dev/null || break; sleep 0.1; done
    mountpoint -q "$W/qsd_export" && umount -l "$W/qsd_export"
  fi
  # The serving processes may still hold their images for a moment after
  # close or kill returns.
  for _ in $(seq 50); do
    mountpoint -q "$W/tmpfs" || break
    umount "$W/tmpfs" 2>/dev/null && break
    sleep 0.2
  done
  mountpoint -q "$W/tmpfs" && echo "compare: $W/tmpfs stays mounted (busy)" >&2
  rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$W/tmpfs" "$W/a" "$W/b" "$W/c" "$W/d" "$W/gc_cipher" "$W/gc_plain"
mount -t tmpfs -o size=12G tmpfs "$W/tmpfs"
mkfs_ext4() { mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0 "$1"; }

if [[ $only == *a* ]]; then
  truncate -s "$image_size" "$W/tmpfs/plain.img"
  loop_a=$(losetup --direct-io=on --sector-size 4096 -f --show "$W/tmpfs/plain.img")
  mkfs_ext4 "$loop_a"; mount "$loop_a" "$W/a"
fi

declare -A server_pid=()
if [[ $only == *b* ]]; then
  "$SEALVOL" format "$W/tmpfs/sealvol.img" --size "$image_size" --state-dir "$sv_state" >/dev/null
  "$SEALVOL" open "$W/tmpfs/sealvol.img" --mountpoint "$W/b" --state-dir "$sv_state" \
    --transport "$transport"
  server_pid[b]=$("$SEALVOL" status --json --state-dir "$sv_state" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pid"])')
  sv_transport=$("$SEALVOL" status --json --state-dir "$sv_state" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["transport"])')
fi

if [[ $only == *c* ]]; then
  mkdir -p "$W/tmpfs/gc_cipher"
  head -c 32 /dev/urandom | base64 >"$W/pass"
  gocryptfs -q -init -passfile "$W/pass" "$W/tmpfs/gc_cipher" >/dev/null
  gocryptfs -q -passfile "$W/pass" "$W/tmpfs/gc_cipher" "$W/gc_plain"
  server_pid[c]=$(pgrep -n -f "gocryptfs .*$W/gc_plain\$" || true)
  truncate -s "$image_size" "$W/gc_plain/img"
  # gocryptfs does not take O_DIRECT opens, so this loop device is buffered.
  loop_c=$(losetup --direct-io=on --sector-size 4096 -f --show "$W/gc_plain/img" 2>/dev/null ||
           losetup --sector-size 4096 -f --show "$W/gc_plain/img")
  mkfs_ext4 "$loop_c"; mount "$loop_c" "$W/c"
fi

if [[ $only == *d* ]]; then
  # QEMU's LUKS driver (LUKS1 by default in qemu-img: aes-256-xts-plain64,
  # unauthenticated) on O_DIRECT io_uring file I/O, exported through FUSE.
  head -c 32 /dev/urandom | base64 | tr -d '\n' >"$W/luks_pass"
  # qemu-img times PBKDF2 with getrusage to pick the iteration count; on a
  # loaded machine that measurement can fail ("Unable to get accurate CPU
  # usage"), so it gets a few tries.
  for try in 1 2 3 4 5; do
    qemu-img create -q -f luks --object "secret,id=sec0,file=$W/luks_pass" \
      -o key-secret=sec0 "$W/tmpfs/luks.img" "$image_size" && break
    ((try < 5)) || { echo "compare: qemu-img create failed $try times" >&2; exit 1; }
    rm -f "$W/tmpfs/luks.img"
  done
  : >"$W/qsd_export"  # A FUSE export's mountpoint is a regular file.
  qemu-storage-daemon \
    --object "secret,id=sec0,file=$W/luks_pass" \
    --blockdev "driver=file,filename=$W/tmpfs/luks.img,node-name=file0,cache.direct=on,aio=io_uring" \
    --blockdev driver=luks,file=file0,key-secret=sec0,node-name=luks0 \
    --export "type=fuse,id=exp0,node-name=luks0,mountpoint=$W/qsd_export,writable=on" \
    --pidfile "$W/qsd.pid" --daemonize
  qsd_pid=$(cat "$W/qsd.pid")
  server_pid[d]=$qsd_pid
  loop_d=$(losetup --direct-io=on --sector-size 4096 -f --show "$W/qsd_export")
  mkfs_ext4 "$loop_d"; mount "$loop_d" "$W/d"
fi

# Every target's fio file is written once, whole, before any job: a read of
# a file fio only laid out (unwritten extents) returns zeros without
# reaching the device, and a first write into one converts extents (a
# journal commit) instead of overwriting.
for t in a b c d; do
  [[ $only == *$t* ]] || continue
  echo "== prefill $t" >&2
  fio --name=prefill --filename="$W/$t/fio.dat" --size="$size" --rw=write --bs=1M \
    --direct=1 --ioengine=io_uring --iodepth=16 --output=/dev/null
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
: >"$out/server_cpu.tsv"
{
  echo "# machine: $(nproc) CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(fio --version)"
  echo "# sealvol transport: ${sv_transport:-n/a}; runtime ${runtime}s + 2s ramp; file size $size"
  echo "# $(qemu-storage-daemon --version 2>/dev/null | head -1 || true)"
  echo "# load before: $(uptime)"
} >"$out/machine.txt"
for job in "${jobs[@]}"; do
  for t in a b c d; do
    [[ $only == *$t* ]] || continue
    echo "== $job on $t ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
    before=""
    pid=${server_pid[$t]:-}
    [[ -n $pid ]] && before=$(cpu_ticks "$pid")
    TARGET=$W/$t RUNTIME=$runtime SIZE=$size \
      fio --output-format=json --output="$out/$t-$job.json" "$here/$job.fio"
    if [[ -n $pid ]]; then
      after=$(cpu_ticks "$pid")
      echo -e "$t\t$job\t$(( after - before ))\t$hz" >>"$out/server_cpu.tsv"
    fi
  done
  echo "# load after $job: $(uptime)" >>"$out/machine.txt"
done

python3 - "$out" "${all_jobs[@]}" <<'PY'
import json, os, sys
out, jobs = sys.argv[1], sys.argv[2:]
peers = "abcd"
names = {"a": "plain loop", "b": "sealvol", "c": "gocryptfs",
         "d": "QEMU LUKS (qsd FUSE)"}

def pct(lat, key):
    p = lat.get("percentile", {})
    return p.get(key, 0) / 1000.0 if p else None

def load(t, job):
    p = os.path.join(out, f"{t}-{job}.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        text = f.read()
    r = json.loads(text[text.index("{"):])["jobs"][0]
    v = {"mbs": (r["read"]["bw_bytes"] + r["write"]["bw_bytes"]) / 1e6,
         "iops": r["read"]["iops"] + r["write"]["iops"],
         "moved": r["read"]["io_bytes"] + r["write"]["io_bytes"],
         "p50": 0.0, "p99": 0.0, "sync50": None, "sync99": None}
    for d in ("read", "write"):
        lat = r[d].get("clat_ns", {})
        if r[d]["io_bytes"] and lat.get("percentile"):
            v["p50"] = max(v["p50"], pct(lat, "50.000000"))
            v["p99"] = max(v["p99"], pct(lat, "99.000000"))
    sync = r.get("sync", {})
    if sync.get("total_ios"):
        v["sync50"] = pct(sync.get("lat_ns", {}), "50.000000")
        v["sync99"] = pct(sync.get("lat_ns", {}), "99.000000")
    # fio's own CPU (usr+sys percentages of its run time).
    v["fio_cpu"] = (r["usr_cpu"] + r["sys_cpu"]) / 100.0 * r["job_runtime"] / 1000.0
    return v

cpu = {}
p = os.path.join(out, "server_cpu.tsv")
if os.path.exists(p):
    for line in open(p):
        t, job, ticks, hz = line.split()
        cpu[(t, job)] = int(ticks) / int(hz)

def f0(x):
    return "-" if x is None else f"{x:.0f}"

def ratio(x, y):
    return f"{x / y:.2f}" if x and y else "-"

data = {(t, job): load(t, job) for t in peers for job in jobs}
run_jobs = [j for j in jobs if any(data[(t, j)] for t in peers)]
rows = ["| job | target | MB/s | IOPS | p50 µs | p99 µs | fsync p50 µs | fsync p99 µs "
        "| server CPU s/GiB | fio CPU s/GiB |",
        "|---|---|---|---|---|---|---|---|---|---|"]
for job in run_jobs:
    for t in peers:
        v = data[(t, job)]
        if not v:
            continue
        gib = v["moved"] / 2**30
        # The server's CPU window includes fio's ramp, which io_bytes does
        # not: this overstates its cost slightly.
        server = f"{cpu[(t, job)] / gib:.2f}" if (t, job) in cpu and gib else "-"
        fio_cpu = f"{v['fio_cpu'] / gib:.2f}" if gib else "-"
        rows.append(f"| {job} | {t} {names[t]} | {v['mbs']:.0f} | {v['iops']:.0f} "
                    f"| {f0(v['p50'])} | {f0(v['p99'])} | {f0(v['sync50'])} "
                    f"| {f0(v['sync99'])} | {server} | {fio_cpu} |")
rows += ["", "| job | b/a | b/c | b/d |", "|---|---|---|---|"]
for job in run_jobs:
    key = "mbs" if job.startswith("seq") else "iops"
    g = {t: data[(t, job)][key] if data[(t, job)] else None for t in peers}
    rows.append(f"| {job} | {ratio(g['b'], g['a'])} | {ratio(g['b'], g['c'])} "
                f"| {ratio(g['b'], g['d'])} |")
table = "\n".join(rows)
print(open(os.path.join(out, "machine.txt")).read().strip())
print("ratios use MB/s for seq jobs and IOPS for 4k jobs; a has no serving process")
print(table)
with open(os.path.join(out, "table.md"), "w") as f:
    f.write(table + "\n")

# Data for the chart: one row per job, per target throughput (MB/s for the
# 1 MiB jobs, thousands of IOPS for the 4 KiB jobs) then p99 (ms).
with open(os.path.join(out, "chart.dat"), "w") as f:
    f.write("job " + " ".join(f"thr_{t}" for t in peers) + " " +
            " ".join(f"p99_{t}" for t in peers) + "\n")
    for job in run_jobs:
        unit = "MB/s" if job.startswith("seq") else "kIOPS"
        label = f'"{job}\\n({unit})"'
        thr, lat = [], []
        for t in peers:
            v = data[(t, job)]
            if not v:
                thr.append("NaN"); lat.append("NaN"); continue
            thr.append(f"{v['mbs'] if job.startswith('seq') else v['iops'] / 1000:.3f}")
            lat.append(f"{v['p99'] / 1000:.4f}")
        f.write(label + " " + " ".join(thr) + " " + " ".join(lat) + "\n")
PY

title="fio: ext4 on a loop device over each target ($(nproc) vCPU, $(date -u +%Y-%m-%d), runtime ${runtime}s)"
# One bar per target that ran (gnuplot refuses a column with no value).
declare -A label=([a]="a plain loop" [b]="b sealvol" [c]="c gocryptfs" [d]="d QEMU LUKS (qsd FUSE)")
declare -A column=([a]=2 [b]=3 [c]=4 [d]=5)
plot_thr="" plot_p99=""
for t in a b c d; do
  [[ $only == *$t* ]] || continue
  sep=${plot_thr:+, }
  plot_thr+="$sep\"$out/chart.dat\" using ${column[$t]}:xtic(1) title \"${label[$t]}\""
  plot_p99+="$sep\"$out/chart.dat\" using $((column[$t] + 4)):xtic(1) title \"${label[$t]}\""
done
gnuplot <<EOF
set terminal svg size 1100,900 dynamic font "sans,11" background "white"
set output "$out/chart.svg"
set multiplot layout 2,1 title "$title"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top vertical
set grid ytics
set logscale y
set xtics font ",9" noenhanced
set ylabel "throughput (MB/s or kIOPS; higher is better)"
plot $plot_thr
set ylabel "p99 completion latency, ms (lower is better)"
plot $plot_p99
unset multiplot
EOF
echo "table in $out/table.md, chart in $out/chart.svg, raw fio JSON in $out" >&2
