#include "kms/broker/broker_metrics.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "httplib.h"

namespace sealvol::broker {

void BrokerMetrics::RecordGrant() {
  MutexLock lock(&mu_);
  ++grants_;
}

void BrokerMetrics::RecordRefusal(const std::string& reason) {
  MutexLock lock(&mu_);
  ++refusals_[reason];
}

void BrokerMetrics::RecordKmsLatency(absl::Duration latency) {
  const double seconds = absl::ToDoubleSeconds(latency);
  MutexLock lock(&mu_);
  for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    if (seconds <= kLatencyBuckets[i]) ++bucket_counts_[i];
  }
  ++latency_count_;
  latency_sum_ += seconds;
}

void BrokerMetrics::RecordKmsError() {
  MutexLock lock(&mu_);
  ++kms_errors_;
}

int64_t BrokerMetrics::grants() const {
  MutexLock lock(&mu_);
  return grants_;
}

int64_t BrokerMetrics::refusals(const std::string& reason) const {
  MutexLock lock(&mu_);
  auto it = refusals_.find(reason);
  return it == refusals_.end() ? 0 : it->second;
}

int64_t BrokerMetrics::kms_errors() const {
  MutexLock lock(&mu_);
  return kms_errors_;
}

std::string BrokerMetrics::RenderPrometheus() const {
  MutexLock lock(&mu_);
  std::string out;
  absl::StrAppend(&out,
                  "# HELP sealvol_broker_grants_total Keys released.\n"
                  "# TYPE sealvol_broker_grants_total counter\n"
                  "sealvol_broker_grants_total ",
                  grants_, "\n");
  absl::StrAppend(&out,
                  "# HELP sealvol_broker_refusals_total Key requests refused, "
                  "by reason.\n"
                  "# TYPE sealvol_broker_refusals_total counter\n");
  for (const auto& [reason, count] : refusals_) {
    // Reasons are our own fixed identifiers: no label escaping needed.
    absl::StrAppend(&out, "sealvol_broker_refusals_total{reason=\"", reason,
                    "\"} ", count, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP sealvol_broker_kms_latency_seconds Latency of KMS "
                  "key unwrap calls.\n"
                  "# TYPE sealvol_broker_kms_latency_seconds histogram\n");
  for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    absl::StrAppend(&out, "sealvol_broker_kms_latency_seconds_bucket{le=\"",
                    absl::StrFormat("%g", kLatencyBuckets[i]), "\"} ",
                    bucket_counts_[i], "\n");
  }
  absl::StrAppend(&out,
                  "sealvol_broker_kms_latency_seconds_bucket{le=\"+Inf\"} ",
                  latency_count_, "\n",
                  "sealvol_broker_kms_latency_seconds_sum ",
                  absl::StrFormat("%.6f", latency_sum_), "\n",
                  "sealvol_broker_kms_latency_seconds_count ", latency_count_,
                  "\n");
  absl::StrAppend(&out,
                  "# HELP sealvol_broker_kms_errors_total KMS calls that "
                  "failed.\n"
                  "# TYPE sealvol_broker_kms_errors_total counter\n"
                  "sealvol_broker_kms_errors_total ",
                  kms_errors_, "\n");
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, const BrokerMetrics& metrics,
    std::function<absl::Status()> readiness) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address '", listen, "': want HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->server_ = std::make_unique<httplib::Server>();
  server->server_->Get("/metrics", [&metrics](const httplib::Request&,
                                              httplib::Response& res) {
    res.set_content(metrics.RenderPrometheus(),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  server->server_->Get("/readyz", [readiness](const httplib::Request&,
                                              httplib::Response& res) {
    absl::Status ready = readiness ? readiness() : absl::OkStatus();
    res.status = ready.ok() ? 200 : 503;
    res.set_content(ready.ok() ? std::string("ok\n")
                               : absl::StrCat("not ready: ", ready.message(), "\n"),
                    "text/plain; charset=utf-8");
  });
  if (port == 0) {
    port = server->server_->bind_to_any_port(host);
  } else if (!server->server_->bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", listen));
  }
  server->port_ = port;
  httplib::Server* raw = server->server_.get();
  server->thread_ = std::thread([raw] { raw->listen_after_bind(); });
  return server;
}

MetricsServer::~MetricsServer() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace sealvol::broker
