#include "kms/broker/token_review.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "kms/broker/refusal.h"
#include "nlohmann/json.hpp"

namespace sealvol::broker {
namespace {

using nlohmann::json;

constexpr char kPodUidExtra[] = "authentication.kubernetes.io/pod-uid";

kms::HttpClientOptions ReviewHttpOptions(const TokenReviewOptions& options) {
  kms::HttpClientOptions o;
  o.ca_file = options.ca_file;
  o.connect_timeout = std::chrono::milliseconds(
      absl::ToInt64Milliseconds(options.timeout));
  o.request_timeout = o.connect_timeout;
  return o;  // One attempt: a review that fails refuses (fails closed).
}

}  // namespace

TokenReviewer::TokenReviewer(TokenReviewOptions options)
    : options_(std::move(options)), http_(ReviewHttpOptions(options_)) {}

absl::Status TokenReviewer::Review(std::string_view token,
                                   const VerifiedToken& verified) const {
  std::ifstream in(options_.bearer_token_file);
  if (!in) {
    return RefusalStatus(Reason::kTokenReviewFailed,
                         absl::StrCat("cannot read the broker's API token ",
                                      options_.bearer_token_file));
  }
  std::ostringstream bearer;
  bearer << in.rdbuf();
  json body = {{"apiVersion", "authentication.k8s.io/v1"},
               {"kind", "TokenReview"},
               {"spec",
                {{"token", std::string(token)},
                 {"audiences", json::array({options_.audience})}}}};
  kms::HttpRequest request;
  request.method = "POST";
  request.url = absl::StrCat(
      std::string(absl::StripSuffix(options_.api_server_url, "/")),
      "/apis/authentication.k8s.io/v1/tokenreviews");
  request.headers = {
      {"Content-Type", "application/json"},
      {"Accept", "application/json"},
      {"Authorization",
       absl::StrCat("Bearer ", absl::StripAsciiWhitespace(bearer.str()))}};
  request.body = body.dump();
  auto response = http_.Send(request);
  // Do not keep the pod token around in the request body longer than needed.
  std::fill(request.body.begin(), request.body.end(), '\0');
  if (!response.ok()) {
    return RefusalStatus(Reason::kTokenReviewFailed,
                         std::string(response.status().message()));
  }
  if (response->status != 200 && response->status != 201) {
    return RefusalStatus(
        Reason::kTokenReviewFailed,
        absl::StrCat("TokenReview: API server answered HTTP ", response->status));
  }
  json doc = json::parse(response->body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("status") ||
      !doc["status"].is_object()) {
    return RefusalStatus(Reason::kTokenReviewFailed,
                         "TokenReview: answer has no status");
  }
  const json& status = doc["status"];
  const bool authenticated = status.contains("authenticated") &&
                             status["authenticated"].is_boolean() &&
                             status["authenticated"].get<bool>();
  if (!authenticated) {
    std::string why;
    if (status.contains("error") && status["error"].is_string()) {
      why = status["error"].get<std::string>().substr(0, 200);
    }
    return RefusalStatus(Reason::kTokenRevoked,
                         absl::StrCat("API server does not authenticate the "
                                      "token",
                                      why.empty() ? "" : ": ", why));
  }
  const std::string expected_user = absl::StrCat(
      "system:serviceaccount:", verified.namespace_name, ":",
      verified.service_account);
  std::string username;
  if (status.contains("user") && status["user"].is_object() &&
      status["user"].contains("username") &&
      status["user"]["username"].is_string()) {
    username = status["user"]["username"].get<std::string>();
  }
  if (username != expected_user) {
    return RefusalStatus(Reason::kTokenRevoked,
                         absl::StrCat("API server authenticates the token as '",
                                      username.substr(0, 200), "', not ",
                                      expected_user));
  }
  // The API server reports the bound pod's uid; it must be the signed one.
  if (status["user"].contains("extra") && status["user"]["extra"].is_object()) {
    const json& extra = status["user"]["extra"];
    if (extra.contains(kPodUidExtra) && extra[kPodUidExtra].is_array() &&
        !extra[kPodUidExtra].empty() && extra[kPodUidExtra][0].is_string() &&
        extra[kPodUidExtra][0].get<std::string>() != verified.pod_uid) {
      return RefusalStatus(Reason::kTokenRevoked,
                           "API server binds the token to another pod uid");
    }
  }
  return absl::OkStatus();
}

}  // namespace sealvol::broker
