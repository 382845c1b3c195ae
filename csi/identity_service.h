// IdentityService is the CSI Identity service of both sealvol processes: the
// driver name, the plugin capabilities, and a readiness probe injected by the
// process (the controller asks the KMS, the node its broker). Thread-safe.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "proto/csi.grpc.pb.h"

namespace sealvol::csi {

class IdentityService final : public ::csi::v1::Identity::Service {
 public:
  // `readiness` is called on every Probe; OK means ready. Its error message
  // is logged by the caller, not returned (it may name internal hosts).
  using Readiness = std::function<absl::Status()>;
  IdentityService(std::string vendor_version, Readiness readiness);

  grpc::Status GetPluginInfo(grpc::ServerContext* context,
                             const ::csi::v1::GetPluginInfoRequest* request,
                             ::csi::v1::GetPluginInfoResponse* response)
      override;
  grpc::Status GetPluginCapabilities(
      grpc::ServerContext* context,
      const ::csi::v1::GetPluginCapabilitiesRequest* request,
      ::csi::v1::GetPluginCapabilitiesResponse* response) override;
  // Ready (true) only when `readiness` returns OK; otherwise ready=false
  // with an OK gRPC status, as the spec asks of a plugin that is healthy but
  // cannot serve yet.
  grpc::Status Probe(grpc::ServerContext* context,
                     const ::csi::v1::ProbeRequest* request,
                     ::csi::v1::ProbeResponse* response) override;

 private:
  const std::string vendor_version_;
  const Readiness readiness_;
};

}  // namespace sealvol::csi
