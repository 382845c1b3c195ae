// VolumeId names one sealed volume in every layer: the 16 random bytes the
// engine stores in the image header, and their text form "sv-" followed by
// 32 lowercase hex digits, which is the CSI volume id, the key registry's
// key, and the file and URL path name the KMS derives from it. This is the
// only rule for a volume id; io, kms and csi all check ids with it.
// Thread-safe: stateless.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sealvol {

using VolumeId = std::array<uint8_t, 16>;

// A fresh id from the kernel's CSPRNG (getrandom). Ids must never repeat, so
// a failure to draw one is a broken invariant (CHECK), not a Status.
VolumeId RandomVolumeId();
// The text form of a fresh id.
std::string NewVolumeId();

// "sv-" followed by the 32 lowercase hex digits of `id`.
std::string VolumeIdString(const VolumeId& id);

// The bytes of a volume id's text form; InvalidArgument naming the volume id
// and the rule otherwise.
absl::StatusOr<VolumeId> ParseVolumeId(std::string_view text);

// OK when `text` is a volume id's text form; the error of ParseVolumeId
// otherwise.
absl::Status ValidateVolumeId(std::string_view text);

// True when `text` is a volume id's text form. Text of another form can never
// name a sealvol volume.
bool IsWellFormedVolumeId(std::string_view text);

}  // namespace sealvol
