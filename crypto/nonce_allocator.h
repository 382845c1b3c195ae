// NonceAllocator hands out 64-bit GCM nonce counters that never repeat for a
// key (property P3), across crashes and reopenings. Thread-safe.
//
// The counter runs below a high-water mark that is persisted before any
// counter at or above the previous mark is handed out: when the counter
// reaches the mark, Allocate calls `reserve(new_mark)`, which must make
// `new_mark` durable (write + fdatasync) before returning OK. After a crash
// the owner reopens with start = the persisted mark, so the whole range that
// may have been used is skipped. Crypto code does no I/O itself.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"

namespace sealvol::crypto {

class NonceAllocator {
 public:
  using ReserveFn = std::function<absl::Status(uint64_t new_mark)>;

  // `start` is the persisted high-water mark (counters below it may have been
  // used). `range` is how many counters each reservation covers (> 0).
  NonceAllocator(uint64_t start, uint64_t range, ReserveFn reserve);

  // Returns the first of `count` consecutive unused counters. Fails only if
  // the reservation fails (then nothing is handed out) or the 64-bit space is
  // exhausted (ResourceExhausted: the volume needs a new DEK).
  absl::StatusOr<uint64_t> Allocate(uint64_t count = 1);

  // The persisted mark; every counter handed out so far is below it.
  uint64_t reserved_mark() const;
  // The next counter that would be handed out.
  uint64_t next() const;

 private:
  mutable std::mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_);
  uint64_t mark_ ABSL_GUARDED_BY(mu_);
  const uint64_t range_;
  ReserveFn reserve_;
};

}  // namespace sealvol::crypto
