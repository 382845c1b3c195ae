// NodeService is the CSI Node service: it stages a volume's backing file,
// and on publish asks the KeyBroker for the volume's key with the pod's own
// token (every publish attests, even when the volume is already open), brings
// the volume up through the DataPath on first use, mounts it at the staging
// path (mkfs on first use) and bind-mounts it to the pod's target (block
// mode: the device node onto a file). Unstage closes the volume, which
// zeroizes its key.
//
// State of staged volumes lives in STATE_DIR/volumes/ID/stage.json, written
// atomically, so a restarted node plugin finds what was staged: Recover()
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
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "csi/data_path.h"
#include "csi/kubelet_paths.h"
#include "csi/volume_key_source.h"
#include "google/protobuf/map.h"
#include "proto/csi.grpc.pb.h"

namespace sealvol::csi {

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
  std::string ImagePath(const std::string& volume_id) const;

 private:
  class VolumeLock;
  struct StageRecord;

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

  std::string VolumeDir(const std::string& volume_id) const;
  std::string RecordPath(const std::string& volume_id) const;
  absl::StatusOr<StageRecord> LoadRecord(const std::string& volume_id) const;
  absl::Status SaveRecord(const StageRecord& record) const;

  // Removes one deleted volume's files; the caller holds its lock.
  absl::Status RemoveDeletedVolume(const std::string& volume_id);
  // The well-formed volume ids under STATE_DIR/volumes/.
  absl::StatusOr<std::vector<std::string>> VolumeIdsOnDisk() const;

  absl::Status TryLockVolume(const std::string& volume_id);
  void UnlockVolume(const std::string& volume_id);

  const NodeOptions options_;
  const KubeletPaths kubelet_;
  VolumeKeySource* const keys_;
  DataPath* const data_path_;

  absl::Mutex mutex_;
  std::map<std::string, bool> busy_ ABSL_GUARDED_BY(mutex_);
  // Volumes whose data path was lost (node plugin restart) or failed, with
  // the reason; cleared when a publish reattaches them.
  std::map<std::string, std::string> lost_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace sealvol::csi
