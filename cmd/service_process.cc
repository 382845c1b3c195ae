#include "cmd/service_process.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cmd/exit_codes.h"
#include "spdlog/spdlog.h"

namespace sealvol::cmd {

int FailService(const std::string& what, const absl::Status& status) {
  return Fail(what, status, CommandFamily::kService);
}

absl::Status SetLogLevel(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError("--log-level: unknown level " + level);
  }
  spdlog::set_level(parsed);
  return absl::OkStatus();
}

void BlockSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForSignal(const std::function<void()>& on_hup) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      if (on_hup) on_hup();
      continue;
    }
    return sig;
  }
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartCsiServer(
    const std::string& endpoint, const std::vector<grpc::Service*>& services) {
  constexpr std::string_view kUnix = "unix://";
  if (endpoint.rfind(kUnix, 0) != 0) {
    return absl::InvalidArgumentError("--endpoint " + endpoint +
                                      ": must be unix:///PATH");
  }
  const std::string path = endpoint.substr(kUnix.size());
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError("remove stale socket " + path + ": " +
                                         std::strerror(errno));
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(endpoint, grpc::InsecureServerCredentials());
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    return absl::UnavailableError("listen on " + endpoint + ": failed");
  }
  chmod(path.c_str(), 0600);  // Only root (the kubelet, sidecars) may call.
  return server;
}

}  // namespace sealvol::cmd
