// The sealvol binary: the CSI controller and node, and the admin commands.
#include <cstdio>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "cmd/commands.h"
#include "cmd/exit_codes.h"
#include "crypto/secret_bytes.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  // spdlog's default logger writes to stdout, where read, dump, format,
  // status --json, keys and token print their data: every log line goes to
  // stderr instead, set here before any command (or library) can log. No
  // other logger exists in the product; all code logs through this one.
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "", std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));

  // Most commands hold a secret at some point: a DEK (format, check, read,
  // write, open, node), KMS credentials and KEKs (keys, rotate, controller),
  // a pod or node token (csi publish, node) or an issuer key (token). Every
  // process is made non-dumpable with no core limit here, before any
  // command runs, so no command, present or future, can skip it.
  if (absl::Status s = sealvol::crypto::HardenProcess(); !s.ok()) {
    std::fprintf(stderr, "sealvol: %s\n", std::string(s.message()).c_str());
    return sealvol::cmd::kExitError;
  }

  CLI::App app{
      "sealvol: encrypted, attested volumes for Kubernetes (AES-256-GCM)"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");

  int exit_code = sealvol::cmd::kExitOk;
  sealvol::cmd::RegisterAllCommands(app, exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : sealvol::cmd::kExitUsage;
  }
  return exit_code;
}
