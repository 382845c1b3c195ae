// ErrorKind: what a failure means to a caller that must branch on it (an
// exit code, a gRPC code), carried as a payload of the absl::Status where the
// error is created, so no caller ever matches message text. A status keeps
// its kind through callers that return it as is; one rebuilt from its
// message loses it. Thread-safe: stateless.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace sealvol {

enum class ErrorKind {
  kNone,           // No kind attached (the default).
  kWrongKey,       // The key does not open the volume (key check value).
  kNotSealvol,     // No valid sealvol superblock.
  kTruncated,      // The image is shorter than its header says.
  kBadVersion,     // A format version or block size this binary cannot read.
  kBadSize,        // A size that is not a positive multiple of 4 KiB.
  kInUse,          // The image is locked by another process.
  kKeyDestroyed,   // The volume's key record is gone (crypto-shredded).
  kRolledBack,     // The image is older than (or not) the state its registry
                   // record commits to (docs/security.md).
};

// The stable name of a kind, e.g. "wrong_key" ("" for kNone).
std::string_view ErrorKindName(ErrorKind kind);

// `status` with `kind` attached (replacing any kind it had). An OK status
// stays OK and carries nothing.
absl::Status SetErrorKind(absl::Status status, ErrorKind kind);

// The kind `status` carries, kNone if none.
ErrorKind GetErrorKind(const absl::Status& status);

}  // namespace sealvol
