#!/usr/bin/env bash
# Runs one test of the ASan+UBSan build with every sanitizer report written
# to a file, and fails the test when any process it started wrote one: the
# test binary, or a sealvol it ran. A script test may silence a child's
# stderr or expect the child to fail, so a report on stderr alone could pass
# unnoticed; a report file cannot.
#
#   check_reports.sh COMMAND [ARG...]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The options of scripts/test --asan, unless the caller chose its own.
if [[ -z ${ASAN_OPTIONS:-} ]]; then
  # shellcheck source=options.sh
  source "$here/options.sh"
fi

reports=$(mktemp -d /tmp/sealvol-sanitizer.XXXXXX)
# Tests run some processes as an unprivileged uid; they must be able to report.
chmod 1777 "$reports"
export ASAN_OPTIONS="$ASAN_OPTIONS:log_path=$reports/asan"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-}:log_path=$reports/ubsan"

"$@"
rc=$?

found=0
for f in "$reports"/*; do
  [[ -s $f ]] || continue
  found=1
  echo "sanitizer report ($(basename "$f")):" >&2
  cat "$f" >&2
done
rm -rf "$reports"
if ((found)); then
  echo "check_reports: a process of this test wrote a sanitizer report" >&2
  ((rc != 0)) || rc=1
fi
exit "$rc"
