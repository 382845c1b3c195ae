// Registration of the sealvol subcommands. Each Register* function adds its
// subcommands to `app`; a subcommand's callback stores its exit code (see
// exit_codes.h) in `exit_code`. Not thread-safe: called once from main.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterAllCommands(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
