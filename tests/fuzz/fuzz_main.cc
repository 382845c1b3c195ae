// libFuzzer glue: SEALVOL_FUZZ_ENTRY names the target function (one binary
// per target, see CMakeLists.txt).
#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return sealvol::fuzz::SEALVOL_FUZZ_ENTRY(data, size);
}
