#include "csi/request_limits.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace sealvol::csi {

namespace csipb = ::csi::v1;

namespace {

absl::Status TooLarge(std::string_view field, size_t size, size_t max,
                      std::string_view unit = "bytes") {
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(field), " is ", size, " ", std::string(unit),
                   ", at most ", max, " allowed"));
}

absl::Status CheckCapability(const csipb::VolumeCapability& capability,
                             std::string_view field) {
  if (!capability.has_mount()) return absl::OkStatus();
  const auto& mount = capability.mount();
  RETURN_IF_ERROR(CheckStringSize(mount.fs_type(),
                                  absl::StrCat(std::string(field), ".mount.fs_type"),
                                  kMaxStringBytes));
  RETURN_IF_ERROR(CheckStringSize(mount.volume_mount_group(),
                                  absl::StrCat(std::string(field), ".mount.volume_mount_group"),
                                  kMaxStringBytes));
  if (static_cast<size_t>(mount.mount_flags_size()) > kMaxMountFlags) {
    return TooLarge(absl::StrCat(std::string(field), ".mount.mount_flags"),
                    mount.mount_flags_size(), kMaxMountFlags, "entries");
  }
  for (const std::string& flag : mount.mount_flags()) {
    RETURN_IF_ERROR(CheckStringSize(flag, absl::StrCat(std::string(field), ".mount.mount_flags[]"),
                                    kMaxStringBytes));
  }
  return absl::OkStatus();
}

absl::Status CheckCapabilities(
    const google::protobuf::RepeatedPtrField<csipb::VolumeCapability>& list,
    std::string_view field) {
  if (static_cast<size_t>(list.size()) > kMaxMountFlags) {
    return TooLarge(field, list.size(), kMaxMountFlags, "entries");
  }
  for (const auto& capability : list) {
    RETURN_IF_ERROR(CheckCapability(capability, field));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckStringSize(std::string_view value, std::string_view field,
                             size_t max) {
  if (value.size() > max) return TooLarge(field, value.size(), max);
  return absl::OkStatus();
}

absl::Status CheckMapSize(
    const google::protobuf::Map<std::string, std::string>& map,
    std::string_view field, size_t max) {
  size_t total = 0;
  for (const auto& [key, value] : map) {
    if (key.size() > 2 * kMaxStringBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(field), " has a key of ", key.size(),
                       " bytes, at most ", 2 * kMaxStringBytes, " allowed"));
    }
    total += key.size() + value.size();
  }
  if (total > max) return TooLarge(field, total, max);
  return absl::OkStatus();
}

absl::Status CheckRequestSize(const csipb::CreateVolumeRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.name(), "CreateVolume: name", kMaxStringBytes));
  RETURN_IF_ERROR(CheckMapSize(r.parameters(), "CreateVolume: parameters", kMaxMapBytes));
  RETURN_IF_ERROR(CheckMapSize(r.mutable_parameters(),
                               "CreateVolume: mutable_parameters", kMaxMapBytes));
  RETURN_IF_ERROR(CheckMapSize(r.secrets(), "CreateVolume: secrets", kMaxTokenMapBytes));
  RETURN_IF_ERROR(CheckCapabilities(r.volume_capabilities(),
                                    "CreateVolume: volume_capabilities"));
  const auto& source = r.volume_content_source();
  RETURN_IF_ERROR(CheckStringSize(source.snapshot().snapshot_id(),
                                  "CreateVolume: volume_content_source.snapshot_id",
                                  kMaxStringBytes));
  RETURN_IF_ERROR(CheckStringSize(source.volume().volume_id(),
                                  "CreateVolume: volume_content_source.volume_id",
                                  kMaxStringBytes));
  // Kubernetes lists every node of the cluster here (no bound on the count
  // but gRPC's message size); each segment map is bounded.
  const auto& topology = r.accessibility_requirements();
  for (const auto* list : {&topology.requisite(), &topology.preferred()}) {
    for (const auto& t : *list) {
      RETURN_IF_ERROR(CheckMapSize(t.segments(),
                                   "CreateVolume: accessibility_requirements segments",
                                   kMaxMapBytes));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRequestSize(const csipb::CreateSnapshotRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.name(), "CreateSnapshot: name", kMaxStringBytes));
  RETURN_IF_ERROR(CheckStringSize(r.source_volume_id(),
                                  "CreateSnapshot: source_volume_id", kMaxStringBytes));
  RETURN_IF_ERROR(CheckMapSize(r.parameters(), "CreateSnapshot: parameters", kMaxMapBytes));
  return CheckMapSize(r.secrets(), "CreateSnapshot: secrets", kMaxTokenMapBytes);
}

absl::Status CheckRequestSize(const csipb::DeleteSnapshotRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.snapshot_id(), "DeleteSnapshot: snapshot_id",
                                  kMaxStringBytes));
  return CheckMapSize(r.secrets(), "DeleteSnapshot: secrets", kMaxTokenMapBytes);
}

absl::Status CheckRequestSize(const csipb::ListSnapshotsRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.snapshot_id(), "ListSnapshots: snapshot_id",
                                  kMaxStringBytes));
  RETURN_IF_ERROR(CheckStringSize(r.source_volume_id(),
                                  "ListSnapshots: source_volume_id", kMaxStringBytes));
  RETURN_IF_ERROR(CheckStringSize(r.starting_token(), "ListSnapshots: starting_token",
                                  kMaxStringBytes));
  return CheckMapSize(r.secrets(), "ListSnapshots: secrets", kMaxTokenMapBytes);
}

absl::Status CheckRequestSize(const csipb::DeleteVolumeRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.volume_id(), "DeleteVolume: volume_id", kMaxStringBytes));
  return CheckMapSize(r.secrets(), "DeleteVolume: secrets", kMaxTokenMapBytes);
}

absl::Status CheckRequestSize(const csipb::ValidateVolumeCapabilitiesRequest& r) {
  constexpr char kRpc[] = "ValidateVolumeCapabilities: ";
  RETURN_IF_ERROR(CheckStringSize(r.volume_id(), absl::StrCat(kRpc, "volume_id"),
                                  kMaxStringBytes));
  RETURN_IF_ERROR(CheckMapSize(r.volume_context(), absl::StrCat(kRpc, "volume_context"),
                               kMaxMapBytes));
  RETURN_IF_ERROR(CheckMapSize(r.parameters(), absl::StrCat(kRpc, "parameters"),
                               kMaxMapBytes));
  RETURN_IF_ERROR(CheckMapSize(r.mutable_parameters(),
                               absl::StrCat(kRpc, "mutable_parameters"), kMaxMapBytes));
  RETURN_IF_ERROR(CheckMapSize(r.secrets(), absl::StrCat(kRpc, "secrets"),
                               kMaxTokenMapBytes));
  return CheckCapabilities(r.volume_capabilities(),
                           absl::StrCat(kRpc, "volume_capabilities"));
}

absl::Status CheckRequestSize(const csipb::ListVolumesRequest& r) {
  return CheckStringSize(r.starting_token(), "ListVolumes: starting_token",
                         kMaxStringBytes);
}

absl::Status CheckRequestSize(const csipb::ControllerExpandVolumeRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.volume_id(), "ControllerExpandVolume: volume_id",
                                  kMaxStringBytes));
  RETURN_IF_ERROR(CheckMapSize(r.secrets(), "ControllerExpandVolume: secrets",
                               kMaxTokenMapBytes));
  return CheckCapability(r.volume_capability(),
                         "ControllerExpandVolume: volume_capability");
}

absl::Status CheckRequestSize(const csipb::NodeStageVolumeRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.volume_id(), "NodeStageVolume: volume_id",
                                  kMaxStringBytes));
  RETURN_IF_ERROR(CheckStringSize(r.staging_target_path(),
                                  "NodeStageVolume: staging_target_path", kMaxPathBytes));
  RETURN_IF_ERROR(CheckMapSize(r.publish_context(), "NodeStageVolume: publish_context",
                               kMaxMapBytes));
  RETURN_IF_ERROR(CheckMapSize(r.volume_context(), "NodeStageVolume: volume_context",
                               kMaxMapBytes));
  RETURN_IF_ERROR(CheckMapSize(r.secrets(), "NodeStageVolume: secrets", kMaxTokenMapBytes));
  return CheckCapability(r.volume_capability(), "NodeStageVolume: volume_capability");
}

absl::Status CheckRequestSize(const csipb::NodeUnstageVolumeRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.volume_id(), "NodeUnstageVolume: volume_id",
                                  kMaxStringBytes));
  return CheckStringSize(r.staging_target_path(),
                         "NodeUnstageVolume: staging_target_path", kMaxPathBytes);
}

absl::Status CheckRequestSize(const csipb::NodePublishVolumeRequest& r) {
  constexpr char kRpc[] = "NodePublishVolume: ";
  RETURN_IF_ERROR(CheckStringSize(r.volume_id(), absl::StrCat(kRpc, "volume_id"),
                                  kMaxStringBytes));
  RETURN_IF_ERROR(CheckStringSize(r.staging_target_path(),
                                  absl::StrCat(kRpc, "staging_target_path"), kMaxPathBytes));
  RETURN_IF_ERROR(CheckStringSize(r.target_path(), absl::StrCat(kRpc, "target_path"),
                                  kMaxPathBytes));
  RETURN_IF_ERROR(CheckMapSize(r.publish_context(), absl::StrCat(kRpc, "publish_context"),
                               kMaxMapBytes));
  RETURN_IF_ERROR(CheckMapSize(r.volume_context(), absl::StrCat(kRpc, "volume_context"),
                               kMaxTokenMapBytes));
  RETURN_IF_ERROR(CheckMapSize(r.secrets(), absl::StrCat(kRpc, "secrets"),
                               kMaxTokenMapBytes));
  return CheckCapability(r.volume_capability(), absl::StrCat(kRpc, "volume_capability"));
}

absl::Status CheckRequestSize(const csipb::NodeUnpublishVolumeRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.volume_id(), "NodeUnpublishVolume: volume_id",
                                  kMaxStringBytes));
  return CheckStringSize(r.target_path(), "NodeUnpublishVolume: target_path",
                         kMaxPathBytes);
}

absl::Status CheckRequestSize(const csipb::NodeGetVolumeStatsRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.volume_id(), "NodeGetVolumeStats: volume_id",
                                  kMaxStringBytes));
  RETURN_IF_ERROR(CheckStringSize(r.volume_path(), "NodeGetVolumeStats: volume_path",
                                  kMaxPathBytes));
  return CheckStringSize(r.staging_target_path(),
                         "NodeGetVolumeStats: staging_target_path", kMaxPathBytes);
}

absl::Status CheckRequestSize(const csipb::NodeExpandVolumeRequest& r) {
  RETURN_IF_ERROR(CheckStringSize(r.volume_id(), "NodeExpandVolume: volume_id",
                                  kMaxStringBytes));
  RETURN_IF_ERROR(CheckStringSize(r.volume_path(), "NodeExpandVolume: volume_path",
                                  kMaxPathBytes));
  RETURN_IF_ERROR(CheckStringSize(r.staging_target_path(),
                                  "NodeExpandVolume: staging_target_path", kMaxPathBytes));
  RETURN_IF_ERROR(CheckMapSize(r.secrets(), "NodeExpandVolume: secrets", kMaxTokenMapBytes));
  return CheckCapability(r.volume_capability(), "NodeExpandVolume: volume_capability");
}

}  // namespace sealvol::csi
