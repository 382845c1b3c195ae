// VaultKeyProvider keeps volume keys in HashiCorp Vault or OpenBao, selected
// by "vault+https://HOST:PORT?..." (or "vault+http://" for tests; parameters
// in docs/kms.md). The KEK of a tenant is a transit key of type aes256-gcm96
// with derived=true (created on first use); each volume's DEK is created
// with transit datakey/wrapped (context = base64(volume id)), so this process
// never sees a DEK at creation. The registry is kv-v2: one secret per volume
// at KV/data/PREFIX/VOLUME_ID. Thread-safe.
//
// Configuration: kms/vault_config.h. Authentication and token renewal:
// kms/vault_session.h. Tokens and keys are never logged.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "kms/http_client.h"
#include "kms/key_provider.h"
#include "kms/vault_config.h"
#include "kms/vault_session.h"
#include "nlohmann/json.hpp"

namespace sealvol::kms {

class VaultKeyProvider final : public KeyProvider {
 public:
  // Connects lazily: Open fails only on bad configuration; the first call
  // logs in. `now` is the session's clock (null: the steady clock; tests of
  // token renewal inject one).
  static absl::StatusOr<std::unique_ptr<VaultKeyProvider>> Open(
      VaultConfig config, SteadyClock now = nullptr);
  // As Open, with every request sent through `transport` instead of an
  // HttpClient built from the config (fuzzers answer in-process).
  static std::unique_ptr<VaultKeyProvider> OpenWithTransport(
      VaultConfig config, std::unique_ptr<HttpTransport> transport,
      SteadyClock now = nullptr);
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
  absl::StatusOr<VolumeRecord> UpdateCopy(std::string_view volume_id,
                                          const CopyUpdate& update) override;
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

 private:
  struct StoredRecord {
    VolumeRecord record;
    int64_t kv_version = 0;  // For check-and-set writes.
  };

  VaultKeyProvider(VaultConfig config, std::unique_ptr<HttpTransport> http,
                   SteadyClock now);

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
  // Refers to config_: declared after it.
  const std::unique_ptr<VaultSession> session_;

  Mutex keys_mu_;
  std::set<std::string> known_keys_ ABSL_GUARDED_BY(keys_mu_);
};

}  // namespace sealvol::kms
