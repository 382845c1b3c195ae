#include "csi/pod_attestation.h"

#include "nlohmann/json.hpp"

namespace sealvol::csi {

namespace {

std::string Lookup(const google::protobuf::Map<std::string, std::string>& a,
                   const google::protobuf::Map<std::string, std::string>& b,
                   const std::string& key) {
  if (auto it = a.find(key); it != a.end() && !it->second.empty()) {
    return it->second;
  }
  if (auto it = b.find(key); it != b.end()) return it->second;
  return "";
}

}  // namespace

absl::StatusOr<PodAttestation> PodAttestationFrom(
    const google::protobuf::Map<std::string, std::string>& volume_context,
    const google::protobuf::Map<std::string, std::string>& secrets,
    TokenRule rule) {
  PodAttestation out;
  out.pod.name = Lookup(volume_context, secrets, kPodName);
  out.pod.namespace_name = Lookup(volume_context, secrets, kPodNamespace);
  out.pod.uid = Lookup(volume_context, secrets, kPodUid);
  out.pod.service_account = Lookup(volume_context, secrets, kPodServiceAccount);
  if (out.pod.name.empty() || out.pod.namespace_name.empty()) {
    return absl::PermissionDeniedError(
        "no_pod_identity: the publish request names no pod (set "
        "podInfoOnMount: true on the CSIDriver)");
  }
  const std::string tokens = Lookup(volume_context, secrets, kPodTokens);
  if (tokens.empty() && rule == TokenRule::kAbsentForBlock) {
    if (out.pod.uid.empty() || out.pod.service_account.empty()) {
      return absl::PermissionDeniedError(
          "no_pod_identity: a block publish without a token must name the "
          "pod's uid and service account (set podInfoOnMount: true on the "
          "CSIDriver)");
    }
    return out;  // The broker confirms the pod through the API server.
  }
  if (tokens.empty()) {
    return absl::PermissionDeniedError(
        "no_token: the publish request carries no service-account token "
        "(set tokenRequests: [{audience: sealvol}] on the CSIDriver)");
  }
  const auto json = nlohmann::json::parse(tokens, nullptr, false);
  if (json.is_discarded() || !json.is_object() || !json.contains(kTokenAudience) ||
      !json[kTokenAudience].is_object() ||
      !json[kTokenAudience].contains("token") ||
      !json[kTokenAudience]["token"].is_string()) {
    return absl::PermissionDeniedError(
        std::string("no_token: ") + kPodTokens +
        " holds no token for audience \"" + kTokenAudience + "\"");
  }
  out.token = json[kTokenAudience]["token"].get<std::string>();
  return out;
}

}  // namespace sealvol::csi
