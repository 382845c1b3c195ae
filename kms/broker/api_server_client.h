// ApiServerClient reads and writes Kubernetes API objects as JSON, with the
// broker's own bearer token (re-read on every call: the kubelet rotates it)
// and the API server's CA. The one client the broker's TokenReview and pod
// lookups share. Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kms/http_client.h"
#include "nlohmann/json.hpp"

namespace sealvol::broker {

struct ApiServerOptions {
  // e.g. "https://kubernetes.default.svc" (the in-cluster default).
  std::string url = "https://kubernetes.default.svc";
  // PEM CA of the API server; empty = the system store.
  std::string ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  std::string bearer_token_file =
      "/var/run/secrets/kubernetes.io/serviceaccount/token";
  absl::Duration timeout = absl::Seconds(5);  // Per call; one attempt.
};

// One answer of the API server: the HTTP status and the parsed body (a
// discarded json value when the body is not JSON).
struct ApiServerAnswer {
  long status = 0;
  nlohmann::json body;
};

class ApiServerClient {
 public:
  explicit ApiServerClient(ApiServerOptions options);

  // GET `path` (e.g. "/api/v1/namespaces/NS/pods/NAME"). Any HTTP status is
  // an answer; Unavailable when the bearer token cannot be read or no
  // answer came, naming the path.
  absl::StatusOr<ApiServerAnswer> Get(std::string_view path) const;

  // POST `body` as JSON to `path`; the request body is wiped after sending
  // (it may carry a token). Errors as for Get.
  absl::StatusOr<ApiServerAnswer> Post(std::string_view path,
                                       const nlohmann::json& body) const;

  const ApiServerOptions& options() const { return options_; }

 private:
  absl::StatusOr<ApiServerAnswer> Send(kms::HttpRequest request) const;

  const ApiServerOptions options_;
  const kms::HttpClient http_;
};

// True when `name` is a Kubernetes object name (RFC 1123 subdomain: at most
// 253 characters of [a-z0-9.-], starting and ending alphanumeric). Names
// from a request must pass before they go into an API path.
bool IsKubernetesName(std::string_view name);

}  // namespace sealvol::broker
