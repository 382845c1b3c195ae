// Readable, well-formed volume ids for tests. TestVolumeId("a") is "sv-61"
// followed by 30 zeros: the tag's bytes in hex, padded on the right, so ids
// sort as their tags do. Tags are at most 16 bytes. Thread-safe: stateless.
#pragma once

#include <string>
#include <string_view>

#include "base/check.h"

namespace sealvol::testing {

inline std::string TestVolumeId(std::string_view tag) {
  CHECK(!tag.empty() && tag.size() <= 16);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "sv-";
  for (unsigned char c : tag) {
    id.push_back(kHex[c >> 4]);
    id.push_back(kHex[c & 15]);
  }
  id.resize(3 + 32, '0');
  return id;
}

}  // namespace sealvol::testing
