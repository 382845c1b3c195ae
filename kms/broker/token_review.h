// TokenReviewer asks the Kubernetes API server whether a token is still
// live (authentication.k8s.io/v1 TokenReview), so the token of a deleted pod
// is refused even before it expires. Thread-safe.
//
// Refusals: token_revoked (the API server says not authenticated, or names
// another identity); token_review_failed (the API server could not be asked:
// the broker fails closed).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "kms/broker/api_server_client.h"
#include "kms/broker/token_verifier.h"

namespace sealvol::broker {

struct TokenReviewOptions {
  // e.g. "https://kubernetes.default.svc" (in-cluster default).
  std::string api_server_url = "https://kubernetes.default.svc";
  std::string ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  // The controller's own token; read on every call (kubelet rotates it).
  std::string bearer_token_file =
      "/var/run/secrets/kubernetes.io/serviceaccount/token";
  std::string audience = "sealvol";
  absl::Duration timeout = absl::Seconds(5);
};

class TokenReviewer {
 public:
  explicit TokenReviewer(TokenReviewOptions options);

  // OK when the API server authenticates `token` as the service account
  // (and, when it reports one, the pod) that `verified` names.
  absl::Status Review(std::string_view token,
                      const VerifiedToken& verified) const;

 private:
  const TokenReviewOptions options_;
  const ApiServerClient api_server_;
};

}  // namespace sealvol::broker
