// FuseMount is one FUSE mount(2) of a private directory together with the
// /dev/fuse fd that serves it; our own mount code, no fusermount. Unmounts on
// destruction. Thread-compatible.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace sealvol::io {

// The file system type our FUSE mounts carry in /proc/self/mountinfo.
inline constexpr char kFuseFsType[] = "fuse.sealvol";

class FuseMount {
 public:
  // Creates `dir` (mode 0700) if needed, opens /dev/fuse and mounts it on
  // `dir` for root only (no allow_other: the plaintext file is private).
  static absl::StatusOr<FuseMount> Create(const std::string& dir);

  FuseMount() = default;
  FuseMount(FuseMount&& other) noexcept;
  FuseMount& operator=(FuseMount&& other) noexcept;
  ~FuseMount();

  const std::string& dir() const { return dir_; }
  // Hands the connection's fd to the server (once).
  UniqueFd TakeFd() { return std::move(fd_); }
  bool mounted() const { return mounted_; }

  // Unmounts (retrying while the loop device lets go of the file, then
  // detaching lazily) and removes the directory.
  absl::Status Unmount();

 private:
  std::string dir_;
  UniqueFd fd_;
  bool mounted_ = false;
};

// Unmounts `dir` if something is mounted there: a normal unmount first,
// retried for a short while on EBUSY, then a lazy (MNT_DETACH) one.
absl::Status UnmountRetrying(const std::string& dir);

}  // namespace sealvol::io
