// A small blocking HTTP(S) client over libcurl for the broker's outbound
// calls (JWKS, OIDC discovery, TokenReview). Thread-safe: every call uses its
// own CURL handle. Only http and https; no redirects; responses are capped.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sealvol::broker {

struct HttpRequest {
  std::string method = "GET";  // GET or POST.
  std::string url;
  std::vector<std::string> headers;  // "Name: value".
  std::string body;
  std::string ca_file;  // PEM bundle to trust; empty = system default.
  absl::Duration timeout = absl::Seconds(10);
  size_t max_response_bytes = 1 << 20;
};

struct HttpResponse {
  long status = 0;
  std::string body;
};

// Unavailable when the server cannot be reached or the response is too
// large; the message names the method and URL (never headers or body, which
// may carry tokens). Any HTTP status is returned as a response.
absl::StatusOr<HttpResponse> HttpFetch(const HttpRequest& request);

}  // namespace sealvol::broker
