#include "csi/fuse_data_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>
#include <vector>

#include "base/status_macros.h"
#include "csi/mounter.h"
#include "io/frontend/fuse_mount.h"
#include "io/frontend/fuse_server.h"
#include "io/frontend/loop_device.h"
#include "io/sealed_volume.h"
#include "spdlog/spdlog.h"

namespace sealvol::csi {

namespace {
constexpr char kExportName[] = "volume";
}  // namespace

// One served volume; members are torn down in the reverse order of setup.
struct FuseDataPath::Served {
  std::unique_ptr<io::SealedVolume> volume;
  io::FuseMount mount;
  std::unique_ptr<io::FuseServer> server;
  io::LoopDevice loop;
  std::string file;  // The exported plaintext file in the private mount.

  // Best effort, in order: loop device, FUSE mount, server, engine. Returns
  // the first failure but runs every step.
  absl::Status TearDown() {
    absl::Status first;
    auto note = [&first](absl::Status s) {
      if (first.ok() && !s.ok()) first = std::move(s);
    };
    if (loop.attached()) note(loop.Detach());
    if (mount.mounted()) note(mount.Unmount());
    if (server) {
      server->Stop();
      server.reset();
    }
    if (volume) {
      note(volume->Close());  // Flushes and zeroizes the engine's keys.
      volume.reset();
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
      return it->second->loop.path();
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

  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(served->mount, io::FuseMount::Create(options.work_dir));
    io::FuseServerOptions server_options;
    server_options.file_name = kExportName;
    io::SealedVolume* volume = served->volume.get();
    server_options.grow = [volume](uint64_t size) { return volume->Grow(size); };
    ASSIGN_OR_RETURN(served->server,
                     io::FuseServer::Start(served->mount.TakeFd(), volume,
                                           server_options));
    served->file = options.work_dir + "/" + kExportName;
    ASSIGN_OR_RETURN(served->loop, io::LoopDevice::Attach(served->file));
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    // Leave nothing behind: no loop device, no mount, no open engine.
    served->TearDown().IgnoreError();
    return status;
  }
  const std::string device = served->loop.path();
  spdlog::info("data path {}: served on {} ({} transport)", options.volume_id,
               device, io::FuseTransportName(served->server->transport()));
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
  return it->second->loop.path();
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
  if (truncate(served->file.c_str(), static_cast<off_t>(new_size_bytes)) != 0) {
    return ErrnoStatus(errno, "grow (truncate)", served->file);
  }
  return RefreshLoopCapacity(served->loop.path());
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
  if (served->server->disconnected()) {
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
