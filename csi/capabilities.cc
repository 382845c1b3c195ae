#include "csi/capabilities.h"

namespace sealvol::csi {

bool IsSupportedFsType(const std::string& fs_type) {
  return fs_type == "ext4" || fs_type == "xfs";
}

std::string FsTypeOf(const csipb::VolumeCapability& capability,
                     const std::string& fallback) {
  if (capability.has_mount() && !capability.mount().fs_type().empty()) {
    return capability.mount().fs_type();
  }
  return fallback;
}

absl::Status CheckVolumeCapability(const csipb::VolumeCapability& capability) {
  using Mode = csipb::VolumeCapability::AccessMode;
  if (!capability.has_block() && !capability.has_mount()) {
    return absl::InvalidArgumentError(
        "volume capability: access type (block or mount) is required");
  }
  if (!capability.has_access_mode()) {
    return absl::InvalidArgumentError(
        "volume capability: access mode is required");
  }
  switch (capability.access_mode().mode()) {
    case Mode::SINGLE_NODE_WRITER:
    case Mode::SINGLE_NODE_READER_ONLY:
      break;
    default:
      // Volumes live on one node's disk; no multi-node mode can be true.
      return absl::InvalidArgumentError(
          "volume capability: access mode " +
          Mode::Mode_Name(capability.access_mode().mode()) +
          " is not supported (node-local volumes)");
  }
  if (capability.has_mount()) {
    const std::string fs = capability.mount().fs_type();
    if (!fs.empty() && !IsSupportedFsType(fs)) {
      return absl::InvalidArgumentError("volume capability: fs_type \"" + fs +
                                        "\" is not supported (ext4, xfs)");
    }
  }
  return absl::OkStatus();
}

}  // namespace sealvol::csi
