// What a NodePublishVolume request says of its pod: the identity the kubelet
// forwards (CSIDriver podInfoOnMount) and the pod's "sealvol" audience token
// (tokenRequests). Stateless, thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/map.h"
#include "kms/broker/key_broker_wire.h"

namespace sealvol::csi {

using PodIdentity = broker::PodIdentity;

// Keys of the volume context (or the secrets) that carry the pod identity
// and its tokens (CSIDriver podInfoOnMount and tokenRequests).
inline constexpr char kPodName[] = "csi.storage.k8s.io/pod.name";
inline constexpr char kPodNamespace[] = "csi.storage.k8s.io/pod.namespace";
inline constexpr char kPodUid[] = "csi.storage.k8s.io/pod.uid";
inline constexpr char kPodServiceAccount[] =
    "csi.storage.k8s.io/serviceAccount.name";
inline constexpr char kPodTokens[] = "csi.storage.k8s.io/serviceAccount.tokens";
inline constexpr char kTokenAudience[] = "sealvol";

struct PodAttestation {
  PodIdentity pod;
  std::string token;
};

// Whether a publish may come without a token: the kubelet sends none with
// a block volume's NodePublishVolume (pkg/volume/csi/csi_block.go), and the
// broker then confirms the pod through the API server, if its operator
// allows that. A file system publish always needs one.
enum class TokenRule { kRequired, kAbsentForBlock };

// Reads the pod identity and the "sealvol" audience token: each key from the
// volume context first, then from the secrets (serviceAccountTokenInSecrets
// puts the tokens there). PermissionDenied naming what is missing. With
// kAbsentForBlock, a request without the tokens key yields an empty token
// but must name the pod's uid and service account (the broker compares
// them with the API server's); a tokens key without a sealvol token is
// still refused.
absl::StatusOr<PodAttestation> PodAttestationFrom(
    const google::protobuf::Map<std::string, std::string>& volume_context,
    const google::protobuf::Map<std::string, std::string>& secrets,
    TokenRule rule = TokenRule::kRequired);

}  // namespace sealvol::csi
