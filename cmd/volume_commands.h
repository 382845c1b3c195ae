// The volume admin commands: format, dump, check, read, write. Each runs
// the sealed-volume engine directly (no kernel). Not thread-safe: called
// once from main.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterVolumeCommands(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
