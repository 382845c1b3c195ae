#include "base/volume_id.h"

#include <sys/random.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace sealvol {
namespace {

constexpr std::string_view kPrefix = "sv-";
constexpr char kHex[] = "0123456789abcdef";

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

VolumeId RandomVolumeId() {
  VolumeId id{};
  size_t filled = 0;
  while (filled < id.size()) {
    const ssize_t n = ::getrandom(id.data() + filled, id.size() - filled, 0);
    if (n < 0 && errno == EINTR) continue;
    CHECK(n > 0);
    filled += static_cast<size_t>(n);
  }
  return id;
}

std::string NewVolumeId() { return VolumeIdString(RandomVolumeId()); }

std::string VolumeIdString(const VolumeId& id) {
  std::string out(kPrefix);
  for (uint8_t b : id) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

absl::StatusOr<VolumeId> ParseVolumeId(std::string_view text) {
  VolumeId id{};
  bool ok = text.size() == kPrefix.size() + 2 * id.size() &&
            text.substr(0, kPrefix.size()) == kPrefix;
  for (size_t i = 0; ok && i < id.size(); ++i) {
    const int hi = HexDigit(text[kPrefix.size() + 2 * i]);
    const int lo = HexDigit(text[kPrefix.size() + 2 * i + 1]);
    ok = hi >= 0 && lo >= 0;
    id[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  if (!ok) {
    // Bounded: the text may come from a request of any size.
    return absl::InvalidArgumentError(absl::StrCat(
        "volume id \"", std::string(text.substr(0, 80)),
        "\" is not sv- followed by 32 lowercase hex digits"));
  }
  return id;
}

absl::Status ValidateVolumeId(std::string_view text) {
  return ParseVolumeId(text).status();
}

bool IsWellFormedVolumeId(std::string_view text) {
  return ParseVolumeId(text).ok();
}

}  // namespace sealvol
