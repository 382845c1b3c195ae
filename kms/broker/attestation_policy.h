// AttestationPolicy decides whether a verified pod token, presented by a
// verified node, may receive a volume's key (docs/attestation.md). Pure
// functions of their inputs: thread-safe.
//
// Refusal reasons: node_identity_invalid, namespace_mismatch, pod_mismatch,
// service_account_not_allowed, node_mismatch, token_without_node_claim,
// node_not_owner; for pods confirmed through the API server also
// pod_not_active and volume_not_in_pod.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "kms/broker/key_broker_wire.h"
#include "kms/broker/pod_lookup.h"
#include "kms/broker/token_verifier.h"
#include "kms/key_provider.h"

namespace sealvol::broker {

// The StorageClass parameter that lists the service accounts allowed to
// receive a volume's key: comma-separated names in the tenant namespace, or
// "*". Absent or empty: any service account of the tenant namespace.
inline constexpr char kAllowedServiceAccountsParameter[] =
    "allowedServiceAccounts";

struct AttestationPolicyOptions {
  // "NAMESPACE:NAME" of the service account node plugins run as.
  std::string node_service_account = "sealvol-system:sealvol-node";
  // Accept pod tokens without a `kubernetes.io.node` claim (API servers
  // before 1.30 do not add it). Off: such tokens are refused
  // (token_without_node_claim), since nothing binds them to a node.
  bool allow_tokens_without_node_claim = false;
};

class AttestationPolicy {
 public:
  explicit AttestationPolicy(AttestationPolicyOptions options);

  // The caller's own token must be the node service account's, bound to a
  // node whose name is `node_id`.
  absl::Status CheckNode(const VerifiedToken& node_token,
                         std::string_view node_id) const;

  // The pod token must name the tenant namespace, the pod the node forwards,
  // an allowed service account, and `node_id` in its node claim (a token
  // without one only with allow_tokens_without_node_claim).
  absl::Status CheckPod(const VerifiedToken& pod_token,
                        const PodIdentity& forwarded, std::string_view node_id,
                        const kms::VolumeRecord& volume) const;

  // For a request without a token (a block volume's publish): the pod as
  // the API server reports it must be the forwarded one (uid, service
  // account), live (Pending or Running, not terminating), in the volume's
  // tenant namespace, run by an allowed service account, scheduled on
  // `node_id`, and use the volume through a bound claim in Block mode.
  absl::Status CheckObservedPod(const ObservedPod& pod,
                                const PodIdentity& forwarded,
                                std::string_view node_id,
                                const kms::VolumeRecord& volume) const;

  // The volume must be placed on `node_id`, or on no node yet (the broker
  // then records `node_id` as its node before it releases the key).
  absl::Status CheckPlacement(const kms::VolumeRecord& volume,
                              std::string_view node_id) const;

  const AttestationPolicyOptions& options() const { return options_; }

 private:
  const AttestationPolicyOptions options_;
};

}  // namespace sealvol::broker
