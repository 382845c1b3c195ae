#include "cmd/import_command.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/error_kind.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "cmd/exit_codes.h"
#include "cmd/image_session.h"
#include "cmd/kms_flags.h"
#include "io/block_copy.h"
#include "io/copy_progress.h"
#include "io/sealed_volume.h"
#include "nlohmann/json.hpp"

namespace sealvol::cmd {
namespace {

// The progress record IMAGE.import (io/copy_progress.h): written before the
// first change and after every 64 MiB, removed when the import is complete.
constexpr char kProgressSuffix[] = ".import";
using Progress = io::CopyProgress;

// The source, open for reading, and what identifies it: a resumed import
// refuses a source that changed since (its copy would mix two versions).
struct PlainSource : io::BlockSource {
  UniqueFd fd;
  io::CopySourceIdentity identity;
  bool block_device = false;
  std::string path;

  uint64_t size_bytes() const override { return identity.size; }

  // Holes of a sparse file are not read. Devices and file systems without
  // SEEK_DATA are read whole.
  uint64_t NextData(uint64_t offset) override {
    if (block_device) return offset;
    const off_t at = ::lseek(fd.get(), static_cast<off_t>(offset), SEEK_DATA);
    if (at < 0) return errno == ENXIO ? identity.size : offset;
    return static_cast<uint64_t>(at) / io::kBlockSize * io::kBlockSize;
  }

  absl::Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    size_t got = 0;
    while (got < buf.size()) {
      const ssize_t n = ::pread(fd.get(), buf.data() + got, buf.size() - got,
                                static_cast<off_t>(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(errno, "read source", path);
      if (n == 0) break;  // The source's tail: padded with zeros.
      got += static_cast<size_t>(n);
    }
    std::fill(buf.begin() + static_cast<ptrdiff_t>(got), buf.end(), 0);
    return absl::OkStatus();
  }

  // Whether the file `st` describes is this source.
  bool Is(const struct stat& st) const {
    if (block_device) return S_ISBLK(st.st_mode) && st.st_rdev == identity.device;
    return st.st_dev == identity.device && st.st_ino == identity.inode;
  }
};

absl::StatusOr<std::unique_ptr<PlainSource>> OpenSource(const std::string& path) {
  auto s = std::make_unique<PlainSource>();
  s->path = path;
  s->fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!s->fd) return ErrnoStatus(errno, "open source", path);
  struct stat st {};
  if (::fstat(s->fd.get(), &st) != 0) return ErrnoStatus(errno, "stat source", path);
  s->identity.device = st.st_dev;
  s->identity.inode = st.st_ino;
  s->identity.mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (S_ISBLK(st.st_mode)) {
    s->block_device = true;
    uint64_t bytes = 0;
    if (::ioctl(s->fd.get(), BLKGETSIZE64, &bytes) != 0) {
      return ErrnoStatus(errno, "read the size of", path);
    }
    s->identity.size = bytes;
    s->identity.device = st.st_rdev;
  } else if (S_ISREG(st.st_mode)) {
    s->identity.size = static_cast<uint64_t>(st.st_size);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "source ", path, " is neither a regular file nor a block device"));
  }
  if (s->identity.size == 0) {
    return absl::InvalidArgumentError(absl::StrCat("source ", path, " is empty"));
  }
  return s;
}

uint64_t RoundUpToBlock(uint64_t n) {
  return (n + io::kBlockSize - 1) / io::kBlockSize * io::kBlockSize;
}

struct ImportArgs {
  std::string source, image, size, tenant = "default", name;
  bool overwrite = false;
  KmsFlags keys;
};

// The usable size of a new image: --size, else the source's size rounded
// up to whole blocks. Exit 7 (kind kBadSize) for a size below the source's.
absl::StatusOr<uint64_t> NewImageSize(const ImportArgs& a, uint64_t source_size) {
  const uint64_t needed = RoundUpToBlock(source_size);
  if (a.size.empty()) return needed;
  auto wanted = ParseSize(a.size);
  if (!wanted.ok() || *wanted % io::kBlockSize != 0 || *wanted < needed) {
    return SetErrorKind(
        absl::InvalidArgumentError(absl::StrCat(
            "--size ", a.size, " must be a multiple of 4096 bytes and at "
            "least the source's ", needed, " bytes")),
        ErrorKind::kBadSize);
  }
  return *wanted;
}

// Starts an import: decides whether it formats a new image or writes into
// an existing sealed one, and records that before changing anything.
absl::StatusOr<Progress> Begin(const ImportArgs& a, const PlainSource& source,
                               const io::CopyProgressFile& file) {
  Progress p;
  p.source = a.source;
  p.identity = source.identity;
  struct stat st {};
  const bool exists = ::stat(a.image.c_str(), &st) == 0;
  if (exists && source.Is(st)) {
    return absl::InvalidArgumentError(
        absl::StrCat(a.image, " is the source itself"));
  }
  auto header = exists ? io::ReadHeader(a.image)
                       : absl::StatusOr<io::VolumeHeaderInfo>(absl::NotFoundError(""));
  if (header.ok()) {
    if (!a.overwrite) {
      return absl::InvalidArgumentError(absl::StrCat(
          a.image, " is sealed volume ", io::VolumeIdString(header->volume_id),
          " already; pass --overwrite to replace its contents with the source"));
    }
    p.phase = Progress::Phase::kCopying;
    p.volume_id = io::VolumeIdString(header->volume_id);
    p.format_id = io::FormatIdString(header->format_id);
    p.created = false;
  } else {
    if (exists && !S_ISBLK(st.st_mode) && st.st_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          a.image, " exists and is not a sealed volume: import writes a new "
          "image or into an existing sealed one; it overwrites nothing else"));
    }
    RETURN_IF_ERROR(NewImageSize(a, source.identity.size).status());
    p.volume_id = NewVolumeId();
    p.phase = Progress::Phase::kFormatting;
    p.created = true;
  }
  RETURN_IF_ERROR(file.Save(p));
  return p;
}

// Formats the new image named by a formatting-phase record. A record left
// by a run that died while formatting is finished if the image was
// formatted, else its key is destroyed and the format starts over.
absl::Status Format(const ImportArgs& a, const io::CopyProgressFile& file,
                    Progress& p) {
  if (auto header = io::ReadHeader(a.image);
      header.ok() && io::VolumeIdString(header->volume_id) == p.volume_id) {
    p.phase = Progress::Phase::kCopying;
    p.format_id = io::FormatIdString(header->format_id);
    return file.Save(p);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<kms::KeyProvider> provider, a.keys.OpenProvider());
  if (absl::Status s = provider->DestroyVolumeKey(p.volume_id);
      !s.ok() && !absl::IsNotFound(s)) {
    return s;
  }
  ASSIGN_OR_RETURN(const uint64_t size, NewImageSize(a, p.identity.size));
  // A new id for each attempt: a destroyed key's id is never reused.
  p.volume_id = NewVolumeId();
  RETURN_IF_ERROR(file.Save(p));
  ASSIGN_OR_RETURN(NewImage made,
                   FormatNewImage(a.image, size, a.keys, a.tenant, a.name, p.volume_id));
  p.phase = Progress::Phase::kCopying;
  p.format_id = made.format_id;
  return file.Save(p);
}

absl::StatusOr<nlohmann::json> Import(const ImportArgs& a) {
  const io::CopyProgressFile file(a.image, kProgressSuffix, "import");
  ASSIGN_OR_RETURN(std::unique_ptr<PlainSource> source, OpenSource(a.source));
  Progress p;
  uint64_t resumed_from = 0;
  bool resumed = false;
  if (auto loaded = file.Load(); loaded.ok()) {
    p = *std::move(loaded);
    resumed = true;
    resumed_from = p.next_offset;
    if (!(p.identity == source->identity)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the source ", a.source, " is not what the interrupted import of ",
          a.image, " began with (", file.path(), " names ", p.source,
          ", size ", p.identity.size, "): it changed or is another file; "
          "remove ", file.path(), " and the image to start over"));
    }
  } else if (absl::IsNotFound(loaded.status())) {
    ASSIGN_OR_RETURN(p, Begin(a, *source, file));
  } else {
    return loaded.status();
  }
  if (p.phase == Progress::Phase::kFormatting) RETURN_IF_ERROR(Format(a, file, p));

  ASSIGN_OR_RETURN(OpenedImage opened, OpenImage(a.image, a.keys, /*read_only=*/false));
  io::SealedVolume& e = *opened.volume;
  if (opened.volume_id != p.volume_id) {
    (void)CloseAndCommit("import", opened);
    return absl::FailedPreconditionError(absl::StrCat(
        a.image, " holds volume ", opened.volume_id, ", but ", file.path(),
        " was written for volume ", p.volume_id));
  }
  if (RoundUpToBlock(source->identity.size) > e.size_bytes()) {
    (void)CloseAndCommit("import", opened);
    return SetErrorKind(
        absl::InvalidArgumentError(absl::StrCat(
            "the source's ", source->identity.size, " bytes do not fit in ",
            a.image, " (", e.size_bytes(), " bytes); grow it or import into "
            "a new image")),
        ErrorKind::kBadSize);
  }
  const uint64_t size_bytes = e.size_bytes();
  const std::string format_id = io::FormatIdString(e.format_id());
  io::BlockCopyOptions options;
  options.fresh = p.created;
  auto counts = io::CopyBlocks(*source, e, file, p, options);
  const absl::Status closed = CloseAndCommit("import", opened);
  RETURN_IF_ERROR(counts.status());
  RETURN_IF_ERROR(closed);
  RETURN_IF_ERROR(file.Remove());
  return nlohmann::json{{"volume_id", p.volume_id},
                        {"image", a.image},
                        {"source", a.source},
                        {"source_bytes", source->identity.size},
                        {"size_bytes", size_bytes},
                        {"created", p.created},
                        {"format_id", format_id},
                        {"resumed", resumed},
                        {"resumed_from", resumed_from},
                        {"bytes_sealed", counts->written},
                        {"bytes_zero", counts->zeros}};
}

}  // namespace

void RegisterImportCommand(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ImportArgs>();
  CLI::App* import = app.add_subcommand(
      "import",
      "Seal an existing plain volume (image file or block device) under a new "
      "key; resumable");
  import->add_option("SOURCE", args->source, "Plain image file or block device")
      ->required();
  import->add_option("IMAGE", args->image,
                     "New sealed image (or an existing one with --overwrite)")
      ->required();
  import->add_option("--size", args->size,
                     "Usable size of a new image (default: the source's)");
  import->add_option("--tenant", args->tenant, "Owning namespace of a new image")
      ->capture_default_str();
  import->add_option("--name", args->name, "Volume name recorded with the key");
  import->add_flag("--overwrite", args->overwrite,
                   "IMAGE is a sealed volume whose contents the source replaces");
  args->keys.AddTo(import);
  import->callback([args, &exit_code] {
    auto out = Import(*args);
    if (!out.ok()) {
      exit_code = Fail("import", out.status(), CommandFamily::kVolume);
      return;
    }
    std::cout << out->dump() << "\n";
    exit_code = kExitOk;
  });
}

}  // namespace sealvol::cmd
