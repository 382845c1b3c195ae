// Mount and block-device operations of the node and `sealvol open`: mount,
// bind mounts, unmount, mount-table queries, loop capacity and device size.
// Uses mount(2)/umount2(2) directly; what lies on the device (mkfs, growth,
// usage) is csi/filesystem.h. Stateless, thread-safe.
//
// Errors name the operation and the path: "mount /dev/loop3 on /x: ...".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sealvol::csi {

// Mount flags split into mount(2) flags and filesystem data. Only flags on
// sealvol's list are accepted (docs/csi.md): VFS flags (ro, rw, noatime,
// relatime, strictatime, nodiratime, lazytime, noexec, sync, dirsync,
// nosuid, nodev) and ext4/xfs options that change neither ownership nor
// device semantics (discard, nodiscard, data=, commit=, errors=, inode64,
// ...). InvalidArgument naming the first flag that is not: checked before a
// key is requested, since mount would refuse it only afterwards.
struct MountOptions {
  unsigned long flags = 0;
  std::string data;
};
absl::StatusOr<MountOptions> ParseMountFlags(
    const std::vector<std::string>& mount_flags);

// Mounts `device` (fs_type, `options` as ParseMountFlags takes them) with
// nosuid and nodev; `target` may be /proc/self/fd/N of a directory held
// open, so that nothing between resolving and mounting can redirect it.
absl::Status MountFilesystem(const std::string& device,
                             const std::string& target,
                             const std::string& fs_type,
                             const std::vector<std::string>& options,
                             bool read_only);

// Bind-mounts `source` (a directory or a device node) on `target`, then
// remounts it read-only when asked (a bind ignores MS_RDONLY at first).
absl::Status BindMount(const std::string& source, const std::string& target,
                       bool read_only);

// The same onto the directory or file open as `target_fd` (O_PATH), with
// the new mount API (open_tree, mount_setattr, move_mount): the clone is
// made read-only before it is attached, and the target is the resolved
// descriptor, not a path. `target` names it in errors.
absl::Status BindMountAt(const std::string& source, int target_fd,
                         const std::string& target, bool read_only);

// Unmounts `target` when something is mounted there; OK when nothing is.
// Neither this nor DetachMountIfMounted follows a link at `target`.
absl::Status UnmountIfMounted(const std::string& target);

// Lazily detaches whatever is mounted at `target` (MNT_DETACH): for mounts
// whose backing died with a previous process. OK when nothing is mounted.
absl::Status DetachMountIfMounted(const std::string& target);

// True when `path` is a mount point in this process's mount namespace.
absl::StatusOr<bool> IsMountPoint(const std::string& path);

// The source device of the mount at `path` ("" when not a mount point).
absl::StatusOr<std::string> MountSource(const std::string& path);

// The mount points of every mount of file-system type `fs_type` (e.g.
// "fuse.sealvol"), in mount-table order.
absl::StatusOr<std::vector<std::string>> MountPointsOfType(
    const std::string& fs_type);

// Re-reads a loop device's backing file size (LOOP_SET_CAPACITY).
absl::Status RefreshLoopCapacity(const std::string& loop_device);

// The size of a block device in bytes (BLKGETSIZE64).
absl::StatusOr<uint64_t> BlockDeviceSize(const std::string& device);

}  // namespace sealvol::csi
