#include "base/injected_fault.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace sealvol {

void InjectedCrash(const std::string& step) {
  const char* kill_after = std::getenv("SEALVOL_KILL_AFTER_STEP");
  if (kill_after != nullptr && step == kill_after) {
    // Unbuffered, so the test can tell where the process died.
    const std::string line = absl::StrCat("injected kill after step ", step, "\n");
    (void)!::write(STDERR_FILENO, line.data(), line.size());
    ::raise(SIGKILL);
  }
}

absl::Status InjectedFailure(const std::string& step) {
  InjectedCrash(step);
  const char* fail = std::getenv("SEALVOL_FAIL_AFTER_STEP");
  if (fail != nullptr && step == fail) {
    return absl::InternalError(
        absl::StrCat("injected failure after step ", step));
  }
  return absl::OkStatus();
}

}  // namespace sealvol
