// `sealvol controller`: the CSI Identity and Controller services and the
// KeyBroker, in one process (the only holder of KMS credentials).
// Flags are in docs/csi.md. Registered once from main's thread.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterControllerCommand(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
