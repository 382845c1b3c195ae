// Derives a volume's subkeys from its DEK with HKDF-SHA256 (RFC 5869), and
// computes HMAC-SHA256 for headers. Thread-safe: stateless.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace sealvol::crypto {

inline constexpr size_t kDekSize = 32;
inline constexpr size_t kKeyCheckSize = 16;
inline constexpr size_t kMacSize = 32;

using KeyCheckValue = std::array<uint8_t, kKeyCheckSize>;
using Mac = std::array<uint8_t, kMacSize>;

// The subkeys of one formatted image. Each is 32 bytes in locked memory.
struct VolumeKeys {
  // Root of the per-session data keys (crypto/session_keys.h): data blocks
  // are never sealed under this key itself.
  SecretBytes session_root;
  SecretBytes metadata_mac_key;  // HMAC key for engine metadata blocks.
  SecretBytes header_mac_key;  // HMAC key for the superblock.
  KeyCheckValue key_check{};   // Stored in the header; detects a wrong DEK.
};

// HKDF-SHA256 with the given salt and info, into `out_size` locked bytes.
absl::StatusOr<SecretBytes> HkdfSha256(const SecretBytes& ikm,
                                       std::span<const uint8_t> salt,
                                       std::string_view info, size_t out_size);

// Derives all subkeys of one format of a volume. The salt is
// `volume_id || format_id` (format_id is drawn at random by every format), so
// two volumes, or two formats of one volume id, never share a subkey even if
// given the same DEK. `dek` must be kDekSize bytes.
absl::StatusOr<VolumeKeys> DeriveVolumeKeys(const SecretBytes& dek,
                                            std::span<const uint8_t> volume_id,
                                            std::span<const uint8_t> format_id);

// HMAC-SHA256 of `data` under `key`.
absl::StatusOr<Mac> HmacSha256(const SecretBytes& key,
                               std::span<const uint8_t> data);

// Constant-time equality for MACs and key check values.
bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace sealvol::crypto
