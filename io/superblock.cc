#include "io/superblock.h"

#include <openssl/sha.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/error_kind.h"
#include "base/status_macros.h"
#include "io/little_endian.h"

namespace sealvol::io {
namespace {

constexpr char kMagic[8] = {'S', 'E', 'A', 'L', 'V', 'O', 'L', '\0'};
constexpr size_t kDigestOffset = 256;
constexpr size_t kMacOffset = 288;
constexpr uint32_t kKnownIncompatFeatures = kIncompatStateRoot;

}  // namespace

absl::StatusOr<SuperblockBytes> EncodeSuperblock(
    const Superblock& sb, const crypto::SecretBytes& header_mac_key) {
  SuperblockBytes out{};
  uint8_t* p = out.data();
  std::memcpy(p, kMagic, 8);
  StoreLe32(p + 8, sb.format_version);
  StoreLe32(p + 12, kBlockSize);
  std::memcpy(p + 16, sb.volume_id.data(), 16);
  std::memcpy(p + 32, sb.format_id.data(), 16);
  StoreLe64(p + 48, sb.size_bytes);
  StoreLe64(p + 56, sb.generation);
  StoreLe32(p + 64, sb.flags);
  StoreLe32(p + 68, sb.layout.has_digest_table()
                        ? sb.incompat_features | kIncompatStateRoot
                        : sb.incompat_features & ~kIncompatStateRoot);
  StoreLe32(p + 72, sb.layout.data_blocks_per_group);
  StoreLe32(p + 76, sb.layout.tag_blocks_per_group);
  StoreLe64(p + 80, sb.layout.bitmap_start);
  StoreLe64(p + 88, sb.layout.bitmap_blocks);
  StoreLe64(p + 96, sb.layout.groups_start);
  std::memcpy(p + 104, sb.key_check.data(), sb.key_check.size());
  if (sb.layout.has_digest_table()) {
    StoreLe64(p + 120, sb.layout.digest_start);
    StoreLe64(p + 128, sb.layout.digest_blocks);
    StoreLe64(p + 136, sb.state_epoch);
    StoreLe64(p + 144, sb.state_groups);
    StoreLe32(p + 152, sb.digest_copy);
    std::memcpy(p + 160, sb.state_root.data(), sb.state_root.size());
  }
  SHA256(p, kDigestOffset, p + kDigestOffset);
  ASSIGN_OR_RETURN(crypto::Mac mac,
                   crypto::HmacSha256(header_mac_key, {p, kMacOffset}));
  std::memcpy(p + kMacOffset, mac.data(), mac.size());
  return out;
}

void LoadLayoutFields(const uint8_t* p, size_t counts_at, size_t regions_at,
                      Layout& layout) {
  layout.data_blocks_per_group = LoadLe32(p + counts_at);
  layout.tag_blocks_per_group = LoadLe32(p + counts_at + 4);
  layout.bitmap_start = LoadLe64(p + regions_at);
  layout.bitmap_blocks = LoadLe64(p + regions_at + 8);
  layout.groups_start = LoadLe64(p + regions_at + 16);
}

absl::StatusOr<Superblock> DecodeSuperblock(std::span<const uint8_t> block) {
  if (block.size() < 4096 || std::memcmp(block.data(), kMagic, 8) != 0) {
    return SetErrorKind(absl::InvalidArgumentError("not a sealvol image"),
                        ErrorKind::kNotSealvol);
  }
  const uint8_t* p = block.data();
  Superblock sb;
  sb.format_version = LoadLe32(p + 8);
  if (sb.format_version == 1) {
    return SetErrorKind(
        absl::FailedPreconditionError(
            "format version 1 is refused: its nonces can repeat when the image "
            "is rolled back or re-created; convert it with `sealvol upgrade "
            "IMAGE` (docs/format.md)"),
        ErrorKind::kBadVersion);
  }
  if (sb.format_version != kFormatVersion) {
    return SetErrorKind(absl::FailedPreconditionError(absl::StrCat(
                            "unsupported format version ", sb.format_version)),
                        ErrorKind::kBadVersion);
  }
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(p, kDigestOffset, digest);
  if (std::memcmp(digest, p + kDigestOffset, sizeof(digest)) != 0) {
    return absl::DataLossError("superblock copy is corrupt (digest mismatch)");
  }
  if (LoadLe32(p + 12) != kBlockSize) {
    return SetErrorKind(absl::FailedPreconditionError(absl::StrCat(
                            "unsupported block size ", LoadLe32(p + 12))),
                        ErrorKind::kBadVersion);
  }
  std::memcpy(sb.volume_id.data(), p + 16, 16);
  std::memcpy(sb.format_id.data(), p + 32, 16);
  sb.size_bytes = LoadLe64(p + 48);
  sb.generation = LoadLe64(p + 56);
  sb.flags = LoadLe32(p + 64);
  sb.incompat_features = LoadLe32(p + 68);
  if ((sb.incompat_features & ~kKnownIncompatFeatures) != 0) {
    return SetErrorKind(
        absl::FailedPreconditionError(absl::StrCat(
            "image uses features this sealvol does not know "
            "(incompat_features 0x",
            absl::Hex(sb.incompat_features), "): upgrade sealvol")),
        ErrorKind::kBadVersion);
  }
  LoadLayoutFields(p, 72, 80, sb.layout);
  std::memcpy(sb.key_check.data(), p + 104, sb.key_check.size());
  if ((sb.incompat_features & kIncompatStateRoot) != 0) {
    sb.layout.digest_start = LoadLe64(p + 120);
    sb.layout.digest_blocks = LoadLe64(p + 128);
    sb.state_epoch = LoadLe64(p + 136);
    sb.state_groups = LoadLe64(p + 144);
    sb.digest_copy = LoadLe32(p + 152);
    std::memcpy(sb.state_root.data(), p + 160, sb.state_root.size());
    if (sb.layout.digest_blocks == 0 || sb.digest_copy > 1 ||
        sb.state_groups > sb.layout.max_groups()) {
      return absl::DataLossError("superblock copy has an invalid state root");
    }
  } else {
    sb.layout.digest_start = 0;
    sb.layout.digest_blocks = 0;
  }
  if (!sb.layout.Valid() || sb.size_bytes % kBlockSize != 0 ||
      sb.size_bytes / kBlockSize > sb.layout.max_blocks()) {
    return absl::DataLossError("superblock copy has an invalid layout");
  }
  return sb;
}

bool SuperblockMacValid(std::span<const uint8_t> block,
                        const crypto::SecretBytes& header_mac_key) {
  if (block.size() < 4096) return false;
  auto mac = crypto::HmacSha256(header_mac_key, block.subspan(0, kMacOffset));
  return mac.ok() && crypto::ConstantTimeEquals(
                         *mac, block.subspan(kMacOffset, crypto::kMacSize));
}

absl::StatusOr<Superblock> NewestSuperblock(
    const absl::StatusOr<Superblock>& a, const absl::StatusOr<Superblock>& b) {
  if (a.ok() && b.ok()) return a->generation >= b->generation ? *a : *b;
  if (a.ok()) return *a;
  if (b.ok()) return *b;
  // Prefer the most specific error: a version or corruption error says more
  // than "not a sealvol image".
  if (!absl::IsInvalidArgument(a.status())) return a.status();
  return b.status();
}

}  // namespace sealvol::io
