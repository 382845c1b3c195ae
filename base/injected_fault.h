// Test hooks that land a failure or a kill -9 at an exact step of an attach,
// a detach or a CSI call, named by the environment. Do nothing unless the
// variables are set. Thread-safe.
//
// SEALVOL_FAIL_AFTER_STEP=<step>: InjectedFailure(step) returns an Internal
// error "injected failure after step <step>".
// SEALVOL_KILL_AFTER_STEP=<step>: InjectedCrash(step) (and InjectedFailure)
// raise SIGKILL in this process, after writing "injected kill after step
// <step>" to stderr. The steps are listed in docs/frontend.md and
// docs/csi.md ("Node plugin restarts").
#pragma once

#include <string>

#include "absl/status/status.h"

namespace sealvol {

// Kills the process (SIGKILL) when SEALVOL_KILL_AFTER_STEP names `step`.
void InjectedCrash(const std::string& step);

// InjectedCrash(step), then an Internal error naming `step` when
// SEALVOL_FAIL_AFTER_STEP names it; OK otherwise.
absl::Status InjectedFailure(const std::string& step);

}  // namespace sealvol
