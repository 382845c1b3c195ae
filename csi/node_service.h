// NodeService is the CSI Node service: it stages a volume's backing file,
// and on publish asks the KeyBroker for the volume's key with the pod's own
// token (every publish attests, even when the volume is already open), brings
// the volume up through the DataPath on first use, mounts it at the staging
// path (mkfs on first use) and bind-mounts it to the pod's target (block
// mode: the device node onto a file). Unstage closes the volume, which
// zeroizes its key.
//
// State of staged volumes lives in STATE_DIR/volumes/ID/stage.json
// (StageStore), written durably, so a restarted node plugin finds what was
// staged: Recover()
// clears mounts whose data path died with the old process and reports those
// volumes abnormal until the next publish re-attests and reattaches them.
//
// Every request is bounded in size (request_limits.h), and its paths are
// confined to the kubelet directory (kubelet_paths.h) before anything is
// written or a key requested. Unpublish and unstage undo only what the stage
// record holds for that volume at that path: anything else is left alone.
//
// Thread-safe. Calls for one volume are serialized; a second call while one
// is running gets ABORTED, as the spec suggests.
#pragma once

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "csi/data_path.h"
#include "csi/kubelet_paths.h"
#include "csi/pod_attestation.h"
#include "csi/stage_store.h"
#include "csi/volume_key_source.h"
#include "csi/volume_locks.h"
#include "proto/csi.grpc.pb.h"

namespace sealvol::csi {

struct NodeOptions {
  std::string node_id;
  std::string state_dir;  // Backing images and stage records live here.
  // Staging and target paths must lie beneath it (KubeletPaths).
  std::string kubelet_dir = kDefaultKubeletDir;
};

class NodeService final : public ::csi::v1::Node::Service {
 public:
  // `keys` and `data_path` must outlive the service.
  NodeService(NodeOptions options, VolumeKeySource* keys, DataPath* data_path);

  // Reconciles stage records with the mount table after a restart. Returns
  // the number of staged volumes found; logs each one's state.
  absl::StatusOr<int> Recover();

  grpc::Status NodeStageVolume(
      grpc::ServerContext* context,
      const ::csi::v1::NodeStageVolumeRequest* request,
      ::csi::v1::NodeStageVolumeResponse* response) override;
  grpc::Status NodeUnstageVolume(
      grpc::ServerContext* context,
      const ::csi::v1::NodeUnstageVolumeRequest* request,
      ::csi::v1::NodeUnstageVolumeResponse* response) override;
  grpc::Status NodePublishVolume(
      grpc::ServerContext* context,
      const ::csi::v1::NodePublishVolumeRequest* request,
      ::csi::v1::NodePublishVolumeResponse* response) override;
  grpc::Status NodeUnpublishVolume(
      grpc::ServerContext* context,
      const ::csi::v1::NodeUnpublishVolumeRequest* request,
      ::csi::v1::NodeUnpublishVolumeResponse* response) override;
  grpc::Status NodeGetVolumeStats(
      grpc::ServerContext* context,
      const ::csi::v1::NodeGetVolumeStatsRequest* request,
      ::csi::v1::NodeGetVolumeStatsResponse* response) override;
  grpc::Status NodeExpandVolume(
      grpc::ServerContext* context,
      const ::csi::v1::NodeExpandVolumeRequest* request,
      ::csi::v1::NodeExpandVolumeResponse* response) override;
  grpc::Status NodeGetCapabilities(
      grpc::ServerContext* context,
      const ::csi::v1::NodeGetCapabilitiesRequest* request,
      ::csi::v1::NodeGetCapabilitiesResponse* response) override;
  grpc::Status NodeGetInfo(grpc::ServerContext* context,
                           const ::csi::v1::NodeGetInfoRequest* request,
                           ::csi::v1::NodeGetInfoResponse* response) override;

  // Lazy removal of crypto-shredded volumes: for every volume directory
  // under STATE_DIR/volumes/ that is not staged, asks the broker whether the
  // volume still exists; for each one it says was deleted, under the
  // volume's lock and only if it is still unstaged and nothing of it is
  // attached or mounted, unlinks the image and removes the directory.
  // Returns how many were removed. Unavailable (and nothing removed) when the
  // broker cannot be asked. A staged volume is never removed.
  absl::StatusOr<int> ReapDeletedVolumes();

  // Where a volume's backing image lives.
  std::string ImagePath(const std::string& volume_id) const {
    return stages_.ImagePath(volume_id);
  }

  // The node's stage store and volume locks, shared with the copy-job
  // runner (csi/copy_job_runner.h), which works on the same volumes.
  const StageStore* stages() const { return &stages_; }
  VolumeLocks* volume_locks() { return &locks_; }

 private:
  absl::Status Stage(const ::csi::v1::NodeStageVolumeRequest& request);
  absl::Status Unstage(const ::csi::v1::NodeUnstageVolumeRequest& request);
  absl::Status Publish(const ::csi::v1::NodePublishVolumeRequest& request);
  absl::Status Unpublish(const ::csi::v1::NodeUnpublishVolumeRequest& request);
  absl::Status Stats(const ::csi::v1::NodeGetVolumeStatsRequest& request,
                     ::csi::v1::NodeGetVolumeStatsResponse* response);
  absl::Status Expand(const ::csi::v1::NodeExpandVolumeRequest& request,
                      ::csi::v1::NodeExpandVolumeResponse* response);

  // Brings the data path up and the filesystem mounted at the staging path.
  // `key` carries what the registry says of the image (its format id, ""
  // = never formatted, and the state it must be at); the data path refuses
  // an image that does not match them.
  absl::Status EnsureAttached(StageRecord& record,
                              const broker::ReleasedVolumeKey& key);

  // Removes one deleted volume's files; the caller holds its lock.
  absl::Status RemoveDeletedVolume(const std::string& volume_id);

  const NodeOptions options_;
  const KubeletPaths kubelet_;
  const StageStore stages_;
  VolumeKeySource* const keys_;
  DataPath* const data_path_;
  VolumeLocks locks_;

  Mutex mutex_;
  // Volumes whose data path was lost (node plugin restart) or failed, with
  // the reason; cleared when a publish reattaches them.
  std::map<std::string, std::string> lost_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace sealvol::csi
