// What formatting and opening a volume share about its image: the size
// rule, the status of a store operation, both superblock copies as stored,
// and the rollback check of an open against the registry's state.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/backing_store.h"
#include "io/layout.h"
#include "io/superblock.h"
#include "io/volume_state.h"

namespace sealvol::io {

// OK when `op` succeeded; otherwise its errno as "<what> <name>: ...".
absl::Status StoreOpStatus(const StoreOp& op, const char* what,
                           const std::string& name);

// A volume size must be a positive multiple of 4096 within the layout's
// maximum (InvalidArgument, kind kBadSize; OutOfRange).
absl::Status CheckSize(uint64_t size, const Layout& layout);

// Both superblock copies as stored; a short image yields "not sealvol".
struct SuperblockCopies {
  absl::StatusOr<Superblock> decoded[2];
  AlignedBuffer bytes{8192};

  SuperblockCopies();
  // The stored bytes of copy `i`.
  std::span<const uint8_t> copy(int i) const {
    return {bytes.data() + i * 4096, 4096};
  }
};

absl::StatusOr<SuperblockCopies> ReadSuperblockCopies(BackingStore& store,
                                                      StoreQueue& queue);

// The rule of docs/security.md ("Rolled-back images"): the image must be at
// the epoch the registry names, or one past it (an open that crashed before
// committing its start, so nothing was written); after a closed session its
// root must match too. FailedPrecondition, kind kRolledBack, otherwise.
absl::Status CheckExpectedState(const Superblock& sb, const VolumeState& want,
                                const std::string& name);

}  // namespace sealvol::io
