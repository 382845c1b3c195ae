# Sanitizer run-time options of the ASan+UBSan build (scripts/test --asan and
# tests/sanitizers/check_reports.sh source this). Every report stops the
# process with a non-zero exit; LeakSanitizer runs at exit of every process.
# shellcheck shell=bash
sanitizer_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$sanitizer_dir/lsan.supp:print_suppressions=0"
unset sanitizer_dir
