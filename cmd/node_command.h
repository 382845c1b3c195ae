// `sealvol node`: the CSI Identity and Node services and the volumes'
// data path (csi::FuseDataPath), with the reaper of deleted volumes' images
// and /metrics.
// Flags are in docs/csi.md. Registered once from main's thread.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterNodeCommand(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
