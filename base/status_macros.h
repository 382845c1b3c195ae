// Status propagation macros and the errno-to-Status conversion used at module
// edges. Thread-safe: stateless.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SEALVOL_CONCAT_INNER(a, b) a##b
#define SEALVOL_CONCAT(a, b) SEALVOL_CONCAT_INNER(a, b)

// RETURN_IF_ERROR(expr): returns the Status of `expr` when it is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status sealvol_status_ = (expr);   \
    if (!sealvol_status_.ok()) return sealvol_status_; \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates the StatusOr `expr`; returns its
// Status on error, otherwise moves the value into `lhs` (which may declare).
#define ASSIGN_OR_RETURN(lhs, expr) \
  SEALVOL_ASSIGN_OR_RETURN_IMPL(SEALVOL_CONCAT(sealvol_or_, __LINE__), lhs, expr)
#define SEALVOL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

namespace sealvol {

// ErrnoStatus maps an errno value to a Status whose message names the
// operation and the object: "open /var/lib/sealvol/v1.img: Permission denied".
absl::Status ErrnoStatus(int err, std::string_view operation,
                         std::string_view object);

// ErrnoFromStatus maps a Status back to a negative errno for the kernel edge
// (DataLoss -> -EIO, NotFound -> -ENOENT, ...). OK maps to 0.
int NegErrnoFromStatus(const absl::Status& status);

}  // namespace sealvol
