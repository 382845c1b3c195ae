// `sealvol audit verify FILE...`: checks the hash chain of key-broker audit
// logs (docs/audit.md). Not thread-safe: registered once from main.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterAuditCommands(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
