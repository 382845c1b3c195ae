#include "csi/filesystem.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "base/injected_fault.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "csi/mounter.h"
#include "csi/run_program.h"
#include "spdlog/spdlog.h"

namespace sealvol::csi {

absl::StatusOr<std::string> ProbeFilesystem(const std::string& device) {
  // -p probes the device itself, not blkid's cache; exit 2 = nothing found.
  const ProgramResult r = RunProgramFor(
      {"blkid", "-p", "-o", "value", "-s", "TYPE", device}, /*capture_out=*/true);
  if (r.exit_status == 2) return std::string();
  if (r.exit_status != 0) {
    return absl::InternalError(absl::StrCat("blkid -p ", device,
                                            ": exit status ", r.exit_status,
                                            ": ", LastLine(r.err)));
  }
  return LastLine(r.out);
}

absl::Status MakeFilesystem(const std::string& device,
                            const std::string& fs_type) {
  if (fs_type == "ext4") {
    return RunProgram({"mkfs.ext4", "-F", "-q", "-E",
                       "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                       device});
  }
  if (fs_type == "xfs") return RunProgram({"mkfs.xfs", "-f", "-q", "-K", device});
  return absl::InvalidArgumentError("mkfs " + device + ": unsupported fs_type " +
                                    fs_type);
}

absl::StatusOr<bool> EnsureFilesystem(const std::string& device,
                                      const std::string& fs_type) {
  ASSIGN_OR_RETURN(const std::string found, ProbeFilesystem(device));
  if (!found.empty()) {
    if (found != fs_type) {
      return absl::FailedPreconditionError(
          absl::StrCat(device, " holds ", found, ", not ", fs_type));
    }
    return false;
  }
  RETURN_IF_ERROR(MakeFilesystem(device, fs_type));
  RETURN_IF_ERROR(InjectedFailure("mkfs"));
  return true;
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
    return RunProgram({"resize2fs", device});
  }
  if (fs_type == "xfs") return RunProgram({"xfs_growfs", mount_point});
  return absl::InvalidArgumentError("grow " + device + ": unsupported fs_type " +
                                    fs_type);
}

namespace {

absl::StatusOr<uint64_t> DeviceBytes(const std::string& device) {
  UniqueFd fd(open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "open", device);
  // A regular file may stand in for a device (tests).
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "fstat", device);
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  uint64_t bytes = 0;
  if (ioctl(fd.get(), BLKGETSIZE64, &bytes) != 0) {
    return ErrnoStatus(errno, "BLKGETSIZE64", device);
  }
  return bytes;
}

// "Block count:" times "Block size:" of dumpe2fs -h.
absl::StatusOr<uint64_t> Ext4Bytes(const std::string& device) {
  const ProgramResult r =
      RunProgramFor({"dumpe2fs", "-h", device}, /*capture_out=*/true);
  if (r.exit_status != 0) {
    return absl::InternalError(absl::StrCat("dumpe2fs -h ", device,
                                            ": exit status ", r.exit_status,
                                            ": ", LastLine(r.err)));
  }
  uint64_t blocks = 0, block_size = 0;
  std::istringstream in(r.out);
  std::string line;
  auto field = [&line](std::string_view name, uint64_t& value) {
    if (line.rfind(name, 0) != 0) return;
    value = std::strtoull(line.c_str() + name.size(), nullptr, 10);
  };
  while (std::getline(in, line)) {
    field("Block count:", blocks);
    field("Block size:", block_size);
  }
  if (blocks == 0 || block_size == 0) {
    return absl::InternalError("dumpe2fs -h " + device +
                               ": no block count or block size");
  }
  return blocks * block_size;
}

}  // namespace

absl::StatusOr<bool> GrowUnmountedExt4(const std::string& device) {
  ASSIGN_OR_RETURN(const uint64_t device_bytes, DeviceBytes(device));
  ASSIGN_OR_RETURN(const uint64_t fs_bytes, Ext4Bytes(device));
  // Less than one 4 KiB block short: nothing resize2fs could add.
  if (fs_bytes + 4096 > device_bytes) return false;
  // resize2fs refuses an unmounted file system not checked since its last
  // mount; -p repairs only what is safe without asking (exit 1: fixed).
  const ProgramResult fsck = RunProgramFor({"e2fsck", "-f", "-p", device},
                                           /*capture_out=*/false);
  if (fsck.exit_status != 0 && fsck.exit_status != 1) {
    return absl::InternalError(absl::StrCat("e2fsck -f -p ", device,
                                            ": exit status ", fsck.exit_status,
                                            ": ", LastLine(fsck.err)));
  }
  RETURN_IF_ERROR(RunProgram({"resize2fs", device}));
  spdlog::info("grew ext4 on {} from {} to {} bytes (offline)", device, fs_bytes,
               device_bytes);
  return true;
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

namespace {

class FrozenMount final : public FrozenFilesystem {
 public:
  FrozenMount(UniqueFd fd, std::string path)
      : fd_(std::move(fd)), path_(std::move(path)) {}
  ~FrozenMount() override {
    if (absl::Status s = Thaw(); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
    }
  }
  absl::Status Thaw() override {
    if (!fd_.valid()) return absl::OkStatus();
    // A thaw that fails leaves the file system frozen (writers hang): it is
    // retried once before it is reported.
    int rc = ioctl(fd_.get(), FITHAW, 0);
    if (rc != 0 && errno != EINVAL) rc = ioctl(fd_.get(), FITHAW, 0);
    const int err = errno;
    fd_.reset();
    // EINVAL: not frozen (any more).
    if (rc != 0 && err != EINVAL) return ErrnoStatus(err, "FITHAW", path_);
    return absl::OkStatus();
  }

 private:
  UniqueFd fd_;
  const std::string path_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FrozenFilesystem>> FreezeFilesystem(
    const std::string& mount_point) {
  // FIFREEZE acts on the file system that holds the path: on a directory
  // that is not a mount point that would be its parent's (the node's root).
  ASSIGN_OR_RETURN(bool mounted, IsMountPoint(mount_point));
  if (!mounted) return std::unique_ptr<FrozenFilesystem>();
  UniqueFd fd(open(mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "open", mount_point);
  if (ioctl(fd.get(), FIFREEZE, 0) != 0) {
    return ErrnoStatus(errno, "FIFREEZE", mount_point);
  }
  return std::unique_ptr<FrozenFilesystem>(
      new FrozenMount(std::move(fd), mount_point));
}

}  // namespace sealvol::csi
