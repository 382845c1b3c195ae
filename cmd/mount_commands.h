// `sealvol open | close | status`: serve a sealed volume through the FUSE
// front-end and a loop device, mounted or as a block device. Not
// thread-safe: called once from main.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterMountCommands(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
