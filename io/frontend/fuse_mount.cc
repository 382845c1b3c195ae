#include "io/frontend/fuse_mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace sealvol::io {

absl::Status UnmountRetrying(const std::string& dir) {
  // A loop device that was just detached drops its file reference a moment
  // later, so EBUSY right after LOOP_CLR_FD is expected and short-lived.
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (::umount2(dir.c_str(), UMOUNT_NOFOLLOW) == 0) return absl::OkStatus();
    if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();  // Not mounted.
    if (errno != EBUSY) return ErrnoStatus(errno, "umount", dir);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (::umount2(dir.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
    return absl::OkStatus();
  }
  return ErrnoStatus(errno, "umount -l", dir);
}

absl::StatusOr<FuseMount> FuseMount::Create(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "mkdir", dir);
  ::chmod(dir.c_str(), 0700);
  FuseMount mount;
  mount.dir_ = dir;
  mount.fd_.reset(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!mount.fd_) return ErrnoStatus(errno, "open", "/dev/fuse");
  const std::string options =
      absl::StrCat("fd=", mount.fd_.get(),
                   ",rootmode=40000,user_id=0,group_id=0,default_permissions");
  if (::mount("sealvol", dir.c_str(), kFuseFsType,
              MS_NOSUID | MS_NODEV | MS_NOEXEC, options.c_str()) != 0) {
    return ErrnoStatus(errno, "mount fuse", dir);
  }
  mount.mounted_ = true;
  return mount;
}

FuseMount::FuseMount(FuseMount&& other) noexcept
    : dir_(std::move(other.dir_)),
      fd_(std::move(other.fd_)),
      mounted_(std::exchange(other.mounted_, false)) {}

FuseMount& FuseMount::operator=(FuseMount&& other) noexcept {
  if (this != &other) {
    (void)Unmount();
    dir_ = std::move(other.dir_);
    fd_ = std::move(other.fd_);
    mounted_ = std::exchange(other.mounted_, false);
  }
  return *this;
}

FuseMount::~FuseMount() { (void)Unmount(); }

absl::Status FuseMount::Unmount() {
  if (!mounted_) return absl::OkStatus();
  mounted_ = false;
  RETURN_IF_ERROR(UnmountRetrying(dir_));
  ::rmdir(dir_.c_str());
  return absl::OkStatus();
}

}  // namespace sealvol::io
