// Layout maps volume block numbers to positions in the image (docs/format.md
// describes it). Thread-safe: immutable value type.
#pragma once

#include <cstdint>
#include <string>

namespace sealvol::io {

inline constexpr uint32_t kFormatVersion = 2;
// Each group has a 32-byte digest of its tag blocks in the digest table.
inline constexpr uint32_t kDigestBytes = 32;
inline constexpr uint32_t kDigestsPerBlock = 4096 / kDigestBytes;
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
  // The group digest table, two copies of digest_blocks each (a checkpoint
  // writes the inactive one, then the superblock names it). 0 blocks: an
  // image from before the state root (read only by `sealvol upgrade`).
  uint64_t digest_start = 66;
  uint64_t digest_blocks = 16384;  // 32 bytes per group of max_groups().
  uint64_t groups_start = 66 + 2 * 16384;  // 128 MiB + 264 KiB in.

  static Layout Default() { return Layout{}; }
  // Places the digest table right after the bitmap, sized for max_groups(),
  // and the first group right after it (for layouts edited by tests).
  void PlaceDigestTable() {
    digest_start = bitmap_start + bitmap_blocks;
    digest_blocks = (max_groups() + kDigestsPerBlock - 1) / kDigestsPerBlock;
    groups_start = digest_start + 2 * digest_blocks;
  }
  bool has_digest_table() const { return digest_blocks > 0; }
  // Image block of the first digest block of table copy `copy` (0 or 1).
  uint64_t digest_table(int copy) const {
    return digest_start + uint64_t(copy) * digest_blocks;
  }

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
