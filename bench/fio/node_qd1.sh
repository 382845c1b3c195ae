#!/usr/bin/env bash
# The QD1 fio jobs through a volume published by the CSI node plugin (the
# real `sealvol node` and `sealvol controller` processes, the embedded KMS,
# a pod token, NodeStage + NodePublish: the path a pod gets), beside the
# same jobs through `sealvol open` (bench/fio/compare.sh's target b), in one
# run. Both images on tmpfs. Prints per job and path: IOPS, p50/p99 (and the
# fsync's), the serving process's CPU s/GiB, the transport each serves over
# and the load average. Needs root and /dev/fuse. Not a test.
#
#   bench/fio/node_qd1.sh [--runtime S] [--size N] [--out DIR]
#                         [--jobs randwrite_4k_qd1_fsync,randread_4k_qd1]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runtime=10
size=1G
out=""
job_list=randwrite_4k_qd1_fsync,randread_4k_qd1
while (($#)); do
  case "$1" in
    --runtime) runtime=$2; shift ;;
    --size) size=$2; shift ;;
    --out) out=$2; shift ;;
    --jobs) job_list=$2; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "node_qd1: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
IFS=, read -r -a jobs <<<"$job_list"
for job in "${jobs[@]}"; do
  [[ -f $here/$job.fio ]] || { echo "node_qd1: no job $job" >&2; exit 2; }
done
out=${out:-$here/results/node-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

# The node plugin's harness of the process tests: controller, node, tokens,
# stage/publish helpers, and a cleanup of everything under $work.
# shellcheck source=../../tests/csi/node_test_lib.sh
source "$here/../../tests/csi/node_test_lib.sh"

# Images on tmpfs, like compare.sh's (the node keeps them in its state dir).
mkdir -p "$work/state" "$work/open" "$work/open-mnt"
mount -t tmpfs -o size=8G tmpfs "$work/state"
mount -t tmpfs -o size=4G tmpfs "$work/open"
open_state=$work/open/state
close_open() {
  [[ -e $open_state/run ]] && "$sv" close "$work/open/sealvol.img" --state-dir "$open_state"
}
trap 'rc=$?; close_open; (exit $rc); cleanup' EXIT

start_controller
start_node node.log
read -r vol vol_size < <("$sv" "${c[@]}" create bench --size 3Gi --tenant team-a)
stage "$vol" "$vol_size" >/dev/null
publish "$vol" "$vol_size" >/dev/null
note_ours
node_transport=$(grep -o "served on [^ ]* ([a-z]* transport)" "$work/node.log" | tail -1 |
  sed 's/.*(\([a-z]*\) transport)/\1/')

"$sv" format "$work/open/sealvol.img" --size 3G --state-dir "$open_state" >/dev/null
"$sv" open "$work/open/sealvol.img" --mountpoint "$work/open-mnt" --state-dir "$open_state" >/dev/null
open_pid=$("$sv" status --json --state-dir "$open_state" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pid"])')
open_transport=$("$sv" status --json --state-dir "$open_state" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["transport"])')

declare -A dir=([node]=$target [open]=$work/open-mnt)
declare -A pid=([node]=$node_pid [open]=$open_pid)
for p in node open; do
  fio --name=prefill --filename="${dir[$p]}/fio.dat" --size="$size" --rw=write --bs=1M \
    --direct=1 --ioengine=io_uring --iodepth=16 --output=/dev/null
done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
{
  echo "# $(nproc) CPU, kernel $(uname -r), $(fio --version); runtime ${runtime}s + 2s ramp"
  echo "# transport: node $node_transport, open $open_transport"
  echo "# load before: $(uptime)"
} >"$out/machine.txt"
: >"$out/cpu.tsv"
for job in "${jobs[@]}"; do
  for p in node open; do
    echo "== $job via $p ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
    before=$(cpu_ticks "${pid[$p]}")
    TARGET=${dir[$p]} RUNTIME=$runtime SIZE=$size \
      fio --output-format=json --output="$out/$p-$job.json" "$here/$job.fio"
    echo -e "$p\t$job\t$(( $(cpu_ticks "${pid[$p]}") - before ))\t$(getconf CLK_TCK)" >>"$out/cpu.tsv"
  done
  echo "# load after $job: $(uptime)" >>"$out/machine.txt"
done
unpublish "$vol" >/dev/null
unstage "$vol" >/dev/null

python3 - "$out" "${jobs[@]}" <<'PY'
import json, os, sys
out, jobs = sys.argv[1], sys.argv[2:]
cpu = {}
for line in open(os.path.join(out, "cpu.tsv")):
    p, job, ticks, hz = line.split()
    cpu[(p, job)] = int(ticks) / int(hz)
def us(lat, key):
    return lat.get("percentile", {}).get(key, 0) / 1000
rows = ["| job | path | IOPS | p50 µs | p99 µs | fsync p50 µs | fsync p99 µs | server CPU s/GiB |",
        "|---|---|---|---|---|---|---|---|"]
for job in jobs:
    for p in ("node", "open"):
        text = open(os.path.join(out, f"{p}-{job}.json")).read()
        r = json.loads(text[text.index("{"):])["jobs"][0]
        d = r["write"] if r["write"]["io_bytes"] else r["read"]
        sync = r.get("sync", {})
        s50 = s99 = "-"
        if sync.get("total_ios"):
            s50 = f"{us(sync['lat_ns'], '50.000000'):.0f}"
            s99 = f"{us(sync['lat_ns'], '99.000000'):.0f}"
        gib = d["io_bytes"] / 2**30
        rows.append(f"| {job} | {p} | {d['iops']:.0f} | {us(d['clat_ns'], '50.000000'):.0f} "
                    f"| {us(d['clat_ns'], '99.000000'):.0f} | {s50} | {s99} "
                    f"| {cpu[(p, job)] / gib:.2f} |")
table = "\n".join(rows)
print(open(os.path.join(out, "machine.txt")).read().strip())
print(table)
open(os.path.join(out, "table.md"), "w").write(table + "\n")
PY
echo "raw fio JSON in $out" >&2
