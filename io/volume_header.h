// What an image's header says without a key: the volume and format ids and
// the header fields `sealvol dump` shows (ReadHeader). The engine's lower
// layers (superblock, slots, recovery, state table) name volumes through
// this header, below SealedVolume. Thread-safe: value types and stateless
// functions.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "base/volume_id.h"
#include "io/volume_io.h"
#include "io/volume_state.h"

namespace sealvol::io {

// The volume id and its one text rule live in base/volume_id.h.
using ::sealvol::ParseVolumeId;
using ::sealvol::VolumeId;
using ::sealvol::VolumeIdString;
// Drawn at random by every format and stored in the header (not secret): it
// salts the subkeys, so two formats of one volume never share a key, and the
// registry records it, so an image that was lost and re-created, or
// replaced, is recognised as not the one the volume was formatted with.
using FormatId = std::array<uint8_t, 16>;

// 32 lowercase hex digits.
std::string FormatIdString(const FormatId& id);
absl::StatusOr<FormatId> ParseFormatId(std::string_view text);

// Header fields readable without a key (for `sealvol dump` and for finding
// which key to ask for). Nothing here is secret.
struct VolumeHeaderInfo {
  uint32_t format_version = 0;
  VolumeId volume_id{};
  FormatId format_id{};
  uint64_t size_bytes = 0;
  uint32_t block_size = 0;
  uint64_t generation = 0;
  bool clean = false;  // Closed cleanly (no recovery needed).
  // The state root fields (unauthenticated here: the engine checks them
  // with the key); has_state_root false for an image that predates them.
  bool has_state_root = false;
  uint64_t state_epoch = 0;
  StateRoot state_root{};
  // Layout fields as documented in docs/format.md.
  std::string layout_json;
};

// Reads the newest valid superblock copy without a key. Errors:
// NotFound (no such file), InvalidArgument "not a sealvol image",
// FailedPrecondition "unsupported format version N", OutOfRange "truncated".
absl::StatusOr<VolumeHeaderInfo> ReadHeader(const std::string& path);

}  // namespace sealvol::io
