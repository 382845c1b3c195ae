#include "csi/volume_locks.h"

#include <utility>

namespace sealvol::csi {

absl::Status VolumeLocks::TryLock(const std::string& volume_id) {
  MutexLock lock(&mutex_);
  if (!busy_.insert(volume_id).second) {
    return absl::AbortedError("an operation on volume " + volume_id +
                              " is already in progress");
  }
  return absl::OkStatus();
}

void VolumeLocks::Unlock(const std::string& volume_id) {
  MutexLock lock(&mutex_);
  busy_.erase(volume_id);
}

VolumeLock::VolumeLock(VolumeLocks* locks, std::string volume_id)
    : locks_(locks), volume_id_(std::move(volume_id)) {
  status_ = locks_->TryLock(volume_id_);
}

VolumeLock::~VolumeLock() {
  if (status_.ok()) locks_->Unlock(volume_id_);
}

}  // namespace sealvol::csi
