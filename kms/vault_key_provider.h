// VaultKeyProvider keeps volume keys in HashiCorp Vault or OpenBao, selected
// by "vault+https://HOST:PORT?..." (or "vault+http://" for tests; parameters
// in docs/kms.md). The KEK of a tenant is a transit key of type aes256-gcm96
// with derived=true (created on first use); each volume's DEK is created
// with transit datakey/wrapped (context = base64(volume id)), so this process
// never sees a DEK at creation. The registry is kv-v2: one secret per volume
// at KV/data/PREFIX/VOLUME_ID. Thread-safe.
//
// Authentication: a token (file or VAULT_TOKEN), or a login with a JWT
// (auth method jwt or kubernetes, with a role). The token is renewed when
// two thirds of its TTL have passed; if renewal fails, or a request is
// refused with 403, the provider logs in again once. Tokens and keys are
// never logged.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "kms/http_client.h"
#include "kms/key_provider.h"
#include "nlohmann/json.hpp"

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

class VaultKeyProvider final : public KeyProvider {
 public:
  // Connects lazily: Open fails only on bad configuration; the first call
  // logs in.
  static absl::StatusOr<std::unique_ptr<VaultKeyProvider>> Open(
      VaultConfig config);
  // As Open, with every request sent through `transport` instead of an
  // HttpClient built from the config (fuzzers answer in-process).
  static std::unique_ptr<VaultKeyProvider> OpenWithTransport(
      VaultConfig config, std::unique_ptr<HttpTransport> transport);
  ~VaultKeyProvider() override;

  absl::StatusOr<VolumeRecord> CreateVolumeKey(
      const CreateVolumeKeyRequest& request) override;
  absl::StatusOr<crypto::SecretBytes> UnwrapVolumeKey(
      std::string_view volume_id) override;
  absl::StatusOr<crypto::SecretBytes> UnwrapRecordKey(
      const VolumeRecord& record) override;
  absl::StatusOr<VolumeRecord> GetVolume(std::string_view volume_id) override;
  absl::Status UpdateVolume(const VolumeRecord& record) override;
  absl::StatusOr<VolumeRecord> ClaimFormat(std::string_view volume_id,
                                           const FormatClaim& claim) override;
  absl::StatusOr<VolumeRecord> CommitState(std::string_view volume_id,
                                           const StateCommit& commit) override;
  absl::StatusOr<VolumeRecord> AcceptRollback(std::string_view volume_id,
                                              std::string_view by,
                                              int64_t unix_time) override;
  absl::StatusOr<std::vector<VolumeRecord>> ListVolumes(
      std::string_view tenant) override;
  // Deletes the kv-v2 metadata of the volume: every version of the record,
  // and so every stored copy of the wrapped DEK.
  absl::Status DestroyVolumeKey(std::string_view volume_id) override;
  // transit rotate, then transit rewrap of every wrapped DEK of the tenant
  // (Vault never returns the plaintext), then min_decryption_version is
  // raised to the new version so older ciphertexts no longer decrypt.
  absl::StatusOr<RotationResult> RotateTenantKey(
      std::string_view tenant) override;
  absl::Status Ping() override;
  std::string Describe() const override;

  // Forces the next request to log in again (tests of re-login).
  void ForgetTokenForTesting();

 private:
  struct StoredRecord {
    VolumeRecord record;
    int64_t kv_version = 0;  // For check-and-set writes.
  };

  VaultKeyProvider(VaultConfig config, std::unique_ptr<HttpTransport> http);

  // One request with the current token; re-logs in and retries once on 403.
  // A 2xx response's JSON body (null for 204) or a mapped error status.
  absl::StatusOr<nlohmann::json> Call(const std::string& method,
                                      const std::string& path,
                                      const nlohmann::json* body);
  absl::StatusOr<nlohmann::json> CallWithToken(const std::string& method,
                                               const std::string& path,
                                               const nlohmann::json* body,
                                               const std::string& token);
  absl::StatusOr<std::string> CurrentToken();
  absl::Status LoginLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(auth_mu_);
  absl::Status RenewLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(auth_mu_);
  void SetTokenLocked(std::string token, int64_t ttl_seconds, bool renewable)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(auth_mu_);

  std::string RecordPath(std::string_view kind, std::string_view volume_id) const;
  absl::StatusOr<StoredRecord> ReadRecord(std::string_view volume_id);
  absl::Status WriteRecord(const VolumeRecord& record, int64_t cas);
  // Reads the record, applies `change` and writes it back with
  // check-and-set, again on a concurrent write (a few attempts). `change`'s
  // error is returned as is, nothing written.
  absl::StatusOr<VolumeRecord> UpdateRecord(
      std::string_view volume_id,
      const std::function<absl::Status(VolumeRecord&)>& change);
  absl::Status EnsureTransitKey(const std::string& key_name);
  absl::StatusOr<int64_t> LatestKeyVersion(const std::string& key_name);

  const VaultConfig config_;
  const std::unique_ptr<HttpTransport> http_;

  std::mutex auth_mu_;
  std::string token_ ABSL_GUARDED_BY(auth_mu_);
  bool token_renewable_ ABSL_GUARDED_BY(auth_mu_) = false;
  // Zero time_point = never expires (root or period-less token).
  std::chrono::steady_clock::time_point token_refresh_at_
      ABSL_GUARDED_BY(auth_mu_);
  std::chrono::steady_clock::time_point token_expires_at_
      ABSL_GUARDED_BY(auth_mu_);

  std::mutex keys_mu_;
  std::set<std::string> known_keys_ ABSL_GUARDED_BY(keys_mu_);
};

}  // namespace sealvol::kms
