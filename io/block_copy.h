// CopyBlocks seals a plaintext source into an open sealed volume, block runs
// that hold data only, with a durable progress record (copy_progress.h) so
// that a copy killed at any point resumes where its last record says. It is
// the one copy loop of `sealvol import` and of the snapshot/clone copy
// (volume_copy.h). Not thread-safe: one copy at a time per target.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/copy_progress.h"
#include "io/sealed_volume.h"

namespace sealvol::io {

// The plaintext a copy reads: a plain file or device (import) or an open
// sealed volume (snapshot and clone copies).
class BlockSource {
 public:
  virtual ~BlockSource() = default;
  // Bytes to copy.
  virtual uint64_t size_bytes() const = 0;
  // The first block-aligned offset at or after `offset` that may hold
  // anything but zeros (size_bytes() when none): a sparse file's holes are
  // skipped without reading. `offset` itself is always a correct answer.
  virtual uint64_t NextData(uint64_t offset) { return offset; }
  // Fills `buffer` with the bytes at `offset`; bytes past size_bytes() read
  // as zeros. Errors name the source.
  virtual absl::Status Read(uint64_t offset, std::span<uint8_t> buffer) = 0;
  // Starts a Read of `buffer` at `offset` and calls `done` once with its
  // result, on any thread, possibly before returning. The default reads in
  // the calling thread; a source whose reads can run meanwhile (an open
  // sealed volume: its workers decrypt) overrides it, so that the copy
  // reads several chunks at once while the target seals earlier ones.
  virtual void StartRead(uint64_t offset, std::span<uint8_t> buffer,
                         std::function<void(absl::Status)> done) {
    done(Read(offset, buffer));
  }
};

struct BlockCopyOptions {
  // The target was never written since its format: runs of zeros are left
  // alone (they read as zeros). Otherwise they are discarded, and so is the
  // target's tail beyond the source, so it then holds the source only.
  bool fresh = true;
  // Bytes read per step, and steps in flight at once: up to depth - 1
  // chunks are read ahead (StartRead) while the target seals the ones read
  // before them.
  uint64_t chunk_bytes = uint64_t{1} << 20;
  int depth = 4;
  // Bytes copied between two durable records: what a resumed copy copies
  // again at most. A multiple of chunk_bytes is best.
  uint64_t progress_interval = uint64_t{64} << 20;
  // Called after each durable record with the offset it holds.
  std::function<void(uint64_t next_offset)> on_progress;
};

struct BlockCopyCounts {
  uint64_t written = 0;  // Bytes sealed into the target.
  uint64_t zeros = 0;    // Bytes of zeros or holes: discarded or left alone.
};

// Copies `source` from progress.next_offset to its end into `target` (at
// least as large as the source, InvalidArgument otherwise), saving
// `progress` through `file` after a flush of the target every
// progress_interval and at the end (then next_offset = the source's size
// rounded up to a block). A failed write or flush of the target is
// DataLoss naming the target and the offset.
absl::StatusOr<BlockCopyCounts> CopyBlocks(BlockSource& source,
                                           SealedVolume& target,
                                           const CopyProgressFile& file,
                                           CopyProgress& progress,
                                           const BlockCopyOptions& options);

}  // namespace sealvol::io
