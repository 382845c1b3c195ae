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
#include "base/durable_file.h"
#include "base/error_kind.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "cmd/exit_codes.h"
#include "cmd/image_session.h"
#include "cmd/kms_flags.h"
#include "io/engine.h"
#include "io/sealed_volume.h"
#include "nlohmann/json.hpp"

namespace sealvol::cmd {
namespace {

// Bytes read from the source per step.
constexpr uint64_t kChunk = uint64_t{1} << 20;
// Bytes copied between two durable progress records: what a resumed import
// copies again at most.
constexpr uint64_t kProgressInterval = uint64_t{64} << 20;
constexpr size_t kMaxProgressBytes = 64 * 1024;

// The source as it was when the import began; a resumed import refuses a
// source that changed since (its copy would mix two versions).
struct SourceIdentity {
  uint64_t device = 0;
  uint64_t inode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const SourceIdentity&) const = default;
};

// The progress record IMAGE.import: written before the first change and
// after every kProgressInterval, removed when the import is complete.
struct Progress {
  enum class Phase { kFormatting, kCopying };
  Phase phase = Phase::kFormatting;
  std::string volume_id;
  bool created = false;  // The import formatted the image (fresh key).
  std::string source;
  SourceIdentity identity;
  uint64_t next_offset = 0;  // Everything before it is durable in the image.
};

struct Paths {
  std::string image, dir, progress_name;
  std::string progress() const { return dir + "/" + progress_name; }
};

Paths PathsFor(const std::string& image) {
  Paths p;
  p.image = image;
  const size_t slash = image.rfind('/');
  p.dir = slash == std::string::npos ? "." : image.substr(0, slash);
  if (p.dir.empty()) p.dir = "/";
  p.progress_name =
      (slash == std::string::npos ? image : image.substr(slash + 1)) + ".import";
  return p;
}

absl::Status SaveProgress(const Paths& paths, const Progress& p) {
  nlohmann::json j = {
      {"phase", p.phase == Progress::Phase::kFormatting ? "formatting" : "copying"},
      {"volume_id", p.volume_id},
      {"created", p.created},
      {"source", p.source},
      {"source_device", p.identity.device},
      {"source_inode", p.identity.inode},
      {"source_size", p.identity.size},
      {"source_mtime_ns", p.identity.mtime_ns},
      {"next_offset", p.next_offset}};
  return WriteFileAtomically(paths.dir, paths.progress_name, j.dump() + "\n",
                             0600);
}

absl::StatusOr<Progress> LoadProgress(const Paths& paths) {
  ASSIGN_OR_RETURN(std::string text,
                   ReadSmallFile(paths.progress(), kMaxProgressBytes));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(
        "import progress record ", paths.progress(), " is damaged (", why,
        "); remove it and ", paths.image, " to start the import over"));
  };
  if (!j.is_object()) return bad("not JSON");
  Progress p;
  try {
    const std::string phase = j.at("phase").get<std::string>();
    if (phase == "formatting") {
      p.phase = Progress::Phase::kFormatting;
    } else if (phase == "copying") {
      p.phase = Progress::Phase::kCopying;
    } else {
      return bad(absl::StrCat("unknown phase \"", phase, "\""));
    }
    p.volume_id = j.at("volume_id").get<std::string>();
    p.created = j.at("created").get<bool>();
    p.source = j.at("source").get<std::string>();
    p.identity.device = j.at("source_device").get<uint64_t>();
    p.identity.inode = j.at("source_inode").get<uint64_t>();
    p.identity.size = j.at("source_size").get<uint64_t>();
    p.identity.mtime_ns = j.at("source_mtime_ns").get<int64_t>();
    p.next_offset = j.at("next_offset").get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  if (p.next_offset % io::kBlockSize != 0 || p.next_offset > p.identity.size + io::kBlockSize) {
    return bad("next_offset out of range");
  }
  return p;
}

// The source, open for reading, and what identifies it.
struct Source {
  UniqueFd fd;
  SourceIdentity identity;
  bool block_device = false;
};

absl::StatusOr<Source> OpenSource(const std::string& path) {
  Source s;
  s.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!s.fd) return ErrnoStatus(errno, "open source", path);
  struct stat st {};
  if (::fstat(s.fd.get(), &st) != 0) return ErrnoStatus(errno, "stat source", path);
  s.identity.device = st.st_dev;
  s.identity.inode = st.st_ino;
  s.identity.mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (S_ISBLK(st.st_mode)) {
    s.block_device = true;
    uint64_t bytes = 0;
    if (::ioctl(s.fd.get(), BLKGETSIZE64, &bytes) != 0) {
      return ErrnoStatus(errno, "read the size of", path);
    }
    s.identity.size = bytes;
    s.identity.device = st.st_rdev;
  } else if (S_ISREG(st.st_mode)) {
    s.identity.size = static_cast<uint64_t>(st.st_size);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "source ", path, " is neither a regular file nor a block device"));
  }
  if (s.identity.size == 0) {
    return absl::InvalidArgumentError(absl::StrCat("source ", path, " is empty"));
  }
  return s;
}

uint64_t RoundUpToBlock(uint64_t n) {
  return (n + io::kBlockSize - 1) / io::kBlockSize * io::kBlockSize;
}

// Where the source's next data at or after `offset` starts (its size if
// none): holes of a sparse file are not read. Devices and file systems
// without SEEK_DATA are read whole.
uint64_t NextData(const Source& s, uint64_t offset) {
  if (s.block_device) return offset;
  const off_t at = ::lseek(s.fd.get(), static_cast<off_t>(offset), SEEK_DATA);
  if (at < 0) return errno == ENXIO ? s.identity.size : offset;
  return static_cast<uint64_t>(at) / io::kBlockSize * io::kBlockSize;
}

bool IsZero(const uint8_t* p, size_t n) {
  return p[0] == 0 && std::equal(p, p + n - 1, p + 1);
}

struct CopyCounts {
  uint64_t written = 0;  // Bytes sealed into the image.
  uint64_t zeros = 0;    // Bytes of zeros or holes: discarded or left unwritten.
};

// Seals the source from p.next_offset to its end into the image, recording
// durable progress every kProgressInterval. A block of zeros is not
// written (fresh image) or discarded (existing image).
absl::Status Copy(const Source& source, io::Engine& e, const Paths& paths,
                  Progress& p, CopyCounts& counts) {
  const uint64_t end = RoundUpToBlock(source.identity.size);
  const bool fresh = p.created;
  std::vector<uint8_t> buf(kChunk);
  uint64_t durable = p.next_offset;
  auto fail = [&](int r, const char* what, uint64_t at) {
    return absl::DataLossError(absl::StrCat(paths.image, ": ", what, " at ", at,
                                            ": ", std::strerror(-r)));
  };
  auto record = [&](uint64_t offset) -> absl::Status {
    if (const int r = e.Io(io::IoOp::kFlush, 0, {}); r != 0) {
      return fail(r, "flush", offset);
    }
    p.next_offset = offset;
    RETURN_IF_ERROR(SaveProgress(paths, p));
    durable = offset;
    return absl::OkStatus();
  };
  uint64_t offset = p.next_offset;
  while (offset < end) {
    const uint64_t data = std::min(end, std::max(offset, NextData(source, offset)));
    if (data > offset) {
      // A hole: never written in a fresh image, discarded in an existing
      // one (Io takes the range's length from the span; nothing is read).
      for (uint64_t at = offset; at < data; at += kChunk) {
        const uint64_t len = std::min(kChunk, data - at);
        if (!fresh) {
          if (const int r = e.Io(io::IoOp::kDiscard, at, {buf.data(), len}); r != 0) {
            return fail(r, "discard", at);
          }
        }
        counts.zeros += len;
      }
      offset = data;
      if (offset - durable >= kProgressInterval) RETURN_IF_ERROR(record(offset));
      continue;
    }
    const uint64_t len = std::min(kChunk, end - offset);
    size_t got = 0;
    while (got < len) {
      const ssize_t n = ::pread(source.fd.get(), buf.data() + got, len - got,
                                static_cast<off_t>(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(errno, "read source", p.source);
      if (n == 0) break;  // The source's tail: padded with zeros.
      got += static_cast<size_t>(n);
    }
    std::fill(buf.begin() + got, buf.begin() + len, 0);
    // Runs of data blocks are written, runs of zero blocks skipped.
    uint64_t run = 0;
    while (run < len) {
      const bool zero = IsZero(buf.data() + run, io::kBlockSize);
      uint64_t stop = run + io::kBlockSize;
      while (stop < len && IsZero(buf.data() + stop, io::kBlockSize) == zero) {
        stop += io::kBlockSize;
      }
      const uint64_t at = offset + run;
      std::span<uint8_t> part(buf.data() + run, stop - run);
      if (!zero) {
        if (const int r = e.Io(io::IoOp::kWrite, at, part); r != 0) {
          return fail(r, "write", at);
        }
        counts.written += part.size();
      } else {
        if (!fresh) {
          if (const int r = e.Io(io::IoOp::kDiscard, at, part); r != 0) {
            return fail(r, "discard", at);
          }
        }
        counts.zeros += part.size();
      }
      run = stop;
    }
    offset += len;
    if (offset - durable >= kProgressInterval) RETURN_IF_ERROR(record(offset));
  }
  // The existing image's tail beyond the source reads as zeros too: the
  // volume then holds the source and nothing else.
  if (!fresh && end < e.size_bytes()) {
    for (uint64_t at = end; at < e.size_bytes(); at += kChunk) {
      const uint64_t len = std::min(kChunk, e.size_bytes() - at);
      if (const int r = e.Io(io::IoOp::kDiscard, at, {buf.data(), len}); r != 0) {
        return fail(r, "discard", at);
      }
    }
  }
  return record(end);
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
absl::StatusOr<Progress> Begin(const ImportArgs& a, const Source& source,
                               const Paths& paths) {
  Progress p;
  p.source = a.source;
  p.identity = source.identity;
  struct stat st {};
  const bool exists = ::stat(a.image.c_str(), &st) == 0;
  if (exists && st.st_dev == source.identity.device && st.st_ino == source.identity.inode) {
    return absl::InvalidArgumentError(
        absl::StrCat(a.image, " is the source itself"));
  }
  if (exists && S_ISBLK(st.st_mode) && st.st_rdev == source.identity.device &&
      source.block_device) {
    return absl::InvalidArgumentError(absl::StrCat(a.image, " is the source itself"));
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
  RETURN_IF_ERROR(SaveProgress(paths, p));
  return p;
}

// Formats the new image named by a formatting-phase record. A record left
// by a run that died while formatting is finished if the image was
// formatted, else its key is destroyed and the format starts over.
absl::Status Format(const ImportArgs& a, const Paths& paths, Progress& p) {
  if (auto header = io::ReadHeader(a.image);
      header.ok() && io::VolumeIdString(header->volume_id) == p.volume_id) {
    p.phase = Progress::Phase::kCopying;
    return SaveProgress(paths, p);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<kms::KeyProvider> provider, a.keys.OpenProvider());
  if (absl::Status s = provider->DestroyVolumeKey(p.volume_id);
      !s.ok() && !absl::IsNotFound(s)) {
    return s;
  }
  ASSIGN_OR_RETURN(const uint64_t size, NewImageSize(a, p.identity.size));
  // A new id for each attempt: a destroyed key's id is never reused.
  p.volume_id = NewVolumeId();
  RETURN_IF_ERROR(SaveProgress(paths, p));
  ASSIGN_OR_RETURN(NewImage made,
                   FormatNewImage(a.image, size, a.keys, a.tenant, a.name, p.volume_id));
  p.phase = Progress::Phase::kCopying;
  return SaveProgress(paths, p);
}

absl::StatusOr<nlohmann::json> Import(const ImportArgs& a) {
  const Paths paths = PathsFor(a.image);
  ASSIGN_OR_RETURN(Source source, OpenSource(a.source));
  Progress p;
  uint64_t resumed_from = 0;
  bool resumed = false;
  if (auto loaded = LoadProgress(paths); loaded.ok()) {
    p = *std::move(loaded);
    resumed = true;
    resumed_from = p.next_offset;
    if (!(p.identity == source.identity)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the source ", a.source, " is not what the interrupted import of ",
          a.image, " began with (", paths.progress(), " names ", p.source,
          ", size ", p.identity.size, "): it changed or is another file; "
          "remove ", paths.progress(), " and the image to start over"));
    }
  } else if (absl::IsNotFound(loaded.status())) {
    ASSIGN_OR_RETURN(p, Begin(a, source, paths));
  } else {
    return loaded.status();
  }
  if (p.phase == Progress::Phase::kFormatting) RETURN_IF_ERROR(Format(a, paths, p));

  ASSIGN_OR_RETURN(OpenedImage opened, OpenImage(a.image, a.keys, /*read_only=*/false));
  auto& e = static_cast<io::Engine&>(*opened.volume);
  if (opened.volume_id != p.volume_id) {
    (void)CloseAndCommit("import", opened);
    return absl::FailedPreconditionError(absl::StrCat(
        a.image, " holds volume ", opened.volume_id, ", but ", paths.progress(),
        " was written for volume ", p.volume_id));
  }
  if (RoundUpToBlock(source.identity.size) > e.size_bytes()) {
    (void)CloseAndCommit("import", opened);
    return SetErrorKind(
        absl::InvalidArgumentError(absl::StrCat(
            "the source's ", source.identity.size, " bytes do not fit in ",
            a.image, " (", e.size_bytes(), " bytes); grow it or import into "
            "a new image")),
        ErrorKind::kBadSize);
  }
  CopyCounts counts;
  absl::Status copied = Copy(source, e, paths, p, counts);
  const absl::Status closed = CloseAndCommit("import", opened);
  RETURN_IF_ERROR(copied);
  RETURN_IF_ERROR(closed);
  RETURN_IF_ERROR(RemoveFileDurably(paths.dir, paths.progress_name));
  ASSIGN_OR_RETURN(io::VolumeHeaderInfo info, io::ReadHeader(a.image));
  return nlohmann::json{{"volume_id", p.volume_id},
                        {"image", a.image},
                        {"source", a.source},
                        {"source_bytes", source.identity.size},
                        {"size_bytes", info.size_bytes},
                        {"created", p.created},
                        {"format_id", io::FormatIdString(info.format_id)},
                        {"resumed", resumed},
                        {"resumed_from", resumed_from},
                        {"bytes_sealed", counts.written},
                        {"bytes_zero", counts.zeros}};
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
