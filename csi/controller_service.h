// ControllerService is the CSI Controller service: it provisions volumes by
// creating their wrapped data keys in the KeyProvider's registry, destroys
// them (crypto-shredding), lists, validates and expands them; with
// snapshots enabled it also takes, lists and deletes snapshots and creates
// volumes from a snapshot or a volume, each copy under its own fresh key.
// It holds no plaintext key and touches no disk: the volume's bytes live on
// a node, and copies are made there (the node's copy jobs, driven by the
// registry's copy state; docs/csi.md, "Snapshots and clones").
//
// Thread-safe. Calls that create or change a record are serialized by one
// mutex, so CreateVolume and CreateSnapshot are idempotent by name within a
// process; several controller replicas rely on the sidecars' leader
// election for the same. CreateSnapshot waits for the node's cut without
// holding that mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
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
  // Snapshots and clones: the CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS and
  // CLONE_VOLUME capabilities and their RPCs. Off by default (`sealvol
  // controller --enable-snapshots` turns them on): while off, the snapshot
  // RPCs answer UNIMPLEMENTED and a volume content source is
  // InvalidArgument, as before snapshots existed.
  bool snapshots = false;
  // How long CreateSnapshot of a formatted volume waits for the node to
  // report its cut before answering DEADLINE_EXCEEDED (the snapshot sidecar
  // retries, and the retry waits for the same snapshot again).
  absl::Duration snapshot_cut_timeout = absl::Seconds(30);
  // How often it reads the registry while it waits.
  absl::Duration snapshot_poll_interval = absl::Milliseconds(250);
  // Called with the node of every copy job the controller creates, once
  // the job is in the registry: `sealvol controller` wakes its KeyBroker's
  // waiting CopyJobs call of that node, so the copy starts at once. May be
  // empty.
  std::function<void(const std::string& node_id)> copy_job_created;
};

// The record parameter that says what a copy was made from: "snapshot" or
// "volume" (the CSI content source reported with the volume).
inline constexpr char kParamContentSource[] = "sealvol.csi.dev/content-source";

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
  grpc::Status CreateSnapshot(grpc::ServerContext* context,
                              const ::csi::v1::CreateSnapshotRequest* request,
                              ::csi::v1::CreateSnapshotResponse* response) override;
  grpc::Status DeleteSnapshot(grpc::ServerContext* context,
                              const ::csi::v1::DeleteSnapshotRequest* request,
                              ::csi::v1::DeleteSnapshotResponse* response) override;
  grpc::Status ListSnapshots(grpc::ServerContext* context,
                             const ::csi::v1::ListSnapshotsRequest* request,
                             ::csi::v1::ListSnapshotsResponse* response) override;

 private:
  struct VolumeSpec;
  static absl::StatusOr<VolumeSpec> ParseCreateRequest(
      const ::csi::v1::CreateVolumeRequest& request,
      const ControllerOptions& options);
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
  // CreateVolume with a content source (controller_service.cc): the copy's
  // record, or where the copy named `record` stands.
  absl::Status CreateCopy(const ::csi::v1::CreateVolumeRequest& request,
                          VolumeSpec spec,
                          ::csi::v1::CreateVolumeResponse* response)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Creates the record of a snapshot, restore or clone, then tells the
  // node's waiting ask for jobs (ControllerOptions::copy_job_created) that
  // it has a new one.
  absl::StatusOr<kms::VolumeRecord> CreateCopyRecord(
      const kms::CreateVolumeKeyRequest& create);
  absl::Status AnswerExistingCopy(const ::csi::v1::CreateVolumeRequest& request,
                                  const kms::VolumeRecord& record,
                                  ::csi::v1::CreateVolumeResponse* response)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // The snapshot RPCs (controller_snapshots.cc). `deadline` is the
  // caller's, if sooner than the cut timeout.
  absl::Status DoCreateSnapshot(const ::csi::v1::CreateSnapshotRequest& request,
                                absl::Time deadline,
                                ::csi::v1::CreateSnapshotResponse* response);
  absl::StatusOr<std::string> FindOrCreateSnapshot(
      const ::csi::v1::CreateSnapshotRequest& request);
  absl::Status AwaitCut(const std::string& snapshot_id, const std::string& name,
                        absl::Time deadline,
                        ::csi::v1::CreateSnapshotResponse* response);
  absl::Status DoDeleteSnapshot(const ::csi::v1::DeleteSnapshotRequest& request);
  absl::Status DoListSnapshots(const ::csi::v1::ListSnapshotsRequest& request,
                               ::csi::v1::ListSnapshotsResponse* response);

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
