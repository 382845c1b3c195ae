// SectorCodec seals and opens blocks with AES-256-GCM (OpenSSL EVP, AES-NI).
// Thread-compatible: one instance per worker thread. The key schedule is set
// up once; Seal and Open allocate nothing and create no EVP context.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "crypto/ssl_unique_ptr.h"

namespace sealvol::crypto {

inline constexpr size_t kGcmKeySize = 32;
inline constexpr size_t kGcmNonceSize = 12;
inline constexpr size_t kGcmTagSize = 16;

using GcmNonce = std::array<uint8_t, kGcmNonceSize>;
using GcmTag = std::array<uint8_t, kGcmTagSize>;

// Builds the 96-bit nonce from a 32-bit domain (0 for data blocks) and a
// 64-bit counter, both big-endian. Data blocks use an in-session counter
// under a per-session key (crypto/session_keys.h).
GcmNonce CounterNonce(uint32_t domain, uint64_t counter);

class SectorCodec {
 public:
  // `key` must be kGcmKeySize bytes. The codec copies the expanded key into
  // OpenSSL's context; the caller keeps ownership of `key`.
  static absl::StatusOr<std::unique_ptr<SectorCodec>> Create(
      const SecretBytes& key);

  // Replace the key used by Seal, or by Open (each `kGcmKeySize` bytes),
  // keeping the contexts: about 0.3 us, no allocation. The caller keeps
  // ownership of `key`.
  absl::Status SetSealKey(std::span<const uint8_t> key);
  absl::Status SetOpenKey(std::span<const uint8_t> key);

  // Encrypts `plaintext` into `ciphertext` (same size; may alias) and writes
  // the tag. `aad` is authenticated, not encrypted. Fails only if OpenSSL
  // fails (Internal).
  absl::Status Seal(const GcmNonce& nonce, std::span<const uint8_t> aad,
                    std::span<const uint8_t> plaintext,
                    std::span<uint8_t> ciphertext, GcmTag& tag);

  // Decrypts and verifies. On a tag mismatch returns DataLoss and zeroes
  // `plaintext`, so no unauthenticated byte escapes.
  absl::Status Open(const GcmNonce& nonce, std::span<const uint8_t> aad,
                    std::span<const uint8_t> ciphertext, const GcmTag& tag,
                    std::span<uint8_t> plaintext);

 private:
  using CtxPtr = SslUniquePtr<EVP_CIPHER_CTX>;

  SectorCodec(CtxPtr enc, CtxPtr dec)
      : enc_(std::move(enc)), dec_(std::move(dec)) {}

  CtxPtr enc_;
  CtxPtr dec_;
};

}  // namespace sealvol::crypto
