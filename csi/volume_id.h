// CSI volume ids: "sv-" followed by the 32 lowercase hex digits of a random
// 16-byte volume id, the same string io::VolumeIdString produces and the
// key registry stores. Stateless, thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace sealvol::csi {

// A fresh id from the OpenSSL CSPRNG.
std::string NewVolumeId();

// True when `text` has the form above. Ids of another form can never name a
// sealvol volume.
bool IsWellFormedVolumeId(std::string_view text);

}  // namespace sealvol::csi
