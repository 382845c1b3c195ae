#include "kms/broker/refusal.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace sealvol::broker {
namespace {
constexpr char kReasonPayloadUrl[] = "type.sealvol.dev/broker.refusal_reason";
}  // namespace

std::string_view ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kMalformedToken: return "malformed_token";
    case Reason::kAlgNotAllowed: return "alg_not_allowed";
    case Reason::kUnsupportedHeader: return "unsupported_header";
    case Reason::kUnknownKid: return "unknown_kid";
    case Reason::kBadSignature: return "bad_signature";
    case Reason::kWrongIssuer: return "wrong_issuer";
    case Reason::kWrongAudience: return "wrong_audience";
    case Reason::kTokenExpired: return "token_expired";
    case Reason::kTokenNotYetValid: return "token_not_yet_valid";
    case Reason::kTokenRevoked: return "token_revoked";
    case Reason::kTokenReviewFailed: return "token_review_failed";
    case Reason::kNamespaceMismatch: return "namespace_mismatch";
    case Reason::kPodMismatch: return "pod_mismatch";
    case Reason::kNodeMismatch: return "node_mismatch";
    case Reason::kServiceAccountNotAllowed: return "service_account_not_allowed";
    case Reason::kNodeIdentityInvalid: return "node_identity_invalid";
    case Reason::kVolumeNotFound: return "volume_not_found";
    case Reason::kRateLimited: return "rate_limited";
    case Reason::kKmsError: return "kms_error";
    case Reason::kAlreadyFormatted: return "already_formatted";
    case Reason::kInvalidRequest: return "invalid_request";
    case Reason::kNodeNotOwner: return "node_not_owner";
    case Reason::kTokenWithoutNodeClaim: return "token_without_node_claim";
    case Reason::kTokenLifetimeTooLong: return "token_lifetime_too_long";
    case Reason::kStateRegression: return "state_regression";
    case Reason::kInvalidState: return "invalid_state";
    case Reason::kRolledBack: return "rolled_back";
    case Reason::kNoToken: return "no_token";
    case Reason::kPodNotFound: return "pod_not_found";
    case Reason::kPodNotActive: return "pod_not_active";
    case Reason::kVolumeNotInPod: return "volume_not_in_pod";
    case Reason::kApiServerFailed: return "api_server_failed";
    case Reason::kInvalidFormatId: return "invalid_format_id";
    case Reason::kCopyNotActive: return "copy_not_active";
    case Reason::kSourceNotOnNode: return "source_not_on_node";
  }
  return "unknown";
}

absl::Status RefusalStatus(Reason reason, std::string_view message) {
  const std::string name(ReasonName(reason));
  const std::string text = absl::StrCat(name, ": ", std::string(message));
  absl::Status status;
  switch (reason) {
    case Reason::kRateLimited:
      status = absl::ResourceExhaustedError(text);
      break;
    case Reason::kKmsError:
    case Reason::kTokenReviewFailed:
    case Reason::kApiServerFailed:
      status = absl::UnavailableError(text);
      break;
    case Reason::kAlreadyFormatted:
    case Reason::kStateRegression:
    case Reason::kRolledBack:
    case Reason::kCopyNotActive:
      status = absl::FailedPreconditionError(text);
      break;
    case Reason::kInvalidRequest:
    case Reason::kInvalidState:
    case Reason::kInvalidFormatId:
      status = absl::InvalidArgumentError(text);
      break;
    default:
      status = absl::PermissionDeniedError(text);
  }
  return WithRefusalReason(std::move(status), reason);
}

std::optional<Reason> ReasonFromName(std::string_view name) {
  for (int r = 0; r <= static_cast<int>(kLastReason); ++r) {
    if (ReasonName(static_cast<Reason>(r)) == name) {
      return static_cast<Reason>(r);
    }
  }
  return std::nullopt;
}

absl::Status WithRefusalReason(absl::Status status, Reason reason) {
  if (status.ok()) return status;
  status.SetPayload(kReasonPayloadUrl,
                    absl::Cord(std::string(ReasonName(reason))));
  return status;
}

std::string RefusalReason(const absl::Status& status) {
  auto payload = status.GetPayload(kReasonPayloadUrl);
  if (!payload.has_value()) return "";
  return std::string(*payload);
}

}  // namespace sealvol::broker
