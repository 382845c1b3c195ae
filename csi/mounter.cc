#include "csi/mounter.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "base/mount_table.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"

namespace sealvol::csi {

namespace {

std::string Canonical(const std::string& path) {
  char resolved[PATH_MAX];
  if (realpath(path.c_str(), resolved) != nullptr) return resolved;
  return path;
}

}  // namespace

absl::StatusOr<MountOptions> ParseMountFlags(
    const std::vector<std::string>& mount_flags) {
  static const std::map<std::string, unsigned long, std::less<>> kVfsFlags = {
      {"ro", MS_RDONLY},          {"rw", 0},
      {"noatime", MS_NOATIME},    {"relatime", MS_RELATIME},
      {"strictatime", MS_STRICTATIME}, {"nodiratime", MS_NODIRATIME},
      {"lazytime", MS_LAZYTIME},  {"noexec", MS_NOEXEC},
      {"sync", MS_SYNCHRONOUS},   {"dirsync", MS_DIRSYNC},
      {"nosuid", MS_NOSUID},      {"nodev", MS_NODEV},
      {"defaults", 0}};
  // Filesystem options (name, or name=value with a plain value).
  static const std::set<std::string, std::less<>> kDataOptions = {
      "discard", "nodiscard", "barrier", "nobarrier", "data", "commit",
      "errors", "inode64", "inode32", "logbsize", "logbufs", "largeio",
      "nolargeio", "swalloc", "allocsize", "noquota", "usrquota", "grpquota",
      "prjquota", "user_xattr", "acl", "noacl", "delalloc", "nodelalloc",
      "dioread_nolock", "auto_da_alloc", "noauto_da_alloc", "journal_checksum",
      "stripe", "sunit", "swidth", "wsync", "attr2", "noattr2"};
  MountOptions out;
  for (const std::string& flag : mount_flags) {
    if (auto it = kVfsFlags.find(flag); it != kVfsFlags.end()) {
      out.flags |= it->second;
      continue;
    }
    const size_t eq = flag.find('=');
    const std::string_view name = std::string_view(flag).substr(0, eq);
    bool ok = kDataOptions.count(name) > 0;
    if (ok && eq != std::string::npos) {
      const std::string_view value = std::string_view(flag).substr(eq + 1);
      ok = !value.empty() && value.find_first_not_of(
                                 "abcdefghijklmnopqrstuvwxyz"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
                                 std::string_view::npos;
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          "mount flag \"" + flag.substr(0, 64) +
          "\" is not supported (docs/csi.md lists the mount flags sealvol takes)");
    }
    out.data += (out.data.empty() ? "" : ",") + flag;
  }
  return out;
}

absl::Status MountFilesystem(const std::string& device,
                             const std::string& target,
                             const std::string& fs_type,
                             const std::vector<std::string>& options,
                             bool read_only) {
  ASSIGN_OR_RETURN(MountOptions parsed, ParseMountFlags(options));
  unsigned long flags = parsed.flags | MS_NOSUID | MS_NODEV;
  if (read_only) flags |= MS_RDONLY;
  const std::string& data = parsed.data;
  if (mount(device.c_str(), target.c_str(), fs_type.c_str(), flags,
            data.empty() ? nullptr : data.c_str()) != 0) {
    return ErrnoStatus(errno, "mount " + device + " (" + fs_type + ") on",
                       target);
  }
  return absl::OkStatus();
}

absl::Status BindMount(const std::string& source, const std::string& target,
                       bool read_only) {
  if (mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return ErrnoStatus(errno, "bind-mount " + source + " on", target);
  }
  if (read_only &&
      mount(nullptr, target.c_str(), nullptr,
            MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
    const int err = errno;
    umount2(target.c_str(), MNT_DETACH);
    return ErrnoStatus(err, "remount read-only", target);
  }
  return absl::OkStatus();
}

absl::Status BindMountAt(const std::string& source, int target_fd,
                         const std::string& target, bool read_only) {
  UniqueFd tree(static_cast<int>(syscall(
      SYS_open_tree, AT_FDCWD, source.c_str(),
      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW)));
  if (!tree) return ErrnoStatus(errno, "bind-mount (open_tree) " + source + " for", target);
  if (read_only) {
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH, &attr,
                sizeof(attr)) != 0) {
      return ErrnoStatus(errno, "make the bind of " + source + " read-only for",
                         target);
    }
  }
  if (syscall(SYS_move_mount, tree.get(), "", target_fd, "",
              MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
    return ErrnoStatus(errno, "bind-mount " + source + " on", target);
  }
  return absl::OkStatus();
}

absl::Status UnmountIfMounted(const std::string& target) {
  ASSIGN_OR_RETURN(bool mounted, IsMountPoint(target));
  if (!mounted) return absl::OkStatus();
  if (umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return absl::OkStatus();
  if (errno == EBUSY) {
    // Retry briefly: a loop device or a closing file may still hold it.
    for (int i = 0; i < 20; ++i) {
      usleep(50 * 1000);
      if (umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return absl::OkStatus();
      if (errno != EBUSY) break;
    }
  }
  return ErrnoStatus(errno, "unmount", target);
}

absl::Status DetachMountIfMounted(const std::string& target) {
  for (int i = 0; i < 8; ++i) {  // Stacked mounts: detach each layer.
    ASSIGN_OR_RETURN(bool mounted, IsMountPoint(target));
    if (!mounted) return absl::OkStatus();
    if (umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      return ErrnoStatus(errno, "detach mount", target);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> IsMountPoint(const std::string& path) {
  ASSIGN_OR_RETURN(std::string source, MountSource(path));
  return !source.empty();
}

absl::StatusOr<std::vector<std::string>> MountPointsOfType(
    const std::string& fs_type) {
  ASSIGN_OR_RETURN(std::vector<MountEntry> entries, ReadMountTable());
  std::vector<std::string> out;
  for (const auto& entry : entries) {
    if (entry.fs_type == fs_type) out.push_back(entry.mount_point);
  }
  return out;
}

absl::StatusOr<std::string> MountSource(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<MountEntry> entries, ReadMountTable());
  const std::string canonical = Canonical(path);
  std::string source;
  for (const auto& entry : entries) {
    // The last entry for a path is the one on top.
    if (entry.mount_point == canonical || entry.mount_point == path) {
      source = entry.source.empty() ? "none" : entry.source;
    }
  }
  return source;
}

absl::Status RefreshLoopCapacity(const std::string& loop_device) {
  UniqueFd fd(open(loop_device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open", loop_device);
  if (ioctl(fd.get(), LOOP_SET_CAPACITY, 0) != 0) {
    return ErrnoStatus(errno, "LOOP_SET_CAPACITY", loop_device);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> BlockDeviceSize(const std::string& device) {
  UniqueFd fd(open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open", device);
  uint64_t size = 0;
  if (ioctl(fd.get(), BLKGETSIZE64, &size) != 0) {
    return ErrnoStatus(errno, "BLKGETSIZE64", device);
  }
  return size;
}

}  // namespace sealvol::csi
