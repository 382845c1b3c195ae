// Crash recovery: repairs the tag slots of the groups whose write-intent bit
// is set, so the newer slot of every block matches the data on disk again.
// Cost grows with the dirty groups, not the volume size. Thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "io/backing_store.h"
#include "io/layout.h"
#include "io/slot_codec.h"
#include "io/volume_header.h"

namespace sealvol::io {

struct RecoveryStats {
  uint64_t groups_scanned = 0;
  uint64_t blocks_checked = 0;
  uint64_t slots_cleared = 0;
  // Blocks where no slot verifies: tampering (the invariants exclude it
  // after a crash). Left as they are, so reads fail and `check` lists them.
  std::vector<uint64_t> unrecoverable;
};

struct RecoveryInput {
  StoreQueue* queue = nullptr;
  SlotCodec* slots = nullptr;  // Opens slots of any session.
  Layout layout;
  uint64_t volume_blocks = 0;
  std::span<const uint8_t> bitmap;
  // True when never-written data is known to read as zeros (files): a lone
  // slot that fails over all-zero data is then a first write that never
  // landed. On a block device any lone failing slot is treated so.
  bool holes_read_zero = true;
  // Called with each dirty group's tags as repaired (its digest is then
  // recomputed from them).
  std::function<void(uint64_t group, std::span<const uint8_t> tags)> on_group;
};

// For every block of a dirty group with a written slot: finds the slot that
// verifies against the data on disk and clears the other one; a lone slot
// whose data never landed is cleared (the block reads zeros, as before).
// Punches the data of empty blocks again (a discard's punch may have been
// lost). Writes the changed tag blocks and fdatasyncs. The caller clears the
// bits.
absl::StatusOr<RecoveryStats> RecoverDirtyGroups(const RecoveryInput& in);

}  // namespace sealvol::io
