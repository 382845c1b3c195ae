#!/usr/bin/env bash
# Static checks of deploy/Dockerfile (no container engine here):
# - every stage named by COPY --from is defined before; every COPY source
#   and every repository script a RUN calls exists;
# - every apt package it installs exists in this Debian (installed here or
#   with an install candidate), and the build stage installs every build and
#   library package scripts/setup lists (so the image cannot drift behind);
# - deploy/image/runtime-packages.sh, which picks the runtime stage's
#   libraries, works on the real sealvol binary and names only packages that
#   provide its libraries;
# - the image defaults to a non-root user; the build output path is where
#   CMake puts the binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
df=$SEALVOL_SOURCE_DIR/deploy/Dockerfile
[[ -f $df ]] || die "no $df"
fails=0
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# Join continuation lines so each instruction is one line.
instructions=$(sed -e ':a' -e '/\\$/{N;s/\\\n//;ba' -e '}' "$df" | grep -v '^\s*#' | grep -v '^\s*$')

stages=()
while read -r line; do
  set -- $line
  case "${1^^}" in
    FROM)
      [[ ${3^^} == AS ]] && stages+=("$4") ;;
    COPY|ADD)
      shift
      from=""
      args=()
      for a in "$@"; do
        case $a in
          --from=*) from=${a#--from=} ;;
          --*) ;;
          *) args+=("$a") ;;
        esac
      done
      srcs=("${args[@]:0:${#args[@]}-1}")
      if [[ -n $from ]]; then
        printf '%s\n' "${stages[@]}" | grep -qx "$from" || bad "COPY --from=$from: no earlier stage $from"
      else
        for s in "${srcs[@]}"; do
          [[ -e $SEALVOL_SOURCE_DIR/$s ]] || bad "COPY source $s does not exist in the repository"
        done
      fi ;;
  esac
done <<<"$instructions"
((${#stages[@]} >= 2)) || bad "expected a multi-stage build, found stages: ${stages[*]:-none}"
echo "stages: ${stages[*]}"

for script in $(grep -o 'deploy/[A-Za-z0-9_/.-]*\.sh' "$df" | sort -u); do
  [[ -x $SEALVOL_SOURCE_DIR/$script ]] || bad "RUN calls $script, which is missing or not executable"
done

# Package names of each apt-get install, per stage.
pkgs_of_stage() {
  awk -v stage="$1" '
    /^FROM / { cur = ($4 == stage) }
    cur { print }' <<<"$instructions" |
    grep -o 'apt-get install [^&]*' | tr ' ' '\n' |
    grep -v -e '^apt-get$' -e '^install$' -e '^-' -e '[$()/]' -e "'" -e '^$'
}
known_package() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" && return 0
  apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'
}
build_pkgs=$(pkgs_of_stage build)
# (|| true: the runtime stage may name no package literally, only the lists.)
runtime_pkgs=$(pkgs_of_stage runtime || true)
# The runtime stage installs deploy/image/packages.txt (shared with the test
# cluster's image build) when it copies it in and reads it.
list=deploy/image/packages.txt
if grep -q "^COPY $list /tmp/packages.txt" <<<"$instructions" &&
  grep -q "apt-get install .*grep -v '^#' /tmp/packages.txt" <<<"$instructions"; then
  runtime_pkgs=$(printf '%s\n' $runtime_pkgs $(grep -v '^#' "$SEALVOL_SOURCE_DIR/$list"))
fi
[[ -n $build_pkgs && -n $runtime_pkgs ]] || bad "found no apt-get install in the build or runtime stage"
for p in $build_pkgs $runtime_pkgs; do
  known_package "$p" || bad "apt package $p is neither installed here nor available"
done
for p in e2fsprogs xfsprogs util-linux fuse3 ca-certificates; do
  grep -qx "$p" <<<"$runtime_pkgs" || bad "runtime stage lacks $p"
done
echo "apt packages: $(wc -w <<<"$build_pkgs") build, $(wc -w <<<"$runtime_pkgs") runtime, all known"

# scripts/setup's build and library groups must all be in the build stage
# (ccache and clang are developer conveniences, libbenchmark-dev serves only
# bench/, which the image build turns off with -DSEALVOL_BENCH=OFF).
setup_pkgs=$(sed -n '/# build/,/# runtime and tests/p' "$SEALVOL_SOURCE_DIR/scripts/setup" |
  grep -v '#' | tr ' ' '\n' | grep -v -e '^$' -e '^)' -e '^ccache$' -e '^clang$' -e '^libbenchmark-dev$')
for p in $setup_pkgs; do
  grep -qx "$p" <<<"$build_pkgs" || bad "scripts/setup needs $p but the image's build stage does not install it"
done

# The runtime libraries of the real binary.
[[ -x ${SEALVOL_BIN:-} ]] || die "SEALVOL_BIN is not an executable (run from ctest)"
[[ $SEALVOL_BIN == */cmd/sealvol ]] || bad "the Dockerfile copies /build/cmd/sealvol but the binary is $SEALVOL_BIN"
libs=$("$SEALVOL_SOURCE_DIR/deploy/image/runtime-packages.sh" "$SEALVOL_BIN") || die "runtime-packages.sh on $SEALVOL_BIN"
grep -qx libc6 <<<"$libs" || bad "runtime-packages.sh did not find libc6: $libs"
for p in $libs; do
  grep -q -- '-dev$' <<<"$p" && bad "runtime package $p is a -dev package (static link leaked?)"
  known_package "$p" || bad "runtime package $p unknown"
done
echo "runtime libraries of $(basename "$SEALVOL_BIN"): $(echo $libs)"

grep -q '^USER 65532' "$df" || bad "image must default to the non-root user 65532"
grep -qi 'privileged' "$df" || bad "Dockerfile must say why the node runs privileged"

((fails == 0)) || die "$fails Dockerfile check(s) failed"
echo "deploy dockerfile: all checks passed"
