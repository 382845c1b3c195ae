// Version-1 reader and the conversion to the current format. The version-1
// layout (docs/format.md, "Format version 1"): superblock with the nonce
// mark at 48, digest at 160 and HMAC at 192; slots {u64 counter, 16-byte
// tag, 8 zero bytes}; one data key per volume, HKDF salted by the volume id.
#include "io/format_v1.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "crypto/key_schedule.h"
#include "crypto/sector_codec.h"
#include "io/layout.h"
#include "io/little_endian.h"
#include "io/sealed_volume.h"
#include "io/superblock.h"
#include "io/upgrade.h"

namespace sealvol::io {
namespace {

constexpr char kMagic[8] = {'S', 'E', 'A', 'L', 'V', 'O', 'L', '\0'};

struct V1Copy {
  V1Header header;
  uint64_t generation = 0;
  Layout layout;
  crypto::KeyCheckValue key_check{};
};

absl::StatusOr<V1Copy> DecodeV1(const uint8_t* p) {
  if (std::memcmp(p, kMagic, 8) != 0 || LoadLe32(p + 8) != 1) {
    return absl::InvalidArgumentError("not a format-1 sealvol image");
  }
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(p, 160, digest);
  if (std::memcmp(digest, p + 160, sizeof(digest)) != 0 ||
      LoadLe32(p + 12) != kBlockSize) {
    return absl::DataLossError("format-1 superblock copy is corrupt");
  }
  V1Copy c;
  std::memcpy(c.header.volume_id.data(), p + 16, 16);
  c.header.size_bytes = LoadLe64(p + 32);
  c.generation = LoadLe64(p + 40);
  c.header.clean = (LoadLe32(p + 56) & 1) != 0;
  LoadLayoutFields(p, 60, 72, c.layout);
  std::memcpy(c.key_check.data(), p + 96, c.key_check.size());
  if (!c.layout.Valid() || c.header.size_bytes % kBlockSize != 0 ||
      c.header.size_bytes / kBlockSize > c.layout.max_blocks()) {
    return absl::DataLossError("format-1 superblock has an invalid layout");
  }
  return c;
}

absl::Status ReadAt(int fd, uint8_t* out, size_t n, uint64_t offset,
                    const std::string& path) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = pread(fd, out + done, n - done,
                            static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, "read", path);
    if (r == 0) return absl::OutOfRangeError(absl::StrCat(path, ": truncated"));
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

struct Copies {
  absl::StatusOr<V1Copy> copy[2] = {
      absl::InvalidArgumentError("not a format-1 sealvol image"),
      absl::InvalidArgumentError("not a format-1 sealvol image")};
  std::vector<uint8_t> bytes = std::vector<uint8_t>(8192);
};

absl::StatusOr<Copies> ReadCopies(int fd, const std::string& path) {
  Copies c;
  RETURN_IF_ERROR(ReadAt(fd, c.bytes.data(), 8192, 0, path));
  for (int i = 0; i < 2; ++i) c.copy[i] = DecodeV1(c.bytes.data() + i * 4096);
  return c;
}

// The newest decodable copy.
absl::StatusOr<V1Copy> Newest(const Copies& c, const std::string& path) {
  int best = -1;
  for (int i = 0; i < 2; ++i) {
    if (c.copy[i].ok() &&
        (best < 0 || c.copy[i]->generation > c.copy[best]->generation)) {
      best = i;
    }
  }
  if (best >= 0) return *c.copy[best];
  const absl::Status& s =
      absl::IsInvalidArgument(c.copy[0].status()) ? c.copy[1].status()
                                                  : c.copy[0].status();
  return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
}

bool AllZero(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

}  // namespace

absl::StatusOr<V1Header> ReadV1Header(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open", path);
  ASSIGN_OR_RETURN(Copies c, ReadCopies(fd.get(), path));
  ASSIGN_OR_RETURN(V1Copy newest, Newest(c, path));
  return newest.header;
}

absl::StatusOr<UpgradeResult> UpgradeV1Image(const std::string& path,
                                             const crypto::SecretBytes& dek) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open", path);
  // No one may open the image while it is converted (the engine takes the
  // same lock).
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(path, ": in use"));
    }
    return ErrnoStatus(errno, "flock", path);
  }
  ASSIGN_OR_RETURN(Copies copies, ReadCopies(fd.get(), path));
  ASSIGN_OR_RETURN(V1Copy sb, Newest(copies, path));
  const VolumeId& vid = sb.header.volume_id;
  const std::string id = VolumeIdString(vid);
  ASSIGN_OR_RETURN(crypto::SecretBytes data_key,
                   crypto::HkdfSha256(dek, vid, "sealvol/v1/data", 32));
  ASSIGN_OR_RETURN(crypto::SecretBytes header_key,
                   crypto::HkdfSha256(dek, vid, "sealvol/v1/header-mac", 32));
  ASSIGN_OR_RETURN(crypto::SecretBytes kcv,
                   crypto::HkdfSha256(dek, vid, "sealvol/v1/key-check",
                                      crypto::kKeyCheckSize));
  if (!crypto::ConstantTimeEquals(kcv.span(), sb.key_check)) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": wrong key for volume ", id));
  }
  bool header_ok = false;
  for (int i = 0; i < 2 && !header_ok; ++i) {
    if (!copies.copy[i].ok() || copies.copy[i]->generation != sb.generation) {
      continue;
    }
    auto mac = crypto::HmacSha256(
        header_key, {copies.bytes.data() + i * 4096, 192});
    header_ok = mac.ok() &&
                crypto::ConstantTimeEquals(
                    *mac, {copies.bytes.data() + i * 4096 + 192, crypto::kMacSize});
  }
  if (!header_ok) {
    return absl::DataLossError(
        absl::StrCat(path, ": format-1 superblock authentication failed"));
  }
  ASSIGN_OR_RETURN(auto codec, crypto::SectorCodec::Create(data_key));

  UpgradeResult result;
  result.volume_id = vid;
  auto fill = [&](SealedVolume& engine,
                  const std::string& temp) -> absl::Status {
    const Layout& l = sb.layout;
    const uint64_t blocks = sb.header.size_bytes / kBlockSize;
    std::vector<uint8_t> tags(size_t{l.tag_blocks_per_group} * 4096);
    std::vector<uint8_t> cipher(size_t{l.data_blocks_per_group} * 4096);
    std::vector<uint8_t> plain(size_t{l.data_blocks_per_group} * 4096);
    absl::Cleanup wipe_plain = [&] { std::fill(plain.begin(), plain.end(), 0); };
    for (uint64_t g = 0; g < l.groups_for(blocks); ++g) {
      const uint64_t first = g * l.data_blocks_per_group;
      const uint32_t count = static_cast<uint32_t>(
          std::min<uint64_t>(l.data_blocks_per_group, blocks - first));
      RETURN_IF_ERROR(ReadAt(fd.get(), tags.data(), tags.size(),
                             l.tag_start(g) * 4096, path));
      if (AllZero(tags.data(), tags.size())) continue;  // Never written.
      RETURN_IF_ERROR(ReadAt(fd.get(), cipher.data(), size_t{count} * 4096,
                             l.data_position(first) * 4096, path));
      std::vector<bool> written(count, false);
      for (uint32_t i = 0; i < count; ++i) {
        const uint8_t* entry = tags.data() + size_t{i} * 64;
        const bool present[2] = {!AllZero(entry, 32), !AllZero(entry + 32, 32)};
        if (!present[0] && !present[1]) continue;
        const uint64_t counters[2] = {LoadLe64(entry), LoadLe64(entry + 32)};
        const int newer =
            present[0] && present[1] ? (counters[1] > counters[0] ? 1 : 0)
                                     : (present[1] ? 1 : 0);
        const uint64_t block = first + i;
        bool opened = false;
        for (int s : {newer, 1 - newer}) {
          if (!present[s]) continue;
          uint8_t aad[32];
          std::memcpy(aad, vid.data(), 16);
          for (int k = 0; k < 8; ++k) {
            aad[16 + k] = static_cast<uint8_t>(block >> (56 - 8 * k));
            aad[24 + k] = static_cast<uint8_t>(counters[s] >> (56 - 8 * k));
          }
          crypto::GcmTag tag;
          std::memcpy(tag.data(), entry + s * 32 + 8, tag.size());
          if (codec
                  ->Open(crypto::CounterNonce(0, counters[s]), aad,
                         {cipher.data() + size_t{i} * 4096, 4096}, tag,
                         {plain.data() + size_t{i} * 4096, 4096})
                  .ok()) {
            opened = true;
            break;
          }
        }
        if (opened) {
          written[i] = true;
          ++result.blocks_copied;
          continue;
        }
        // A lone slot over all-zero data is a first write that never landed
        // before a crash (format-1 recovery cleared it): the block is zeros.
        if (!(present[0] && present[1]) &&
            AllZero(cipher.data() + size_t{i} * 4096, 4096)) {
          continue;
        }
        return absl::DataLossError(absl::StrCat(
            path, ": block ", block,
            " fails authentication; nothing was changed (run `sealvol check` "
            "with the sealvol that wrote the image)"));
      }
      // Write the written blocks in runs.
      uint32_t k = 0;
      while (k < count) {
        if (!written[k]) {
          ++k;
          continue;
        }
        uint32_t run = k;
        while (run < count && written[run]) ++run;
        const int r = engine.Io(IoOp::kWrite, (first + k) * 4096,
                                 {plain.data() + size_t{k} * 4096,
                                  size_t{run - k} * 4096});
        if (r != 0) return ErrnoStatus(-r, "write", temp);
        k = run;
      }
    }
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(result.format_id,
                   ReplaceImageByCopy(path, sb.header.size_bytes, vid, dek, fill,
                                      &result.state));
  return result;
}

}  // namespace sealvol::io
