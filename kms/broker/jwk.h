// Public keys from a JSON Web Key Set (RFC 7517): RSA (n, e) for RS256 and EC
// P-256 (x, y) for ES256, and JWS signature verification with them (OpenSSL
// EVP). KeySet is immutable after Parse: thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/ssl_unique_ptr.h"

namespace sealvol::broker {

enum class JwsAlgorithm { kRs256, kEs256 };

std::string_view JwsAlgorithmName(JwsAlgorithm alg);

struct PublicKey {
  std::string kid;
  JwsAlgorithm algorithm;  // The only algorithm this key may verify.
  crypto::SslUniquePtr<EVP_PKEY> pkey;
};

class KeySet {
 public:
  // Parses a JWKS document. Keys of other types (oct, OKP, RSA for
  // encryption) and keys without a kid are skipped; a malformed RSA or EC
  // key, an RSA key under 2048 bits or an EC point not on P-256 is an
  // InvalidArgument error naming the kid.
  static absl::StatusOr<KeySet> Parse(std::string_view jwks_json);

  // nullptr when no key has this kid.
  std::shared_ptr<const PublicKey> Find(const std::string& kid) const;
  size_t size() const { return keys_.size(); }
  std::vector<std::string> Kids() const;

 private:
  std::map<std::string, std::shared_ptr<const PublicKey>> keys_;
};

// Builds a key from one JWK object (as JSON text). Exposed for the test
// issuer and tests.
absl::StatusOr<std::shared_ptr<const PublicKey>> PublicKeyFromJwk(
    std::string_view jwk_json);

// Verifies a JWS signature over `signing_input` ("header.payload").
// ES256 signatures are raw r||s (64 bytes) as JWS specifies; they are
// converted to DER for EVP_DigestVerify. Returns OK or InvalidArgument
// ("signature does not verify").
absl::Status VerifyJwsSignature(const PublicKey& key,
                                std::string_view signing_input,
                                std::string_view signature);

// Converts between JWS raw r||s and DER-encoded ECDSA signatures (P-256).
absl::StatusOr<std::string> EcdsaRawToDer(std::string_view raw);
absl::StatusOr<std::string> EcdsaDerToRaw(std::string_view der);

}  // namespace sealvol::broker
