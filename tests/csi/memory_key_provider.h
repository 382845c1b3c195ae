// MemoryKeyProvider is a KeyProvider fake for controller tests: records in a
// map, "wrapped" keys that are opaque labels, a switch that makes the KMS
// unreachable. Thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "kms/key_provider.h"

namespace sealvol::csi {

class MemoryKeyProvider final : public kms::KeyProvider {
 public:
  absl::StatusOr<kms::VolumeRecord> CreateVolumeKey(
      const kms::CreateVolumeKeyRequest& request) override {
    absl::MutexLock lock(&mutex_);
    if (!reachable_) return absl::UnavailableError("kms down");
    if (records_.count(request.volume_id)) {
      return absl::AlreadyExistsError(request.volume_id);
    }
    kms::VolumeRecord record;
    record.volume_id = request.volume_id;
    record.name = request.name;
    record.tenant = request.tenant;
    record.key_name = request.key_name_template.empty()
                          ? "sealvol-" + request.tenant
                          : request.key_name_template;
    record.key_version = 1;
    record.wrapped_dek = "memory:v1:" + request.volume_id;
    record.capacity_bytes = request.capacity_bytes;
    record.node = request.node;
    record.parameters = request.parameters;
    records_[record.volume_id] = record;
    return record;
  }
  absl::StatusOr<crypto::SecretBytes> UnwrapVolumeKey(
      std::string_view volume_id) override {
    absl::MutexLock lock(&mutex_);
    if (!records_.count(std::string(volume_id))) {
      return absl::NotFoundError(std::string(volume_id));
    }
    return crypto::SecretBytes::Allocate(32);
  }
  absl::StatusOr<crypto::SecretBytes> UnwrapRecordKey(
      const kms::VolumeRecord& record) override {
    return UnwrapVolumeKey(record.volume_id);
  }
  absl::StatusOr<kms::VolumeRecord> GetVolume(
      std::string_view volume_id) override {
    absl::MutexLock lock(&mutex_);
    auto it = records_.find(std::string(volume_id));
    if (it == records_.end()) {
      return absl::NotFoundError("volume " + std::string(volume_id));
    }
    return it->second;
  }
  absl::Status UpdateVolume(const kms::VolumeRecord& record) override {
    absl::MutexLock lock(&mutex_);
    auto it = records_.find(record.volume_id);
    if (it == records_.end()) return absl::NotFoundError(record.volume_id);
    it->second.capacity_bytes = record.capacity_bytes;
    it->second.node = record.node;
    it->second.parameters = record.parameters;
    return absl::OkStatus();
  }
  absl::StatusOr<kms::VolumeRecord> ClaimFormat(
      std::string_view volume_id, const kms::FormatClaim& claim) override {
    absl::MutexLock lock(&mutex_);
    if (!reachable_) return absl::UnavailableError("kms down");
    auto it = records_.find(std::string(volume_id));
    if (it == records_.end()) return absl::NotFoundError(std::string(volume_id));
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
    absl::MutexLock lock(&mutex_);
    if (!reachable_) return absl::UnavailableError("kms down");
    auto it = records_.find(std::string(volume_id));
    if (it == records_.end()) return absl::NotFoundError(std::string(volume_id));
    kms::VolumeRecord changed = it->second;
    if (absl::Status s = kms::ApplyStateCommit(changed, commit); !s.ok()) return s;
    it->second = changed;
    return changed;
  }
  absl::StatusOr<kms::VolumeRecord> AcceptRollback(std::string_view volume_id,
                                                   std::string_view by,
                                                   int64_t unix_time) override {
    absl::MutexLock lock(&mutex_);
    auto it = records_.find(std::string(volume_id));
    if (it == records_.end()) return absl::NotFoundError(std::string(volume_id));
    it->second.rollback_pending = true;
    it->second.rollback_accepted_by = std::string(by);
    it->second.rollback_accepted_unix = unix_time;
    return it->second;
  }
  absl::StatusOr<std::vector<kms::VolumeRecord>> ListVolumes(
      std::string_view tenant) override {
    absl::MutexLock lock(&mutex_);
    if (!reachable_) return absl::UnavailableError("kms down");
    std::vector<kms::VolumeRecord> out;
    for (const auto& [id, record] : records_) {
      if (tenant.empty() || record.tenant == std::string(tenant)) {
        out.push_back(record);
      }
    }
    return out;
  }
  absl::Status DestroyVolumeKey(std::string_view volume_id) override {
    absl::MutexLock lock(&mutex_);
    if (records_.erase(std::string(volume_id)) == 0) {
      return absl::NotFoundError(std::string(volume_id));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<kms::RotationResult> RotateTenantKey(
      std::string_view) override {
    return absl::UnimplementedError("not used by the controller");
  }
  absl::Status Ping() override {
    absl::MutexLock lock(&mutex_);
    return reachable_ ? absl::OkStatus() : absl::UnavailableError("kms down");
  }
  std::string Describe() const override { return "memory:"; }

  void set_reachable(bool reachable) {
    absl::MutexLock lock(&mutex_);
    reachable_ = reachable;
  }
  size_t size() {
    absl::MutexLock lock(&mutex_);
    return records_.size();
  }

 private:
  absl::Mutex mutex_;
  std::map<std::string, kms::VolumeRecord> records_ ABSL_GUARDED_BY(mutex_);
  bool reachable_ ABSL_GUARDED_BY(mutex_) = true;
};

}  // namespace sealvol::csi
