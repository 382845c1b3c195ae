// Strict base64url (RFC 4648 section 5) without padding, as JWTs use it.
// Thread-safe: stateless.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sealvol::broker {

std::string Base64UrlEncode(std::span<const uint8_t> bytes);
std::string Base64UrlEncode(std::string_view bytes);

// Rejects padding, characters outside [A-Za-z0-9_-], a length of 1 mod 4,
// and non-canonical encodings (non-zero unused bits in the last character),
// so every token has exactly one byte representation.
absl::StatusOr<std::string> Base64UrlDecode(std::string_view text);

}  // namespace sealvol::broker
