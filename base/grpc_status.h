// Maps absl::Status to grpc::Status at the edge of every CSI and KeyBroker
// service, and back in their clients. The canonical codes are numerically
// identical in both libraries; this is the one place that relies on it.
// Stateless, thread-safe.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace sealvol {

grpc::Status ToGrpcStatus(const absl::Status& status);

// The reverse, for clients (the `sealvol csi` commands, the node's broker
// client) that return Status.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace sealvol
