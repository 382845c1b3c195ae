#include "csi/mounter.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "io/frontend/volume_attach.h"

namespace sealvol::csi {

namespace {

// Mount points in /proc/self/mountinfo escape space, tab, newline and
// backslash as octal.
std::string UnescapeMountPath(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      const std::string oct = field.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
        out.push_back(static_cast<char>(std::stoi(oct, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

struct MountEntry {
  std::string mount_point;
  std::string fs_type;
  std::string source;
};

absl::StatusOr<std::vector<MountEntry>> ReadMountTable() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return ErrnoStatus(errno, "read", "/proc/self/mountinfo");
  std::vector<MountEntry> entries;
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mount_point options [optional...] - fstype
    // source super_options
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point, token;
    fields >> id >> parent >> devno >> root >> mount_point;
    while (fields >> token && token != "-") {
    }
    std::string fstype, source;
    fields >> fstype >> source;
    entries.push_back({UnescapeMountPath(mount_point), fstype,
                       UnescapeMountPath(source)});
  }
  return entries;
}

std::string Canonical(const std::string& path) {
  char resolved[PATH_MAX];
  if (realpath(path.c_str(), resolved) != nullptr) return resolved;
  return path;
}

}  // namespace

absl::Status MakeFilesystem(const std::string& device,
                            const std::string& fs_type) {
  if (fs_type == "ext4") {
    // No discard: the engine reads unwritten blocks as zeros already (P5).
    return io::RunProgram({"mkfs.ext4", "-q", "-F", "-E", "nodiscard", device});
  }
  if (fs_type == "xfs") {
    return io::RunProgram({"mkfs.xfs", "-q", "-f", "-K", device});
  }
  return absl::InvalidArgumentError("mkfs " + device + ": unsupported fs_type " +
                                    fs_type);
}

absl::Status MountFilesystem(const std::string& device,
                             const std::string& target,
                             const std::string& fs_type,
                             const std::vector<std::string>& options,
                             bool read_only) {
  std::string data;
  for (const auto& option : options) {
    data += (data.empty() ? "" : ",") + option;
  }
  unsigned long flags = MS_NOSUID | MS_NODEV;
  if (read_only) flags |= MS_RDONLY;
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

absl::Status UnmountIfMounted(const std::string& target) {
  ASSIGN_OR_RETURN(bool mounted, IsMountPoint(target));
  if (!mounted) return absl::OkStatus();
  if (umount2(target.c_str(), 0) == 0) return absl::OkStatus();
  if (errno == EBUSY) {
    // Retry briefly: a loop device or a closing file may still hold it.
    for (int i = 0; i < 20; ++i) {
      usleep(50 * 1000);
      if (umount2(target.c_str(), 0) == 0) return absl::OkStatus();
      if (errno != EBUSY) break;
    }
  }
  return ErrnoStatus(errno, "unmount", target);
}

absl::Status DetachMountIfMounted(const std::string& target) {
  for (int i = 0; i < 8; ++i) {  // Stacked mounts: detach each layer.
    ASSIGN_OR_RETURN(bool mounted, IsMountPoint(target));
    if (!mounted) return absl::OkStatus();
    if (umount2(target.c_str(), MNT_DETACH) != 0) {
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

bool HasCapability(int capability) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      const uint64_t caps = std::stoull(line.substr(7), nullptr, 16);
      return (caps >> capability) & 1;
    }
  }
  return false;
}

absl::Status GrowFilesystem(const std::string& device,
                            const std::string& mount_point,
                            const std::string& fs_type) {
  if (fs_type == "ext4") {
    // The kernel refuses online ext4 resizing (EXT4_IOC_RESIZE_FS) without
    // CAP_SYS_RESOURCE; say so instead of resize2fs's "Permission denied".
    constexpr int kCapSysResource = 24;
    if (!HasCapability(kCapSysResource)) {
      return absl::FailedPreconditionError(
          "grow ext4 on " + device +
          ": online resize needs CAP_SYS_RESOURCE, which this process lacks");
    }
    return io::RunProgram({"resize2fs", device});
  }
  if (fs_type == "xfs") return io::RunProgram({"xfs_growfs", mount_point});
  return absl::InvalidArgumentError("grow " + device + ": unsupported fs_type " +
                                    fs_type);
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

absl::StatusOr<FilesystemUsage> UsageOf(const std::string& path) {
  struct statvfs st {};
  if (statvfs(path.c_str(), &st) != 0) return ErrnoStatus(errno, "statvfs", path);
  FilesystemUsage usage;
  usage.total_bytes = uint64_t{st.f_blocks} * st.f_frsize;
  usage.available_bytes = uint64_t{st.f_bavail} * st.f_frsize;
  usage.used_bytes = (uint64_t{st.f_blocks} - st.f_bfree) * st.f_frsize;
  usage.total_inodes = st.f_files;
  usage.free_inodes = st.f_ffree;
  usage.used_inodes = st.f_files - st.f_ffree;
  return usage;
}

}  // namespace sealvol::csi
