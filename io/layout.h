// Layout maps volume block numbers to positions in the image (docs/format.md
// describes it). Thread-safe: immutable value type.
#pragma once

#include <cstdint>
#include <string>

namespace sealvol::io {

inline constexpr uint32_t kFormatVersion = 2;
// Each data block has two 32-byte tag slots: 64 bytes, so one 4 KiB tag
// block covers 64 data blocks.
inline constexpr uint32_t kSlotBytes = 32;
inline constexpr uint32_t kTagEntryBytes = 2 * kSlotBytes;
inline constexpr uint32_t kBlocksPerTagBlock = 4096 / kTagEntryBytes;

struct Layout {
  uint32_t data_blocks_per_group = 1024;
  uint32_t tag_blocks_per_group = 16;
  uint64_t bitmap_start = 2;    // Blocks 0 and 1 are the superblock copies.
  uint64_t bitmap_blocks = 64;  // 1 bit per group: 2^21 groups = 8 TiB.
  uint64_t groups_start = 256;  // First group, 1 MiB into the image.

  static Layout Default() { return Layout{}; }

  // True when the fields are consistent (checked when read from disk).
  bool Valid() const;

  uint64_t group_span() const {
    return uint64_t{tag_blocks_per_group} + data_blocks_per_group;
  }
  uint64_t max_groups() const { return bitmap_blocks * 4096 * 8; }
  uint64_t max_blocks() const { return max_groups() * data_blocks_per_group; }
  uint64_t group_of(uint64_t block) const {
    return block / data_blocks_per_group;
  }
  uint64_t groups_for(uint64_t volume_blocks) const {
    return (volume_blocks + data_blocks_per_group - 1) / data_blocks_per_group;
  }
  // Image block of group g's first tag block.
  uint64_t tag_start(uint64_t group) const {
    return groups_start + group * group_span();
  }
  // Image block holding volume block `block`'s data.
  uint64_t data_position(uint64_t block) const {
    return tag_start(group_of(block)) + tag_blocks_per_group +
           block % data_blocks_per_group;
  }
  // Bytes the image must have to hold `volume_blocks` blocks.
  uint64_t image_bytes(uint64_t volume_blocks) const {
    if (volume_blocks == 0) return groups_start * 4096;
    return (data_position(volume_blocks - 1) + 1) * 4096;
  }

  std::string ToJson() const;
};

}  // namespace sealvol::io
