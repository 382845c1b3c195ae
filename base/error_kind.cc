#include "base/error_kind.h"

#include <string>

#include "absl/strings/cord.h"

namespace sealvol {
namespace {

constexpr char kErrorKindPayloadUrl[] = "type.sealvol.dev/error_kind";

constexpr ErrorKind kAllKinds[] = {
    ErrorKind::kWrongKey, ErrorKind::kNotSealvol, ErrorKind::kTruncated,
    ErrorKind::kBadVersion, ErrorKind::kBadSize, ErrorKind::kInUse,
    ErrorKind::kKeyDestroyed, ErrorKind::kRolledBack};

}  // namespace

std::string_view ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNone: return "";
    case ErrorKind::kWrongKey: return "wrong_key";
    case ErrorKind::kNotSealvol: return "not_sealvol";
    case ErrorKind::kTruncated: return "truncated";
    case ErrorKind::kBadVersion: return "bad_version";
    case ErrorKind::kBadSize: return "bad_size";
    case ErrorKind::kInUse: return "in_use";
    case ErrorKind::kKeyDestroyed: return "key_destroyed";
    case ErrorKind::kRolledBack: return "rolled_back";
  }
  return "";
}

absl::Status SetErrorKind(absl::Status status, ErrorKind kind) {
  if (status.ok()) return status;
  if (kind == ErrorKind::kNone) {
    status.ErasePayload(kErrorKindPayloadUrl);
  } else {
    status.SetPayload(kErrorKindPayloadUrl,
                      absl::Cord(std::string(ErrorKindName(kind))));
  }
  return status;
}

ErrorKind GetErrorKind(const absl::Status& status) {
  const auto payload = status.GetPayload(kErrorKindPayloadUrl);
  if (!payload.has_value()) return ErrorKind::kNone;
  const std::string name(*payload);
  for (const ErrorKind kind : kAllKinds) {
    if (ErrorKindName(kind) == name) return kind;
  }
  return ErrorKind::kNone;
}

}  // namespace sealvol
