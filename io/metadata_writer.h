// MetadataWriter owns the superblock copies and the write-intent bitmap on
// disk. Thread-safe: one mutex serializes every metadata write, so two
// writes of the same metadata block are never in flight together.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "base/mutex.h"
#include "crypto/secret_bytes.h"
#include "io/backing_store.h"
#include "io/superblock.h"

namespace sealvol::io {

class MetadataWriter {
 public:
  // `sb` is the superblock currently on disk (newest copy); `bitmap` the
  // on-disk bitmap bytes (layout.bitmap_blocks * 4096).
  MetadataWriter(std::unique_ptr<StoreQueue> queue, Superblock sb,
                 crypto::SecretBytes header_mac_key, std::vector<uint8_t> bitmap);

  // Writes the next generation into the other copy and fdatasyncs. `edit`
  // changes the fields; generation is advanced here.
  template <typename Edit>
  absl::Status UpdateSuperblock(Edit edit) {
    MutexLock l(&mu_);
    Superblock next = sb_;
    edit(next);
    return WriteSuperblockLocked(next);
  }
  Superblock superblock() const;

  // Sets the groups' write-intent bits; when one was not yet set on disk,
  // writes the bitmap blocks and fdatasyncs before returning.
  absl::Status MarkDirty(std::span<const uint64_t> groups);
  // Clears every bit, then writes the bitmap blocks that change and
  // fdatasyncs. Only when every group's writes are durable and its digest
  // committed (a checkpoint), or for stray bits of a clean image.
  absl::Status ClearAll();
  bool bit(uint64_t group) const;
  // Groups whose bit is set in memory.
  uint64_t dirty_groups() const;
  // Writes `table` (whole blocks) at the start of digest table copy `copy`
  // and fdatasyncs. The superblock still names the other copy until the
  // caller commits this one with UpdateSuperblock.
  absl::Status WriteDigestTable(int copy, std::span<const uint8_t> table);

 private:
  absl::Status WriteSuperblockLocked(const Superblock& next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteBitmapBlocksLocked(bool only_changed, bool sync)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable Mutex mu_;
  std::unique_ptr<StoreQueue> queue_ ABSL_GUARDED_BY(mu_);
  Superblock sb_ ABSL_GUARDED_BY(mu_);
  crypto::SecretBytes header_mac_key_;
  std::vector<uint8_t> memory_ ABSL_GUARDED_BY(mu_);  // Desired bitmap.
  std::vector<uint8_t> disk_ ABSL_GUARDED_BY(mu_);    // What is on disk.
  uint64_t dirty_count_ ABSL_GUARDED_BY(mu_) = 0;     // Bits set in memory_.
  AlignedBuffer io_buffer_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sealvol::io
