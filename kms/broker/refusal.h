// Refusal reasons of the key broker: a stable machine string per failed
// check, carried in an absl::Status (PermissionDenied, or ResourceExhausted
// for rate limiting) as a payload, so callers branch on the reason, never on
// the message "<reason>: <message>" (which is for people). Over gRPC the
// reason travels in the trailer kRefusalReasonTrailer. Thread-safe:
// stateless.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace sealvol::broker {

enum class Reason {
  kMalformedToken,        // Not a well-formed JWT (encoding, JSON, claims).
  kAlgNotAllowed,         // alg is none, HS*, or anything but RS256/ES256.
  kUnsupportedHeader,     // A `crit` header (we understand no extension).
  kUnknownKid,            // No key with this kid in the JWKS (after refresh).
  kBadSignature,          // The signature does not verify.
  kWrongIssuer,           // iss is not the configured issuer.
  kWrongAudience,         // aud does not contain the configured audience.
  kTokenExpired,          // exp (plus skew) is in the past.
  kTokenNotYetValid,      // nbf or iat (minus skew) is in the future.
  kTokenRevoked,          // TokenReview says the token is no longer live.
  kTokenReviewFailed,     // TokenReview could not be asked (fail closed).
  kNamespaceMismatch,     // Pod namespace is not the volume's tenant.
  kPodMismatch,           // Token's pod is not the pod the node names.
  kNodeMismatch,          // Token's node is not the node that asks.
  kServiceAccountNotAllowed,  // SA not in allowedServiceAccounts.
  kNodeIdentityInvalid,   // Caller's node token missing, invalid or not the
                          // node service account / not this node.
  kVolumeNotFound,        // No such volume in the registry.
  kRateLimited,           // Caller exceeded its request budget.
  kKmsError,              // The KMS failed to unwrap (not a policy refusal).
  kAlreadyFormatted,      // ClaimFormat: the registry holds another format
                          // id; the volume's image was formatted before.
  kInvalidRequest,        // A request field is over its size limit
                          // (InvalidArgument).
  kNodeNotOwner,          // The volume is placed on another node.
  kTokenWithoutNodeClaim,  // Pod token has no node claim and the operator
                           // did not opt in (--allow-tokens-without-node-claim).
  kTokenLifetimeTooLong,  // exp - iat (or exp - nbf) above the broker's cap.
  kStateRegression,       // CommitState: the epoch would go back, or an
                          // accept_rollback with nothing pending.
  kInvalidState,          // CommitState: a malformed state root.
  kRolledBack,            // ReportRollback: a node refused a rolled-back
                          // image (audited; the node's own refusal).
  // Pods confirmed through the API server (block volumes: no token).
  kNoToken,               // No pod token, and the request may not do without.
  kPodNotFound,           // The API server has no such pod.
  kPodNotActive,          // The pod is terminating, succeeded or failed.
  kVolumeNotInPod,        // The pod has no claim bound to the volume as a
                          // block volume.
  kApiServerFailed,       // The API server could not be asked (fail closed).
  kInvalidFormatId,       // ClaimFormat/ReportCopy: a format id that is not
                          // 32 lowercase hex digits (InvalidArgument).
  // Copy jobs (snapshots, restores, clones: ReleaseCopyKeys, ReportCopy).
  kCopyNotActive,         // The target has no copy in progress (none, or it
                          // ended), or its source is an unfinished copy
                          // (FailedPrecondition).
  kSourceNotOnNode,       // The copy's source is placed on another node.
};

// The last reason, for code that maps every name back (the client).
inline constexpr Reason kLastReason = Reason::kSourceNotOnNode;

// The trailing-metadata key of a refused call: the reason's name.
inline constexpr char kRefusalReasonTrailer[] = "sealvol-refusal-reason";

// The stable string, e.g. "token_expired".
std::string_view ReasonName(Reason reason);

// The reason named `name`; nullopt for a name no reason has.
std::optional<Reason> ReasonFromName(std::string_view name);

// PermissionDenied (ResourceExhausted for kRateLimited, Unavailable for
// kKmsError, kTokenReviewFailed and kApiServerFailed, FailedPrecondition for
// kAlreadyFormatted, kStateRegression, kRolledBack and kCopyNotActive,
// InvalidArgument for kInvalidRequest, kInvalidState and kInvalidFormatId)
// with message "<reason>: <message>" and
// the reason as payload. `message` must not contain secrets.
absl::Status RefusalStatus(Reason reason, std::string_view message);

// `status` (code and message as they are) carrying `reason`: a refusal
// received over the wire. An OK status stays OK and carries nothing.
absl::Status WithRefusalReason(absl::Status status, Reason reason);

// The reason name carried by `status`, or "" if it carries none.
std::string RefusalReason(const absl::Status& status);

}  // namespace sealvol::broker
