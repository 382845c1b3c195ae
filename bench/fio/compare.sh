#!/usr/bin/env bash
# Runs the fio jobs of this directory, in one run, on three targets:
#   (a) ext4 on a plain loop device (direct I/O) over a tmpfs file;
#   (b) ext4 on sealvol (FUSE front-end + loop) over a tmpfs image;
#   (c) ext4 on a loop device over an image file inside a gocryptfs mount
#       whose cipher directory is on tmpfs;
# then prints MB/s, IOPS and p99 latency per job with the ratios b/a and b/c,
# and the sealvol server's CPU seconds per GiB moved (from /proc/PID/stat).
# Raw fio JSON is kept in the output directory. Needs root. Not a test.
#
#   bench/fio/compare.sh [--transport auto|uring|dev] [--runtime S] [--size N]
#                        [--out DIR] [--sealvol PATH] [--only a,b,c]
#                        [--jobs seq_write_1m,seq_read_1m,...]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
SEALVOL=${SEALVOL:-$root/build/cmd/sealvol}
transport=auto
runtime=10
size=1G
out=""
only=a,b,c
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
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "compare: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $EUID -eq 0 ]] || { echo "compare: needs root" >&2; exit 2; }
[[ -x $SEALVOL ]] || { echo "compare: no sealvol binary at $SEALVOL" >&2; exit 2; }
out=${out:-$here/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
jobs=(seq_write_1m seq_read_1m randwrite_4k randread_4k randwrite_4k_qd1
      randread_4k_qd1 randrw_70_30_4k)
if [[ -n $job_list ]]; then
  IFS=, read -r -a jobs <<<"$job_list"
  for job in "${jobs[@]}"; do
    [[ -f $here/$job.fio ]] || { echo "compare: no job $job" >&2; exit 2; }
  done
fi
image_size=3G  # Room for ext4 metadata around the fio file.

W=$(mktemp -d /tmp/sealvol-fio.XXXXXX)
loop_a="" loop_c="" sv_state=$W/state
cleanup() {
  set +e
  for m in "$W/a" "$W/b" "$W/c"; do mountpoint -q "$m" && umount "$m"; done
  [[ -n $loop_a ]] && losetup -d "$loop_a"
  [[ -n $loop_c ]] && losetup -d "$loop_c"
  [[ -e $sv_state/run ]] && "$SEALVOL" close "$W/tmpfs/sealvol.img" --state-dir "$sv_state" 2>/dev/null
  mountpoint -q "$W/gc_plain" && fusermount -u "$W/gc_plain" 2>/dev/null || umount -l "$W/gc_plain" 2>/dev/null
  mountpoint -q "$W/tmpfs" && umount "$W/tmpfs"
  rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$W/tmpfs" "$W/a" "$W/b" "$W/c" "$W/gc_cipher" "$W/gc_plain"
mount -t tmpfs -o size=12G tmpfs "$W/tmpfs"
mkfs_ext4() { mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0 "$1"; }

if [[ $only == *a* ]]; then
  truncate -s "$image_size" "$W/tmpfs/plain.img"
  loop_a=$(losetup --direct-io=on --sector-size 4096 -f --show "$W/tmpfs/plain.img")
  mkfs_ext4 "$loop_a"; mount "$loop_a" "$W/a"
fi

sv_pid=""
if [[ $only == *b* ]]; then
  "$SEALVOL" format "$W/tmpfs/sealvol.img" --size "$image_size" --state-dir "$sv_state" >/dev/null
  "$SEALVOL" open "$W/tmpfs/sealvol.img" --mountpoint "$W/b" --state-dir "$sv_state" \
    --transport "$transport"
  sv_pid=$("$SEALVOL" status --json --state-dir "$sv_state" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pid"])')
  sv_transport=$("$SEALVOL" status --json --state-dir "$sv_state" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["transport"])')
fi

if [[ $only == *c* ]]; then
  mkdir -p "$W/tmpfs/gc_cipher"
  head -c 32 /dev/urandom | base64 >"$W/pass"
  gocryptfs -q -init -passfile "$W/pass" "$W/tmpfs/gc_cipher" >/dev/null
  gocryptfs -q -passfile "$W/pass" "$W/tmpfs/gc_cipher" "$W/gc_plain"
  truncate -s "$image_size" "$W/gc_plain/img"
  # gocryptfs does not take O_DIRECT opens, so this loop device is buffered.
  loop_c=$(losetup --direct-io=on --sector-size 4096 -f --show "$W/gc_plain/img" 2>/dev/null ||
           losetup --sector-size 4096 -f --show "$W/gc_plain/img")
  mkfs_ext4 "$loop_c"; mount "$loop_c" "$W/c"
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
: >"$out/sealvol_cpu.tsv"
for job in "${jobs[@]}"; do
  for t in a b c; do
    [[ $only == *$t* ]] || continue
    echo "== $job on $t" >&2
    before=""
    [[ $t == b ]] && before=$(cpu_ticks "$sv_pid")
    TARGET=$W/$t RUNTIME=$runtime SIZE=$size \
      fio --output-format=json --output="$out/$t-$job.json" "$here/$job.fio"
    if [[ $t == b ]]; then
      after=$(cpu_ticks "$sv_pid")
      echo -e "$job\t$(( after - before ))\t$hz" >>"$out/sealvol_cpu.tsv"
    fi
  done
done

{
  echo "# machine: $(nproc) CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(fio --version)"
  echo "# sealvol transport: ${sv_transport:-n/a}; runtime ${runtime}s + 2s ramp; file size $size"
} >"$out/machine.txt"
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
jobs = ["seq_write_1m", "seq_read_1m", "randwrite_4k", "randread_4k",
        "randwrite_4k_qd1", "randread_4k_qd1", "randrw_70_30_4k"]
def load(t, job):
    p = os.path.join(out, f"{t}-{job}.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        text = f.read()
    j = json.loads(text[text.index("{"):])
    r = j["jobs"][0]
    bw = (r["read"]["bw_bytes"] + r["write"]["bw_bytes"]) / 1e6
    iops = r["read"]["iops"] + r["write"]["iops"]
    p99 = 0.0
    for d in ("read", "write"):
        pct = r[d].get("clat_ns", {}).get("percentile", {})
        if r[d]["io_bytes"] and pct:
            p99 = max(p99, pct.get("99.000000", 0) / 1000.0)
    moved = r["read"]["io_bytes"] + r["write"]["io_bytes"]
    return bw, iops, p99, moved
cpu = {}
p = os.path.join(out, "sealvol_cpu.tsv")
if os.path.exists(p):
    for line in open(p):
        job, ticks, hz = line.split()
        cpu[job] = int(ticks) / int(hz)
def ratio(x, y):
    return f"{x / y:.2f}" if x and y else "-"
rows = ["| job | a MB/s | a IOPS | a p99 µs | b MB/s | b IOPS | b p99 µs | c MB/s | c IOPS | c p99 µs | b/a | b/c | sealvol CPU s/GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for job in jobs:
    v = {t: load(t, job) for t in "abc"}
    if not any(v.values()):
        continue  # Not run (--jobs).
    cells = [job]
    for t in "abc":
        if v[t]:
            cells += [f"{v[t][0]:.0f}", f"{v[t][1]:.0f}", f"{v[t][2]:.0f}"]
        else:
            cells += ["-", "-", "-"]
    key = 0 if job.startswith("seq") else 1
    ga = v["a"][key] if v["a"] else None
    gb = v["b"][key] if v["b"] else None
    gc = v["c"][key] if v["c"] else None
    cells += [ratio(gb, ga), ratio(gb, gc)]
    if v["b"] and job in cpu and v["b"][3]:
        # fio's ramp is not in io_bytes; the CPU window includes it, so this
        # overstates the cost slightly.
        cells.append(f"{cpu[job] / (v['b'][3] / 2**30):.2f}")
    else:
        cells.append("-")
    rows.append("| " + " | ".join(cells) + " |")
table = "\n".join(rows)
print(open(os.path.join(out, "machine.txt")).read().strip())
print("ratios use MB/s for seq jobs and IOPS for 4k jobs")
print(table)
with open(os.path.join(out, "table.md"), "w") as f:
    f.write(table + "\n")
PY
echo "raw fio JSON in $out" >&2
