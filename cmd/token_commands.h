// `sealvol token keygen|jwks|mint|verify`: a test token issuer, FOR TESTS
// AND DEMOS ONLY, standing in for the Kubernetes API server's service-account
// token issuer, plus a verifier for debugging. Not thread-safe: registered
// once from main.
#pragma once

#include "CLI/CLI.hpp"

namespace sealvol::cmd {

void RegisterTokenCommands(CLI::App& app, int& exit_code);

}  // namespace sealvol::cmd
