#include "kms/broker/jwks_cache.h"

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/durable_file.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace sealvol::broker {
namespace {

// A JWKS or bearer-token file is small; anything larger is a mistake.
constexpr size_t kMaxFileSize = 1 << 20;

// How long one fetch (discovery or JWKS) may take, connection included.
constexpr std::chrono::seconds kFetchTimeout{10};

kms::HttpClientOptions FetchOptions(const JwksSourceOptions& options) {
  kms::HttpClientOptions o;
  o.ca_file = options.ca_file;
  o.connect_timeout = kFetchTimeout;
  o.request_timeout = kFetchTimeout;
  return o;  // One attempt: a failed refresh keeps the old keys.
}

}  // namespace

JwksCache::JwksCache(JwksSourceOptions options, KeySet keys, bool refreshable)
    : options_(std::move(options)),
      refreshable_(refreshable),
      http_(FetchOptions(options_)),
      keys_(std::make_shared<const KeySet>(std::move(keys))),
      loaded_at_(absl::Now()) {}

absl::StatusOr<std::unique_ptr<JwksCache>> JwksCache::Create(
    const JwksSourceOptions& options) {
  const int sources = !options.file.empty() + !options.url.empty() +
                      !options.oidc_issuer_url.empty();
  if (sources != 1) {
    return absl::InvalidArgumentError(
        "JWKS source: give exactly one of a file, a URL or an OIDC issuer");
  }
  std::unique_ptr<JwksCache> cache(new JwksCache(options, KeySet(), true));
  ASSIGN_OR_RETURN(auto keys, cache->Load());
  if (keys.size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(cache->Describe(), ": no usable RS256/ES256 keys"));
  }
  {
    MutexLock lock(&cache->mu_);
    cache->keys_ = std::make_shared<const KeySet>(std::move(keys));
  }
  return cache;
}

std::unique_ptr<JwksCache> JwksCache::FromKeySet(KeySet keys) {
  return std::unique_ptr<JwksCache>(
      new JwksCache(JwksSourceOptions(), std::move(keys), false));
}

absl::StatusOr<std::string> JwksCache::Get(const std::string& url) const {
  kms::HttpRequest request;
  request.url = url;
  // kube-apiserver serves its JWKS only as application/jwk-set+json (RFC
  // 7517 section 8.5) and answers 406 to a request that accepts only
  // application/json; discovery documents and other issuers' JWKS are
  // application/json. Accept both.
  request.headers.emplace_back("Accept",
                               "application/jwk-set+json, application/json");
  if (!options_.bearer_token_file.empty()) {
    ASSIGN_OR_RETURN(auto token,
                     ReadSmallFile(options_.bearer_token_file, kMaxFileSize));
    request.headers.emplace_back(
        "Authorization",
        absl::StrCat("Bearer ", absl::StripAsciiWhitespace(token)));
  }
  ASSIGN_OR_RETURN(auto response, http_.Send(request));
  if (response.status != 200) {
    return absl::UnavailableError(
        absl::StrCat("GET ", url, ": HTTP ", response.status));
  }
  return std::move(response.body);
}

std::string JwksCache::Describe() const {
  if (!options_.file.empty()) return absl::StrCat("JWKS file ", options_.file);
  if (!options_.url.empty()) return absl::StrCat("JWKS URL ", options_.url);
  if (!options_.oidc_issuer_url.empty()) {
    return absl::StrCat("OIDC issuer ", options_.oidc_issuer_url);
  }
  return "static JWKS";
}

absl::StatusOr<KeySet> JwksCache::Load() const {
  std::string text;
  if (!options_.file.empty()) {
    ASSIGN_OR_RETURN(auto content, ReadSmallFile(options_.file, kMaxFileSize));
    text = std::move(content);
  } else {
    std::string url = options_.url;
    if (!options_.oidc_issuer_url.empty()) {
      std::string issuer(absl::StripSuffix(options_.oidc_issuer_url, "/"));
      const std::string discovery_url =
          absl::StrCat(issuer, "/.well-known/openid-configuration");
      ASSIGN_OR_RETURN(auto discovery, Get(discovery_url));
      auto doc = nlohmann::json::parse(discovery, nullptr, false);
      if (doc.is_discarded() || !doc.is_object() || !doc.contains("jwks_uri") ||
          !doc["jwks_uri"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(discovery_url, ": no jwks_uri"));
      }
      // OIDC Discovery 1.0 section 4.3: the document must name the issuer
      // we asked, or it may be someone else's keys.
      if (!doc.contains("issuer") || !doc["issuer"].is_string() ||
          absl::StripSuffix(doc["issuer"].get<std::string>(), "/") != issuer) {
        return absl::InvalidArgumentError(
            absl::StrCat(discovery_url, ": issuer does not match ", issuer));
      }
      url = doc["jwks_uri"].get<std::string>();
    }
    ASSIGN_OR_RETURN(auto body, Get(url));
    text = std::move(body);
  }
  auto keys = KeySet::Parse(text);
  if (!keys.ok()) {
    return absl::Status(keys.status().code(),
                        absl::StrCat(Describe(), ": ", keys.status().message()));
  }
  return keys;
}

absl::Status JwksCache::Refresh() {
  if (!refreshable_) return absl::OkStatus();
  MutexLock fetch_lock(&refresh_mu_);
  last_attempt_ = absl::Now();
  ASSIGN_OR_RETURN(auto keys, Load());
  MutexLock lock(&mu_);
  keys_ = std::make_shared<const KeySet>(std::move(keys));
  loaded_at_ = absl::Now();
  return absl::OkStatus();
}

absl::Status JwksCache::RefreshIfAllowed(absl::Time now) {
  MutexLock fetch_lock(&refresh_mu_);
  if (now - last_attempt_ < options_.min_refresh_interval) {
    return absl::OkStatus();  // Someone refreshed just now; use their keys.
  }
  last_attempt_ = now;
  ASSIGN_OR_RETURN(auto keys, Load());
  MutexLock lock(&mu_);
  keys_ = std::make_shared<const KeySet>(std::move(keys));
  loaded_at_ = now;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const PublicKey>> JwksCache::Find(
    const std::string& kid) {
  std::shared_ptr<const KeySet> keys;
  bool stale;
  const absl::Time now = absl::Now();
  {
    MutexLock lock(&mu_);
    keys = keys_;
    stale = now - loaded_at_ > options_.max_age;
  }
  auto key = keys->Find(kid);
  if (key != nullptr && !(stale && refreshable_)) return key;
  if (refreshable_) {
    // A failed refresh keeps the previous keys; the miss stays a miss.
    (void)RefreshIfAllowed(now);
    MutexLock lock(&mu_);
    key = keys_->Find(kid);
  }
  if (key == nullptr) {
    return absl::NotFoundError(absl::StrCat("no key with kid ", kid));
  }
  return key;
}

}  // namespace sealvol::broker
