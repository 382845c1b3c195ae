// LoopDevice attaches a file to a free loop device with LOOP_CONFIGURE
// (direct I/O, 4096-byte logical blocks, autoclear) and detaches it on
// destruction. Thread-compatible.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace sealvol::io {

class LoopDevice {
 public:
  // Fails with the errno status naming the step (loop-control, configure).
  // FailedPrecondition when the kernel refused direct I/O on `file`.
  static absl::StatusOr<LoopDevice> Attach(const std::string& file);

  LoopDevice() = default;
  LoopDevice(LoopDevice&& other) noexcept = default;
  LoopDevice& operator=(LoopDevice&& other) noexcept;
  ~LoopDevice();

  const std::string& path() const { return path_; }  // "/dev/loopN"
  bool attached() const { return fd_.valid(); }

  // LOOP_CLR_FD. While something (a mounted file system) still holds the
  // device open, autoclear finishes the detach at its last close.
  absl::Status Detach();

 private:
  std::string path_;
  UniqueFd fd_;
};

// Detaches the loop device at `path` if it is bound to a file (cleanup of a
// crashed server's device). OK when it is already free.
absl::Status DetachLoopDevice(const std::string& path);

}  // namespace sealvol::io
