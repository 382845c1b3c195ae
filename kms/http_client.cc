#include "kms/http_client.h"

#include <curl/curl.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sealvol::kms {
namespace {

// Idle handles kept for reuse; more concurrent requests create more handles.
constexpr size_t kMaxIdleHandles = 8;

std::once_flag curl_init_once;

struct CurlSlistFree {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using SlistPtr = std::unique_ptr<curl_slist, CurlSlistFree>;

struct WriteState {
  std::string* body;
  size_t cap;
  bool overflow = false;
};

size_t WriteBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* state = static_cast<WriteState*>(user);
  const size_t n = size * nmemb;
  if (state->body->size() + n > state->cap) {
    state->overflow = true;
    return 0;  // Makes libcurl fail the transfer with CURLE_WRITE_ERROR.
  }
  state->body->append(data, n);
  return n;
}

bool RetryableStatus(long status) { return status == 429 || status >= 500; }

bool RetryableCurlError(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
      return true;
    default:
      return false;
  }
}

// Wipes a string's bytes before it is freed or reused: bodies may carry
// tokens or plaintext keys.
void Wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

HttpClientOptions Normalized(HttpClientOptions options) {
  options.max_attempts = std::max(options.max_attempts, 1);
  return options;
}

}  // namespace

struct HttpClient::Handle {
  struct CurlFree {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
  };
  std::unique_ptr<CURL, CurlFree> curl;
  char error[CURL_ERROR_SIZE] = {};
};

HttpClient::HttpClient(HttpClientOptions options)
    : options_(Normalized(std::move(options))) {
  std::call_once(curl_init_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

HttpClient::~HttpClient() = default;

std::unique_ptr<HttpClient::Handle> HttpClient::TakeHandle() const {
  {
    MutexLock lock(&mu_);
    if (!idle_.empty()) {
      auto h = std::move(idle_.back());
      idle_.pop_back();
      return h;
    }
  }
  auto h = std::make_unique<Handle>();
  h->curl.reset(curl_easy_init());
  return h;
}

void HttpClient::ReturnHandle(std::unique_ptr<Handle> handle) const {
  MutexLock lock(&mu_);
  if (idle_.size() < kMaxIdleHandles) idle_.push_back(std::move(handle));
}

absl::StatusOr<HttpResponse> HttpClient::SendOnce(
    Handle& h, const HttpRequest& request) const {
  CURL* c = h.curl.get();
  if (c == nullptr) return absl::InternalError("curl_easy_init failed");
  // Reset clears the previous request's options but keeps the connection
  // cache and TLS session cache of the handle.
  curl_easy_reset(c);
  const std::string& url = request.url;
  std::string body;
  body.reserve(16 * 1024);  // Small responses never reallocate (see Wipe).
  WriteState state{&body, options_.max_response_bytes};
  SlistPtr headers;
  for (const auto& [name, value] : request.headers) {
    std::string line = absl::StrCat(name, ": ", value);
    curl_slist* next = curl_slist_append(headers.get(), line.c_str());
    Wipe(line);
    if (next == nullptr) return absl::InternalError("curl_slist_append failed");
    headers.release();
    headers.reset(next);
  }
  h.error[0] = '\0';
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h.error);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options_.connect_timeout.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(options_.request_timeout.count()));
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!options_.ca_file.empty()) {
    curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_file.c_str());
  }
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  if (request.method == "GET") {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    if (request.method != "DELETE" || !request.body.empty()) {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(request.body.size()));
    }
  }
  const CURLcode rc = curl_easy_perform(c);
  // The header list holds the token: wipe it before it is freed.
  for (curl_slist* l = headers.get(); l != nullptr; l = l->next) {
    OPENSSL_cleanse(l->data, std::strlen(l->data));
  }
  const std::string what = absl::StrCat(request.method, " ", url);
  if (rc != CURLE_OK) {
    Wipe(body);
    const std::string detail = h.error[0] ? h.error : curl_easy_strerror(rc);
    if (state.overflow) {
      return absl::ResourceExhaustedError(
          absl::StrCat(what, ": response body larger than ",
                       options_.max_response_bytes, " bytes"));
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": ", detail));
    }
    if (RetryableCurlError(rc)) {
      return absl::UnavailableError(absl::StrCat(what, ": ", detail));
    }
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
        rc == CURLE_SSL_CONNECT_ERROR) {
      // A certificate the CA does not vouch for will not get better on a
      // retry: this is a configuration error, not an outage.
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": TLS verification failed (check ca_file): ", detail));
    }
    return absl::InternalError(absl::StrCat(what, ": ", detail));
  }
  HttpResponse response;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  const char* content_type = nullptr;
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &content_type);
  if (content_type != nullptr) {
    response.content_type = absl::AsciiStrToLower(content_type);
  }
  response.body = std::move(body);
  return response;
}

absl::StatusOr<HttpResponse> HttpClient::Send(
    const HttpRequest& request) const {
  if (!absl::StartsWith(request.url, "http://") &&
      !absl::StartsWith(request.url, "https://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        request.method, " \"", request.url,
        "\": not an http:// or https:// URL"));
  }
  thread_local std::mt19937 rng{std::random_device{}()};
  auto backoff = options_.initial_backoff;
  absl::StatusOr<HttpResponse> result;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    auto handle = TakeHandle();
    const auto start = std::chrono::steady_clock::now();
    result = SendOnce(*handle, request);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    bool retry;
    if (result.ok()) {
      result->attempts = attempt;
      spdlog::debug("http: {} {} -> {} (attempt {}, {} ms)", request.method,
                    request.url, result->status, attempt, ms);
      retry = RetryableStatus(result->status);
      ReturnHandle(std::move(handle));
    } else {
      spdlog::debug("http: {} {} failed (attempt {}, {} ms): {}",
                    request.method, request.url, attempt, ms,
                    result.status().ToString());
      retry = absl::IsUnavailable(result.status()) ||
              absl::IsDeadlineExceeded(result.status());
      // A handle whose transfer failed may hold a broken connection.
    }
    if (!retry || attempt == options_.max_attempts) break;
    if (result.ok()) Wipe(result->body);
    const auto jitter = std::chrono::milliseconds(
        std::uniform_int_distribution<int64_t>(0, backoff.count() / 2)(rng));
    std::this_thread::sleep_for(backoff + jitter);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  return result;
}

}  // namespace sealvol::kms
