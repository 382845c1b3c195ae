// The CSI subcommands: `sealvol controller` (CSI Identity + Controller and
// the KeyBroker), `sealvol node` (CSI Identity + Node and the data path) and
// `sealvol csi ...`, an operator's client for both endpoints. Flags are in
// docs/csi.md. Not thread-safe: registered once from main.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterCsiCommands(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
