#include "kms/key_provider.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kms/local_key_provider.h"
#include "kms/vault_key_provider.h"

namespace sealvol::kms {

absl::StatusOr<std::unique_ptr<KeyProvider>> OpenKeyProvider(
    std::string_view uri) {
  const std::string u(uri);
  if (absl::StartsWith(u, "local:")) {
    auto local = LocalKeyProvider::Open(u.substr(6));
    if (!local.ok()) return local.status();
    return std::unique_ptr<KeyProvider>(std::move(*local));
  }
  if (absl::StartsWith(u, "vault+")) {
    auto config = VaultConfig::FromUri(u);
    if (!config.ok()) return config.status();
    auto vault = VaultKeyProvider::Open(std::move(*config));
    if (!vault.ok()) return vault.status();
    return std::unique_ptr<KeyProvider>(std::move(*vault));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "KMS URI \"", u, "\": unknown scheme (expected local:DIR, "
      "vault+https://HOST:PORT?... or vault+http://HOST:PORT?...)"));
}

}  // namespace sealvol::kms
