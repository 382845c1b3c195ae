// TestIssuer mints Kubernetes-style projected service-account tokens with its
// own key, FOR TESTS AND DEMOS ONLY: it stands in for the API server's token
// issuer so tests and the demo can exercise real attestation. Thread-safe
// after construction (signing uses per-call OpenSSL contexts).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kms/broker/jwk.h"

namespace sealvol::broker {

struct MintOptions {
  std::string issuer;
  std::string audience = "sealvol";
  std::string namespace_name;
  std::string service_account;
  std::string service_account_uid;  // Empty: random UUID.
  std::string pod_name;             // Empty: no pod claim.
  std::string pod_uid;
  std::string node_name;            // Empty: no node claim.
  std::string node_uid;             // Empty with a node: random UUID.
  absl::Time not_before = absl::Now();
  absl::Duration ttl = absl::Hours(1);
  std::string jti;                  // Empty: random UUID.
};

class TestIssuer {
 public:
  // A fresh RS256 (RSA 2048) or ES256 (P-256) key.
  static absl::StatusOr<TestIssuer> Generate(JwsAlgorithm algorithm);
  // Loads a PEM private key (PKCS#8 or traditional) written by PrivateKeyPem.
  static absl::StatusOr<TestIssuer> FromPem(std::string_view pem);

  TestIssuer(TestIssuer&&) = default;
  TestIssuer& operator=(TestIssuer&&) = default;

  // PKCS#8 PEM. Secret: write it with mode 0600.
  absl::StatusOr<std::string> PrivateKeyPem() const;
  // The public JWK (with kid, alg, use) and a JWKS holding only it.
  std::string PublicJwk() const;
  std::string Jwks() const;
  // RFC 7638 thumbprint, base64url: the kid.
  const std::string& kid() const { return kid_; }
  JwsAlgorithm algorithm() const { return algorithm_; }

  absl::StatusOr<std::string> Mint(const MintOptions& options) const;
  // Signs arbitrary header and payload JSON as given (for negative tests).
  absl::StatusOr<std::string> SignRaw(std::string_view header_json,
                                      std::string_view payload_json) const;

 private:
  TestIssuer(JwsAlgorithm algorithm, crypto::SslUniquePtr<EVP_PKEY> key);

  JwsAlgorithm algorithm_;
  crypto::SslUniquePtr<EVP_PKEY> key_;
  std::string kid_;
  std::string jwk_members_;  // Canonical public members, for jwk and kid.
};

// A random RFC 4122 version-4 UUID string.
std::string RandomUuid();

}  // namespace sealvol::broker
