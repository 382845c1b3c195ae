// Exit codes of the sealvol command line (documented in docs/cli.md), and
// the one mapping from a failed Status to them. Thread-compatible.
#pragma once

#include <string_view>

#include "absl/status/status.h"

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
  kExitRolledBack = 13,     // The image is older than its registry record says.
};

// An error's kind (base/error_kind.h, attached where the error is created)
// chooses first: wrong key 3, not a sealvol image 4, truncated 5, version 6,
// size 7, in use 8, key destroyed 10, in every command family. Without a
// kind, the status code does, and the command families read some codes
// differently, on purpose:
//  * kVolume (format, check, read, write): DataLoss is integrity (9),
//    OutOfRange a size or offset outside the volume (7); an InvalidArgument
//    is 1, not usage: the flags parsed, the image or the KMS refused them.
//  * kKey (keys list|show|destroy, rotate): NotFound is a key record that
//    does not exist (never created, or destroyed): 10.
//  * kService (controller, node, csi, token): InvalidArgument is usage (2);
//    the message also names the status code (a gRPC peer's answer).
// Everywhere: OK 0; PermissionDenied/Unauthenticated 11;
// Unavailable/DeadlineExceeded 12; anything else 1. Message text never
// chooses a code.
enum class CommandFamily { kVolume, kKey, kService };

int ExitCodeFor(const absl::Status& status, CommandFamily family);

// Prints "sealvol COMMAND: MESSAGE" on stderr (kService: "sealvol COMMAND:
// CODE: MESSAGE") and returns ExitCodeFor(status, family).
int Fail(std::string_view command, const absl::Status& status,
         CommandFamily family);

}  // namespace sealvol::cmd
