#include "crypto/nonce_allocator.h"

#include <limits>
#include <utility>

#include "base/check.h"
#include "absl/strings/str_cat.h"

namespace sealvol::crypto {

NonceAllocator::NonceAllocator(uint64_t start, uint64_t range,
                               ReserveFn reserve)
    : next_(start), mark_(start), range_(range), reserve_(std::move(reserve)) {
  CHECK_GT(range_, 0u);
}

absl::StatusOr<uint64_t> NonceAllocator::Allocate(uint64_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  if (count == 0 || next_ > kMax - count) {
    return absl::ResourceExhaustedError(
        "nonce counter space exhausted: the volume needs a new data key");
  }
  const uint64_t end = next_ + count;
  if (end > mark_) {
    // Reserve enough for this request plus a full range ahead.
    uint64_t new_mark = end > kMax - range_ ? kMax : end + range_;
    absl::Status s = reserve_(new_mark);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("reserve nonce range: ",
                                                 s.message()));
    }
    mark_ = new_mark;
  }
  const uint64_t first = next_;
  next_ = end;
  return first;
}

uint64_t NonceAllocator::reserved_mark() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mark_;
}

uint64_t NonceAllocator::next() const {
  std::lock_guard<std::mutex> lock(mu_);
  return next_;
}

}  // namespace sealvol::crypto
