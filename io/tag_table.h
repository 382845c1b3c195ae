// Tag slots (format version 2, docs/format.md): each data block has two
// 32-byte slots {session id (10 bytes), counter (5 bytes LE), seq (1 byte),
// GCM tag (16 bytes)} in its group's tag blocks. A slot is empty only when
// all its bytes are zero; both empty means never written or discarded (reads
// zeros). A slot with any non-zero byte is "present" and must verify. `seq`
// orders the two slots of a block: a write fills the other slot with the
// newer slot's seq + 1 (mod 256). These helpers view a group's tag bytes in
// memory. Thread-compatible.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

#include "crypto/sector_codec.h"
#include "crypto/session_keys.h"
#include "io/layout.h"

namespace sealvol::io {

// The first 16 bytes of a slot: what the GCM additional data binds.
inline constexpr size_t kSlotHeaderBytes = 16;

struct TagSlot {
  crypto::SessionId session{};
  uint64_t counter = 0;  // 40 bits.
  uint8_t seq = 0;
  crypto::GcmTag tag{};

  void EncodeHeader(uint8_t out[kSlotHeaderBytes]) const {
    std::memcpy(out, session.data(), session.size());
    for (int i = 0; i < 5; ++i) out[10 + i] = static_cast<uint8_t>(counter >> (8 * i));
    out[15] = seq;
  }
};

class GroupTags {
 public:
  // `bytes` holds the group's tag blocks; `index` is the block's position in
  // its group.
  explicit GroupTags(uint8_t* bytes) : bytes_(bytes) {}

  TagSlot slot(uint32_t index, int s) const {
    const uint8_t* p = entry(index) + s * kSlotBytes;
    TagSlot out;
    std::memcpy(out.session.data(), p, out.session.size());
    for (int i = 4; i >= 0; --i) out.counter = (out.counter << 8) | p[10 + i];
    out.seq = p[15];
    std::memcpy(out.tag.data(), p + kSlotHeaderBytes, out.tag.size());
    return out;
  }
  void set_slot(uint32_t index, int s, const TagSlot& slot) {
    uint8_t* p = entry(index) + s * kSlotBytes;
    slot.EncodeHeader(p);
    std::memcpy(p + kSlotHeaderBytes, slot.tag.data(), slot.tag.size());
  }
  void clear_slot(uint32_t index, int s) {
    std::memset(entry(index) + s * kSlotBytes, 0, kSlotBytes);
  }
  uint8_t seq(uint32_t index, int s) const {
    return entry(index)[s * kSlotBytes + 15];
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
  // The slot a read tries first: the present one, or of two, the one whose
  // seq follows the other's; -1 if both are empty. (Two slots whose seqs are
  // not consecutive can only come from tampering; both are tried anyway.)
  int newer_slot(uint32_t index) const {
    const bool p0 = present(index, 0), p1 = present(index, 1);
    if (!p0 && !p1) return -1;
    if (p0 != p1) return p1 ? 1 : 0;
    return static_cast<uint8_t>(seq(index, 0) + 1) == seq(index, 1) ? 1 : 0;
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
// the slot's first 16 bytes (session id, counter, seq). Binds the ciphertext
// to its volume and position (P2) and to the slot that describes it.
inline constexpr size_t kAadSize = 16 + 8 + kSlotHeaderBytes;
inline void BuildAad(const uint8_t volume_id[16], uint64_t block,
                     const TagSlot& slot, uint8_t out[kAadSize]) {
  std::memcpy(out, volume_id, 16);
  for (int i = 0; i < 8; ++i) {
    out[16 + i] = static_cast<uint8_t>(block >> (56 - 8 * i));
  }
  slot.EncodeHeader(out + 24);
}

}  // namespace sealvol::io
