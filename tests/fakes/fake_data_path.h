// FakeDataPath stands in for csi::FuseDataPath (the seam in csi/data_path.h)
// in tests of the node's logic: no engine, FUSE, loop device or root. It
// serves nothing; it records what it is asked (the attach options, the key's
// length, each call in order), hands out made-up device names, and fails or
// reports ill health when a test says so. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/mutex.h"
#include "csi/data_path.h"

namespace sealvol::testing {

class FakeDataPath final : public csi::DataPath {
 public:
  absl::StatusOr<std::string> Attach(const csi::AttachOptions& options,
                                     const crypto::SecretBytes& dek) override {
    MutexLock lock(&mu_);
    calls_.push_back("attach " + options.volume_id);
    last_attach_ = options;
    last_key_size_ = dek.size();
    if (!attach_error_.ok()) return std::exchange(attach_error_, absl::OkStatus());
    auto [it, added] = attached_.try_emplace(options.volume_id);
    if (added) {
      it->second.device = "/dev/fake-loop" + std::to_string(next_device_++);
      it->second.size_bytes = options.size_bytes;
    }
    return it->second.device;
  }

  absl::StatusOr<std::unique_ptr<csi::WriteHold>> HoldWrites(
      const std::string& volume_id) override {
    MutexLock lock(&mu_);
    if (!attached_.count(volume_id)) return NotAttached(volume_id);
    if (!hold_error_.ok()) return hold_error_;
    calls_.push_back("hold " + volume_id);
    return std::unique_ptr<csi::WriteHold>(new Hold(this, volume_id));
  }

  absl::StatusOr<std::string> Device(const std::string& volume_id) override {
    MutexLock lock(&mu_);
    auto it = attached_.find(volume_id);
    if (it == attached_.end()) return NotAttached(volume_id);
    return it->second.device;
  }

  absl::Status Grow(const std::string& volume_id,
                    uint64_t new_size_bytes) override {
    MutexLock lock(&mu_);
    calls_.push_back("grow " + volume_id + " " + std::to_string(new_size_bytes));
    auto it = attached_.find(volume_id);
    if (it == attached_.end()) return NotAttached(volume_id);
    it->second.size_bytes = new_size_bytes;
    return absl::OkStatus();
  }

  absl::Status Health(const std::string& volume_id) override {
    MutexLock lock(&mu_);
    auto it = attached_.find(volume_id);
    if (it == attached_.end()) return NotAttached(volume_id);
    return it->second.health;
  }

  absl::Status Detach(const std::string& volume_id) override {
    MutexLock lock(&mu_);
    calls_.push_back("detach " + volume_id);
    attached_.erase(volume_id);
    return absl::OkStatus();
  }

  absl::StatusOr<bool> StaleAt(const std::string& work_dir) override {
    MutexLock lock(&mu_);
    return stale_.count(work_dir) > 0;
  }

  absl::Status AbortStale(const std::string& work_dir) override {
    MutexLock lock(&mu_);
    calls_.push_back("abort-stale " + work_dir);
    return absl::OkStatus();
  }

  absl::Status ClearStale(const std::string& work_dir) override {
    MutexLock lock(&mu_);
    calls_.push_back("clear-stale " + work_dir);
    stale_.erase(work_dir);
    return absl::OkStatus();
  }

  // ---- What a test arranges.

  // The next Attach fails with `status` (after recording its options).
  void FailNextAttach(absl::Status status) {
    MutexLock lock(&mu_);
    attach_error_ = std::move(status);
  }
  // HoldWrites fails with `status` from now on (OK: holds again).
  void FailHolds(absl::Status status) {
    MutexLock lock(&mu_);
    hold_error_ = std::move(status);
  }
  // What Health says of an attached volume from now on (nothing when it is
  // not attached).
  void SetHealth(const std::string& volume_id, absl::Status health) {
    MutexLock lock(&mu_);
    if (auto it = attached_.find(volume_id); it != attached_.end()) {
      it->second.health = std::move(health);
    }
  }
  // A dead data path's FUSE mount is left at `work_dir` (until ClearStale).
  void LeaveStale(const std::string& work_dir) {
    MutexLock lock(&mu_);
    stale_.insert(work_dir);
  }

  // ---- What a test reads.

  // Every call that changes something, in order: "attach ID", "grow ID N",
  // "detach ID", "abort-stale DIR", "clear-stale DIR", "hold ID" and
  // "release ID" (a write hold taken and ended).
  std::vector<std::string> calls() {
    MutexLock lock(&mu_);
    return calls_;
  }
  std::optional<csi::AttachOptions> last_attach() {
    MutexLock lock(&mu_);
    return last_attach_;
  }
  size_t last_key_size() {
    MutexLock lock(&mu_);
    return last_key_size_;
  }
  // The size of an attached volume (as attached, then grown); 0 when not
  // attached.
  uint64_t size_bytes(const std::string& volume_id) {
    MutexLock lock(&mu_);
    auto it = attached_.find(volume_id);
    return it == attached_.end() ? 0 : it->second.size_bytes;
  }

 private:
  struct Attached {
    std::string device;
    uint64_t size_bytes = 0;
    absl::Status health;
  };

  class Hold final : public csi::WriteHold {
   public:
    Hold(FakeDataPath* owner, std::string volume_id)
        : owner_(owner), volume_id_(std::move(volume_id)) {}
    ~Hold() override {
      MutexLock lock(&owner_->mu_);
      owner_->calls_.push_back("release " + volume_id_);
    }

   private:
    FakeDataPath* const owner_;
    const std::string volume_id_;
  };

  static absl::Status NotAttached(const std::string& volume_id) {
    return absl::NotFoundError("volume " + volume_id + " is not attached");
  }

  Mutex mu_;
  std::map<std::string, Attached> attached_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> stale_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
  std::optional<csi::AttachOptions> last_attach_ ABSL_GUARDED_BY(mu_);
  size_t last_key_size_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status attach_error_ ABSL_GUARDED_BY(mu_);
  absl::Status hold_error_ ABSL_GUARDED_BY(mu_);
  int next_device_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sealvol::testing
