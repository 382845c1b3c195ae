// Superblock encodes, decodes and authenticates the volume header (two
// copies, blocks 0 and 1; docs/format.md). Thread-safe: stateless functions.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "crypto/key_schedule.h"
#include "crypto/secret_bytes.h"
#include "io/layout.h"
#include "io/volume_header.h"

namespace sealvol::io {

inline constexpr uint32_t kSuperblockFlagClean = 1;
// incompat_features bit: the image has the group digest table and a state
// root (docs/format.md). Images without it are read only by `upgrade`.
inline constexpr uint32_t kIncompatStateRoot = 1;

struct Superblock {
  uint32_t format_version = kFormatVersion;
  VolumeId volume_id{};
  FormatId format_id{};
  uint64_t size_bytes = 0;
  uint64_t generation = 0;
  uint32_t flags = 0;
  uint32_t incompat_features = 0;  // Readers refuse bits they do not know.
  Layout layout;
  crypto::KeyCheckValue key_check{};
  // State root (kIncompatStateRoot): raised at every writable open.
  uint64_t state_epoch = 0;
  // The root over the first state_groups entries of digest table copy
  // digest_copy, as of the last checkpoint.
  StateRoot state_root{};
  uint64_t state_groups = 0;
  uint32_t digest_copy = 0;

  bool clean() const { return (flags & kSuperblockFlagClean) != 0; }
  // The copy (0 or 1) this generation is stored in.
  uint64_t copy() const { return generation % 2; }
};

using SuperblockBytes = std::array<uint8_t, 4096>;

// Serializes `sb` with its digest and its HMAC under `header_mac_key`.
absl::StatusOr<SuperblockBytes> EncodeSuperblock(
    const Superblock& sb, const crypto::SecretBytes& header_mac_key);

// Parses one copy without a key. Errors: InvalidArgument "not a sealvol
// image" (no magic), FailedPrecondition for version 1 (with what to do),
// "unsupported format version N" or unknown incompatible features, DataLoss
// (digest mismatch: torn or corrupted copy, or a bad layout).
absl::StatusOr<Superblock> DecodeSuperblock(std::span<const uint8_t> block);

// The layout fields as every format stores them (little-endian): the two
// per-group counts (32-bit) at `counts_at`, then bitmap_start, bitmap_blocks
// and groups_start (64-bit) at `regions_at`. Also read by format_v1.cc.
void LoadLayoutFields(const uint8_t* p, size_t counts_at, size_t regions_at,
                      Layout& layout);

// True when the copy's HMAC verifies under `header_mac_key`.
bool SuperblockMacValid(std::span<const uint8_t> block,
                        const crypto::SecretBytes& header_mac_key);

// Picks the newest of two decoded copies (either may be an error). Returns
// the best error when neither decodes. `index` receives the chosen copy.
absl::StatusOr<Superblock> NewestSuperblock(
    const absl::StatusOr<Superblock>& a, const absl::StatusOr<Superblock>& b);

}  // namespace sealvol::io
