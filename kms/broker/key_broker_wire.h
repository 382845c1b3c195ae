// What both ends of the KeyBroker's gRPC wire share: the key-release
// request (the node's client builds it, the service decides it), its
// protobuf form, and the per-call limits. Thread-compatible: plain values.
#pragma once

#include <cstddef>
#include <string>

#include "proto/sealvol/keybroker.pb.h"

namespace sealvol::broker {

// Pod identity as the kubelet wrote it into the volume context and the
// node forwarded it.
struct PodIdentity {
  std::string name;
  std::string namespace_name;
  std::string uid;
  std::string service_account;
};

// One key-release request, independent of gRPC.
struct ReleaseRequest {
  std::string volume_id;
  std::string node_id;
  std::string pod_token;  // Empty: a block volume's publish (no token).
  PodIdentity pod;
};

v1::ReleaseKeyRequest ReleaseRequestToProto(const ReleaseRequest& request);
ReleaseRequest ReleaseRequestFromProto(const v1::ReleaseKeyRequest& request);

// Most volume ids one VolumeStatus call carries; the client batches.
inline constexpr size_t kMaxVolumeStatusIds = 256;

}  // namespace sealvol::broker
