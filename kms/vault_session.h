// VaultSession sends the Vault key provider's requests to one Vault or
// OpenBao server with a token it keeps valid: a token from a file or
// $VAULT_TOKEN, or one from a login with a JWT (auth method jwt or
// kubernetes, with a role). The token is renewed when two thirds of its TTL
// have passed; if renewal fails, or a request is refused with 403, the
// session logs in again once. Tokens are wiped when replaced and never
// logged. Time comes from an injectable clock, so tests of renewal need not
// sleep. Thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "kms/http_client.h"
#include "kms/vault_config.h"
#include "nlohmann/json.hpp"

namespace sealvol::kms {

// The session's time source: std::chrono::steady_clock::now unless a test
// injects its own.
using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;

class VaultSession {
 public:
  // `config` must outlive the session. A null `now` is the steady clock.
  VaultSession(const VaultConfig& config, std::unique_ptr<HttpTransport> http,
               SteadyClock now = nullptr);
  ~VaultSession();
  VaultSession(const VaultSession&) = delete;
  VaultSession& operator=(const VaultSession&) = delete;

  // One request with the current token (logging in first when there is
  // none); logs in again and retries once on 403. A 2xx response's JSON
  // body (null for 204), or the HTTP status mapped to a Status: 400
  // InvalidArgument, 401/403 PermissionDenied, 404 NotFound, 412
  // FailedPrecondition, 429/5xx/transport failures Unavailable.
  absl::StatusOr<nlohmann::json> Call(const std::string& method,
                                      const std::string& path,
                                      const nlohmann::json* body);

  // The server's health endpoint, without a token: Unavailable when it is
  // sealed, not initialised or not answering.
  absl::Status Health();

 private:
  absl::StatusOr<nlohmann::json> CallWithToken(const std::string& method,
                                               const std::string& path,
                                               const nlohmann::json* body,
                                               const std::string& token);
  absl::StatusOr<std::string> CurrentToken();
  absl::Status LoginLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(auth_mu_);
  absl::Status RenewLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(auth_mu_);
  void SetTokenLocked(std::string token, int64_t ttl_seconds, bool renewable)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(auth_mu_);

  const VaultConfig& config_;
  const std::unique_ptr<HttpTransport> http_;
  const SteadyClock now_;

  Mutex auth_mu_;
  std::string token_ ABSL_GUARDED_BY(auth_mu_);
  bool token_renewable_ ABSL_GUARDED_BY(auth_mu_) = false;
  // Zero time_point = never expires (root or period-less token).
  std::chrono::steady_clock::time_point token_refresh_at_
      ABSL_GUARDED_BY(auth_mu_);
  std::chrono::steady_clock::time_point token_expires_at_
      ABSL_GUARDED_BY(auth_mu_);
};

// Overwrites `s` (a token, a JWT, a body holding key material) and empties
// it.
void WipeString(std::string& s);

// A field error found in a KMS response, as Unavailable: the KMS (or
// something posing as it) answered, but not with what the API promises.
absl::Status MalformedKmsResponse(const absl::Status& s, std::string_view what);

}  // namespace sealvol::kms
