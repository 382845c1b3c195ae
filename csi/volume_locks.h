// VolumeLocks gives each volume one operation slot: a second CSI call for a
// volume while one runs gets ABORTED, as the CSI spec suggests, instead of
// waiting. Thread-safe.
#pragma once

#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "base/mutex.h"

namespace sealvol::csi {

class VolumeLocks {
 public:
  // Takes the volume's slot; Aborted naming the volume when it is taken.
  absl::Status TryLock(const std::string& volume_id);
  void Unlock(const std::string& volume_id);

 private:
  Mutex mutex_;
  std::set<std::string> busy_ ABSL_GUARDED_BY(mutex_);
};

// Holds a volume's slot for one scope, when status() is OK.
class VolumeLock {
 public:
  VolumeLock(VolumeLocks* locks, std::string volume_id);
  ~VolumeLock();
  VolumeLock(const VolumeLock&) = delete;
  VolumeLock& operator=(const VolumeLock&) = delete;

  const absl::Status& status() const { return status_; }

 private:
  VolumeLocks* const locks_;
  const std::string volume_id_;
  absl::Status status_;
};

}  // namespace sealvol::csi
