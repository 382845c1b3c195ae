#include "kms/base64.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "absl/status/status.h"

namespace sealvol::kms {
namespace {

// EVP_DecodeBlock ignores nothing and rejects nothing we care about, so the
// alphabet and padding are checked here first; it also returns the length
// rounded up to whole 3-byte groups, which the padding count corrects.
absl::StatusOr<size_t> CheckedDecodedSize(std::string_view text) {
  if (text.size() % 4 != 0) {
    return absl::InvalidArgumentError("base64: length is not a multiple of 4");
  }
  size_t pad = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                       (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (c == '=') {
      if (i + 2 < text.size()) {
        return absl::InvalidArgumentError("base64: padding inside the text");
      }
      ++pad;
    } else if (!alpha || pad > 0) {
      return absl::InvalidArgumentError("base64: invalid character");
    }
  }
  return text.size() / 4 * 3 - pad;
}

}  // namespace

std::string Base64Encode(std::span<const uint8_t> bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  if (bytes.empty()) return out;
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                bytes.data(), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

absl::StatusOr<std::vector<uint8_t>> Base64Decode(std::string_view text) {
  auto size = CheckedDecodedSize(text);
  if (!size.ok()) return size.status();
  std::vector<uint8_t> out(text.size() / 4 * 3);
  if (!text.empty() &&
      EVP_DecodeBlock(out.data(),
                      reinterpret_cast<const unsigned char*>(text.data()),
                      static_cast<int>(text.size())) < 0) {
    return absl::InvalidArgumentError("base64: decoding failed");
  }
  out.resize(*size);
  return out;
}

absl::StatusOr<crypto::SecretBytes> Base64DecodeSecret(std::string_view text) {
  auto size = CheckedDecodedSize(text);
  if (!size.ok()) return size.status();
  // Decode into a locked buffer of the rounded-up size, then copy the exact
  // length into the result; both are locked and zeroized.
  auto scratch = crypto::SecretBytes::Allocate(text.size() / 4 * 3 + 1);
  if (!scratch.ok()) return scratch.status();
  if (!text.empty() &&
      EVP_DecodeBlock(scratch->data(),
                      reinterpret_cast<const unsigned char*>(text.data()),
                      static_cast<int>(text.size())) < 0) {
    return absl::InvalidArgumentError("base64: decoding failed");
  }
  return crypto::SecretBytes::CopyFrom(scratch->span().first(*size));
}

}  // namespace sealvol::kms
