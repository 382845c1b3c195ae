// BrokerMetrics counts the broker's decisions and KMS calls and renders them
// in the Prometheus text exposition format (version 0.0.4); MetricsServer
// serves them over HTTP (cpp-httplib) at /metrics. Thread-safe.
//
// Series:
//   sealvol_broker_grants_total
//   sealvol_broker_refusals_total{reason="..."}
//   sealvol_broker_kms_latency_seconds (histogram of the unwrap calls)
//   sealvol_broker_kms_errors_total
#pragma once

#include <array>
#include <functional>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/mutex.h"

namespace httplib {
class Server;
}

namespace sealvol::broker {

class BrokerMetrics {
 public:
  // Upper bounds of the latency histogram buckets, in seconds (+Inf is
  // implicit).
  static constexpr std::array<double, 10> kLatencyBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0};

  void RecordGrant();
  void RecordRefusal(const std::string& reason);
  void RecordKmsLatency(absl::Duration latency);
  void RecordKmsError();

  int64_t grants() const;
  int64_t refusals(const std::string& reason) const;
  int64_t kms_errors() const;

  std::string RenderPrometheus() const;

 private:
  mutable Mutex mu_;
  int64_t grants_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> refusals_ ABSL_GUARDED_BY(mu_);
  std::array<int64_t, kLatencyBuckets.size()> bucket_counts_
      ABSL_GUARDED_BY(mu_) = {};
  int64_t latency_count_ ABSL_GUARDED_BY(mu_) = 0;
  double latency_sum_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t kms_errors_ ABSL_GUARDED_BY(mu_) = 0;
};

class MetricsServer {
 public:
  // Listens on "HOST:PORT" (PORT 0 picks a free port) and serves
  // GET /metrics from `metrics`, which must outlive the server, and
  // GET /readyz: 200 when `readiness` (called per request; none = always)
  // returns OK, 503 with its message otherwise.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& listen, const BrokerMetrics& metrics,
      std::function<absl::Status()> readiness = nullptr);
  ~MetricsServer();  // Stops and joins the server thread.

  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace sealvol::broker
