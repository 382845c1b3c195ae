#include "kms/broker/api_server_client.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/durable_file.h"

namespace sealvol::broker {
namespace {

constexpr size_t kMaxBearerTokenBytes = 64 << 10;

kms::HttpClientOptions HttpOptions(const ApiServerOptions& options) {
  kms::HttpClientOptions o;
  o.ca_file = options.ca_file;
  o.connect_timeout =
      std::chrono::milliseconds(absl::ToInt64Milliseconds(options.timeout));
  o.request_timeout = o.connect_timeout;
  return o;  // One attempt: callers fail closed when no answer comes.
}

}  // namespace

ApiServerClient::ApiServerClient(ApiServerOptions options)
    : options_(std::move(options)), http_(HttpOptions(options_)) {}

absl::StatusOr<ApiServerAnswer> ApiServerClient::Get(
    std::string_view path) const {
  kms::HttpRequest request;
  request.method = "GET";
  request.url = std::string(path);
  return Send(std::move(request));
}

absl::StatusOr<ApiServerAnswer> ApiServerClient::Post(
    std::string_view path, const nlohmann::json& body) const {
  kms::HttpRequest request;
  request.method = "POST";
  request.url = std::string(path);
  request.body = body.dump();
  request.headers.push_back({"Content-Type", "application/json"});
  return Send(std::move(request));
}

absl::StatusOr<ApiServerAnswer> ApiServerClient::Send(
    kms::HttpRequest request) const {
  const std::string path = request.url;
  auto bearer = ReadSmallFile(options_.bearer_token_file, kMaxBearerTokenBytes);
  if (!bearer.ok()) {
    std::fill(request.body.begin(), request.body.end(), '\0');
    return absl::UnavailableError(
        absl::StrCat("API server ", path, ": cannot read the broker's token ",
                     options_.bearer_token_file, ": ",
                     std::string(bearer.status().message())));
  }
  request.url = absl::StrCat(
      std::string(absl::StripSuffix(options_.url, "/")), path);
  request.headers.push_back({"Accept", "application/json"});
  request.headers.push_back(
      {"Authorization",
       absl::StrCat("Bearer ", absl::StripAsciiWhitespace(*bearer))});
  auto response = http_.Send(request);
  std::fill(request.body.begin(), request.body.end(), '\0');
  std::fill(bearer->begin(), bearer->end(), '\0');
  if (!response.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "API server ", path, ": ", std::string(response.status().message())));
  }
  return ApiServerAnswer{
      response->status,
      nlohmann::json::parse(response->body, nullptr, false)};
}

bool IsKubernetesName(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  auto alnum = [](char c) {
    return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'z');
  };
  if (!alnum(name.front()) || !alnum(name.back())) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) {
    return alnum(c) || c == '-' || c == '.';
  });
}

}  // namespace sealvol::broker
