#include "csi/fuse_data_path.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>
#include <vector>

#include "base/durable_file.h"
#include "base/error_kind.h"
#include "base/injected_fault.h"
#include "base/status_macros.h"
#include "csi/mounter.h"
#include "io/frontend/volume_attach.h"
#include "io/sealed_volume.h"
#include "kms/broker/refusal.h"
#include "spdlog/spdlog.h"

namespace sealvol::csi {

namespace {
constexpr char kExportName[] = "volume";
// How long a write hold waits for the writes in flight (DeadlineExceeded
// after it): a healthy engine ends them within milliseconds.
constexpr std::chrono::seconds kWriteHoldTimeout{10};

std::string BaseName(const std::string& path) {
  return path.substr(path.find_last_of('/') + 1);
}

// Unlinks `path` durably; missing is fine.
absl::Status RemoveDurably(const std::string& path) {
  absl::Status removed = RemoveFileDurably(ParentDirectory(path), BaseName(path));
  return absl::IsNotFound(removed) ? absl::OkStatus() : removed;
}

// What lies at a path that should hold a sealvol image.
struct FoundImage {
  bool exists = false;
  bool empty = false;     // Zero bytes.
  std::string format_id;  // Its format id when the header reads.
  absl::Status unreadable;  // Why the header does not read, otherwise.
};

absl::StatusOr<FoundImage> Inspect(const std::string& path) {
  FoundImage found;
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return found;
    return ErrnoStatus(errno, "stat", path);
  }
  found.exists = true;
  found.empty = st.st_size == 0;
  if (found.empty) return found;
  auto header = io::ReadHeader(path);
  if (header.ok()) {
    found.format_id = io::FormatIdString(header->format_id);
  } else {
    found.unreadable = header.status();
  }
  return found;
}

absl::StatusOr<std::string> FreshFormatId() {
  io::FormatId id{};
  if (RAND_bytes(id.data(), static_cast<int>(id.size())) != 1) {
    return absl::InternalError("RAND_bytes failed drawing a format id");
  }
  return io::FormatIdString(id);
}

constexpr char kRecoveryAdvice[] =
    "restore the image from a backup or delete the volume; see "
    "docs/operations.md (\"publish fails: image missing or replaced\")";

// The registry says the volume was formatted, but `image` is `what`: no new
// format under the same key. The broker audits the refusal of a claim for
// `claimed_id` (the id found, or a fresh one for an image that has none).
absl::Status RefuseImage(const AttachOptions& options, const std::string& what,
                         const absl::StatusOr<std::string>& claimed_id) {
  std::string note;
  if (claimed_id.ok() && options.claim_format) {
    absl::Status claim = options.claim_format(*claimed_id, std::nullopt);
    if (claim.ok()) {
      note = "; the registry unexpectedly accepted format id " + *claimed_id;
    } else if (broker::RefusalReason(claim) != "already_formatted") {
      note = "; the refusal could not be recorded with the broker: " +
             std::string(claim.message());
    }
  }
  spdlog::warn("data path {}: refusing {}: {}", options.volume_id,
               options.image_path, what);
  return absl::FailedPreconditionError(
      "volume " + options.volume_id + ": the registry says its image was "
      "formatted (format id " + options.registry_format_id + "), but " +
      options.image_path + " " + what + "; it is not formatted again under "
      "the same key: " + kRecoveryAdvice + note);
}

// Opens the image against the state the registry expects (`expected`),
// committing the session's start through the broker before the engine
// accepts a write. A rolled-back image is reported to the broker (audited)
// and refused with the volume named; nothing is left open.
absl::StatusOr<std::unique_ptr<io::SealedVolume>> OpenImage(
    const AttachOptions& options, const crypto::SecretBytes& dek,
    const std::optional<io::VolumeState>& expected) {
  io::OpenOptions open;
  open.path = options.image_path;
  open.read_only = options.read_only;
  open.expected_state = expected;
  open.min_epoch = options.min_epoch;
  if (!options.read_only) {
    if (!options.commit_state) {
      return absl::InternalError("data path: no way to commit the volume state");
    }
    const bool accept = options.rollback_accepted;
    open.commit_open = [&options, accept](const io::VolumeState& state) {
      return options.commit_state(state, accept);
    };
  }
  auto opened = io::SealedVolume::Open(open, dek);
  if (GetErrorKind(opened.status()) == ErrorKind::kRolledBack) {
    const std::string detail(opened.status().message());
    std::string note;
    if (options.report_rollback) {
      if (absl::Status reported = options.report_rollback(detail);
          !reported.ok()) {
        note = "; the refusal could not be reported to the broker: " +
               std::string(reported.message());
      }
    }
    spdlog::warn("data path {}: refusing {}: {}", options.volume_id,
                 options.image_path, detail);
    return SetErrorKind(
        absl::FailedPreconditionError(
            "volume " + options.volume_id + ": " + detail +
            "; nothing was mounted. If the image was restored on purpose, "
            "see docs/operations.md (\"publish fails: rolled back\")" + note),
        ErrorKind::kRolledBack);
  }
  if (!opened.ok()) return opened.status();
  std::unique_ptr<io::SealedVolume> volume = *std::move(opened);
  if (volume->size_bytes() < options.size_bytes) {
    // The volume grew while it was not served.
    absl::Status grown = volume->Grow(options.size_bytes);
    if (!grown.ok()) {
      volume->Close().IgnoreError();
      return grown;
    }
  }
  return volume;
}

// First format: into IMAGE.formatting, closed and synced; claimed with the
// broker; renamed into place. A crash after any step leaves either no temp
// file, an unclaimed one (deleted by the retry) or a claimed one (renamed
// by the retry).
absl::StatusOr<std::unique_ptr<io::SealedVolume>> FormatFirst(
    const AttachOptions& options, const crypto::SecretBytes& dek) {
  const std::string temp = options.image_path + kFormattingSuffix;
  io::FormatOptions format;
  format.path = temp;
  format.size_bytes = options.size_bytes;
  ASSIGN_OR_RETURN(format.volume_id, io::ParseVolumeId(options.volume_id));
  std::string format_id;
  io::VolumeState first_state;
  {
    auto volume = io::SealedVolume::Format(format, dek);
    if (!volume.ok()) {
      RemoveDurably(temp).IgnoreError();
      return volume.status();
    }
    format_id = io::FormatIdString((*volume)->format_id());
    absl::Status closed = (*volume)->Close();
    // The closed new image's state: recorded with the claim, so that the
    // image is checked from its very first open.
    first_state = (*volume)->state();
    if (closed.ok()) closed = SyncFile(temp);
    if (!closed.ok()) {
      RemoveDurably(temp).IgnoreError();
      return closed;
    }
  }
  InjectedCrash("format");
  if (!options.claim_format) {
    RemoveDurably(temp).IgnoreError();
    return absl::InternalError("data path: no way to claim a format");
  }
  absl::Status claimed = options.claim_format(format_id, first_state);
  if (broker::RefusalReason(claimed) == "already_formatted") {
    // Another format of this volume was claimed meanwhile.
    RemoveDurably(temp).IgnoreError();
    return absl::FailedPreconditionError(
        "volume " + options.volume_id + ": a format of its image was "
        "recorded with the registry meanwhile; " + options.image_path +
        " is not formatted again under the same key: " + kRecoveryAdvice);
  }
  // Any other failure may have reached the registry (a lost answer): the
  // temp file stays, and the retry renames it if the claim was recorded.
  RETURN_IF_ERROR(claimed);
  InjectedCrash("claim");
  RETURN_IF_ERROR(ReplaceFileDurably(temp, options.image_path));
  spdlog::info("data path {}: formatted {} ({} bytes, format id {}, epoch {})",
               options.volume_id, options.image_path, options.size_bytes,
               format_id, first_state.epoch);
  return OpenImage(options, dek, first_state);
}

absl::StatusOr<std::unique_ptr<io::SealedVolume>> OpenOrFormat(
    const AttachOptions& options, const crypto::SecretBytes& dek) {
  const std::string& image = options.image_path;
  const std::string temp = image + kFormattingSuffix;
  const std::string& registry = options.registry_format_id;
  ASSIGN_OR_RETURN(FoundImage found, Inspect(image));
  if (!found.exists) {
    ASSIGN_OR_RETURN(FoundImage pending, Inspect(temp));
    if (registry.empty()) {
      if (pending.exists) {
        spdlog::info("data path {}: discarding {} (a first format that was "
                     "never claimed)", options.volume_id, temp);
        RETURN_IF_ERROR(RemoveDurably(temp));
      }
      return FormatFirst(options, dek);
    }
    if (pending.exists && pending.format_id == registry) {
      spdlog::info("data path {}: completing the first format of {} (claimed "
                   "as {} before an interruption)", options.volume_id, image,
                   registry);
      RETURN_IF_ERROR(ReplaceFileDurably(temp, image));
      return OpenImage(options, dek, options.expected_state);
    }
    RETURN_IF_ERROR(RemoveDurably(temp));
    return RefuseImage(options, "is missing", FreshFormatId());
  }
  if (registry.empty()) {
    // An image formatted before format claims existed: adopt it.
    if (found.empty) {
      return absl::FailedPreconditionError(
          "volume " + options.volume_id + ": " + image + " is empty and the "
          "registry has no format for it; move it away to format the volume "
          "afresh, or " + kRecoveryAdvice);
    }
    if (!found.unreadable.ok()) {
      return absl::FailedPreconditionError(
          "volume " + options.volume_id + ": " + image + ": " +
          std::string(found.unreadable.message()));
    }
    absl::Status adopted = options.claim_format
                               ? options.claim_format(found.format_id, std::nullopt)
                               : absl::InternalError("no way to claim a format");
    if (broker::RefusalReason(adopted) == "already_formatted") {
      return absl::FailedPreconditionError(
          "volume " + options.volume_id + ": " + image + " holds format id " +
          found.format_id + ", and the registry recorded another format "
          "meanwhile: " + kRecoveryAdvice);
    }
    RETURN_IF_ERROR(adopted);
    spdlog::info("data path {}: adopted {} (format id {}) into the registry",
                 options.volume_id, image, found.format_id);
  } else if (found.empty) {
    return RefuseImage(options, "is empty", FreshFormatId());
  } else if (!found.unreadable.ok()) {
    return RefuseImage(options,
                       "is not a sealvol image (" +
                           std::string(found.unreadable.message()) + ")",
                       FreshFormatId());
  } else if (found.format_id != registry) {
    return RefuseImage(options,
                       "holds format id " + found.format_id +
                           " (the image was replaced)",
                       found.format_id);
  }
  // A leftover temp file can never be put in place once the image exists.
  RETURN_IF_ERROR(RemoveDurably(temp));
  return OpenImage(options, dek, options.expected_state);
}

}  // namespace

// One served volume: the engine and the front-end's attachment of it (FUSE
// mount, FUSE server, loop device) in block mode; the node mounts above.
struct FuseDataPath::Served {
  std::string volume_id;
  std::unique_ptr<io::SealedVolume> volume;
  std::unique_ptr<io::VolumeAttachment> attachment;
  // Opened read-only: nothing writes, so a write hold holds nothing.
  bool read_only = false;
  // Commits the closed state after the engine's close (writable volumes).
  std::function<absl::Status(const io::VolumeState&, bool)> commit_state;

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
      const io::VolumeState state = volume->state();
      volume.reset();
      InjectedCrash("engine-close");
      if (closed.ok() && commit_state) {
        // Not a failure of the teardown: the registry then still says the
        // session is open, and the next open accepts the image at its
        // epoch (docs/security.md, "Rollback").
        absl::Status committed = commit_state(state, /*accept_rollback=*/false);
        if (committed.ok()) {
          spdlog::info("data path {}: committed the closed state (epoch {})",
                       volume_id, state.epoch);
        } else {
          spdlog::warn("data path {}: closed, but its state (epoch {}) was "
                       "not committed: {}", volume_id, state.epoch,
                       std::string(committed.message()));
        }
      }
    }
    return first;
  }
};

FuseDataPath::FuseDataPath() = default;

FuseDataPath::~FuseDataPath() {
  std::map<std::string, std::shared_ptr<Served>> served;
  {
    MutexLock lock(&mutex_);
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
    MutexLock lock(&mutex_);
    if (auto it = served_.find(options.volume_id); it != served_.end()) {
      return it->second->attachment->loop_device();
    }
  }
  auto served = std::make_shared<Served>();
  served->volume_id = options.volume_id;
  served->read_only = options.read_only;
  ASSIGN_OR_RETURN(served->volume, OpenOrFormat(options, dek));
  if (!options.read_only) served->commit_state = options.commit_state;

  if (absl::Status injected = InjectedFailure("engine"); !injected.ok()) {
    served->TearDown().IgnoreError();
    return injected;
  }

  io::AttachOptions attach;
  attach.fuse_dir = options.work_dir;
  attach.server.file_name = kExportName;
  attach.server.transport = options.transport;
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
  MutexLock lock(&mutex_);
  served_[options.volume_id] = std::move(served);
  return device;
}

absl::StatusOr<std::shared_ptr<FuseDataPath::Served>> FuseDataPath::Find(
    const std::string& volume_id) {
  MutexLock lock(&mutex_);
  auto it = served_.find(volume_id);
  if (it == served_.end()) {
    return absl::NotFoundError("volume " + volume_id + " is not attached");
  }
  return it->second;
}

namespace {

// The engine's hold, with the served volume kept alive under it. The node
// takes it under the volume's lock, so no Detach runs while it is held.
class EngineWriteHold final : public WriteHold {
 public:
  EngineWriteHold(std::shared_ptr<void> served, io::WriteHold hold)
      : served_(std::move(served)), hold_(std::move(hold)) {}

 private:
  std::shared_ptr<void> served_;
  io::WriteHold hold_;  // Declared last: released before served_ is let go.
};

}  // namespace

absl::StatusOr<std::unique_ptr<WriteHold>> FuseDataPath::HoldWrites(
    const std::string& volume_id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Served> served, Find(volume_id));
  if (served->read_only) {
    return std::unique_ptr<WriteHold>(
        new EngineWriteHold(std::move(served), io::WriteHold()));
  }
  ASSIGN_OR_RETURN(io::WriteHold hold,
                   served->volume->HoldWrites(kWriteHoldTimeout));
  return std::unique_ptr<WriteHold>(
      new EngineWriteHold(std::move(served), std::move(hold)));
}

absl::StatusOr<std::string> FuseDataPath::Device(const std::string& volume_id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Served> served, Find(volume_id));
  return served->attachment->loop_device();
}

absl::StatusOr<io::FuseTransport> FuseDataPath::Transport(
    const std::string& volume_id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Served> served, Find(volume_id));
  return served->attachment->server().transport();
}

absl::Status FuseDataPath::Grow(const std::string& volume_id,
                                uint64_t new_size_bytes) {
  ASSIGN_OR_RETURN(std::shared_ptr<Served> served, Find(volume_id));
  // Growing through the exported file keeps the kernel's view of its size
  // in step: SETATTR reaches the server, which grows the engine.
  const std::string& file = served->attachment->backing_file();
  if (truncate(file.c_str(), static_cast<off_t>(new_size_bytes)) != 0) {
    return ErrnoStatus(errno, "grow (truncate)", file);
  }
  return RefreshLoopCapacity(served->attachment->loop_device());
}

absl::Status FuseDataPath::Health(const std::string& volume_id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Served> served, Find(volume_id));
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
    MutexLock lock(&mutex_);
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

absl::StatusOr<bool> FuseDataPath::StaleAt(const std::string& work_dir) {
  return IsMountPoint(work_dir);
}

absl::Status FuseDataPath::AbortStale(const std::string& work_dir) {
  return io::AbortFuseConnection(work_dir);
}

absl::Status FuseDataPath::ClearStale(const std::string& work_dir) {
  return io::ClearStaleAttachment(work_dir);
}

}  // namespace sealvol::csi
