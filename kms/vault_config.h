// VaultConfig: where and how the Vault key provider reaches Vault or OpenBao,
// parsed from a "vault+https://HOST:PORT?..." KMS URI (parameters in
// docs/kms.md). Thread-compatible: a plain value.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sealvol::kms {

struct VaultConfig {
  std::string address;  // "https://host:port" (scheme without "vault+").
  std::string transit_mount = "transit";
  std::string key_name_template;  // Empty = "sealvol-${namespace}".
  std::string kv_mount = "secret";
  std::string kv_prefix = "sealvol/volumes";
  std::string auth_method = "token";  // token | jwt | kubernetes.
  std::string auth_mount;             // Default: the method's name.
  std::string role;
  std::string token_file;  // token auth; empty = $VAULT_TOKEN.
  std::string jwt_file;    // jwt/kubernetes auth.
  std::string ca_file;
  std::string vault_namespace;  // Sent as X-Vault-Namespace when set.
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds connect_timeout{3000};
  int max_attempts = 4;

  // Parses "vault+https://HOST:PORT?param=value&..." (values may be
  // percent-encoded). InvalidArgument names the offending parameter.
  static absl::StatusOr<VaultConfig> FromUri(std::string_view uri);
};

}  // namespace sealvol::kms
