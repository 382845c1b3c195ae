// TokenVerifier checks Kubernetes projected service-account tokens (JWTs):
// RS256/ES256 signature against the issuer's JWKS, iss, aud, exp/nbf/iat
// with bounded clock skew, and extracts the `kubernetes.io` claims.
// Thread-safe (the JwksCache is shared and locked inside).
//
// Errors carry a refusal reason (see refusal.h): malformed_token,
// alg_not_allowed, unsupported_header, unknown_kid, bad_signature,
// wrong_issuer, wrong_audience, token_expired, token_not_yet_valid,
// token_lifetime_too_long.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kms/broker/jwks_cache.h"

namespace sealvol::broker {

// What a verified token says. Every field comes from a signed claim.
struct VerifiedToken {
  std::string issuer;
  std::string subject;  // "system:serviceaccount:NS:SA"
  std::vector<std::string> audiences;
  absl::Time expires_at;
  absl::Time not_before = absl::InfinitePast();
  absl::Time issued_at = absl::InfinitePast();
  std::string jti;  // May be empty.
  std::string namespace_name;
  std::string service_account;
  std::string service_account_uid;
  std::string pod_name;  // Empty for tokens not bound to a pod.
  std::string pod_uid;
  std::string node_name;  // Empty when the token has no node claim.
  std::string node_uid;
};

struct TokenVerifierOptions {
  std::string issuer;                 // Required: the exact `iss`.
  std::string audience = "sealvol";   // Must appear in `aud`.
  absl::Duration clock_skew = absl::Seconds(60);
  size_t max_token_bytes = 16 * 1024;
  // Longest lifetime accepted: exp - iat and exp - nbf (each when present;
  // exp - now when neither is) must not exceed it. Projected tokens live
  // 10 min to a few hours; a token valid for years was not minted for us.
  absl::Duration max_lifetime = absl::Hours(24);
  // The clock; tests replace it.
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

class TokenVerifier {
 public:
  // `keys` must outlive the verifier.
  TokenVerifier(TokenVerifierOptions options, JwksCache& keys);

  absl::StatusOr<VerifiedToken> Verify(std::string_view token) const;

  const TokenVerifierOptions& options() const { return options_; }

 private:
  const TokenVerifierOptions options_;
  JwksCache& keys_;
};

// The token's identifier for audit records: its jti when it has one,
// otherwise "sha256:" + hex SHA-256 of the token. Never the token itself.
std::string TokenId(std::string_view token, std::string_view jti);

// Lower-case hex SHA-256.
std::string Sha256Hex(std::string_view data);

}  // namespace sealvol::broker
