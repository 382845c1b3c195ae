#include "kms/vault_session.h"

#include <openssl/crypto.h>

#include <cstdlib>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/durable_file.h"
#include "base/status_macros.h"
#include "kms/volume_record_json.h"
#include "spdlog/spdlog.h"

namespace sealvol::kms {
namespace {

using json = nlohmann::json;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr size_t kMaxCredentialFileSize = 64 * 1024;

// The "errors" of a Vault error body, or a description of a body that is
// not one. Capped so a huge page does not flood the message.
std::string ErrorText(const HttpResponse& r) {
  if (absl::StrContains(r.content_type, "html") ||
      absl::StartsWith(absl::StripLeadingAsciiWhitespace(r.body), "<")) {
    return "the server answered with an HTML page, not the KMS JSON API "
           "(wrong address, or a proxy in the way?)";
  }
  json j = json::parse(r.body, nullptr, false);
  std::string text;
  if (!j.is_discarded() && j.is_object()) {
    auto it = j.find("errors");
    if (it != j.end() && it->is_array()) {
      std::vector<std::string> errs;
      for (const auto& e : *it) {
        if (e.is_string()) errs.push_back(e.get<std::string>());
      }
      text = absl::StrJoin(errs, "; ");
    }
  }
  if (text.empty()) text = r.body.empty() ? "empty body" : "no error message";
  if (text.size() > 300) text = text.substr(0, 300) + "...";
  return text;
}

}  // namespace

void WipeString(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

absl::Status MalformedKmsResponse(const absl::Status& s,
                                  std::string_view what) {
  return absl::UnavailableError(absl::StrCat(
      "malformed KMS response to ", std::string(what), ": ",
      std::string(s.message())));
}

VaultSession::VaultSession(const VaultConfig& config,
                           std::unique_ptr<HttpTransport> http, SteadyClock now)
    : config_(config),
      http_(std::move(http)),
      now_(now ? std::move(now) : SteadyClock(&std::chrono::steady_clock::now)) {}

VaultSession::~VaultSession() {
  MutexLock lock(&auth_mu_);
  WipeString(token_);
}

absl::StatusOr<json> VaultSession::CallWithToken(const std::string& method,
                                                     const std::string& path,
                                                     const json* body,
                                                     const std::string& token) {
  HttpRequest request;
  request.method = method;
  request.url = config_.address + path;
  request.headers.emplace_back("Accept", "application/json");
  if (!token.empty()) request.headers.emplace_back("X-Vault-Token", token);
  if (!config_.vault_namespace.empty()) {
    request.headers.emplace_back("X-Vault-Namespace", config_.vault_namespace);
  }
  if (body != nullptr) {
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = DumpJson(*body);
  }
  auto response = http_->Send(request);
  WipeString(request.body);
  for (auto& [name, value] : request.headers) WipeString(value);
  const std::string what = absl::StrCat(method, " ", path);
  if (!response.ok()) {
    return absl::Status(response.status().code(),
                        absl::StrCat("KMS ", config_.address, ": ",
                                     response.status().message()));
  }
  const long status = response->status;
  if (status >= 200 && status < 300) {
    if (response->body.empty()) return json();
    json j = json::parse(response->body, nullptr, false);
    WipeString(response->body);
    if (j.is_discarded()) {
      return absl::UnavailableError(absl::StrCat(
          "malformed KMS response to ", what, ": status ", status,
          " with a body that is not valid JSON",
          absl::StrContains(response->content_type, "html")
              ? " (an HTML page)"
              : ""));
    }
    if (!j.is_object()) {
      return absl::UnavailableError(absl::StrCat(
          "malformed KMS response to ", what, ": body is not a JSON object"));
    }
    return j;
  }
  const std::string text = ErrorText(*response);
  WipeString(response->body);
  const std::string message =
      absl::StrCat("KMS refused ", what, " (HTTP ", status, "): ", text);
  switch (status) {
    case 400:
      return absl::InvalidArgumentError(message);
    case 401:
    case 403:
      return absl::PermissionDeniedError(message);
    case 404:
      return absl::NotFoundError(message);
    case 412:
      return absl::FailedPreconditionError(message);
    case 429:
      return absl::UnavailableError(absl::StrCat(
          message, " (still rate-limited after ", response->attempts,
          " attempts)"));
    default:
      if (status >= 500) {
        return absl::UnavailableError(absl::StrCat(
            message, " (after ", response->attempts, " attempts)"));
      }
      return absl::InternalError(message);
  }
}

void VaultSession::SetTokenLocked(std::string token, int64_t ttl_seconds,
                                      bool renewable) {
  WipeString(token_);
  token_ = std::move(token);
  token_renewable_ = renewable;
  if (ttl_seconds <= 0) {
    token_refresh_at_ = token_expires_at_ = SteadyTime();
  } else {
    const auto now = now_();
    token_expires_at_ = now + std::chrono::seconds(ttl_seconds);
    // Refresh when two thirds of the TTL have passed, leaving a third for
    // the renewal (or a new login) to succeed.
    token_refresh_at_ = now + std::chrono::milliseconds(ttl_seconds * 2000 / 3);
  }
}

absl::Status VaultSession::LoginLocked() {
  if (config_.auth_method == "token") {
    std::string token;
    if (!config_.token_file.empty()) {
      ASSIGN_OR_RETURN(token,
                       ReadSmallFile(config_.token_file, kMaxCredentialFileSize));
    } else if (const char* env = std::getenv("VAULT_TOKEN")) {
      token = env;
    } else {
      return absl::FailedPreconditionError(
          "KMS auth=token: no token_file parameter and VAULT_TOKEN is unset");
    }
    while (!token.empty() && (token.back() == '\n' || token.back() == ' ')) {
      token.pop_back();
    }
    if (token.empty()) {
      return absl::FailedPreconditionError("KMS auth=token: the token is empty");
    }
    auto self = CallWithToken("GET", "/v1/auth/token/lookup-self", nullptr,
                              token);
    if (!self.ok()) {
      WipeString(token);
      return absl::Status(self.status().code(),
                          absl::StrCat("KMS token lookup: ",
                                       self.status().message()));
    }
    auto data = JsonObject(*self, "data", "token lookup-self");
    if (!data.ok()) return MalformedKmsResponse(data.status(), "token lookup-self");
    auto ttl = JsonInt(**data, "ttl", "token lookup-self");
    if (!ttl.ok()) return MalformedKmsResponse(ttl.status(), "token lookup-self");
    const auto renewable = (*data)->find("renewable");
    SetTokenLocked(std::move(token), *ttl,
                   renewable != (*data)->end() && renewable->is_boolean() &&
                       renewable->get<bool>());
    spdlog::info("kms: using a Vault token (ttl {} s)", *ttl);
    return absl::OkStatus();
  }
  // jwt and kubernetes: exchange the (re-read: it is rotated) JWT.
  ASSIGN_OR_RETURN(std::string jwt,
                   ReadSmallFile(config_.jwt_file, kMaxCredentialFileSize));
  while (!jwt.empty() && (jwt.back() == '\n' || jwt.back() == ' ')) {
    jwt.pop_back();
  }
  json body = {{"role", config_.role}, {"jwt", jwt}};
  WipeString(jwt);
  const std::string path =
      absl::StrCat("/v1/auth/", config_.auth_mount, "/login");
  auto result = CallWithToken("POST", path, &body, "");
  WipeString(body["jwt"].get_ref<std::string&>());
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat("KMS login (", config_.auth_method,
                                     ", role ", config_.role,
                                     "): ", result.status().message()));
  }
  auto auth = JsonObject(*result, "auth", "login");
  if (!auth.ok()) return MalformedKmsResponse(auth.status(), "login");
  auto token = JsonString(**auth, "client_token", "login");
  auto ttl = JsonInt(**auth, "lease_duration", "login");
  if (!token.ok()) return MalformedKmsResponse(token.status(), "login");
  if (!ttl.ok()) return MalformedKmsResponse(ttl.status(), "login");
  const auto renewable = (*auth)->find("renewable");
  SetTokenLocked(std::move(*token), *ttl,
                 renewable != (*auth)->end() && renewable->is_boolean() &&
                     renewable->get<bool>());
  WipeString((*result)["auth"]["client_token"].get_ref<std::string&>());
  spdlog::info("kms: logged in with {} auth, role {} (ttl {} s)",
               config_.auth_method, config_.role, *ttl);
  return absl::OkStatus();
}

absl::Status VaultSession::RenewLocked() {
  json body = json::object();
  auto result =
      CallWithToken("POST", "/v1/auth/token/renew-self", &body, token_);
  if (!result.ok()) return result.status();
  auto auth = JsonObject(*result, "auth", "renew-self");
  if (!auth.ok()) return MalformedKmsResponse(auth.status(), "renew-self");
  auto ttl = JsonInt(**auth, "lease_duration", "renew-self");
  if (!ttl.ok()) return MalformedKmsResponse(ttl.status(), "renew-self");
  // At the token's max TTL, renewal "succeeds" with what is left; when that
  // is too short to be worth it, log in again instead.
  if (*ttl < 2) {
    return absl::FailedPreconditionError("token is at its maximum TTL");
  }
  std::string token = token_;
  SetTokenLocked(std::move(token), *ttl, true);
  spdlog::debug("kms: renewed the Vault token (ttl {} s)", *ttl);
  return absl::OkStatus();
}

absl::StatusOr<std::string> VaultSession::CurrentToken() {
  MutexLock lock(&auth_mu_);
  const auto now = now_();
  const bool expiring = token_refresh_at_ != SteadyTime() &&
                        now >= token_refresh_at_;
  if (!token_.empty() && expiring) {
    absl::Status renewed = absl::FailedPreconditionError("not renewable");
    if (token_renewable_ && now < token_expires_at_) renewed = RenewLocked();
    if (!renewed.ok()) {
      spdlog::info("kms: token renewal failed ({}); logging in again",
                   renewed.ToString());
      WipeString(token_);
    }
  }
  if (token_.empty()) RETURN_IF_ERROR(LoginLocked());
  return token_;
}

absl::StatusOr<json> VaultSession::Call(const std::string& method,
                                            const std::string& path,
                                            const json* body) {
  ASSIGN_OR_RETURN(std::string token, CurrentToken());
  auto result = CallWithToken(method, path, body, token);
  if (absl::IsPermissionDenied(result.status())) {
    // The token may have been revoked or expired early: log in once more.
    // A second refusal is a real policy decision.
    bool relogged = false;
    {
      MutexLock lock(&auth_mu_);
      if (token_ == token) {
        WipeString(token_);
        relogged = LoginLocked().ok();
      } else {
        relogged = !token_.empty();
      }
      if (relogged) {
        WipeString(token);
        token = token_;
      }
    }
    if (relogged) result = CallWithToken(method, path, body, token);
  }
  WipeString(token);
  return result;
}

absl::Status VaultSession::Health() {
  HttpRequest request;
  request.url = config_.address + "/v1/sys/health?standbyok=true";
  if (!config_.vault_namespace.empty()) {
    request.headers.emplace_back("X-Vault-Namespace", config_.vault_namespace);
  }
  ASSIGN_OR_RETURN(HttpResponse response, http_->Send(request));
  if (response.status != 200) {
    return absl::UnavailableError(absl::StrCat(
        "KMS ", config_.address, " health: HTTP ", response.status,
        response.status == 503 ? " (sealed)" : "",
        response.status == 501 ? " (not initialised)" : ""));
  }
  return absl::OkStatus();
}

}  // namespace sealvol::kms
