// Size limits on every string and map a CSI request carries, checked before
// any state is written or any key is requested. The CSI spec's general
// limits (strings 128 bytes, maps 4 KiB, node ids 256 bytes) apply except
// where the spec or Kubernetes needs more: paths (the OS limit, 4096 bytes)
// and the maps of NodePublishVolume and the secrets maps, which carry the
// kubelet's projected service-account tokens (docs/csi.md, "Request size
// limits", has the numbers and their margin). Stateless, thread-safe.
//
// Every check answers InvalidArgument naming the RPC and the field, never
// echoing the oversized value.
#pragma once

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"
#include "google/protobuf/map.h"
#include "proto/csi.pb.h"

namespace sealvol::csi {

inline constexpr size_t kMaxStringBytes = 128;    // CSI: string fields.
inline constexpr size_t kMaxNodeIdBytes = 256;    // CSI: node_id.
inline constexpr size_t kMaxPathBytes = 4096;     // PATH_MAX, with the NUL.
inline constexpr size_t kMaxMapBytes = 4 * 1024;  // CSI: map keys + values.
// NodePublishVolume's volume context and every secrets map: pod identity and
// one projected token per audience (about 1.3 KiB each as the kubelet sends
// them); room for 40 audiences.
inline constexpr size_t kMaxTokenMapBytes = 64 * 1024;
inline constexpr size_t kMaxMountFlags = 64;

// `value` of at most `max` bytes.
absl::Status CheckStringSize(std::string_view value, std::string_view field,
                             size_t max);

// Keys and values together at most `max` bytes; each key at most
// kMaxStringBytes * 2 (Kubernetes keys are a prefix and a name).
absl::Status CheckMapSize(
    const google::protobuf::Map<std::string, std::string>& map,
    std::string_view field, size_t max);

// One checker per request type: every string and map of the request.
absl::Status CheckRequestSize(const ::csi::v1::CreateVolumeRequest& request);
absl::Status CheckRequestSize(const ::csi::v1::DeleteVolumeRequest& request);
absl::Status CheckRequestSize(
    const ::csi::v1::ValidateVolumeCapabilitiesRequest& request);
absl::Status CheckRequestSize(const ::csi::v1::ListVolumesRequest& request);
absl::Status CheckRequestSize(
    const ::csi::v1::ControllerExpandVolumeRequest& request);
absl::Status CheckRequestSize(const ::csi::v1::CreateSnapshotRequest& request);
absl::Status CheckRequestSize(const ::csi::v1::DeleteSnapshotRequest& request);
absl::Status CheckRequestSize(const ::csi::v1::ListSnapshotsRequest& request);
absl::Status CheckRequestSize(const ::csi::v1::NodeStageVolumeRequest& request);
absl::Status CheckRequestSize(
    const ::csi::v1::NodeUnstageVolumeRequest& request);
absl::Status CheckRequestSize(
    const ::csi::v1::NodePublishVolumeRequest& request);
absl::Status CheckRequestSize(
    const ::csi::v1::NodeUnpublishVolumeRequest& request);
absl::Status CheckRequestSize(
    const ::csi::v1::NodeGetVolumeStatsRequest& request);
absl::Status CheckRequestSize(const ::csi::v1::NodeExpandVolumeRequest& request);

}  // namespace sealvol::csi
