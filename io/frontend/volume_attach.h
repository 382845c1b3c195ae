// VolumeAttachment exposes a VolumeIo to the kernel as a block device: FUSE
// mount -> FUSE server -> loop device (direct I/O). What goes on the device
// (a file system and its mount) is the caller's: csi/filesystem.h. Each step
// has its undo; a failure at any step undoes the steps before it, so nothing
// is left behind. Thread-compatible: one control thread.
//
// Failure injection for tests (base/injected_fault.h): with
// SEALVOL_FAIL_AFTER_STEP=<step> in the environment, Attach fails right
// after that step ("fuse-mount", "fuse-serve", "loop");
// SEALVOL_KILL_AFTER_STEP=<step> kills the process (SIGKILL) right after
// that step, of an attach or of a detach ("loop-detach", "fuse-unmount",
// "server-stop").
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/frontend/fuse_mount.h"
#include "io/frontend/fuse_server.h"
#include "io/frontend/loop_device.h"
#include "io/volume_io.h"

namespace sealvol::io {

struct AttachOptions {
  std::string fuse_dir;  // Private directory for the FUSE mount.
  FuseServerOptions server;
};

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

  // Detaches the loop device, unmounts the FUSE directory and stops the
  // server, in that order; whatever was mounted on the device must be gone.
  // Idempotent. The first error is returned; later steps still run.
  absl::Status Detach();

  const std::string& loop_device() const { return loop_.path(); }
  const std::string& backing_file() const { return file_; }
  FuseServer& server() { return *server_; }

 private:
  VolumeAttachment() = default;
  absl::Status Build(VolumeIo* volume, const AttachOptions& options);

  AttachOptions options_;
  FuseMount fuse_mount_;
  std::unique_ptr<FuseServer> server_;
  std::string file_;
  LoopDevice loop_;
  bool server_stopped_ = false;
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

}  // namespace sealvol::io
