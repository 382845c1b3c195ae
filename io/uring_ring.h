// UringRing owns one io_uring instance: io_uring_queue_exit runs in its
// destructor, whatever path its owner leaves by. RequireUringOps checks
// operations against what the kernel supports, probed once per process (the
// first call asks a throwaway ring, later calls reuse the answer), so that a
// missing operation is reported when a ring is set up, not at the first I/O.
// Used by the backing store's queues (file_store.cc) and the FUSE-over-
// io_uring transport (frontend/fuse_uring_transport.cc).
//
// Thread-safety: RequireUringOps is thread-safe; a UringRing is used by one
// thread at a time (a ring has one submitter).
#pragma once

#include <liburing.h>

#include <span>
#include <string>

#include "absl/status/status.h"

namespace sealvol::io {

// An io_uring operation and its name for errors.
struct UringOp {
  int op;            // IORING_OP_*.
  const char* name;  // "IORING_OP_READ".
};

// OK when the kernel supports every operation in `ops`; Unavailable naming
// the missing ones otherwise, or when the kernel cannot be probed.
absl::Status RequireUringOps(std::span<const UringOp> ops);

class UringRing {
 public:
  UringRing() = default;
  ~UringRing();
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;

  // Creates the ring with `entries` submission entries and IORING_SETUP_*
  // `flags`; errors name `what`. Once only.
  absl::Status Init(unsigned entries, unsigned flags, const std::string& what);

  io_uring* get() { return &ring_; }

 private:
  io_uring ring_{};
  bool initialized_ = false;
};

}  // namespace sealvol::io
