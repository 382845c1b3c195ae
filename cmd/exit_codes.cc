#include "cmd/exit_codes.h"

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/error_kind.h"

namespace sealvol::cmd {
namespace {

// The exit code an error's kind names; kExitError for no kind.
int KindExitCode(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNone: return kExitError;
    case ErrorKind::kWrongKey: return kExitWrongKey;
    case ErrorKind::kNotSealvol: return kExitNotSealvol;
    case ErrorKind::kTruncated: return kExitTruncated;
    case ErrorKind::kBadVersion: return kExitBadVersion;
    case ErrorKind::kBadSize: return kExitBadSize;
    case ErrorKind::kInUse: return kExitInUse;
    case ErrorKind::kKeyDestroyed: return kExitKeyDestroyed;
    case ErrorKind::kRolledBack: return kExitRolledBack;
  }
  return kExitError;
}

}  // namespace

int ExitCodeFor(const absl::Status& status, CommandFamily family) {
  if (status.ok()) return kExitOk;
  if (const ErrorKind kind = GetErrorKind(status); kind != ErrorKind::kNone) {
    return KindExitCode(kind);
  }
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return family == CommandFamily::kKey ? kExitKeyDestroyed : kExitError;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return kExitPermission;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    case absl::StatusCode::kInvalidArgument:
      return family == CommandFamily::kVolume ? kExitError : kExitUsage;
    case absl::StatusCode::kOutOfRange:
      // An offset or size outside the volume.
      return family == CommandFamily::kVolume ? kExitBadSize : kExitError;
    case absl::StatusCode::kDataLoss:
      return family == CommandFamily::kVolume ? kExitIntegrity : kExitError;
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
