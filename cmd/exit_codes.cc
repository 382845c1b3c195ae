#include "cmd/exit_codes.h"

#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sealvol::cmd {
namespace {

// The image codes 3-9, read from the engine's messages; kExitError if none.
int ImageExitCode(const absl::Status& s) {
  const absl::string_view m = s.message();
  switch (s.code()) {
    case absl::StatusCode::kPermissionDenied:
      return absl::StrContains(m, "wrong key") ? kExitWrongKey : kExitError;
    case absl::StatusCode::kInvalidArgument:
      if (absl::StrContains(m, "not a sealvol image")) return kExitNotSealvol;
      if (absl::StrContains(m, "multiple of 4096")) return kExitBadSize;
      return kExitError;
    case absl::StatusCode::kOutOfRange:
      return absl::StrContains(m, "truncated") ? kExitTruncated : kExitBadSize;
    case absl::StatusCode::kFailedPrecondition:
      if (absl::StrContains(m, "unsupported format version") ||
          absl::StrContains(m, "unsupported block size")) {
        return kExitBadVersion;
      }
      return absl::StrContains(m, "in use") ? kExitInUse : kExitError;
    case absl::StatusCode::kDataLoss:
      return kExitIntegrity;
    default:
      return kExitError;
  }
}

}  // namespace

int ExitCodeFor(const absl::Status& status, CommandFamily family) {
  if (status.ok()) return kExitOk;
  if (family == CommandFamily::kVolume) {
    if (const int code = ImageExitCode(status); code != kExitError) return code;
  }
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return family == CommandFamily::kKey ||
                     absl::StrContains(status.message(), "crypto-shredded")
                 ? kExitKeyDestroyed
                 : kExitError;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return kExitPermission;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    case absl::StatusCode::kInvalidArgument:
      return family == CommandFamily::kVolume ? kExitError : kExitUsage;
    default:
      return kExitError;
  }
}

int Fail(std::string_view command, const absl::Status& status,
         CommandFamily family) {
  const std::string code =
      family == CommandFamily::kService
          ? absl::StrCat(absl::StatusCodeToString(status.code()), ": ")
          : "";
  std::fprintf(stderr, "sealvol %.*s: %s%.*s\n",
               static_cast<int>(command.size()), command.data(), code.c_str(),
               static_cast<int>(status.message().size()),
               status.message().data());
  return ExitCodeFor(status, family);
}

}  // namespace sealvol::cmd
