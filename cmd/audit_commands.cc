#include "cmd/audit_commands.h"

#include <iostream>
#include <string>
#include <vector>

#include "cmd/exit_codes.h"
#include "kms/broker/audit_log.h"

namespace sealvol::cmd {

void RegisterAuditCommands(CLI::App& app, int& exit_code) {
  CLI::App* audit = app.add_subcommand(
      "audit", "Key-broker audit log tools (docs/audit.md)");
  audit->require_subcommand(1);

  struct VerifyFlags {
    std::vector<std::string> files;
    bool partial = false;
  };
  auto flags = std::make_shared<VerifyFlags>();
  CLI::App* verify = audit->add_subcommand(
      "verify",
      "Verify the hash chain across FILE... given oldest first (rotated files "
      "sort by name: audit.log.* audit.log). Exit 0 if intact; 9 and the "
      "first bad FILE:LINE on any edit, deletion, insertion, reordering or "
      "torn record.");
  verify->add_option("files", flags->files, "Audit log files, oldest first")
      ->required();
  verify->add_flag("--partial", flags->partial,
                   "Accept a chain that starts mid-way (older files deleted "
                   "by retention)");
  verify->callback([flags, &exit_code] {
    auto result = broker::VerifyAuditFiles(
        flags->files, {.allow_partial_start = flags->partial});
    if (!result.ok()) {
      std::cerr << "audit verify: " << result.status().message() << "\n";
      exit_code = result.status().code() == absl::StatusCode::kDataLoss
                      ? kExitIntegrity
                      : kExitError;
      return;
    }
    std::cout << "OK: " << result->records << " records";
    if (result->records > 0) {
      std::cout << ", seq " << result->first_seq << ".." << result->last_seq
                << ", head " << result->head_hash;
    }
    std::cout << "\n";
    exit_code = kExitOk;
  });
}

}  // namespace sealvol::cmd
