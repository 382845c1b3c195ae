// Format and open's shared view of the image (see volume_image.h).
#include "io/volume_image.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/error_kind.h"
#include "base/status_macros.h"

namespace sealvol::io {
namespace {

absl::Status NotSealvol() {
  return SetErrorKind(absl::InvalidArgumentError("not a sealvol image"),
                      ErrorKind::kNotSealvol);
}

std::string ShortRoot(const StateRoot& root) {
  return StateRootString(root).substr(0, 16);
}

}  // namespace

absl::Status StoreOpStatus(const StoreOp& op, const char* what,
                           const std::string& name) {
  if (op.result == 0) return absl::OkStatus();
  return ErrnoStatus(-op.result, what, name);
}

absl::Status CheckSize(uint64_t size, const Layout& layout) {
  if (size == 0 || size % kBlockSize != 0) {
    return SetErrorKind(
        absl::InvalidArgumentError(absl::StrCat(
            "size ", size, " is not a positive multiple of 4096 bytes")),
        ErrorKind::kBadSize);
  }
  if (size / kBlockSize > layout.max_blocks()) {
    return absl::OutOfRangeError(
        absl::StrCat("size ", size, " exceeds the format's maximum of ",
                     layout.max_blocks() * kBlockSize, " bytes"));
  }
  return absl::OkStatus();
}

SuperblockCopies::SuperblockCopies() : decoded{NotSealvol(), NotSealvol()} {}

absl::StatusOr<SuperblockCopies> ReadSuperblockCopies(BackingStore& store,
                                                      StoreQueue& queue) {
  SuperblockCopies c;
  const uint64_t have = std::min<uint64_t>(store.size_bytes() / 4096, 2);
  if (have == 0) return c;
  StoreOp read{StoreOp::Kind::kRead, 0, have * 4096, c.bytes.data()};
  queue.Execute({&read, 1});
  RETURN_IF_ERROR(StoreOpStatus(read, "read superblock", store.name()));
  for (uint64_t i = 0; i < have; ++i) {
    c.decoded[i] = DecodeSuperblock(c.copy(static_cast<int>(i)));
  }
  return c;
}

absl::Status CheckExpectedState(const Superblock& sb, const VolumeState& want,
                                const std::string& name) {
  const bool epoch_ok = sb.state_epoch == want.epoch ||
                        (want.epoch != UINT64_MAX &&
                         sb.state_epoch == want.epoch + 1);
  const bool root_ok = want.open || sb.state_root == want.root;
  if (epoch_ok && root_ok) return absl::OkStatus();
  return SetErrorKind(
      absl::FailedPreconditionError(absl::StrCat(
          "rolled back: ", name, " is at epoch ", sb.state_epoch, " (root ",
          ShortRoot(sb.state_root), "...), the registry expects epoch ",
          want.epoch, " (root ", ShortRoot(want.root), "..., session ",
          want.open ? "open" : "closed",
          "); refusing an image that is not the volume's latest state "
          "(docs/operations.md: restoring an older image on purpose)")),
      ErrorKind::kRolledBack);
}

}  // namespace sealvol::io
