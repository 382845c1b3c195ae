#!/usr/bin/env bash
# Runs scripts/demo with the built binary and checks the lines that carry its
# claims: ciphertext only, the team-b refusal and its audit record, the
# shredded volume refused, the audit chain intact.
set -euo pipefail
src=${SEALVOL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${SEALVOL_BIN:-$src/build/cmd/sealvol}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
SEALVOL_BIN=$bin "$src/scripts/demo" >"$out" 2>&1 || { cat "$out"; echo "demo_test: demo failed" >&2; exit 1; }

expect() {
  grep -qE -- "$1" "$out" || { cat "$out"; echo "demo_test: missing: $1" >&2; exit 1; }
}
expect 'controller: sealvol\.csi\.dev .* ready=true'
expect 'node: +sealvol\.csi\.dev .* ready=true'
expect 'volume sv-[0-9a-f]{32}, 1073741824 bytes'
expect 'mounted at .*/pods/trainer-0/data \(ext4 /dev/loop[0-9]+\)'
expect 'plaintext file: .* marker present: True'
expect 'backing image: .* marker present: False'
expect 'ciphertext only'
expect 'refused \(exit 11\): PERMISSION_DENIED: namespace_mismatch'
expect '"decision":"refuse","reason":"namespace_mismatch".*"namespace":"team-b"'
expect 'reopening it, even for team-a/trainer-0, fails: .*volume_not_found'
expect 'OK: [0-9]+ records'
expect 'demo finished in [0-9]+ s'
# Nothing left behind.
if grep -q "/tmp/sealvol-demo" /proc/self/mounts; then
  echo "demo_test: the demo left mounts behind" >&2
  exit 1
fi
echo "demo_test: all checks passed"
