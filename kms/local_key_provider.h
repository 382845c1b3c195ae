// LocalKeyProvider is the embedded KMS selected by "local:DIR". It keeps one
// 256-bit KEK per tenant key name and version in DIR/keks/NAME.vN.key (mode
// 0600, created on first use) and one JSON record per volume in
// DIR/volumes/ID.json, holding the DEK wrapped with AES-256-GCM under the
// KEK. Every change is an atomic, fsync'd file replacement made under an
// exclusive flock(2) on DIR/lock, so several threads and processes (CLI and
// controller) may share DIR, and a kill -9 at any point leaves each record
// either old or new. Thread-safe.
//
// Wrapped DEK format: "local:v<N>:" + base64(nonce[12] || ciphertext[32] ||
// tag[16]); the GCM additional data binds the volume id, tenant, key name and
// key version, so a record copied to another volume or tenant fails to
// unwrap (DataLoss).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kms/key_provider.h"

namespace sealvol::kms {

class LocalKeyProvider final : public KeyProvider {
 public:
  // Creates DIR (mode 0700) and its subdirectories if missing and removes
  // temporary files of interrupted writes. `key_name_template` is used when
  // a request names none (empty = "sealvol-${namespace}").
  static absl::StatusOr<std::unique_ptr<LocalKeyProvider>> Open(
      std::string dir, std::string key_name_template = "");

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
  absl::Status DestroyVolumeKey(std::string_view volume_id) override;
  // Writes KEK version N+1, rewraps every record of the tenant under it one
  // atomic replacement at a time, then deletes the older KEK files. A crash
  // in between leaves records under either version, each still unwrappable;
  // the next rotation finishes the clean-up.
  absl::StatusOr<RotationResult> RotateTenantKey(
      std::string_view tenant) override;
  absl::Status Ping() override;
  std::string Describe() const override;

  // Versions of `key_name` present in DIR/keks, ascending (for tests and
  // `sealvol keys`).
  absl::StatusOr<std::vector<int64_t>> KekVersions(
      std::string_view key_name) const;

 private:
  LocalKeyProvider(std::string dir, std::string key_name_template)
      : dir_(std::move(dir)), key_name_template_(std::move(key_name_template)) {}

  std::string KekDir() const { return dir_ + "/keks"; }
  std::string VolumeDir() const { return dir_ + "/volumes"; }

  absl::StatusOr<VolumeRecord> ReadRecord(std::string_view volume_id) const;
  // Every record, ordered by volume id. The caller holds the lock.
  // Every record. With `skip_bad_records`, records that cannot be read for
  // their own content (IsBadRecordError) are logged and left out.
  absl::StatusOr<std::vector<VolumeRecord>> ReadAllRecords(
      bool skip_bad_records) const;
  absl::Status WriteRecord(const VolumeRecord& record, bool create) const;
  absl::StatusOr<crypto::SecretBytes> ReadKek(const std::string& key_name,
                                              int64_t version) const;
  absl::Status WriteKek(const std::string& key_name, int64_t version) const;
  absl::StatusOr<crypto::SecretBytes> Unwrap(const VolumeRecord& record) const;
  absl::StatusOr<std::string> Wrap(const VolumeRecord& record,
                                   const crypto::SecretBytes& kek,
                                   const crypto::SecretBytes& dek) const;

  const std::string dir_;
  const std::string key_name_template_;
};

}  // namespace sealvol::kms
