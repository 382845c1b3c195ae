// KmsFlags: where a command gets its keys: the provider named by --kms, or
// by default the embedded provider in --state-dir. Shared by the volume,
// key and open commands. Thread-compatible.
#pragma once

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "kms/key_provider.h"

namespace sealvol::cmd {

struct KmsFlags {
  std::string state_dir = "/var/lib/sealvol";
  std::string kms_uri;  // Empty: "local:" + state_dir.

  // Adds --state-dir (described by `state_dir_help`) and --kms to `command`.
  void AddTo(CLI::App* command,
             const std::string& state_dir_help =
                 "State directory of the embedded key provider");

  std::string Uri() const;

  // kms::OpenKeyProvider(Uri()).
  absl::StatusOr<std::unique_ptr<kms::KeyProvider>> OpenProvider() const;
};

}  // namespace sealvol::cmd
