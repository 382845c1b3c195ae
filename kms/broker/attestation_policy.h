// AttestationPolicy decides whether a verified pod token, presented by a
// verified node, may receive a volume's key (docs/attestation.md). Pure
// functions of their inputs: thread-safe.
//
// Refusal reasons: node_identity_invalid, namespace_mismatch, pod_mismatch,
// service_account_not_allowed, node_mismatch.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "kms/broker/token_verifier.h"
#include "kms/key_provider.h"

namespace sealvol::broker {

// The StorageClass parameter that lists the service accounts allowed to
// receive a volume's key: comma-separated names in the tenant namespace, or
// "*". Absent or empty: any service account of the tenant namespace.
inline constexpr char kAllowedServiceAccountsParameter[] =
    "allowedServiceAccounts";

// Pod identity as the kubelet wrote it into the volume context and the
// node forwarded it.
struct PodIdentity {
  std::string name;
  std::string namespace_name;
  std::string uid;
  std::string service_account;
};

struct AttestationPolicyOptions {
  // "NAMESPACE:NAME" of the service account node plugins run as.
  std::string node_service_account = "sealvol-system:sealvol-node";
};

class AttestationPolicy {
 public:
  explicit AttestationPolicy(AttestationPolicyOptions options);

  // The caller's own token must be the node service account's, bound to a
  // node whose name is `node_id`.
  absl::Status CheckNode(const VerifiedToken& node_token,
                         std::string_view node_id) const;

  // The pod token must name the tenant namespace, the pod the node forwards,
  // an allowed service account, and (when it has a node claim) `node_id`.
  absl::Status CheckPod(const VerifiedToken& pod_token,
                        const PodIdentity& forwarded, std::string_view node_id,
                        const kms::VolumeRecord& volume) const;

  const AttestationPolicyOptions& options() const { return options_; }

 private:
  const AttestationPolicyOptions options_;
};

}  // namespace sealvol::broker
