#include "io/write_gate.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "io/sealed_volume.h"

namespace sealvol::io {

bool WriteGate::Enter(IoRequest* request) {
  in_flight_.fetch_add(1);
  if (!shut_.load()) return true;
  MutexLock l(&mu_);
  if (!shut_locked_) return true;  // Opened meanwhile: it goes in, counted.
  // Parked requests allocate; only while a hold lasts.
  parked_.push_back(request);
  if (in_flight_.fetch_sub(1) == 1) drained_.SignalAll();
  return false;
}

void WriteGate::Leave() {
  if (in_flight_.fetch_sub(1) == 1 && shut_.load()) {
    // Under the lock, so a Shut between its test and its wait is woken.
    MutexLock l(&mu_);
    drained_.SignalAll();
  }
}

absl::Status WriteGate::Shut(std::chrono::milliseconds timeout,
                             const std::string& name) {
  MutexLock l(&mu_);
  if (shut_locked_) {
    return absl::FailedPreconditionError(
        absl::StrCat(name, ": hold writes: the writes are held already"));
  }
  shut_locked_ = true;
  shut_.store(true);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (in_flight_.load() > 0) {
    if (!drained_.WaitUntil(&mu_, deadline) && in_flight_.load() > 0) {
      return absl::DeadlineExceededError(absl::StrCat(
          name, ": hold writes: ", in_flight_.load(),
          " write(s) still in flight after ", timeout.count(),
          " ms (the backing store is slow or stalled); writes go on"));
    }
  }
  return absl::OkStatus();
}

std::vector<IoRequest*> WriteGate::Open() {
  MutexLock l(&mu_);
  shut_locked_ = false;
  shut_.store(false);
  return std::exchange(parked_, {});
}

void WriteHold::Release() {
  if (volume_ != nullptr) std::exchange(volume_, nullptr)->ReleaseWrites();
}

}  // namespace sealvol::io
