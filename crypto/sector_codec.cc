#include "crypto/sector_codec.h"

#include <openssl/crypto.h>

#include <climits>

namespace sealvol::crypto {
namespace {

// Fetched once per process: implicit fetches on every init are slow in
// OpenSSL 3.
const EVP_CIPHER* Aes256Gcm() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return cipher;
}

bool FitsInt(size_t n) { return n <= static_cast<size_t>(INT_MAX); }

}  // namespace

GcmNonce CounterNonce(uint32_t domain, uint64_t counter) {
  GcmNonce n;
  for (int i = 0; i < 4; ++i) n[i] = static_cast<uint8_t>(domain >> (24 - 8 * i));
  for (int i = 0; i < 8; ++i) {
    n[4 + i] = static_cast<uint8_t>(counter >> (56 - 8 * i));
  }
  return n;
}

absl::StatusOr<std::unique_ptr<SectorCodec>> SectorCodec::Create(
    const SecretBytes& key) {
  if (key.size() != kGcmKeySize) {
    return absl::InvalidArgumentError("sector codec: key must be 32 bytes");
  }
  if (Aes256Gcm() == nullptr) {
    return absl::InternalError("OpenSSL: AES-256-GCM is not available");
  }
  CtxPtr enc(EVP_CIPHER_CTX_new());
  CtxPtr dec(EVP_CIPHER_CTX_new());
  if (!enc || !dec) return absl::ResourceExhaustedError("EVP_CIPHER_CTX_new");
  if (EVP_EncryptInit_ex2(enc.get(), Aes256Gcm(), key.data(), nullptr,
                          nullptr) != 1 ||
      EVP_DecryptInit_ex2(dec.get(), Aes256Gcm(), key.data(), nullptr,
                          nullptr) != 1) {
    return absl::InternalError("OpenSSL: AES-256-GCM key setup failed");
  }
  return std::unique_ptr<SectorCodec>(
      new SectorCodec(std::move(enc), std::move(dec)));
}

absl::Status SectorCodec::SetSealKey(std::span<const uint8_t> key) {
  if (key.size() != kGcmKeySize ||
      EVP_EncryptInit_ex2(enc_.get(), nullptr, key.data(), nullptr, nullptr) !=
          1) {
    return absl::InternalError("OpenSSL: AES-256-GCM seal key setup failed");
  }
  return absl::OkStatus();
}

absl::Status SectorCodec::SetOpenKey(std::span<const uint8_t> key) {
  if (key.size() != kGcmKeySize ||
      EVP_DecryptInit_ex2(dec_.get(), nullptr, key.data(), nullptr, nullptr) !=
          1) {
    return absl::InternalError("OpenSSL: AES-256-GCM open key setup failed");
  }
  return absl::OkStatus();
}

absl::Status SectorCodec::Seal(const GcmNonce& nonce,
                               std::span<const uint8_t> aad,
                               std::span<const uint8_t> plaintext,
                               std::span<uint8_t> ciphertext, GcmTag& tag) {
  if (ciphertext.size() != plaintext.size() || !FitsInt(plaintext.size()) ||
      !FitsInt(aad.size())) {
    return absl::InvalidArgumentError("seal: buffer sizes do not match");
  }
  EVP_CIPHER_CTX* ctx = enc_.get();
  int len = 0;
  // Re-initialising with only the IV keeps the expanded key.
  if (EVP_EncryptInit_ex2(ctx, nullptr, nullptr, nonce.data(), nullptr) != 1 ||
      (!aad.empty() && EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(),
                                         static_cast<int>(aad.size())) != 1) ||
      EVP_EncryptUpdate(ctx, ciphertext.data(), &len, plaintext.data(),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx, ciphertext.data() + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kGcmTagSize,
                          tag.data()) != 1) {
    return absl::InternalError("OpenSSL: AES-256-GCM seal failed");
  }
  return absl::OkStatus();
}

absl::Status SectorCodec::Open(const GcmNonce& nonce,
                               std::span<const uint8_t> aad,
                               std::span<const uint8_t> ciphertext,
                               const GcmTag& tag,
                               std::span<uint8_t> plaintext) {
  if (ciphertext.size() != plaintext.size() || !FitsInt(ciphertext.size()) ||
      !FitsInt(aad.size())) {
    return absl::InvalidArgumentError("open: buffer sizes do not match");
  }
  EVP_CIPHER_CTX* ctx = dec_.get();
  int len = 0;
  if (EVP_DecryptInit_ex2(ctx, nullptr, nullptr, nonce.data(), nullptr) != 1 ||
      (!aad.empty() && EVP_DecryptUpdate(ctx, nullptr, &len, aad.data(),
                                         static_cast<int>(aad.size())) != 1) ||
      EVP_DecryptUpdate(ctx, plaintext.data(), &len, ciphertext.data(),
                        static_cast<int>(ciphertext.size())) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kGcmTagSize,
                          const_cast<uint8_t*>(tag.data())) != 1) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return absl::InternalError("OpenSSL: AES-256-GCM open failed");
  }
  if (EVP_DecryptFinal_ex(ctx, plaintext.data() + len, &len) != 1) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return absl::DataLossError("authentication tag mismatch");
  }
  return absl::OkStatus();
}

}  // namespace sealvol::crypto
