// Standard base64 (RFC 4648, with padding) for KMS wire formats and wrapped
// keys. Thread-safe: stateless. Decoding into SecretBytes keeps plaintext key
// material out of std::string.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace sealvol::kms {

std::string Base64Encode(std::span<const uint8_t> bytes);
inline std::string Base64Encode(std::string_view text) {
  return Base64Encode(std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

// InvalidArgument when `text` is not canonical padded base64.
absl::StatusOr<std::vector<uint8_t>> Base64Decode(std::string_view text);

// Decodes straight into locked memory (for plaintext keys from a KMS).
absl::StatusOr<crypto::SecretBytes> Base64DecodeSecret(std::string_view text);

}  // namespace sealvol::kms
