#include "io/volume_state.h"

#include "absl/strings/str_cat.h"

namespace sealvol::io {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string StateRootString(const StateRoot& root) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * root.size());
  for (uint8_t b : root) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

absl::StatusOr<StateRoot> ParseStateRoot(std::string_view text) {
  if (text.size() != 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad state root: want 64 hex digits, got ", text.size(), " characters"));
  }
  StateRoot root;
  for (size_t i = 0; i < root.size(); ++i) {
    const int hi = HexValue(text[2 * i]), lo = HexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad state root: character ", hi < 0 ? 2 * i + 1 : 2 * i + 2,
          " is not a hex digit"));
    }
    root[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return root;
}

}  // namespace sealvol::io
