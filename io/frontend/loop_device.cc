#include "io/frontend/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace sealvol::io {
namespace {

constexpr int kLoopMajor = 7;

// /dev/loopN exists on devtmpfs; a container's static /dev may lack it.
// Sets `err` to the failing call's errno.
absl::StatusOr<UniqueFd> OpenLoopNode(int number, int& err) {
  const std::string path = absl::StrCat("/dev/loop", number);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd && errno == ENOENT) {
    if (::mknod(path.c_str(), S_IFBLK | 0660, makedev(kLoopMajor, number)) != 0 &&
        errno != EEXIST) {
      err = errno;
      return ErrnoStatus(err, "mknod", path);
    }
    fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  }
  if (!fd) {
    err = errno;
    return ErrnoStatus(err, "open", path);
  }
  return fd;
}

}  // namespace

absl::StatusOr<LoopDevice> LoopDevice::Attach(const std::string& file) {
  // O_DIRECT up front: the kernel then uses direct I/O from the first
  // request, and refuses here if the file cannot do it.
  UniqueFd backing(::open(file.c_str(), O_RDWR | O_CLOEXEC | O_DIRECT));
  if (!backing) return ErrnoStatus(errno, "open", file);
  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control) return ErrnoStatus(errno, "open", "/dev/loop-control");
  for (int attempt = 0; attempt < 20; ++attempt) {
    const int number = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (number < 0) {
      return ErrnoStatus(errno, "ioctl LOOP_CTL_GET_FREE", "/dev/loop-control");
    }
    int err = 0;
    auto opened = OpenLoopNode(number, err);
    if (!opened.ok()) {
      // ENXIO: the kernel is still adding or already removing that device
      // (GET_FREE races with other processes creating and removing loop
      // devices): ask for another.
      if (err == ENXIO) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      return opened.status();
    }
    UniqueFd fd = std::move(*opened);
    loop_config config{};
    config.fd = static_cast<uint32_t>(backing.get());
    config.block_size = 4096;
    config.info.lo_flags = LO_FLAGS_DIRECT_IO | LO_FLAGS_AUTOCLEAR;
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name),
                 file.c_str(), LO_NAME_SIZE - 1);
    if (::ioctl(fd.get(), LOOP_CONFIGURE, &config) != 0) {
      // Another process took this device between GET_FREE and CONFIGURE.
      if (errno == EBUSY) continue;
      return ErrnoStatus(errno, "ioctl LOOP_CONFIGURE",
                         absl::StrCat("/dev/loop", number, " <- ", file));
    }
    LoopDevice device;
    device.path_ = absl::StrCat("/dev/loop", number);
    device.fd_ = std::move(fd);
    loop_info64 info{};
    if (::ioctl(device.fd_.get(), LOOP_GET_STATUS64, &info) == 0 &&
        (info.lo_flags & LO_FLAGS_DIRECT_IO) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "loop ", device.path_, ": kernel refused direct I/O on ", file));
    }
    return device;
  }
  return absl::UnavailableError("loop: no free loop device after 20 tries");
}

LoopDevice& LoopDevice::operator=(LoopDevice&& other) noexcept {
  if (this != &other) {
    (void)Detach();
    path_ = std::move(other.path_);
    fd_ = std::move(other.fd_);
  }
  return *this;
}

LoopDevice::~LoopDevice() { (void)Detach(); }

absl::Status LoopDevice::Detach() {
  if (!fd_) return absl::OkStatus();
  absl::Status status;
  for (int attempt = 0; attempt < 50; ++attempt) {
    if (::ioctl(fd_.get(), LOOP_CLR_FD, 0) == 0 || errno == ENXIO) {
      status = absl::OkStatus();
      break;
    }
    status = ErrnoStatus(errno, "ioctl LOOP_CLR_FD", path_);
    if (errno != EBUSY) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  fd_.reset();
  return status;
}

absl::Status DetachLoopDevice(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ENXIO) return absl::OkStatus();
    return ErrnoStatus(errno, "open", path);
  }
  if (::ioctl(fd.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) {
    return ErrnoStatus(errno, "ioctl LOOP_CLR_FD", path);
  }
  return absl::OkStatus();
}

}  // namespace sealvol::io
