// What sealvol volumes support, checked the same way by the controller and
// the node: single-node access modes, block or mount access, ext4 or xfs.
// Stateless, thread-safe.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "proto/csi.pb.h"

namespace sealvol::csi {

namespace csipb = ::csi::v1;

inline constexpr char kDriverName[] = "sealvol.csi.dev";
inline constexpr char kTopologyKey[] = "sealvol.csi.dev/node";
inline constexpr char kDefaultFsType[] = "ext4";

// InvalidArgument naming what is unsupported; OK otherwise.
absl::Status CheckVolumeCapability(const csipb::VolumeCapability& capability);

// The filesystem a mount capability asks for ("" -> `fallback`).
std::string FsTypeOf(const csipb::VolumeCapability& capability,
                     const std::string& fallback);

// True when the filesystem is one sealvol can create and grow.
bool IsSupportedFsType(const std::string& fs_type);

}  // namespace sealvol::csi
