#include "kms/broker/copy_job_changes.h"

#include <algorithm>
#include <chrono>

#include "absl/time/clock.h"

namespace sealvol::broker {

uint64_t CopyJobChanges::Count(const std::string& node_id) const {
  MutexLock lock(&mu_);
  auto it = counts_.find(node_id);
  return it == counts_.end() ? 0 : it->second;
}

void CopyJobChanges::Changed(const std::string& node_id) {
  {
    MutexLock lock(&mu_);
    ++counts_[node_id];
  }
  changed_.SignalAll();
}

CopyJobChanges::Wake CopyJobChanges::WaitForChange(const std::string& node_id,
                                                   uint64_t seen,
                                                   absl::Time deadline) {
  // A steady clock for the wait itself: a step of the wall clock neither
  // ends it early nor stretches it.
  const auto steady_deadline =
      std::chrono::steady_clock::now() +
      absl::ToChronoNanoseconds(std::clamp(deadline - absl::Now(),
                                           absl::ZeroDuration(), absl::Hours(24)));
  MutexLock lock(&mu_);
  for (;;) {
    if (closed_) return Wake::kClosed;
    auto it = counts_.find(node_id);
    if (it != counts_.end() && it->second != seen) return Wake::kChanged;
    if (!changed_.WaitUntil(&mu_, steady_deadline)) {
      // Timed out; a change that came with the timeout still counts.
      if (closed_) return Wake::kClosed;
      it = counts_.find(node_id);
      return it != counts_.end() && it->second != seen ? Wake::kChanged
                                                       : Wake::kDeadline;
    }
  }
}

void CopyJobChanges::Close() {
  {
    MutexLock lock(&mu_);
    closed_ = true;
  }
  changed_.SignalAll();
}

}  // namespace sealvol::broker
