// Fuzzes CSI request validation. The first byte picks a request type; the
// rest is that request's protobuf encoding, as kubelet or a sidecar would
// send it. Controller requests go through the real ControllerService over
// the embedded key provider in a temporary directory (so a request that
// passes validation really creates, expands or destroys a record); node
// requests go through the node's request parsing (pod attestation from the
// volume context and secrets, capability and volume id checks), which runs
// before the node touches a mount.
#include <cstdlib>
#include <memory>
#include <string>

#include "base/check.h"
#include "base/volume_id.h"
#include "csi/capabilities.h"
#include "csi/controller_service.h"
#include "csi/node_service.h"
#include "kms/local_key_provider.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/support/temp_dir.h"

namespace sealvol::fuzz {
namespace {

namespace csipb = ::csi::v1;

struct Controller {
  // Removed at exit; the Controller itself lives until then.
  std::unique_ptr<::sealvol::testing::TempDir> dir;
  std::unique_ptr<kms::LocalKeyProvider> keys;
  std::unique_ptr<csi::ControllerService> service;
  int requests = 0;
};

Controller& TheController() {
  static Controller* c = [] {
    auto* out = new Controller;
    out->dir = std::make_unique<::sealvol::testing::TempDir>("sealvol-fuzz-csi");
    auto keys = kms::LocalKeyProvider::Open(out->dir->file("kms"));
    CHECK(keys.ok());
    out->keys = std::move(keys).value();
    csi::ControllerOptions options;
    options.max_capacity_bytes = uint64_t{1} << 40;
    out->service = std::make_unique<csi::ControllerService>(out->keys.get(), options);
    std::atexit([] { TheController().dir.reset(); });
    return out;
  }();
  return *c;
}

template <typename Request>
bool Parse(Request& request, const uint8_t* data, size_t size) {
  return request.ParseFromArray(data, static_cast<int>(size));
}

void CheckControllerStatus(const grpc::Status& status) {
  // Validation failures are INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE,
  // ALREADY_EXISTS and the like; INTERNAL or UNKNOWN would mean a request
  // broke something it should have been refused for.
  CHECK(status.error_code() != grpc::StatusCode::UNKNOWN);
  CHECK(status.error_code() != grpc::StatusCode::INTERNAL);
}

void FuzzController(Controller& c, uint8_t kind, const uint8_t* data, size_t size) {
  switch (kind) {
    case 0: {
      csipb::CreateVolumeRequest request;
      if (!Parse(request, data, size)) return;
      csipb::CreateVolumeResponse response;
      const grpc::Status s = c.service->CreateVolume(nullptr, &request, &response);
      CheckControllerStatus(s);
      if (s.ok()) {
        CHECK(IsWellFormedVolumeId(response.volume().volume_id()));
        CHECK_EQ(response.volume().capacity_bytes() % 4096, 0);
        // Keep the registry small: every created volume is destroyed.
        csipb::DeleteVolumeRequest remove;
        remove.set_volume_id(response.volume().volume_id());
        csipb::DeleteVolumeResponse removed;
        CHECK(c.service->DeleteVolume(nullptr, &remove, &removed).ok());
      }
      return;
    }
    case 1: {
      csipb::DeleteVolumeRequest request;
      if (!Parse(request, data, size)) return;
      csipb::DeleteVolumeResponse response;
      CheckControllerStatus(c.service->DeleteVolume(nullptr, &request, &response));
      return;
    }
    case 2: {
      csipb::ValidateVolumeCapabilitiesRequest request;
      if (!Parse(request, data, size)) return;
      csipb::ValidateVolumeCapabilitiesResponse response;
      CheckControllerStatus(
          c.service->ValidateVolumeCapabilities(nullptr, &request, &response));
      return;
    }
    case 3: {
      csipb::ListVolumesRequest request;
      if (!Parse(request, data, size)) return;
      csipb::ListVolumesResponse response;
      CheckControllerStatus(c.service->ListVolumes(nullptr, &request, &response));
      return;
    }
    default: {
      csipb::ControllerExpandVolumeRequest request;
      if (!Parse(request, data, size)) return;
      csipb::ControllerExpandVolumeResponse response;
      CheckControllerStatus(
          c.service->ControllerExpandVolume(nullptr, &request, &response));
      return;
    }
  }
}

void FuzzNode(uint8_t kind, const uint8_t* data, size_t size) {
  if (kind == 5) {
    csipb::NodePublishVolumeRequest request;
    if (!Parse(request, data, size)) return;
    auto attestation =
        csi::PodAttestationFrom(request.volume_context(), request.secrets());
    if (attestation.ok()) {
      CHECK(!attestation->token.empty());
    } else {
      CHECK(attestation.status().code() == absl::StatusCode::kPermissionDenied ||
            attestation.status().code() == absl::StatusCode::kInvalidArgument);
    }
    (void)csi::CheckVolumeCapability(request.volume_capability());
    (void)IsWellFormedVolumeId(request.volume_id());
    return;
  }
  csipb::NodeStageVolumeRequest request;
  if (!Parse(request, data, size)) return;
  if (csi::CheckVolumeCapability(request.volume_capability()).ok() &&
      request.volume_capability().has_mount()) {
    (void)csi::IsSupportedFsType(
        csi::FsTypeOf(request.volume_capability(), csi::kDefaultFsType));
  }
  (void)IsWellFormedVolumeId(request.volume_id());
}

}  // namespace

int FuzzCsiRequest(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Controller& c = TheController();
  const uint8_t kind = data[0] % 7;
  if (kind < 5) {
    FuzzController(c, kind, data + 1, size - 1);
  } else {
    FuzzNode(kind, data + 1, size - 1);
  }
  return 0;
}

}  // namespace sealvol::fuzz
