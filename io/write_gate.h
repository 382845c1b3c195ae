// WriteGate counts the writes and discards a volume has in flight and, while
// shut, parks new ones instead of letting them in: the engine's write hold
// (SealedVolume::HoldWrites, docs/format.md "Copies"). Reads and flushes
// never pass through it. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "base/mutex.h"
#include "io/volume_io.h"

namespace sealvol::io {

class WriteGate {
 public:
  // A write or discard arrives. True: it goes in, and counts as in flight
  // until Leave. False: the gate is shut; it keeps the request until Open.
  // No lock is taken while the gate is open.
  bool Enter(IoRequest* request);
  // A request let in by Enter has completed.
  void Leave();

  // Shuts the gate, then waits until no write is in flight, at most
  // `timeout`. FailedPrecondition when it is shut already; DeadlineExceeded
  // naming `name` and how many writes are still in flight (the gate stays
  // shut: the caller Opens it).
  absl::Status Shut(std::chrono::milliseconds timeout, const std::string& name);
  // Opens the gate and hands back the requests it kept, in their order of
  // arrival, for the caller to run. Empty when it was open.
  std::vector<IoRequest*> Open();
  bool shut() const { return shut_.load(); }

 private:
  // The lock-free path (Enter/Leave while open) and Shut pair as in
  // Dekker's scheme: Enter counts, then looks at shut_; Shut sets shut_,
  // then looks at the count; both sequentially consistent, so a request
  // is either seen in flight by Shut or sees the gate shut.
  std::atomic<bool> shut_{false};
  std::atomic<int64_t> in_flight_{0};
  Mutex mu_;
  CondVar drained_;  // in_flight_ reached zero while shut.
  bool shut_locked_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<IoRequest*> parked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sealvol::io
