// VolumeIo is the asynchronous block interface that a front-end (FUSE now,
// ublk later) drives; the sealed-volume engine implements it, and tests use
// in-memory fakes. Thread-safe: Submit may be called from any thread.
#pragma once

#include <cstdint>
#include <span>

namespace sealvol::io {

inline constexpr uint32_t kBlockSize = 4096;

enum class IoOp : uint8_t {
  kRead,
  kWrite,    // With `fua`, the data is durable when the request completes.
  kFlush,    // Every write completed before this was submitted is durable.
  kDiscard,  // The range reads as zeros afterwards; space is released.
};

// One request. The submitter owns it (and `buffer`) until `done` runs; the
// engine allocates nothing per request. offset and length are multiples of
// kBlockSize (a front-end does read-modify-write for unaligned requests).
struct IoRequest {
  IoOp op = IoOp::kRead;
  bool fua = false;
  uint64_t offset = 0;           // Bytes from the start of the volume.
  uint64_t length = 0;           // Bytes; 0 for kFlush.
  std::span<uint8_t> buffer;     // kRead: filled; kWrite: read. `length` bytes.
  // Called exactly once, on an engine thread, with 0 or a negative errno:
  // -EIO (authentication failed or the backing store failed; no byte of the
  // buffer is then meaningful: it is zeroed), -EINVAL (bad range or
  // alignment), -ENOSPC, -EROFS (read-only or failed volume).
  void (*done)(IoRequest* request, int result) = nullptr;
  void* context = nullptr;       // For the submitter's use.
};

class VolumeIo {
 public:
  virtual ~VolumeIo() = default;
  // The volume's usable size in bytes (a multiple of kBlockSize).
  virtual uint64_t size_bytes() const = 0;
  // Queues a request. Never blocks on I/O; may block briefly on a full queue.
  virtual void Submit(IoRequest* request) = 0;
  // As Submit, but where the engine is idle the request runs to completion
  // on the calling thread, so a lone request skips the hand-off to a worker
  // thread and back; `done` may then run on the calling thread before this
  // returns. Blocks on I/O. For a front-end thread that has nothing else to
  // do meanwhile (queue depth 1). The default is Submit.
  virtual void SubmitInline(IoRequest* request) { Submit(request); }
};

}  // namespace sealvol::io
