// Reader of on-disk format version 1, kept only to convert such images to
// the current format (`sealvol upgrade`). Format 1 took its nonces from a
// counter mark stored in the image, so a rolled-back or re-created image
// could reuse them; the current format never serves a version-1 image.
// Thread-compatible; stateless functions.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "io/volume_header.h"

namespace sealvol::io {

struct V1Header {
  VolumeId volume_id{};
  uint64_t size_bytes = 0;
  bool clean = false;
};

// Reads the newest valid version-1 superblock copy without a key.
// InvalidArgument "not a format-1 sealvol image" when it is not one.
absl::StatusOr<V1Header> ReadV1Header(const std::string& path);

struct UpgradeResult {
  VolumeId volume_id{};
  FormatId format_id{};      // Of the new image.
  uint64_t blocks_copied = 0;  // Written blocks carried over.
  // The new image's state (closed): what the registry records from now on.
  VolumeState state;
};

// Converts the version-1 image at `path` to the current format under the
// same DEK and volume id: every written block is authenticated and
// decrypted with the version-1 rules and written to a new image
// `path + ".upgrade"` (sealed with fresh nonce sessions and a new format
// id), which then replaces `path` by an atomic rename (file and directory
// fsynced first). Crash-safe: until the rename `path` is untouched, and a
// leftover `.upgrade` file from an interrupted run is discarded and redone.
// Errors: PermissionDenied "wrong key"; FailedPrecondition "in use" (locked
// by an open volume); DataLoss naming a block that fails authentication
// (nothing is changed then).
absl::StatusOr<UpgradeResult> UpgradeV1Image(const std::string& path,
                                             const crypto::SecretBytes& dek);

}  // namespace sealvol::io
