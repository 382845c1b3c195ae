// Conversions of older images to the current format (`sealvol upgrade`):
// the shared copy-and-replace step, and the conversion of a format-2 image
// from before the state root (no group digest table). The format-1 reader
// is in format_v1.h. Thread-compatible; stateless functions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "io/format_v1.h"
#include "io/sealed_volume.h"

namespace sealvol::io {

// Writes an image's content through `volume`, the new image at `temp`.
using FillImage =
    std::function<absl::Status(SealedVolume& volume, const std::string& temp)>;

// Formats `path + ".upgrade"` (current format, same DEK and volume id, a new
// format id), lets `fill` write the content through the new engine, closes
// it, fsyncs it and renames it over `path` (then fsyncs the directory).
// Until the rename `path` is untouched; a leftover `.upgrade` file from an
// interrupted run is discarded first. `state` receives the new image's
// closed state.
absl::StatusOr<FormatId> ReplaceImageByCopy(
    const std::string& path, uint64_t size_bytes, const VolumeId& volume_id,
    const crypto::SecretBytes& dek, const FillImage& fill, VolumeState* state);

// Converts a format-2 image without the digest table: every block is read
// (authenticated) through the engine and the non-zero ones are written to
// the new image, which replaces `path` as above. Errors: FailedPrecondition
// when the image already has a state root or is in use; PermissionDenied
// "wrong key"; DataLoss naming the first byte offset whose blocks fail
// authentication (nothing is changed then).
absl::StatusOr<UpgradeResult> UpgradePreStateRootImage(
    const std::string& path, const crypto::SecretBytes& dek);

}  // namespace sealvol::io
