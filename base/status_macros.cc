#include "base/status_macros.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sealvol {

absl::Status ErrnoStatus(int err, std::string_view operation,
                         std::string_view object) {
  // Debian's abseil has its own string_view, hence no StrCat here. Appended
  // piece by piece: GCC 12 at -O3 warns (-Wrestrict, a false positive) on
  // `" " + std::string(object)`.
  std::string message(operation);
  if (!object.empty()) {
    message += ' ';
    message.append(object);
  }
  message += ": ";
  message += std::strerror(err);
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case EINVAL:
    case ENAMETOOLONG:
      return absl::InvalidArgumentError(message);
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return absl::ResourceExhaustedError(message);
    case EBUSY:
    case EWOULDBLOCK:
      return absl::FailedPreconditionError(message);
    case EIO:
    case EBADMSG:
      return absl::DataLossError(message);
    case ETIMEDOUT:
      return absl::DeadlineExceededError(message);
    case ENOSYS:
    case EOPNOTSUPP:
      return absl::UnimplementedError(message);
    default:
      return absl::InternalError(message);
  }
}

int NegErrnoFromStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kNotFound:
      return -ENOENT;
    case absl::StatusCode::kAlreadyExists:
      return -EEXIST;
    case absl::StatusCode::kPermissionDenied:
      return -EACCES;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return -EINVAL;
    case absl::StatusCode::kResourceExhausted:
      return -ENOSPC;
    case absl::StatusCode::kFailedPrecondition:
      return -EBUSY;
    case absl::StatusCode::kDeadlineExceeded:
      return -ETIMEDOUT;
    case absl::StatusCode::kUnimplemented:
      return -EOPNOTSUPP;
    default:
      return -EIO;
  }
}

}  // namespace sealvol
