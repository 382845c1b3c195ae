// HttpClient sends HTTP/1.1 requests to one KMS endpoint with libcurl.
// Thread-safe: requests from several threads run concurrently, each on an
// easy handle taken from a small pool, so connections (and TLS sessions) are
// reused across requests instead of being set up per call.
//
// Retries: connection failures, timeouts, 5xx and 429 are retried up to
// `max_attempts` times in all, with exponential backoff and jitter; any other
// 4xx is returned at once. Redirects are not followed. Response bodies are
// capped at `max_response_bytes` (a larger body fails the request).
//
// Headers and bodies are never logged (they carry tokens and keys): debug
// logs show method, path, status, attempt and duration only.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"

namespace sealvol::kms {

struct HttpClientOptions {
  std::string base_url;  // "http://127.0.0.1:8200" or "https://host:port".
  std::string ca_file;   // PEM bundle to verify the server; empty = system.
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds request_timeout{10000};  // Per attempt.
  int max_attempts = 4;
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{2000};
  size_t max_response_bytes = 1 << 20;
};

struct HttpRequest {
  std::string method;  // GET, POST, PUT, DELETE, LIST.
  std::string path;    // Appended to base_url, e.g. "/v1/sys/health".
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct HttpResponse {
  long status = 0;
  std::string content_type;
  std::string body;
  int attempts = 0;
};

class HttpClient {
 public:
  static absl::StatusOr<std::unique_ptr<HttpClient>> Create(
      HttpClientOptions options);
  ~HttpClient();

  // Returns the final response (any status) or, when no response came:
  // Unavailable (connection failed), DeadlineExceeded (timed out),
  // ResourceExhausted (body over the cap), Internal (other libcurl errors).
  // A 5xx/429 still present after the last attempt is returned as a
  // response for the caller to map.
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request);

  const HttpClientOptions& options() const { return options_; }

 private:
  struct Handle;
  explicit HttpClient(HttpClientOptions options);

  std::unique_ptr<Handle> TakeHandle();
  void ReturnHandle(std::unique_ptr<Handle> handle);
  absl::StatusOr<HttpResponse> SendOnce(Handle& handle,
                                        const HttpRequest& request);

  const HttpClientOptions options_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Handle>> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sealvol::kms
