// HttpClient sends HTTP/1.1 requests with libcurl: the Vault/OpenBao
// provider's KMS calls and the key broker's outbound ones (JWKS, OIDC
// discovery, TokenReview). Thread-safe: concurrent requests each take an
// easy handle from a small pool, so connections (and TLS sessions) are
// reused across requests instead of being set up per call.
//
// Only http:// and https:// URLs; redirects are not followed; a TLS peer is
// always verified (against ca_file, or the system store). Response bodies
// are capped at max_response_bytes: a larger body fails the request.
//
// Retries, only with max_attempts > 1: connection failures, timeouts, 5xx
// and 429 are retried with exponential backoff and jitter; any other
// response is returned at once.
//
// Headers and bodies are never logged (they carry tokens and keys), and the
// client wipes its copies of them: debug logs show method, URL, status,
// attempt and duration only.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"

namespace sealvol::kms {

struct HttpClientOptions {
  std::string ca_file;  // PEM bundle to verify servers; empty = system store.
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds request_timeout{10000};  // Per attempt.
  int max_attempts = 1;                              // 1: no retries.
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{2000};
  size_t max_response_bytes = 1 << 20;
};

struct HttpRequest {
  std::string method = "GET";  // GET, POST, PUT, DELETE, LIST, ...
  std::string url;             // "https://host:port/path?query".
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct HttpResponse {
  long status = 0;
  std::string content_type;  // Lower case; empty if the server sent none.
  std::string body;
  int attempts = 0;
};

// The seam between KMS code and the network: HttpClient in production; a
// test or fuzzer may answer requests in-process instead.
class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  virtual absl::StatusOr<HttpResponse> Send(
      const HttpRequest& request) const = 0;
};

class HttpClient final : public HttpTransport {
 public:
  explicit HttpClient(HttpClientOptions options);
  ~HttpClient() override;
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Returns the final response (any status) or, when no response came:
  // InvalidArgument (not an http(s) URL), Unavailable (connection failed),
  // DeadlineExceeded (timed out), ResourceExhausted (body over the cap),
  // FailedPrecondition (TLS verification failed: not retried), Internal
  // (other libcurl errors). With retries, a 5xx/429 still present after the
  // last attempt is returned as a response for the caller to map.
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) const override;

  const HttpClientOptions& options() const { return options_; }

 private:
  struct Handle;

  std::unique_ptr<Handle> TakeHandle() const;
  void ReturnHandle(std::unique_ptr<Handle> handle) const;
  absl::StatusOr<HttpResponse> SendOnce(Handle& handle,
                                        const HttpRequest& request) const;

  const HttpClientOptions options_;
  // The pool is a cache of connections, not state: Send is const.
  mutable Mutex mu_;
  mutable std::vector<std::unique_ptr<Handle>> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sealvol::kms
