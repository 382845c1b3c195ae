// JwksCache holds the issuer's signing keys and refreshes them from their
// source: a file, a JWKS URL, or OIDC discovery (ISSUER/.well-known/
// openid-configuration -> jwks_uri). An unknown kid triggers a refresh, at
// most once per min_refresh_interval, so a flood of forged kids cannot
// hammer the issuer. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/mutex.h"
#include "kms/broker/jwk.h"
#include "kms/http_client.h"

namespace sealvol::broker {

struct JwksSourceOptions {
  // Exactly one of these three.
  std::string file;             // Path to a JWKS JSON file.
  std::string url;              // http(s) URL of a JWKS document.
  std::string oidc_issuer_url;  // Issuer URL for OIDC discovery.
  std::string ca_file;          // CA bundle for https; empty = system.
  std::string bearer_token_file;  // Optional bearer for the fetches (the
                                  // API server's discovery needs one).
  absl::Duration min_refresh_interval = absl::Seconds(10);
  absl::Duration max_age = absl::Hours(1);  // Refetch after this even if
                                            // every kid is known.
};

class JwksCache {
 public:
  // Loads the keys once; fails (naming the source) if they cannot be loaded.
  static absl::StatusOr<std::unique_ptr<JwksCache>> Create(
      const JwksSourceOptions& options);
  // A fixed key set that never refreshes (tests, embedded issuers).
  static std::unique_ptr<JwksCache> FromKeySet(KeySet keys);

  // The key with this kid. NotFound if it is unknown even after a (rate
  // limited) refresh; a failed refresh keeps the old keys.
  absl::StatusOr<std::shared_ptr<const PublicKey>> Find(const std::string& kid);

  // Fetches now, ignoring the rate limit.
  absl::Status Refresh();

  // Where the keys come from, for logs.
  std::string Describe() const;

 private:
  JwksCache(JwksSourceOptions options, KeySet keys, bool refreshable);
  absl::StatusOr<KeySet> Load() const;
  // The body of a 200 answer to GET url (with the bearer token, if any).
  absl::StatusOr<std::string> Get(const std::string& url) const;
  absl::Status RefreshIfAllowed(absl::Time now);

  const JwksSourceOptions options_;
  const bool refreshable_;
  const kms::HttpClient http_;
  mutable Mutex mu_;
  std::shared_ptr<const KeySet> keys_ ABSL_GUARDED_BY(mu_);
  absl::Time loaded_at_ ABSL_GUARDED_BY(mu_);
  // Serializes fetches; never taken while mu_ is held.
  Mutex refresh_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Time last_attempt_ ABSL_GUARDED_BY(refresh_mu_) = absl::InfinitePast();
};

}  // namespace sealvol::broker
