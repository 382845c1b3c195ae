// BackingStore is the engine's seam to the operating system: the image file
// or block device, accessed through per-thread queues. The real store runs
// io_uring over O_DIRECT; tests swap in FaultStore
// (tests/fakes/fault_store.h), which keeps the image in memory and simulates
// power loss.
//
// Thread-safety: a BackingStore is thread-safe; each StoreQueue belongs to
// one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sealvol::io {

// One backing-store operation. Offsets and lengths are multiples of 4096 and
// buffers are 4096-aligned (O_DIRECT).
struct StoreOp {
  enum class Kind : uint8_t {
    kRead,
    kWrite,
    kSync,   // fdatasync: every write completed before it is durable.
    kPunch,  // Deallocate the range; it reads as zeros afterwards.
  };
  Kind kind = Kind::kRead;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint8_t* buffer = nullptr;
  int result = 0;  // Set by Execute: 0 or a negative errno.
};

class StoreQueue {
 public:
  virtual ~StoreQueue() = default;
  // Submits all `ops` at once (they may run concurrently and complete in any
  // order) and returns when every one has completed; each op's `result` is
  // set. A kSync covers only writes that completed before Execute was
  // called, so callers put a sync in its own Execute after the writes.
  virtual void Execute(std::span<StoreOp> ops) = 0;
  // As Execute, and calls `done(i)` in the calling thread as soon as op i has
  // its result, while later ops may still be in flight (so the caller can
  // decrypt one read while the next is being copied). The default runs
  // Execute and then reports every op in order.
  virtual void ExecuteEach(std::span<StoreOp> ops,
                           absl::FunctionRef<void(size_t)> done) {
    Execute(ops);
    for (size_t i = 0; i < ops.size(); ++i) done(i);
  }
};

class BackingStore {
 public:
  virtual ~BackingStore() = default;
  // A queue for the calling thread (one io_uring per queue).
  virtual absl::StatusOr<std::unique_ptr<StoreQueue>> CreateQueue() = 0;
  // Current size in bytes.
  virtual uint64_t size_bytes() const = 0;
  // Grows the image to `bytes` (sparse for files). A block device cannot
  // grow: OutOfRange when `bytes` exceeds it.
  virtual absl::Status Resize(uint64_t bytes) = 0;
  // True when unwritten areas are not guaranteed to read as zeros (a block
  // device), so format must zero the metadata it relies on.
  virtual bool needs_zeroing() const = 0;
  // For messages: the path or "memory".
  virtual const std::string& name() const = 0;
};

struct FileStoreOptions {
  std::string path;
  bool create = false;     // Create the file if missing.
  bool read_only = false;  // Shared lock, read-only fd.
  bool lock = true;        // flock the image (exclusive unless read_only).
  // Through the page cache rather than O_DIRECT (as on a file system that
  // refuses O_DIRECT): for a file read once that is likely still cached.
  bool page_cache = false;
  unsigned queue_depth = 256;
};

// Opens the image through io_uring. Probes the ring for the operations it
// needs and fails naming what is missing. Errors: NotFound, FailedPrecondition
// "<path>: in use" when another process holds the lock, Unavailable when
// io_uring is unusable.
absl::StatusOr<std::unique_ptr<BackingStore>> OpenFileStore(
    const FileStoreOptions& options);

// Whether the file store for `path` uses O_DIRECT (false on filesystems that
// refuse it; the engine then goes through the page cache and fdatasync).
bool FileStoreUsesDirectIo(const BackingStore& store);

// Allocates `bytes` (a multiple of 4096) aligned for O_DIRECT; freed with
// AlignedBuffer's destructor.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes, bool zero = true);
  AlignedBuffer(AlignedBuffer&& o) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<uint8_t> span() const { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace sealvol::io
