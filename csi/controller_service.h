// ControllerService is the CSI Controller service: it provisions volumes by
// creating their wrapped data keys in the KeyProvider's registry, destroys
// them (crypto-shredding), lists, validates and expands them. It holds no
// plaintext key and touches no disk: the volume's bytes live on a node.
//
// Thread-safe. Calls that create or change a record are serialized by one
// mutex, so CreateVolume is idempotent by name within a process; several
// controller replicas rely on the sidecars' leader election for the same.
#pragma once

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "kms/key_provider.h"
#include "proto/csi.grpc.pb.h"

namespace sealvol::csi {

// StorageClass parameters sealvol reads (others under csi.storage.k8s.io/
// are accepted and ignored; anything else is InvalidArgument).
inline constexpr char kParamTenant[] = "csi.storage.k8s.io/pvc/namespace";
inline constexpr char kParamFsType[] = "fsType";
inline constexpr char kParamAllowedServiceAccounts[] =
    "allowedServiceAccounts";
inline constexpr char kParamKmsKeyTemplate[] = "kmsKeyTemplate";

// Volume context keys the controller sets and the node reads.
inline constexpr char kContextTenant[] = "sealvol.csi.dev/tenant";
inline constexpr char kContextFsType[] = "sealvol.csi.dev/fs-type";
inline constexpr char kContextCapacity[] = "sealvol.csi.dev/initial-bytes";

struct ControllerOptions {
  // Size when the request has no capacity range.
  uint64_t default_capacity_bytes = uint64_t{1} << 30;
  // Largest volume the controller provisions (engine and loop limits are
  // far above; this guards against typos).
  uint64_t max_capacity_bytes = uint64_t{64} << 40;
};

class ControllerService final : public ::csi::v1::Controller::Service {
 public:
  // `keys` must outlive the service.
  explicit ControllerService(kms::KeyProvider* keys,
                             ControllerOptions options = {});

  grpc::Status CreateVolume(grpc::ServerContext* context,
                            const ::csi::v1::CreateVolumeRequest* request,
                            ::csi::v1::CreateVolumeResponse* response) override;
  grpc::Status DeleteVolume(grpc::ServerContext* context,
                            const ::csi::v1::DeleteVolumeRequest* request,
                            ::csi::v1::DeleteVolumeResponse* response) override;
  grpc::Status ValidateVolumeCapabilities(
      grpc::ServerContext* context,
      const ::csi::v1::ValidateVolumeCapabilitiesRequest* request,
      ::csi::v1::ValidateVolumeCapabilitiesResponse* response) override;
  grpc::Status ListVolumes(grpc::ServerContext* context,
                           const ::csi::v1::ListVolumesRequest* request,
                           ::csi::v1::ListVolumesResponse* response) override;
  grpc::Status ControllerGetCapabilities(
      grpc::ServerContext* context,
      const ::csi::v1::ControllerGetCapabilitiesRequest* request,
      ::csi::v1::ControllerGetCapabilitiesResponse* response) override;
  grpc::Status ControllerExpandVolume(
      grpc::ServerContext* context,
      const ::csi::v1::ControllerExpandVolumeRequest* request,
      ::csi::v1::ControllerExpandVolumeResponse* response) override;

 private:
  absl::Status DoCreateVolume(const ::csi::v1::CreateVolumeRequest& request,
                              ::csi::v1::CreateVolumeResponse* response);
  absl::Status DoDeleteVolume(const ::csi::v1::DeleteVolumeRequest& request);
  absl::Status DoValidate(
      const ::csi::v1::ValidateVolumeCapabilitiesRequest& request,
      ::csi::v1::ValidateVolumeCapabilitiesResponse* response);
  absl::Status DoListVolumes(const ::csi::v1::ListVolumesRequest& request,
                             ::csi::v1::ListVolumesResponse* response);
  absl::Status DoExpand(const ::csi::v1::ControllerExpandVolumeRequest& request,
                        ::csi::v1::ControllerExpandVolumeResponse* response);

  kms::KeyProvider* const keys_;
  const ControllerOptions options_;
  Mutex mutex_;  // Serializes create/delete/expand of records.
};

// The capacity a range asks for, rounded up to 4 KiB: OutOfRange when no
// multiple of 4 KiB fits, InvalidArgument for negative bounds. Exposed for
// tests.
absl::StatusOr<uint64_t> CapacityForRange(
    const ::csi::v1::CapacityRange* range, uint64_t default_bytes,
    uint64_t max_bytes);

}  // namespace sealvol::csi
