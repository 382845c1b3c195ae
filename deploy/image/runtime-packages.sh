#!/usr/bin/env bash
# Prints the Debian packages that provide the shared libraries BINARY links
# against, one per line. The image build runs it in the build stage and
# installs exactly that list in the runtime stage, so the runtime stage
# follows the build's real dependencies instead of a hand-kept list.
#   runtime-packages.sh BINARY
set -euo pipefail
bin=${1:?usage: runtime-packages.sh BINARY}
missing=$(ldd "$bin" | awk '/not found/ {print $1}')
[[ -z $missing ]] || { echo "runtime-packages: unresolved libraries: $missing" >&2; exit 1; }
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
  # dpkg knows a library by the path it installed, which may be the
  # /usr-merged twin of what the loader reports.
  dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null ||
    dpkg -S "${lib#/usr}" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null ||
    { echo "runtime-packages: no package owns $lib" >&2; exit 1; }
done | cut -d: -f1 | sort -u
