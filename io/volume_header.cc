// Key-less header access (ReadHeader) and format id text form.
#include "io/volume_header.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/error_kind.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "io/superblock.h"

namespace sealvol::io {

std::string FormatIdString(const FormatId& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : id) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

absl::StatusOr<FormatId> ParseFormatId(std::string_view text) {
  if (text.size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad format id \"", std::string(text), "\": want 32 hex digits"));
  }
  auto volume_id = ParseVolumeId(absl::StrCat("sv-", std::string(text)));
  if (!volume_id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad format id \"", std::string(text), "\": not lowercase hex"));
  }
  FormatId id;
  std::copy(volume_id->begin(), volume_id->end(), id.begin());
  return id;
}

absl::StatusOr<VolumeHeaderInfo> ReadHeader(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open", path);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode) && ioctl(fd.get(), BLKGETSIZE64, &size) != 0) {
    return ErrnoStatus(errno, "BLKGETSIZE64", path);
  }
  std::array<uint8_t, 8192> bytes{};
  const ssize_t n = pread(fd.get(), bytes.data(), bytes.size(), 0);
  if (n < 0) return ErrnoStatus(errno, "read", path);
  auto a = n >= 4096 ? DecodeSuperblock({bytes.data(), 4096})
                     : absl::StatusOr<Superblock>(SetErrorKind(
                           absl::InvalidArgumentError("not a sealvol image"),
                           ErrorKind::kNotSealvol));
  auto b = n >= 8192 ? DecodeSuperblock({bytes.data() + 4096, 4096})
                     : absl::StatusOr<Superblock>(SetErrorKind(
                           absl::InvalidArgumentError("not a sealvol image"),
                           ErrorKind::kNotSealvol));
  auto sb = NewestSuperblock(a, b);
  if (!sb.ok()) {
    return SetErrorKind(
        absl::Status(sb.status().code(),
                     absl::StrCat(path, ": ", sb.status().message())),
        GetErrorKind(sb.status()));
  }
  const uint64_t need = sb->layout.image_bytes(sb->size_bytes / kBlockSize);
  if (size < need) {
    return SetErrorKind(
        absl::OutOfRangeError(absl::StrCat(path, ": truncated: image is ", size,
                                           " bytes, header needs ", need)),
        ErrorKind::kTruncated);
  }
  VolumeHeaderInfo info;
  info.format_version = sb->format_version;
  info.volume_id = sb->volume_id;
  info.format_id = sb->format_id;
  info.size_bytes = sb->size_bytes;
  info.block_size = kBlockSize;
  info.generation = sb->generation;
  info.clean = sb->clean();
  info.layout_json = sb->layout.ToJson();
  info.has_state_root = sb->layout.has_digest_table();
  info.state_epoch = sb->state_epoch;
  info.state_root = sb->state_root;
  return info;
}

}  // namespace sealvol::io
