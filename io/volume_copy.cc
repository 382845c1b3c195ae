// Cuts (reflink or sparse copy of an image) and the re-encrypting copy of
// snapshots, restores and clones, resumable through its progress record.
#include "io/volume_copy.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/durable_file.h"
#include "base/error_kind.h"
#include "base/injected_fault.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "io/backing_store.h"
#include "io/block_copy.h"
#include "io/copy_progress.h"
#include "io/sealed_volume.h"

namespace sealvol::io {
namespace {

constexpr char kProgressSuffix[] = ".copy";

// FICLONE's answers when the file system cannot share extents between the
// two files (ext4: EOPNOTSUPP; another file system: EXDEV).
bool NoReflink(int err) {
  return err == EOPNOTSUPP || err == ENOTTY || err == EINVAL ||
         err == EXDEV || err == ENOSYS || err == EPERM;
}

// Copies [from, to) of `in` to the same offsets of `out`, in the kernel
// where it can (copy_file_range), else through a buffer.
absl::Status CopyRange(int in, int out, uint64_t from, uint64_t to,
                       const std::string& source, const std::string& cut) {
  bool in_kernel = true;
  std::vector<uint8_t> buf;
  uint64_t at = from;
  while (at < to) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(to - at, 1 << 30));
    ssize_t n;
    if (in_kernel) {
      loff_t off_in = static_cast<loff_t>(at), off_out = off_in;
      n = ::copy_file_range(in, &off_in, out, &off_out, want, 0);
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP ||
                    errno == EINVAL)) {
        in_kernel = false;
        continue;
      }
    } else {
      if (buf.empty()) buf.resize(1 << 20);
      n = ::pread(in, buf.data(), std::min(want, buf.size()),
                  static_cast<off_t>(at));
      if (n > 0) {
        for (ssize_t done = 0; done < n;) {
          const ssize_t w = ::pwrite(out, buf.data() + done, n - done,
                                     static_cast<off_t>(at + done));
          if (w < 0 && errno == EINTR) continue;
          if (w < 0) return ErrnoStatus(errno, "write cut", cut);
          done += w;
        }
      }
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "copy to cut", cut);
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(
          "cut ", source, ": the image ended at ", at, " while being copied (",
          to, " bytes expected): it changed during the cut"));
    }
    at += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// The sparse copy: only the source's data extents are copied; its holes
// stay holes in the cut.
absl::Status SparseCopy(int in, int out, uint64_t size,
                        const std::string& source, const std::string& cut) {
  if (::ftruncate(out, static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, "size cut", cut);
  }
  uint64_t at = 0;
  while (at < size) {
    off_t data = ::lseek(in, static_cast<off_t>(at), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // Only a hole is left.
    if (data < 0 && errno != EINVAL) {
      return ErrnoStatus(errno, "find data in", source);
    }
    // No SEEK_DATA on this file system: all of it is data.
    if (data < 0) data = static_cast<off_t>(at);
    off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0) hole = static_cast<off_t>(size);
    const uint64_t stop = std::min<uint64_t>(size, static_cast<uint64_t>(hole));
    RETURN_IF_ERROR(
        CopyRange(in, out, static_cast<uint64_t>(data), stop, source, cut));
    at = stop;
  }
  return absl::OkStatus();
}

// The plaintext of an open sealed volume, as the copy loop reads it.
// Every block is read through the engine, even where the image has a hole:
// the engine decides from the authenticated tags that a block was never
// written (a hole punched into a written block must fail, not read as
// zeros). A never-written block costs no data read or decryption.
class SealedSource : public BlockSource {
 public:
  SealedSource(SealedVolume& volume, std::string name)
      : volume_(volume), name_(std::move(name)) {}

  uint64_t size_bytes() const override { return volume_.size_bytes(); }

  absl::Status Read(uint64_t offset, std::span<uint8_t> buffer) override {
    const uint64_t len = ZeroTail(offset, buffer);
    if (len == 0) return absl::OkStatus();
    return ReadStatus(offset, volume_.Io(IoOp::kRead, offset, buffer.first(len)));
  }

  // The engine's workers decrypt the chunks read ahead, each its groups.
  void StartRead(uint64_t offset, std::span<uint8_t> buffer,
                 std::function<void(absl::Status)> done) override {
    const uint64_t len = ZeroTail(offset, buffer);
    if (len == 0) {
      done(absl::OkStatus());
      return;
    }
    auto* read = new PendingRead{this, std::move(done), IoRequest{}};
    read->request.op = IoOp::kRead;
    read->request.offset = offset;
    read->request.length = len;
    read->request.buffer = buffer.first(len);
    read->request.context = read;
    read->request.done = [](IoRequest* request, int result) {
      std::unique_ptr<PendingRead> r(static_cast<PendingRead*>(request->context));
      r->done(r->source->ReadStatus(request->offset, result));
    };
    volume_.Submit(&read->request);
  }

 private:
  struct PendingRead {
    SealedSource* source;
    std::function<void(absl::Status)> done;
    IoRequest request;
  };

  // Zeros the part of `buffer` past the volume's end; returns the bytes
  // before it.
  uint64_t ZeroTail(uint64_t offset, std::span<uint8_t> buffer) const {
    const uint64_t size = volume_.size_bytes();
    const uint64_t len =
        offset >= size ? 0 : std::min<uint64_t>(buffer.size(), size - offset);
    std::fill(buffer.begin() + static_cast<ptrdiff_t>(len), buffer.end(), 0);
    return len;
  }

  absl::Status ReadStatus(uint64_t offset, int result) const {
    if (result == 0) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat("read ", name_, " at ", offset,
                                            ": ", std::strerror(-result)));
  }

  SealedVolume& volume_;
  std::string name_;
};

absl::Status CheckOptions(const CopyOptions& o) {
  auto bad = [](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("copy: ", why));
  };
  if (o.source_path.empty()) return bad("source_path is empty");
  if (o.target_path.empty()) return bad("target_path is empty");
  if (o.source_dek == nullptr || o.source_dek->size() != 32) {
    return bad("source_dek must be a 32-byte key");
  }
  if (o.target_dek == nullptr || o.target_dek->size() != 32) {
    return bad("target_dek must be a 32-byte key");
  }
  if (o.source_dek->Equals(*o.target_dek)) {
    return bad(
        "target_dek equals source_dek: every copy gets a fresh key of its own");
  }
  if (std::all_of(o.target_volume_id.begin(), o.target_volume_id.end(),
                  [](uint8_t b) { return b == 0; })) {
    return bad("target_volume_id is not set");
  }
  if (o.source_kind == CopyOptions::SourceKind::kSnapshotImage &&
      !o.source_expected_state.has_value()) {
    return bad(
        "source_expected_state is required for a snapshot image (the state "
        "its registry record commits to)");
  }
  if (o.source_kind == CopyOptions::SourceKind::kCut &&
      o.source_expected_state.has_value()) {
    return bad("source_expected_state applies to snapshot images, not to cuts");
  }
  if (o.target_size_bytes % kBlockSize != 0) {
    return SetErrorKind(bad(absl::StrCat("target_size_bytes ",
                                         o.target_size_bytes,
                                         " is not a multiple of 4096")),
                        ErrorKind::kBadSize);
  }
  if (o.progress_interval_bytes == 0) {
    return bad("progress_interval_bytes must be positive");
  }
  return absl::OkStatus();
}

// A finished copy asked again: the result its record kept, if the target is
// still the image it describes.
absl::StatusOr<CopyResult> FinishedCopy(const CopyOptions& o,
                                        const CopyProgressFile& file,
                                        const CopyProgress& p) {
  ASSIGN_OR_RETURN(VolumeHeaderInfo header, ReadHeader(o.target_path));
  if (FormatIdString(header.format_id) != p.format_id ||
      header.volume_id != o.target_volume_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        o.target_path, " is not the image ", file.path(),
        " records as copied (volume ", p.volume_id, ", format id ",
        p.format_id, ")"));
  }
  CopyResult r;
  r.format_id = header.format_id;
  r.state = *p.final_state;
  r.bytes_total = p.identity.size;
  r.resumed = true;
  r.resumed_from = p.next_offset;
  return r;
}

}  // namespace

absl::Status CutImage(const std::string& source, const std::string& cut) {
  UniqueFd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return ErrnoStatus(errno, "open cut source", source);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return ErrnoStatus(errno, "stat", source);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cut ", source, ": not a regular file (only image files are cut)"));
  }
  UniqueFd out(
      ::open(cut.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) {
    if (errno == EEXIST) {
      return absl::AlreadyExistsError(absl::StrCat("cut ", cut, " exists"));
    }
    return ErrnoStatus(errno, "create cut", cut);
  }
  absl::Status made = [&]() -> absl::Status {
    if (::ioctl(out.get(), FICLONE, in.get()) != 0) {
      if (!NoReflink(errno)) return ErrnoStatus(errno, "reflink cut", cut);
      RETURN_IF_ERROR(SparseCopy(in.get(), out.get(),
                                 static_cast<uint64_t>(st.st_size), source, cut));
    }
    RETURN_IF_ERROR(InjectedFailure("cut.copied"));
    if (::fsync(out.get()) != 0) return ErrnoStatus(errno, "fsync cut", cut);
    return SyncDirectory(ParentDirectory(cut));
  }();
  if (!made.ok()) {
    // A partial cut is no image of anything: it goes.
    out.reset();
    (void)::unlink(cut.c_str());
    (void)SyncDirectory(ParentDirectory(cut));
  }
  return made;
}

bool CutSharesExtents(const std::string& source, const std::string& dir) {
  UniqueFd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd probe(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!in || !probe) return false;
  return ::ioctl(probe.get(), FICLONE, in.get()) == 0;
}

absl::StatusOr<CopyResult> CopySealed(const CopyOptions& o) {
  RETURN_IF_ERROR(CheckOptions(o));
  const CopyProgressFile file(o.target_path, kProgressSuffix, "copy");
  const std::string target_id = VolumeIdString(o.target_volume_id);
  auto loaded = file.Load();
  if (!loaded.ok() && !absl::IsNotFound(loaded.status())) return loaded.status();
  const bool resumed = loaded.ok();
  if (resumed && loaded->volume_id != target_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        file.path(), " records a copy into volume ", loaded->volume_id,
        ", not ", target_id));
  }
  if (resumed && loaded->phase == CopyProgress::Phase::kDone) {
    return FinishedCopy(o, file, *loaded);
  }

  struct stat source_st {}, target_st {};
  if (::stat(o.source_path.c_str(), &source_st) != 0) {
    return ErrnoStatus(errno, "copy: stat source", o.source_path);
  }
  const bool target_exists = ::stat(o.target_path.c_str(), &target_st) == 0;
  if (target_exists && target_st.st_dev == source_st.st_dev &&
      target_st.st_ino == source_st.st_ino) {
    return absl::InvalidArgumentError(
        absl::StrCat("copy: ", o.target_path, " is the source itself"));
  }
  if (target_exists && !resumed) {
    return absl::AlreadyExistsError(absl::StrCat(
        "copy: ", o.target_path, " exists and ", file.path(),
        " does not: it is not a copy in progress; remove it to copy anew"));
  }

  EngineOptions source_options;
  source_options.worker_threads = std::max(1, o.worker_threads);
  source_options.read_only =
      o.source_kind == CopyOptions::SourceKind::kSnapshotImage;
  source_options.expected_state = o.source_expected_state;
  // Nothing is written to the source but recovery's repairs: no
  // checkpoints while it is open.
  source_options.checkpoint_dirty_groups = 0;
  source_options.checkpoint_seconds = 0;
  FileStoreOptions source_store;
  source_store.path = o.source_path;
  source_store.read_only = source_options.read_only;
  // A cut that was just copied (not reflinked) is still in the page cache:
  // read it from there rather than from the disk again. It is read once and
  // deleted, and a repair recovery writes is flushed (fdatasync) as ever.
  source_store.page_cache = o.source_kind == CopyOptions::SourceKind::kCut;
  ASSIGN_OR_RETURN(std::unique_ptr<BackingStore> source_file,
                   OpenFileStore(source_store));
  ASSIGN_OR_RETURN(std::unique_ptr<SealedVolume> source,
                   SealedVolume::OpenOn(std::move(source_file), *o.source_dek,
                                        source_options));
  CopySourceIdentity identity;
  identity.device = source_st.st_dev;
  identity.inode = source_st.st_ino;
  identity.size = source->size_bytes();
  identity.sealed = absl::StrCat(VolumeIdString(source->volume_id()), "/",
                                 FormatIdString(source->format_id()));
  if (resumed && !(loaded->identity == identity)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "copy: the source ", o.source_path, " is not what the interrupted copy "
        "into ", o.target_path, " began with (", file.path(), " names ",
        loaded->source, ", ", loaded->identity.sealed, "); remove ",
        file.path(), " and the target to copy anew"));
  }
  const uint64_t size =
      o.target_size_bytes == 0 ? identity.size : o.target_size_bytes;
  if (size < identity.size) {
    return SetErrorKind(
        absl::InvalidArgumentError(absl::StrCat(
            "copy: target_size_bytes ", size, " is below the source's ",
            identity.size, " bytes")),
        ErrorKind::kBadSize);
  }

  CopyProgress p;
  if (resumed) {
    p = *std::move(loaded);
  } else {
    p.phase = CopyProgress::Phase::kFormatting;
    p.volume_id = target_id;
    p.created = true;
    p.source = o.source_path;
    p.identity = identity;
    RETURN_IF_ERROR(file.Save(p));
  }

  EngineOptions target_options;
  target_options.worker_threads = std::max(1, o.worker_threads);
  std::unique_ptr<SealedVolume> target;
  if (p.phase == CopyProgress::Phase::kFormatting) {
    // A format a crash interrupted left no usable image, and nothing of it
    // was committed anywhere: it starts over, under a new format id.
    if (::unlink(o.target_path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, "copy: remove the unfinished target",
                         o.target_path);
    }
    FormatOptions f;
    f.path = o.target_path;
    f.size_bytes = size;
    f.volume_id = o.target_volume_id;
    ASSIGN_OR_RETURN(target,
                     SealedVolume::FormatFile(f, *o.target_dek, target_options));
    p.format_id = FormatIdString(target->format_id());
    p.phase = CopyProgress::Phase::kCopying;
    p.next_offset = 0;
    RETURN_IF_ERROR(file.Save(p));
  } else {
    // The target is this copy's own image, not yet known to the registry:
    // no expected state; its record names its format.
    ASSIGN_OR_RETURN(target, SealedVolume::OpenFile(o.target_path,
                                                    *o.target_dek,
                                                    target_options));
    if (target->volume_id() != o.target_volume_id ||
        FormatIdString(target->format_id()) != p.format_id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "copy: ", o.target_path, " holds volume ",
          VolumeIdString(target->volume_id()), " format ",
          FormatIdString(target->format_id()), ", but ", file.path(),
          " records format ", p.format_id, " of ", p.volume_id));
    }
    if (o.target_size_bytes != 0 && target->size_bytes() != o.target_size_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "copy: target_size_bytes ", o.target_size_bytes,
          " differs from the interrupted copy's target (",
          target->size_bytes(), " bytes)"));
    }
  }

  CopyResult result;
  result.bytes_total = identity.size;
  result.resumed = resumed;
  result.resumed_from = resumed ? p.next_offset : 0;
  SealedSource plain(*source, o.source_path);
  BlockCopyOptions copy;
  copy.fresh = true;
  // Whole groups per step, several in flight: the source's workers decrypt
  // the groups read ahead while the target's seal the ones read before.
  copy.chunk_bytes = uint64_t{4} << 20;
  copy.depth = 2 * target_options.worker_threads + 2;
  copy.progress_interval = o.progress_interval_bytes;
  copy.on_progress = [&](uint64_t done) {
    if (o.on_progress) o.on_progress(std::min(done, identity.size), identity.size);
  };
  auto copied = CopyBlocks(plain, *target, file, p, copy);
  const absl::Status source_closed = source->Close();
  const absl::Status target_closed = target->Close();
  RETURN_IF_ERROR(copied.status());
  RETURN_IF_ERROR(source_closed);
  RETURN_IF_ERROR(target_closed);
  result.bytes_sealed = copied->written;
  result.format_id = target->format_id();
  result.state = target->state();
  p.phase = CopyProgress::Phase::kDone;
  p.final_state = result.state;
  RETURN_IF_ERROR(file.Save(p));
  return result;
}

absl::Status ForgetCopyProgress(const std::string& target_path) {
  return CopyProgressFile(target_path, kProgressSuffix, "copy").Remove();
}

}  // namespace sealvol::io
