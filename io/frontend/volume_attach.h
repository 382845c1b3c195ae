// VolumeAttachment exposes a VolumeIo to the kernel as a block device and,
// unless in block mode, a mounted file system: FUSE mount -> FUSE server ->
// loop device (direct I/O) -> mkfs on first use -> mount. Each step has its
// undo; a failure at any step undoes the steps before it, so nothing is left
// behind. Thread-compatible: one control thread.
//
// Failure injection for tests: with SEALVOL_FAIL_AFTER_STEP=<step> in the
// environment, Attach fails right after that step ("fuse-mount",
// "fuse-serve", "loop", "mkfs", "mount"); see InjectedFailure(). Crash
// injection: SEALVOL_KILL_AFTER_STEP=<step> kills the process (SIGKILL) right
// after that step, of an attach or of a detach ("unmount", "loop-detach",
// "fuse-unmount", "server-stop"); see InjectedCrash().
#pragma once

#include <memory>
#include <vector>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/frontend/fuse_mount.h"
#include "io/frontend/fuse_server.h"
#include "io/frontend/loop_device.h"
#include "io/volume_io.h"

namespace sealvol::io {

struct AttachOptions {
  std::string fuse_dir;      // Private directory for the FUSE mount.
  std::string mountpoint;    // Where the file system goes (not in block mode).
  std::string fs = "ext4";   // "ext4" or "xfs".
  bool block = false;        // No file system: hand out the loop device.
  FuseServerOptions server;
};

// Returns an Internal error naming `step` when SEALVOL_FAIL_AFTER_STEP names
// it, OK otherwise. Used between the steps of an attach (here and in the
// CLI's own steps around it).
absl::Status InjectedFailure(const std::string& step);

// TEST HOOK. Raises SIGKILL in this process when SEALVOL_KILL_AFTER_STEP
// names `step`: a kill -9 that lands at an exact point of an attach or a
// detach, for the crash-recovery tests (tests/csi/node_crash_test.sh).
// InjectedFailure() calls it first. Does nothing when the variable is unset.
void InjectedCrash(const std::string& step);

// The transport and INIT settings every attachment serves with (the CLI's
// `sealvol open` and the node's publish alike; Attach() calls it): unless
// `requested.transport` is kDev, turns on FUSE over io_uring (see
// EnableFuseOverIoUring()) before the mount whose INIT should offer it, and
// applies the benchmark knobs of docs/frontend.md from the environment
// (SEALVOL_FUSE_MAX_BACKGROUND, SEALVOL_FUSE_ASYNC_DIO). When io_uring
// cannot be turned on, kUring fails with that error and kAuto goes on (the
// server then falls back to /dev/fuse and says why).
absl::StatusOr<FuseServerOptions> ServingOptions(FuseServerOptions requested);

class VolumeAttachment {
 public:
  // `volume` must outlive the attachment.
  static absl::StatusOr<std::unique_ptr<VolumeAttachment>> Attach(
      VolumeIo* volume, const AttachOptions& options);

  ~VolumeAttachment();  // Detach(), errors logged.

  // Unmounts the file system, detaches the loop device, unmounts the FUSE
  // directory and stops the server, in that order. Idempotent. The first
  // error is returned; later steps still run.
  absl::Status Detach();

  const std::string& loop_device() const { return loop_.path(); }
  const std::string& backing_file() const { return file_; }
  FuseServer& server() { return *server_; }
  bool formatted() const { return formatted_; }  // mkfs ran in this attach.

 private:
  VolumeAttachment() = default;
  absl::Status Build(VolumeIo* volume, const AttachOptions& options);

  AttachOptions options_;
  FuseMount fuse_mount_;
  std::unique_ptr<FuseServer> server_;
  std::string file_;
  LoopDevice loop_;
  bool fs_mounted_ = false;
  bool server_stopped_ = false;
  bool formatted_ = false;
};

// Clean-up of an attachment whose serving process died (kill -9), given its
// private FUSE directory: aborts the FUSE connection mounted there (through
// /sys/fs/fuse/connections/N/abort, when fusectl is mounted), so nothing
// waits on the dead server. OK when nothing is mounted there.
absl::Status AbortFuseConnection(const std::string& fuse_dir);

// Then, once the mounts above the device are gone: detaches every loop
// device whose backing file lies in `fuse_dir` (deferred by the kernel to
// the device's last close), unmounts the FUSE directory (lazily if it stays
// busy) and removes it. Safe on a partly cleaned state; OK when nothing is
// left.
absl::Status ClearStaleAttachment(const std::string& fuse_dir);

// Runs a program with arguments and waits; OK on exit status 0, otherwise
// an error with its exit status and the last line it wrote to stderr.
absl::Status RunProgram(const std::vector<std::string>& argv);

// The file system type blkid finds on `device`, or "" when it finds none.
absl::StatusOr<std::string> ProbeFilesystem(const std::string& device);

}  // namespace sealvol::io
