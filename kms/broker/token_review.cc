#include "kms/broker/token_review.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "kms/broker/refusal.h"
#include "nlohmann/json.hpp"

namespace sealvol::broker {
namespace {

using nlohmann::json;

constexpr char kPodUidExtra[] = "authentication.kubernetes.io/pod-uid";

}  // namespace

TokenReviewer::TokenReviewer(TokenReviewOptions options)
    : options_(std::move(options)),
      api_server_({.url = options_.api_server_url,
                   .ca_file = options_.ca_file,
                   .bearer_token_file = options_.bearer_token_file,
                   .timeout = options_.timeout}) {}

absl::Status TokenReviewer::Review(std::string_view token,
                                   const VerifiedToken& verified) const {
  json body = {{"apiVersion", "authentication.k8s.io/v1"},
               {"kind", "TokenReview"},
               {"spec",
                {{"token", std::string(token)},
                 {"audiences", json::array({options_.audience})}}}};
  auto answer =
      api_server_.Post("/apis/authentication.k8s.io/v1/tokenreviews", body);
  // Do not keep the pod token around longer than needed.
  std::string& sent = body["spec"]["token"].get_ref<std::string&>();
  std::fill(sent.begin(), sent.end(), '\0');
  if (!answer.ok()) {
    return RefusalStatus(Reason::kTokenReviewFailed,
                         std::string(answer.status().message()));
  }
  if (answer->status != 200 && answer->status != 201) {
    return RefusalStatus(
        Reason::kTokenReviewFailed,
        absl::StrCat("TokenReview: API server answered HTTP ", answer->status));
  }
  const json& doc = answer->body;
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
