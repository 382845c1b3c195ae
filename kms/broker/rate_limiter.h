// RateLimiter: one token bucket per caller key (the node name). Buckets of
// idle callers are dropped when the table grows. Thread-safe.
#pragma once

#include <functional>
#include <string>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/mutex.h"

namespace sealvol::broker {

struct RateLimiterOptions {
  double tokens_per_second = 20;  // Sustained rate per caller.
  double burst = 200;             // Bucket size: calls allowed at once.
  size_t max_callers = 10000;     // Table bound before idle buckets are shed.
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

class RateLimiter {
 public:
  explicit RateLimiter(RateLimiterOptions options);

  // Takes one token from `key`'s bucket; false when it is empty.
  bool Allow(const std::string& key);

 private:
  struct Bucket {
    double tokens;
    absl::Time updated;
  };
  const RateLimiterOptions options_;
  Mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sealvol::broker
