#include "csi/volume_id.h"

#include <openssl/rand.h>

#include <array>
#include <cstdint>

#include "base/check.h"

namespace sealvol::csi {

namespace {
constexpr std::string_view kPrefix = "sv-";
constexpr size_t kIdBytes = 16;
}  // namespace

std::string NewVolumeId() {
  std::array<uint8_t, kIdBytes> bytes{};
  // A CSPRNG failure is not recoverable here: ids must never repeat.
  CHECK(RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) == 1);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(kPrefix);
  for (uint8_t b : bytes) {
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 0xf]);
  }
  return id;
}

bool IsWellFormedVolumeId(std::string_view text) {
  if (text.size() != kPrefix.size() + 2 * kIdBytes) return false;
  if (text.substr(0, kPrefix.size()) != kPrefix) return false;
  for (char c : text.substr(kPrefix.size())) {
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    if (!hex) return false;
  }
  return true;
}

}  // namespace sealvol::csi
