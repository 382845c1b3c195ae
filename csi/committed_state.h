// The registry's form of an engine state (kms::CommittedState, root as 64
// hex digits) and the engine's (io::VolumeState), and what a volume record
// asks the engine to check. One home for the node and the CLI.
// Thread-safe: stateless.
#pragma once

#include <optional>

#include "absl/status/statusor.h"
#include "io/volume_state.h"
#include "kms/key_provider.h"

namespace sealvol::csi {

inline kms::CommittedState ToCommittedState(const io::VolumeState& state) {
  return {state.epoch, io::StateRootString(state.root), state.open};
}

// InvalidArgument for a malformed root.
inline absl::StatusOr<io::VolumeState> ToVolumeState(
    const kms::CommittedState& state) {
  auto root = io::ParseStateRoot(state.root);
  if (!root.ok()) return root.status();
  return io::VolumeState{state.epoch, *root, state.open};
}

// The state an open of `record`'s image must check: unset when the record
// holds none yet (trust on first use) or an operator's acceptance of a
// restored image is pending.
inline absl::StatusOr<std::optional<io::VolumeState>> ExpectedState(
    const kms::VolumeRecord& record) {
  if (!record.state.has_value() || record.rollback_pending) {
    return std::optional<io::VolumeState>();
  }
  auto state = ToVolumeState(*record.state);
  if (!state.ok()) return state.status();
  return std::optional<io::VolumeState>(*state);
}

}  // namespace sealvol::csi
