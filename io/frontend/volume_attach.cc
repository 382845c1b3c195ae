#include "io/frontend/volume_attach.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/injected_fault.h"
#include "base/mount_table.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "spdlog/spdlog.h"

namespace sealvol::io {

namespace {

// The FUSE connection number (the minor of the mount's anonymous device,
// /sys/fs/fuse/connections/N) of our FUSE mount at `dir`, or -1.
int FuseConnectionAt(const std::string& dir) {
  auto table = ReadMountTable();
  if (!table.ok()) return -1;
  int found = -1;
  for (const MountEntry& entry : *table) {
    if (entry.mount_point != dir || entry.fs_type != kFuseFsType ||
        entry.major != 0) {
      continue;
    }
    found = static_cast<int>(entry.minor);  // The top one wins.
  }
  return found;
}

}  // namespace

absl::Status AbortFuseConnection(const std::string& fuse_dir) {
  const int connection = FuseConnectionAt(fuse_dir);
  if (connection < 0) return absl::OkStatus();
  const std::string abort =
      absl::StrCat("/sys/fs/fuse/connections/", connection, "/abort");
  UniqueFd fd(::open(abort.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    // No fusectl mounted: the kernel aborted the connection already when
    // the dead server's last /dev/fuse fd closed.
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus(errno, "open", abort);
  }
  if (::write(fd.get(), "1", 1) != 1) return ErrnoStatus(errno, "write", abort);
  spdlog::info("aborted FUSE connection {} of {}", connection, fuse_dir);
  return absl::OkStatus();
}

absl::Status ClearStaleAttachment(const std::string& fuse_dir) {
  absl::Status first;
  auto keep = [&first](absl::Status s) {
    if (first.ok() && !s.ok()) first = s;
  };
  keep(AbortFuseConnection(fuse_dir));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/block", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("loop", 0) != 0) continue;
    std::ifstream backing(entry.path() / "loop" / "backing_file");
    std::string file;
    if (!std::getline(backing, file)) continue;  // Not bound.
    if (file.rfind(fuse_dir + "/", 0) != 0) continue;
    keep(DetachLoopDevice("/dev/" + name));
    spdlog::info("detached stale loop device /dev/{} ({})", name, file);
  }
  keep(UnmountRetrying(fuse_dir));
  ::rmdir(fuse_dir.c_str());
  return first;
}

absl::StatusOr<FuseServerOptions> ServingOptions(FuseServerOptions requested) {
  FuseServerOptions options = std::move(requested);
  if (const char* v = std::getenv("SEALVOL_FUSE_MAX_BACKGROUND")) {
    options.max_background = static_cast<uint16_t>(std::atoi(v));
    options.congestion_threshold =
        static_cast<uint16_t>(options.max_background * 3 / 4);
  }
  if (const char* v = std::getenv("SEALVOL_FUSE_ASYNC_DIO")) {
    options.async_dio = std::string(v) != "0";
  }
  if (options.transport == FuseTransport::kDev) return options;
  absl::Status uring = EnableFuseOverIoUring();
  if (!uring.ok()) {
    if (options.transport == FuseTransport::kUring) return uring;
    spdlog::warn("attach: {}; serving over /dev/fuse", uring.ToString());
  }
  return options;
}

absl::StatusOr<std::unique_ptr<VolumeAttachment>> VolumeAttachment::Attach(
    VolumeIo* volume, const AttachOptions& options) {
  std::unique_ptr<VolumeAttachment> attachment(new VolumeAttachment());
  absl::Status status = attachment->Build(volume, options);
  if (!status.ok()) {
    absl::Status undo = attachment->Detach();
    if (!undo.ok()) {
      spdlog::error("attach: undo after failure: {}", undo.ToString());
    }
    return status;
  }
  return attachment;
}

absl::Status VolumeAttachment::Build(VolumeIo* volume,
                                     const AttachOptions& options) {
  options_ = options;
  ASSIGN_OR_RETURN(options_.server, ServingOptions(options.server));

  ASSIGN_OR_RETURN(fuse_mount_, FuseMount::Create(options.fuse_dir));
  RETURN_IF_ERROR(InjectedFailure("fuse-mount"));

  ASSIGN_OR_RETURN(server_, FuseServer::Start(fuse_mount_.TakeFd(), volume,
                                              options_.server));
  file_ = absl::StrCat(options.fuse_dir, "/", options.server.file_name);
  RETURN_IF_ERROR(InjectedFailure("fuse-serve"));

  ASSIGN_OR_RETURN(loop_, LoopDevice::Attach(file_));
  RETURN_IF_ERROR(InjectedFailure("loop"));
  return absl::OkStatus();
}

absl::Status VolumeAttachment::Detach() {
  absl::Status first;
  auto keep = [&first](absl::Status s) {
    if (!s.ok()) {
      spdlog::error("detach: {}", s.ToString());
      if (first.ok()) first = s;
    }
  };
  if (loop_.attached()) {
    keep(loop_.Detach());
    InjectedCrash("loop-detach");
  }
  if (fuse_mount_.mounted()) {
    keep(fuse_mount_.Unmount());
    InjectedCrash("fuse-unmount");
  }
  if (server_ && !server_stopped_) {
    server_->Stop();
    server_stopped_ = true;
    InjectedCrash("server-stop");
  }
  return first;
}

VolumeAttachment::~VolumeAttachment() { (void)Detach(); }

}  // namespace sealvol::io
