// The key-management commands: `sealvol keys list|show|destroy` and
// `sealvol rotate`. They talk to the key provider named by --kms (default
// local:STATE_DIR) and print JSON without secrets (no DEK, no wrapped DEK,
// no token). Not thread-safe: called once from main.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterKeyCommands(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
