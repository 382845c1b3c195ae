// What the long-running service commands (`sealvol controller`, `sealvol
// node`) share: the version they report, their error exit, the log level,
// signal handling and the CSI endpoint. Called from main's thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace sealvol::cmd {

inline constexpr char kServiceVersion[] = "0.1.0";

// Prints "sealvol WHAT: CODE: message" and returns the exit code for a
// service command's failure.
int FailService(const std::string& what, const absl::Status& status);

// --log-level: trace, debug, info, warn, error, critical or off.
absl::Status SetLogLevel(const std::string& level);

// Blocks SIGINT/SIGTERM/SIGHUP in every thread (call before starting any),
// so WaitForSignal can take them synchronously.
void BlockSignals();

// Returns the signal that arrived; calls `on_hup` for each SIGHUP.
int WaitForSignal(const std::function<void()>& on_hup);

// Binds the CSI endpoint ("unix:///path", mode 0600), replacing a stale
// socket file, and serves `services` on it.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartCsiServer(
    const std::string& endpoint, const std::vector<grpc::Service*>& services);

}  // namespace sealvol::cmd
