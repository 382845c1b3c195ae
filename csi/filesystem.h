// The file system on a volume's block device, for the node and `sealvol
// open` alike: probe (blkid), mkfs with the one set of flags sealvol uses,
// online growth, usage. mkfs, blkid, resize2fs and xfs_growfs run through
// csi/run_program.h. Stateless, thread-safe.
//
// Errors name the operation and the device: "mkfs.xfs ... /dev/loop3: exit
// status 1: ...".
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sealvol::csi {

// The file system type blkid finds on `device`, or "" when it finds none.
absl::StatusOr<std::string> ProbeFilesystem(const std::string& device);

// mkfs on `device` ("ext4" or "xfs"), quietly and without discarding (the
// engine reads unwritten blocks as zeros already, P5). ext4 is made with
// lazy_itable_init=0,lazy_journal_init=0: the inode tables and the journal
// are written now, so no ext4lazyinit thread writes behind the first mount's
// I/O. InvalidArgument for another type.
absl::Status MakeFilesystem(const std::string& device,
                            const std::string& fs_type);

// Makes sure `device` holds an `fs_type` file system: mkfs when blkid finds
// none (then the test hook InjectedFailure("mkfs") runs). Returns whether
// mkfs ran. FailedPrecondition "holds <found>, not <fs_type>" when the
// device holds another file system.
absl::StatusOr<bool> EnsureFilesystem(const std::string& device,
                                      const std::string& fs_type);

// True when the process has `capability` (a CAP_* number) in its effective
// set.
bool HasCapability(int capability);

// resize2fs (ext4, by device) or xfs_growfs (xfs, by mount point), online.
// FailedPrecondition for ext4 without CAP_SYS_RESOURCE.
absl::Status GrowFilesystem(const std::string& device,
                            const std::string& mount_point,
                            const std::string& fs_type);

// Grows an unmounted ext4 file system that is smaller than its device (a
// volume restored from a smaller snapshot) to the device's size, offline:
// e2fsck -f -p, then resize2fs (no CAP_SYS_RESOURCE needed, unlike an
// online resize). Returns whether it grew; a file system that fills its
// device is left alone without running either. Errors name the step.
absl::StatusOr<bool> GrowUnmountedExt4(const std::string& device);

struct FilesystemUsage {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t total_inodes = 0;
  uint64_t free_inodes = 0;
  uint64_t used_inodes = 0;
};
absl::StatusOr<FilesystemUsage> UsageOf(const std::string& path);

// A file system frozen by FreezeFilesystem: writes to it block, and what
// was written before is durable on its device, until Thaw() or destruction
// (which thaws too, logging a failure). The one seam for tests of the
// node's copy jobs, which freeze nothing real.
class FrozenFilesystem {
 public:
  virtual ~FrozenFilesystem() = default;
  // FITHAW; OK when thawed already.
  virtual absl::Status Thaw() = 0;
};

// FIFREEZE on the file system mounted at `mount_point` (ext4 and xfs flush
// their journal and every dirty page to the device first). Returns null
// when nothing is mounted at `mount_point` (nothing to freeze: the path's
// parent file system is never frozen). Errors name the operation and the
// path (EBUSY: already frozen by someone else).
absl::StatusOr<std::unique_ptr<FrozenFilesystem>> FreezeFilesystem(
    const std::string& mount_point);

}  // namespace sealvol::csi
