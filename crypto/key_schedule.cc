#include "crypto/key_schedule.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <memory>
#include <vector>

#include "base/status_macros.h"
#include "crypto/ssl_unique_ptr.h"

namespace sealvol::crypto {
absl::StatusOr<SecretBytes> HkdfSha256(const SecretBytes& ikm,
                                       std::span<const uint8_t> salt,
                                       std::string_view info,
                                       size_t out_size) {
  SslUniquePtr<EVP_KDF> kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!kdf) return absl::InternalError("OpenSSL: HKDF is not available");
  SslUniquePtr<EVP_KDF_CTX> ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) return absl::ResourceExhaustedError("EVP_KDF_CTX_new");
  char digest[] = "SHA256";
  // An empty salt is left out: HKDF then uses HashLen zero bytes (RFC 5869).
  OSSL_PARAM params[5];
  size_t n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(ikm.data()), ikm.size());
  if (!salt.empty()) {
    params[n++] = OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(salt.data()), salt.size());
  }
  params[n++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size());
  params[n] = OSSL_PARAM_construct_end();
  ASSIGN_OR_RETURN(SecretBytes out, SecretBytes::Allocate(out_size));
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    return absl::InternalError("OpenSSL: HKDF-SHA256 derive failed");
  }
  return out;
}

absl::StatusOr<VolumeKeys> DeriveVolumeKeys(
    const SecretBytes& dek, std::span<const uint8_t> volume_id,
    std::span<const uint8_t> format_id) {
  if (dek.size() != kDekSize) {
    return absl::InvalidArgumentError("volume DEK must be 32 bytes");
  }
  std::vector<uint8_t> salt(volume_id.begin(), volume_id.end());
  salt.insert(salt.end(), format_id.begin(), format_id.end());
  VolumeKeys keys;
  ASSIGN_OR_RETURN(keys.session_root,
                   HkdfSha256(dek, salt, "sealvol/v2/session-root", 32));
  ASSIGN_OR_RETURN(keys.metadata_mac_key,
                   HkdfSha256(dek, salt, "sealvol/v2/metadata-mac", 32));
  ASSIGN_OR_RETURN(keys.header_mac_key,
                   HkdfSha256(dek, salt, "sealvol/v2/header-mac", 32));
  ASSIGN_OR_RETURN(SecretBytes kcv,
                   HkdfSha256(dek, salt, "sealvol/v2/key-check",
                              kKeyCheckSize));
  std::copy(kcv.data(), kcv.data() + kKeyCheckSize, keys.key_check.begin());
  return keys;
}

absl::StatusOr<Mac> HmacSha256(const SecretBytes& key,
                               std::span<const uint8_t> data) {
  Mac mac;
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(),
           data.size(), mac.data(), &len) == nullptr ||
      len != mac.size()) {
    return absl::InternalError("OpenSSL: HMAC-SHA256 failed");
  }
  return mac;
}

bool ConstantTimeEquals(std::span<const uint8_t> a,
                        std::span<const uint8_t> b) {
  return a.size() == b.size() &&
         (a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0);
}

}  // namespace sealvol::crypto
