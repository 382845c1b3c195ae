// Exit codes of the sealvol command line; documented in docs/cli.md.
#pragma once

namespace sealvol::cmd {

enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,           // Any other failure; the message says what.
  kExitUsage = 2,           // Bad flags or arguments.
  kExitWrongKey = 3,        // The key check value does not match the image.
  kExitNotSealvol = 4,      // No valid sealvol superblock.
  kExitTruncated = 5,       // The image is shorter than its header says.
  kExitBadVersion = 6,      // Format version this binary cannot read.
  kExitBadSize = 7,         // Size not a positive multiple of 4 KiB.
  kExitInUse = 8,           // The image is locked by another process.
  kExitIntegrity = 9,       // check: one or more blocks failed to verify.
  kExitKeyDestroyed = 10,   // The volume's key is gone (crypto-shredded).
  kExitPermission = 11,     // Refused by the KMS or the key broker.
  kExitUnavailable = 12,    // KMS or broker unreachable.
};

}  // namespace sealvol::cmd
