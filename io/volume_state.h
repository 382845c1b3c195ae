// VolumeState is what a volume's registry record commits to about its image
// (docs/format.md, "State root and epochs"): the image's epoch (a counter the
// engine raises at every writable open), the root over its authenticated
// state (the digest of every group's tag area) and whether a session is
// open. The engine checks an image against it at open, so an image put back
// from an earlier copy is refused ("rolled back"), and hands the caller the
// state to commit when a session begins and when it ends. Value type.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sealvol::io {

using StateRoot = std::array<uint8_t, 32>;

struct VolumeState {
  // Raised by one at every writable open, before the first write.
  uint64_t epoch = 0;
  // SHA-256 root over the group digest table as of the epoch's last
  // checkpoint (at open: the state the session starts from; at close: the
  // state it ends with).
  StateRoot root{};
  // True from a session's start until its close is committed: an image
  // found unclean is then accepted at this epoch (docs/security.md says
  // what that window allows).
  bool open = false;

  bool operator==(const VolumeState&) const = default;
};

// 64 lowercase hex digits.
std::string StateRootString(const StateRoot& root);
// Exactly 64 hex digits (either case); InvalidArgument naming the problem.
absl::StatusOr<StateRoot> ParseStateRoot(std::string_view text);

}  // namespace sealvol::io
