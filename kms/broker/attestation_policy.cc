#include "kms/broker/attestation_policy.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kms/broker/refusal.h"

namespace sealvol::broker {
namespace {

bool ServiceAccountAllowed(const kms::VolumeRecord& volume,
                           const std::string& service_account) {
  auto it = volume.parameters.find(kAllowedServiceAccountsParameter);
  if (it == volume.parameters.end()) return true;
  bool any_entry = false;
  for (absl::string_view entry : absl::StrSplit(it->second, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry.empty()) continue;
    any_entry = true;
    if (entry == "*" || entry == service_account) return true;
    // "NS:NAME" entries are accepted when NS is the tenant.
    if (entry == absl::StrCat(volume.tenant, ":", service_account)) return true;
  }
  return !any_entry;
}

}  // namespace

AttestationPolicy::AttestationPolicy(AttestationPolicyOptions options)
    : options_(std::move(options)) {}

absl::Status AttestationPolicy::CheckNode(const VerifiedToken& node_token,
                                          std::string_view node_id) const {
  const std::string who = absl::StrCat(node_token.namespace_name, ":",
                                       node_token.service_account);
  if (who != options_.node_service_account) {
    return RefusalStatus(
        Reason::kNodeIdentityInvalid,
        absl::StrCat("caller is service account ", who, ", not the node "
                     "service account ", options_.node_service_account));
  }
  if (node_token.node_name.empty()) {
    return RefusalStatus(Reason::kNodeIdentityInvalid,
                         "caller token has no node claim");
  }
  if (node_id.empty() || node_token.node_name != node_id) {
    return RefusalStatus(
        Reason::kNodeIdentityInvalid,
        absl::StrCat("caller token is bound to node ", node_token.node_name,
                     ", request names node ", std::string(node_id)));
  }
  return absl::OkStatus();
}

absl::Status AttestationPolicy::CheckPod(const VerifiedToken& pod_token,
                                         const PodIdentity& forwarded,
                                         std::string_view node_id,
                                         const kms::VolumeRecord& volume) const {
  if (pod_token.namespace_name != volume.tenant) {
    return RefusalStatus(
        Reason::kNamespaceMismatch,
        absl::StrCat("pod token namespace ", pod_token.namespace_name,
                     " is not the tenant ", volume.tenant, " of volume ",
                     volume.volume_id));
  }
  if (forwarded.namespace_name != pod_token.namespace_name) {
    return RefusalStatus(
        Reason::kNamespaceMismatch,
        absl::StrCat("volume context names namespace ", forwarded.namespace_name,
                     ", pod token ", pod_token.namespace_name));
  }
  if (pod_token.pod_name.empty() || pod_token.pod_uid.empty()) {
    return RefusalStatus(Reason::kPodMismatch,
                         "pod token is not bound to a pod");
  }
  if (pod_token.pod_name != forwarded.name ||
      pod_token.pod_uid != forwarded.uid) {
    return RefusalStatus(
        Reason::kPodMismatch,
        absl::StrCat("pod token is for pod ", pod_token.pod_name, " (uid ",
                     pod_token.pod_uid, "), volume context names ",
                     forwarded.name, " (uid ", forwarded.uid, ")"));
  }
  if (!forwarded.service_account.empty() &&
      forwarded.service_account != pod_token.service_account) {
    return RefusalStatus(
        Reason::kPodMismatch,
        absl::StrCat("pod token is for service account ",
                     pod_token.service_account, ", volume context names ",
                     forwarded.service_account));
  }
  if (!ServiceAccountAllowed(volume, pod_token.service_account)) {
    return RefusalStatus(
        Reason::kServiceAccountNotAllowed,
        absl::StrCat("service account ", pod_token.service_account,
                     " is not in allowedServiceAccounts of volume ",
                     volume.volume_id));
  }
  if (pod_token.node_name.empty() && !options_.allow_tokens_without_node_claim) {
    return RefusalStatus(
        Reason::kTokenWithoutNodeClaim,
        "pod token has no node claim (API server before Kubernetes 1.30?); "
        "the broker accepts such tokens only with "
        "--allow-tokens-without-node-claim");
  }
  if (!pod_token.node_name.empty() && pod_token.node_name != node_id) {
    return RefusalStatus(
        Reason::kNodeMismatch,
        absl::StrCat("pod token is bound to node ", pod_token.node_name,
                     ", the request comes from node ", std::string(node_id)));
  }
  return absl::OkStatus();
}

absl::Status AttestationPolicy::CheckObservedPod(
    const ObservedPod& pod, const PodIdentity& forwarded,
    std::string_view node_id, const kms::VolumeRecord& volume) const {
  const std::string who = absl::StrCat(pod.namespace_name, "/", pod.name);
  // The same name may belong to a deleted pod's successor: the uid decides.
  if (forwarded.uid.empty() || pod.uid != forwarded.uid) {
    return RefusalStatus(
        Reason::kPodMismatch,
        absl::StrCat("pod ", who, " has uid ", pod.uid,
                     " in the API server, the volume context names uid ",
                     forwarded.uid));
  }
  if (forwarded.service_account.empty() ||
      pod.service_account != forwarded.service_account) {
    return RefusalStatus(
        Reason::kPodMismatch,
        absl::StrCat("pod ", who, " runs as service account ",
                     pod.service_account, ", the volume context names ",
                     forwarded.service_account));
  }
  // A node's kubelet creates mirror pods bound to itself, in any namespace
  // its static pod files name: the API server's word on such a pod is the
  // node's own. (NodeRestriction also keeps service accounts and claims out
  // of them.)
  if (pod.mirror) {
    return RefusalStatus(
        Reason::kPodMismatch,
        absl::StrCat("pod ", who, " is a mirror pod (a static pod of a "
                     "kubelet), which no node attests for itself"));
  }
  if (pod.terminating || (pod.phase != "Pending" && pod.phase != "Running")) {
    return RefusalStatus(
        Reason::kPodNotActive,
        absl::StrCat("pod ", who, " is ",
                     pod.terminating ? "terminating" : "in phase " + pod.phase,
                     "; only a Pending or Running pod gets a key"));
  }
  if (pod.namespace_name != volume.tenant) {
    return RefusalStatus(
        Reason::kNamespaceMismatch,
        absl::StrCat("pod namespace ", pod.namespace_name, " is not the tenant ",
                     volume.tenant, " of volume ", volume.volume_id));
  }
  if (!ServiceAccountAllowed(volume, pod.service_account)) {
    return RefusalStatus(
        Reason::kServiceAccountNotAllowed,
        absl::StrCat("service account ", pod.service_account,
                     " is not in allowedServiceAccounts of volume ",
                     volume.volume_id));
  }
  if (node_id.empty() || pod.node_name != node_id) {
    return RefusalStatus(
        Reason::kNodeMismatch,
        absl::StrCat("pod ", who, " is scheduled on node '", pod.node_name,
                     "', the request comes from node ", std::string(node_id)));
  }
  if (pod.claim.empty()) {
    return RefusalStatus(
        Reason::kVolumeNotInPod,
        absl::StrCat("pod ", who, " has no claim bound to volume ",
                     volume.volume_id));
  }
  if (pod.volume_mode != "Block") {
    return RefusalStatus(
        Reason::kVolumeNotInPod,
        absl::StrCat("pod ", who, " uses volume ", volume.volume_id,
                     " through claim ", pod.claim, " in mode ", pod.volume_mode,
                     "; only block volumes are attested without a token"));
  }
  return absl::OkStatus();
}

absl::Status AttestationPolicy::CheckPlacement(const kms::VolumeRecord& volume,
                                               std::string_view node_id) const {
  if (!volume.node.empty() && volume.node != node_id) {
    return RefusalStatus(
        Reason::kNodeNotOwner,
        absl::StrCat("volume ", volume.volume_id, " is placed on node ",
                     volume.node, ", the request comes from node ",
                     std::string(node_id)));
  }
  return absl::OkStatus();
}

}  // namespace sealvol::broker
