// The group digest table and the state root (docs/format.md, "State root").
// Every group's tag blocks have a 32-byte digest; the root hashes the table.
// A group whose tags are all zero (never written, or wholly discarded) has
// the all-zero digest, so format and grow write nothing per group. The
// table in memory is chunked so that Grow never moves an entry a worker is
// using. Thread-safety: entries of distinct groups may be read and written
// from different threads; Ensure is called by one control thread, before
// the new groups are visible to workers.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "io/layout.h"
#include "io/volume_header.h"

namespace sealvol::io {

using GroupDigest = std::array<uint8_t, kDigestBytes>;

// Digest of group `group`'s tag bytes (layout.tag_blocks_per_group * 4096),
// bound to the volume and the group's position; all zero for all-zero tags.
GroupDigest DigestGroupTags(const VolumeId& volume_id, uint64_t group,
                            std::span<const uint8_t> tags);

class DigestTable {
 public:
  explicit DigestTable(uint64_t max_groups);

  // Makes entries [0, groups) addressable (new ones all zero).
  void Ensure(uint64_t groups);
  uint64_t groups() const { return groups_; }
  const GroupDigest& get(uint64_t group) const {
    return chunks_[group / kChunk]->entries[group % kChunk];
  }
  void set(uint64_t group, const GroupDigest& d) {
    chunks_[group / kChunk]->entries[group % kChunk] = d;
  }
  // Serializes entries [0, groups) into `out` (whole 4 KiB blocks, zero
  // padded); `out` holds BlocksFor(groups) * 4096 bytes.
  void Serialize(uint64_t groups, std::span<uint8_t> out) const;
  static uint64_t BlocksFor(uint64_t groups) {
    return (groups + kDigestsPerBlock - 1) / kDigestsPerBlock;
  }

 private:
  static constexpr uint64_t kChunk = 4096;
  struct Chunk {
    GroupDigest entries[kChunk] = {};
  };
  std::vector<std::unique_ptr<Chunk>> chunks_;  // Sized once: no realloc.
  uint64_t groups_ = 0;
};

// SHA-256 over the volume id, the format id, the count and the first
// `groups` entries of a serialized table (`table`: BlocksFor(groups) blocks).
StateRoot ComputeStateRoot(const VolumeId& volume_id, const FormatId& format_id,
                           uint64_t groups, std::span<const uint8_t> table);

}  // namespace sealvol::io
