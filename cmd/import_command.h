// `sealvol import`: copies an existing unencrypted volume (an image file or
// a block device) into a sealed volume under its own new key, or into an
// existing sealed volume, crash-safe and resumable (docs/cli.md). Not
// thread-safe: called once from main.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterImportCommand(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
