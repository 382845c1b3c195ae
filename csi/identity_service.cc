#include "csi/identity_service.h"

#include <utility>

#include "csi/capabilities.h"
#include "spdlog/spdlog.h"

namespace sealvol::csi {

IdentityService::IdentityService(std::string vendor_version,
                                 Readiness readiness)
    : vendor_version_(std::move(vendor_version)),
      readiness_(std::move(readiness)) {}

grpc::Status IdentityService::GetPluginInfo(
    grpc::ServerContext*, const csipb::GetPluginInfoRequest*,
    csipb::GetPluginInfoResponse* response) {
  response->set_name(kDriverName);
  response->set_vendor_version(vendor_version_);
  return grpc::Status::OK;
}

grpc::Status IdentityService::GetPluginCapabilities(
    grpc::ServerContext*, const csipb::GetPluginCapabilitiesRequest*,
    csipb::GetPluginCapabilitiesResponse* response) {
  // The same answer from the controller and the node: they are one plugin.
  for (auto type : {csipb::PluginCapability::Service::CONTROLLER_SERVICE,
                    csipb::PluginCapability::Service::
                        VOLUME_ACCESSIBILITY_CONSTRAINTS}) {
    response->add_capabilities()->mutable_service()->set_type(type);
  }
  response->add_capabilities()->mutable_volume_expansion()->set_type(
      csipb::PluginCapability::VolumeExpansion::ONLINE);
  return grpc::Status::OK;
}

grpc::Status IdentityService::Probe(grpc::ServerContext*,
                                    const csipb::ProbeRequest*,
                                    csipb::ProbeResponse* response) {
  const absl::Status status = readiness_ ? readiness_() : absl::OkStatus();
  if (!status.ok()) {
    spdlog::warn("probe: not ready: {}", std::string(status.message()));
  }
  response->mutable_ready()->set_value(status.ok());
  return grpc::Status::OK;
}

}  // namespace sealvol::csi
