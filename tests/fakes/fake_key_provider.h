// FakeKeyProvider: the one KeyProvider fake (controller, broker and node
// tests). Records live in a map; a volume's DEK is 32 bytes of one fill
// value, found by its wrapped key (CreateVolumeKey gives each new record its
// own fill: 1, 2, 3, ...); switches make the KMS unreachable, or
// only its unwraps or its format claims and state commits fail; counters
// tell how often the registry was read, unwrapped and updated. The
// registry's state-commit and copy rules are the real ones
// (kms::ApplyStateCommit, kms::ApplyCopyUpdate).
// Thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "crypto/secret_bytes.h"
#include "kms/key_provider.h"

namespace sealvol::testing {

class FakeKeyProvider final : public kms::KeyProvider {
 public:
  // Stores `record` with a DEK of bytes `dek_fill`; a record without a
  // wrapped key gets one named after its id and key version.
  void AddVolume(kms::VolumeRecord record, uint8_t dek_fill) {
    MutexLock lock(&mu_);
    AddVolumeLocked(std::move(record), dek_fill);
  }
  // The next GetVolume returns the stored record, then `record` (DEK of
  // `dek_fill`) replaces it: a rotation landing between two registry reads.
  void ReplaceAfterNextRead(kms::VolumeRecord record, uint8_t dek_fill) {
    MutexLock lock(&mu_);
    replacement_ = std::make_pair(std::move(record), dek_fill);
  }
  // Unreachable: every call but UnwrapRecordKey, GetVolume, UpdateVolume,
  // AcceptRollback and DestroyVolumeKey says Unavailable.
  void set_reachable(bool reachable) { reachable_ = reachable; }
  void FailUnwrap(bool fail) { fail_unwrap_ = fail; }
  void FailClaims(bool fail) { fail_claims_ = fail; }
  int unwrap_calls() const { return unwrap_calls_; }
  int read_calls() const { return read_calls_; }
  int updates() const { return updates_; }
  size_t size() {
    MutexLock lock(&mu_);
    return volumes_.size();
  }

  absl::StatusOr<kms::VolumeRecord> CreateVolumeKey(
      const kms::CreateVolumeKeyRequest& request) override {
    if (!reachable_) return absl::UnavailableError("fake KMS down");
    MutexLock lock(&mu_);
    if (volumes_.count(request.volume_id)) {
      return absl::AlreadyExistsError(request.volume_id);
    }
    if (absl::Status s = kms::ValidateCopyRequest(request); !s.ok()) return s;
    kms::VolumeRecord record = kms::NewVolumeRecord(
        request,
        request.key_name_template.empty() ? "sealvol-" + request.tenant
                                          : request.key_name_template,
        /*key_version=*/1);
    ++created_;
    AddVolumeLocked(record, static_cast<uint8_t>(created_ % 255 + 1));
    return volumes_[record.volume_id];
  }
  absl::StatusOr<crypto::SecretBytes> UnwrapVolumeKey(
      std::string_view volume_id) override {
    auto record = GetVolume(volume_id);
    if (!record.ok()) return record.status();
    return UnwrapRecordKey(*record);
  }
  absl::StatusOr<crypto::SecretBytes> UnwrapRecordKey(
      const kms::VolumeRecord& record) override {
    ++unwrap_calls_;
    if (fail_unwrap_) return absl::UnavailableError("fake KMS down");
    uint8_t fill = 0;
    {
      MutexLock lock(&mu_);
      auto it = deks_.find(record.wrapped_dek);
      if (it == deks_.end()) return absl::DataLossError("unknown wrapped key");
      fill = it->second;
    }
    auto dek = crypto::SecretBytes::Allocate(32);
    if (!dek.ok()) return dek.status();
    std::fill(dek->data(), dek->data() + 32, fill);
    return dek;
  }
  absl::StatusOr<kms::VolumeRecord> GetVolume(
      std::string_view volume_id) override {
    MutexLock lock(&mu_);
    ++read_calls_;
    auto it = volumes_.find(std::string(volume_id));
    if (it == volumes_.end()) return NotFound(volume_id);
    kms::VolumeRecord out = it->second;
    if (replacement_.has_value()) {
      auto [record, fill] = *std::exchange(replacement_, std::nullopt);
      AddVolumeLocked(std::move(record), fill);
    }
    return out;
  }
  absl::Status UpdateVolume(const kms::VolumeRecord& record) override {
    MutexLock lock(&mu_);
    auto it = volumes_.find(record.volume_id);
    if (it == volumes_.end()) return NotFound(record.volume_id);
    it->second.capacity_bytes = record.capacity_bytes;
    it->second.node = record.node;
    it->second.parameters = record.parameters;
    ++updates_;
    return absl::OkStatus();
  }
  absl::StatusOr<kms::VolumeRecord> ClaimFormat(
      std::string_view volume_id, const kms::FormatClaim& claim) override {
    if (!reachable_ || fail_claims_) {
      return absl::UnavailableError("fake KMS down");
    }
    MutexLock lock(&mu_);
    auto it = volumes_.find(std::string(volume_id));
    if (it == volumes_.end()) return NotFound(volume_id);
    if (it->second.format_id.empty()) {
      it->second.format_id = claim.format_id;
      it->second.formatted_node = claim.node;
      it->second.formatted_unix = claim.unix_time;
      if (claim.state.has_value() && !it->second.state.has_value()) {
        it->second.state = claim.state;
        it->second.state_node = claim.node;
      }
    }
    return it->second;
  }
  absl::StatusOr<kms::VolumeRecord> CommitState(
      std::string_view volume_id, const kms::StateCommit& commit) override {
    if (!reachable_ || fail_claims_) {
      return absl::UnavailableError("fake KMS down");
    }
    MutexLock lock(&mu_);
    auto it = volumes_.find(std::string(volume_id));
    if (it == volumes_.end()) return NotFound(volume_id);
    kms::VolumeRecord changed = it->second;
    if (absl::Status s = kms::ApplyStateCommit(changed, commit); !s.ok()) {
      return s;
    }
    it->second = changed;
    return changed;
  }
  absl::StatusOr<kms::VolumeRecord> UpdateCopy(
      std::string_view volume_id, const kms::CopyUpdate& update) override {
    if (!reachable_) return absl::UnavailableError("fake KMS down");
    MutexLock lock(&mu_);
    auto it = volumes_.find(std::string(volume_id));
    if (it == volumes_.end()) return NotFound(volume_id);
    kms::VolumeRecord changed = it->second;
    if (absl::Status s = kms::ApplyCopyUpdate(changed, update); !s.ok()) {
      return s;
    }
    it->second = changed;
    return changed;
  }
  absl::StatusOr<kms::VolumeRecord> AcceptRollback(std::string_view volume_id,
                                                   std::string_view by,
                                                   int64_t unix_time) override {
    MutexLock lock(&mu_);
    auto it = volumes_.find(std::string(volume_id));
    if (it == volumes_.end()) return NotFound(volume_id);
    it->second.rollback_pending = true;
    it->second.rollback_accepted_by = std::string(by);
    it->second.rollback_accepted_unix = unix_time;
    return it->second;
  }
  absl::StatusOr<std::vector<kms::VolumeRecord>> ListVolumes(
      std::string_view tenant) override {
    if (!reachable_) return absl::UnavailableError("fake KMS down");
    MutexLock lock(&mu_);
    std::vector<kms::VolumeRecord> out;
    for (const auto& [id, record] : volumes_) {
      if (tenant.empty() || record.tenant == tenant) out.push_back(record);
    }
    return out;
  }
  absl::Status DestroyVolumeKey(std::string_view volume_id) override {
    MutexLock lock(&mu_);
    auto it = volumes_.find(std::string(volume_id));
    if (it == volumes_.end()) return NotFound(volume_id);
    deks_.erase(it->second.wrapped_dek);
    volumes_.erase(it);
    return absl::OkStatus();
  }
  absl::StatusOr<kms::RotationResult> RotateTenantKey(
      std::string_view) override {
    return absl::UnimplementedError("FakeKeyProvider does not rotate");
  }
  absl::Status Ping() override {
    return reachable_ ? absl::OkStatus()
                      : absl::UnavailableError("fake KMS down");
  }
  std::string Describe() const override { return "fake:"; }

 private:
  static absl::Status NotFound(std::string_view volume_id) {
    return absl::NotFoundError(absl::StrCat("volume ", std::string(volume_id)));
  }
  void AddVolumeLocked(kms::VolumeRecord record, uint8_t dek_fill)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (record.wrapped_dek.empty()) {
      record.wrapped_dek = absl::StrCat("fake:", record.volume_id, ":v",
                                        record.key_version);
    }
    deks_[record.wrapped_dek] = dek_fill;
    volumes_[record.volume_id] = std::move(record);
  }

  Mutex mu_;
  std::map<std::string, kms::VolumeRecord> volumes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint8_t> deks_ ABSL_GUARDED_BY(mu_);  // By wrapped key.
  std::optional<std::pair<kms::VolumeRecord, uint8_t>> replacement_
      ABSL_GUARDED_BY(mu_);
  int created_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> reachable_{true};
  std::atomic<bool> fail_unwrap_{false};
  std::atomic<bool> fail_claims_{false};
  std::atomic<int> unwrap_calls_{0};
  std::atomic<int> read_calls_{0};
  std::atomic<int> updates_{0};
};

}  // namespace sealvol::testing
