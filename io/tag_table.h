// Tag slots: each data block has two 32-byte slots {u64 counter (LE), 16-byte
// GCM tag, 8 bytes zero} in its group's tag blocks (docs/format.md). A slot is
// empty only when all its bytes are zero; both empty means never written or
// discarded (reads zeros). A slot with any non-zero byte is "present" and must
// verify, so flipping a counter to 0 is detected, not taken for "empty".
// These helpers view a group's tag bytes in memory. Thread-compatible.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

#include "crypto/sector_codec.h"
#include "io/layout.h"

namespace sealvol::io {

struct TagSlot {
  uint64_t counter = 0;
  crypto::GcmTag tag{};
};

class GroupTags {
 public:
  // `bytes` holds the group's tag blocks; `index` is the block's position in
  // its group.
  explicit GroupTags(uint8_t* bytes) : bytes_(bytes) {}

  TagSlot slot(uint32_t index, int s) const {
    const uint8_t* p = entry(index) + s * kSlotBytes;
    TagSlot out;
    for (int i = 7; i >= 0; --i) out.counter = (out.counter << 8) | p[i];
    std::memcpy(out.tag.data(), p + 8, out.tag.size());
    return out;
  }
  void set_slot(uint32_t index, int s, uint64_t counter,
                const crypto::GcmTag& tag) {
    uint8_t* p = entry(index) + s * kSlotBytes;
    for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(counter >> (8 * i));
    std::memcpy(p + 8, tag.data(), tag.size());
    std::memset(p + 24, 0, kSlotBytes - 24);
  }
  void clear_slot(uint32_t index, int s) {
    std::memset(entry(index) + s * kSlotBytes, 0, kSlotBytes);
  }
  uint64_t counter(uint32_t index, int s) const {
    const uint8_t* p = entry(index) + s * kSlotBytes;
    uint64_t c = 0;
    for (int i = 7; i >= 0; --i) c = (c << 8) | p[i];
    return c;
  }
  bool present(uint32_t index, int s) const {
    const uint8_t* p = entry(index) + s * kSlotBytes;
    uint64_t a, b, c, d;
    std::memcpy(&a, p, 8);
    std::memcpy(&b, p + 8, 8);
    std::memcpy(&c, p + 16, 8);
    std::memcpy(&d, p + 24, 8);
    return (a | b | c | d) != 0;
  }
  // The slot a read tries first (present, higher counter); -1 if both are
  // empty.
  int newer_slot(uint32_t index) const {
    const bool p0 = present(index, 0), p1 = present(index, 1);
    if (!p0 && !p1) return -1;
    if (p0 != p1) return p1 ? 1 : 0;
    return counter(index, 1) > counter(index, 0) ? 1 : 0;
  }
  // The tag block (within the group) that holds `index`.
  static uint32_t tag_block_of(uint32_t index) {
    return index / kBlocksPerTagBlock;
  }

 private:
  uint8_t* entry(uint32_t index) const {
    return bytes_ + size_t{index} * kTagEntryBytes;
  }
  uint8_t* bytes_;
};

// The additional data of a data block: volume id || block number (BE64) ||
// counter (BE64). Binds the ciphertext to its volume and position (P2) and to
// its slot's counter.
inline constexpr size_t kAadSize = 32;
inline void BuildAad(const uint8_t volume_id[16], uint64_t block,
                     uint64_t counter, uint8_t out[kAadSize]) {
  std::memcpy(out, volume_id, 16);
  for (int i = 0; i < 8; ++i) {
    out[16 + i] = static_cast<uint8_t>(block >> (56 - 8 * i));
    out[24 + i] = static_cast<uint8_t>(counter >> (56 - 8 * i));
  }
}

}  // namespace sealvol::io
