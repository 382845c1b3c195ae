#include "kms/broker/rate_limiter.h"

#include <algorithm>

namespace sealvol::broker {

RateLimiter::RateLimiter(RateLimiterOptions options)
    : options_(std::move(options)) {}

bool RateLimiter::Allow(const std::string& key) {
  const absl::Time now = options_.now();
  MutexLock lock(&mu_);
  if (buckets_.size() >= options_.max_callers && !buckets_.contains(key)) {
    // A full bucket is as good as no bucket: drop those.
    std::erase_if(buckets_, [&](const auto& entry) {
      const Bucket& b = entry.second;
      return b.tokens + absl::ToDoubleSeconds(now - b.updated) *
                            options_.tokens_per_second >=
             options_.burst;
    });
  }
  auto [it, inserted] = buckets_.try_emplace(key, Bucket{options_.burst, now});
  Bucket& bucket = it->second;
  if (!inserted) {
    const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - bucket.updated));
    bucket.tokens = std::min(options_.burst,
                             bucket.tokens + elapsed * options_.tokens_per_second);
    bucket.updated = now;
  }
  if (bucket.tokens < 1.0) return false;
  bucket.tokens -= 1.0;
  return true;
}

}  // namespace sealvol::broker
