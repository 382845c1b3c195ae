#include "csi/fuse_data_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>
#include <vector>

#include "base/status_macros.h"
#include "csi/mounter.h"
#include "io/frontend/volume_attach.h"
#include "io/sealed_volume.h"
#include "spdlog/spdlog.h"

namespace sealvol::csi {

namespace {
constexpr char kExportName[] = "volume";
}  // namespace

// One served volume: the engine and the front-end's attachment of it (FUSE
// mount, FUSE server, loop device) in block mode; the node mounts above.
struct FuseDataPath::Served {
  std::unique_ptr<io::SealedVolume> volume;
  std::unique_ptr<io::VolumeAttachment> attachment;

  // Best effort, in order: the attachment (loop device, FUSE mount, server),
  // then the engine. Returns the first failure but runs every step.
  absl::Status TearDown() {
    absl::Status first;
    if (attachment) {
      first = attachment->Detach();
      attachment.reset();
    }
    if (volume) {
      absl::Status closed = volume->Close();  // Flushes, zeroizes the keys.
      if (first.ok()) first = closed;
      volume.reset();
      io::InjectedCrash("engine-close");
    }
    return first;
  }
};

FuseDataPath::FuseDataPath() = default;

FuseDataPath::~FuseDataPath() {
  std::map<std::string, std::shared_ptr<Served>> served;
  {
    absl::MutexLock lock(&mutex_);
    served.swap(served_);
  }
  for (auto& [id, s] : served) {
    absl::Status status = s->TearDown();
    if (!status.ok()) {
      spdlog::error("data path {}: teardown: {}", id, std::string(status.message()));
    }
  }
}

absl::StatusOr<std::string> FuseDataPath::Attach(const AttachOptions& options,
                                                 const crypto::SecretBytes& dek) {
  {
    absl::MutexLock lock(&mutex_);
    if (auto it = served_.find(options.volume_id); it != served_.end()) {
      return it->second->attachment->loop_device();
    }
  }
  auto served = std::make_shared<Served>();
  struct stat st {};
  const bool exists = stat(options.image_path.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) {
    return ErrnoStatus(errno, "stat", options.image_path);
  }
  if (exists) {
    io::OpenOptions open;
    open.path = options.image_path;
    open.read_only = options.read_only;
    ASSIGN_OR_RETURN(served->volume, io::SealedVolume::Open(open, dek));
    if (served->volume->size_bytes() < options.size_bytes) {
      // The volume grew while it was not served.
      absl::Status grown = served->volume->Grow(options.size_bytes);
      if (!grown.ok()) {
        served->TearDown().IgnoreError();
        return grown;
      }
    }
  } else {
    io::FormatOptions format;
    format.path = options.image_path;
    format.size_bytes = options.size_bytes;
    ASSIGN_OR_RETURN(format.volume_id, io::ParseVolumeId(options.volume_id));
    ASSIGN_OR_RETURN(served->volume, io::SealedVolume::Format(format, dek));
    spdlog::info("data path {}: formatted {} ({} bytes)", options.volume_id,
                 options.image_path, options.size_bytes);
  }

  io::InjectedCrash("engine");

  io::AttachOptions attach;
  attach.fuse_dir = options.work_dir;
  attach.block = true;  // The node makes and mounts the filesystem itself.
  attach.server.file_name = kExportName;
  io::SealedVolume* volume = served->volume.get();
  attach.server.grow = [volume](uint64_t size) { return volume->Grow(size); };
  auto attachment = io::VolumeAttachment::Attach(volume, attach);
  if (!attachment.ok()) {
    // The attachment undid its own steps; close the engine too.
    served->TearDown().IgnoreError();
    return attachment.status();
  }
  served->attachment = std::move(*attachment);
  const std::string device = served->attachment->loop_device();
  spdlog::info("data path {}: served on {} ({} transport)", options.volume_id,
               device, io::FuseTransportName(served->attachment->server().transport()));
  absl::MutexLock lock(&mutex_);
  served_[options.volume_id] = std::move(served);
  return device;
}

absl::StatusOr<std::string> FuseDataPath::Device(const std::string& volume_id) {
  absl::MutexLock lock(&mutex_);
  auto it = served_.find(volume_id);
  if (it == served_.end()) {
    return absl::NotFoundError("volume " + volume_id + " is not attached");
  }
  return it->second->attachment->loop_device();
}

absl::Status FuseDataPath::Grow(const std::string& volume_id,
                                uint64_t new_size_bytes) {
  std::shared_ptr<Served> served;
  {
    absl::MutexLock lock(&mutex_);
    auto it = served_.find(volume_id);
    if (it == served_.end()) {
      return absl::NotFoundError("volume " + volume_id + " is not attached");
    }
    served = it->second;
  }
  // Growing through the exported file keeps the kernel's view of its size
  // in step: SETATTR reaches the server, which grows the engine.
  const std::string& file = served->attachment->backing_file();
  if (truncate(file.c_str(), static_cast<off_t>(new_size_bytes)) != 0) {
    return ErrnoStatus(errno, "grow (truncate)", file);
  }
  return RefreshLoopCapacity(served->attachment->loop_device());
}

absl::Status FuseDataPath::Health(const std::string& volume_id) {
  std::shared_ptr<Served> served;
  {
    absl::MutexLock lock(&mutex_);
    auto it = served_.find(volume_id);
    if (it == served_.end()) {
      return absl::NotFoundError("volume " + volume_id + " is not attached");
    }
    served = it->second;
  }
  if (served->volume->failed()) {
    return absl::DataLossError("the backing store failed; the volume is read-only");
  }
  if (served->attachment->server().disconnected()) {
    return absl::UnavailableError("the FUSE connection ended");
  }
  return absl::OkStatus();
}

absl::Status FuseDataPath::Detach(const std::string& volume_id) {
  std::shared_ptr<Served> served;
  {
    absl::MutexLock lock(&mutex_);
    auto it = served_.find(volume_id);
    if (it == served_.end()) return absl::OkStatus();
    served = std::move(it->second);
    served_.erase(it);
  }
  absl::Status status = served->TearDown();
  spdlog::info("data path {}: detached{}", volume_id,
               status.ok() ? "" : ": " + std::string(status.message()));
  return status;
}

}  // namespace sealvol::csi
