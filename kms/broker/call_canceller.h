// CallCanceller ends a call in flight from another thread: the node's copy
// job runner ends its waiting KeyBroker.CopyJobs call (a long poll) so when
// it stops. A call registers how it is ended (KeyBrokerClient: the gRPC
// context's TryCancel) for as long as it runs. Cancel() is sticky: a call
// that starts after it is refused at once. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"

namespace sealvol::broker {

class CallCanceller {
 public:
  CallCanceller() = default;
  CallCanceller(const CallCanceller&) = delete;
  CallCanceller& operator=(const CallCanceller&) = delete;

  // Ends every registered call (runs each one's `cancel`, under the lock:
  // it must be quick and must not call back here) and every later one.
  void Cancel() {
    MutexLock lock(&mu_);
    cancelled_ = true;
    for (auto& [id, cancel] : calls_) cancel();
  }
  bool cancelled() const {
    MutexLock lock(&mu_);
    return cancelled_;
  }

  // Registers a call for as long as it lives: `cancel` ends it. ok() is
  // false when Cancel() came first (then nothing is registered and the
  // call must not start).
  class Registration {
   public:
    Registration(CallCanceller* canceller, std::function<void()> cancel) {
      if (canceller == nullptr) return;
      MutexLock lock(&canceller->mu_);
      if (canceller->cancelled_) {
        cancelled_ = true;
        return;
      }
      canceller_ = canceller;
      id_ = canceller->next_id_++;
      canceller->calls_.emplace(id_, std::move(cancel));
    }
    ~Registration() {
      if (canceller_ == nullptr) return;
      MutexLock lock(&canceller_->mu_);
      canceller_->calls_.erase(id_);
    }
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
    bool ok() const { return !cancelled_; }

   private:
    CallCanceller* canceller_ = nullptr;
    uint64_t id_ = 0;
    bool cancelled_ = false;
  };

 private:
  mutable Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::function<void()>> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sealvol::broker
