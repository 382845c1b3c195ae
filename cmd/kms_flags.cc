#include "cmd/kms_flags.h"

namespace sealvol::cmd {

void KmsFlags::AddTo(CLI::App* command, const std::string& state_dir_help) {
  command->add_option("--state-dir", state_dir, state_dir_help)
      ->capture_default_str();
  command->add_option("--kms", kms_uri,
                      "Key provider URI (local:DIR, vault+https://HOST:PORT?...); "
                      "default local:STATE_DIR");
}

std::string KmsFlags::Uri() const {
  return kms_uri.empty() ? "local:" + state_dir : kms_uri;
}

absl::StatusOr<std::unique_ptr<kms::KeyProvider>> KmsFlags::OpenProvider()
    const {
  return kms::OpenKeyProvider(Uri());
}

}  // namespace sealvol::cmd
