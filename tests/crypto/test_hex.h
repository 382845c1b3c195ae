// Hex helpers for crypto test vectors. Test-only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sealvol::crypto {

inline std::vector<uint8_t> FromHex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(
        static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

}  // namespace sealvol::crypto
