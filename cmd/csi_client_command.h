// `sealvol csi VERB`: an operator's client for the controller and node
// endpoints (like csc), with flags for pod identity and tokens.
// Flags are in docs/csi.md. Registered once from main's thread.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterCsiClientCommand(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
