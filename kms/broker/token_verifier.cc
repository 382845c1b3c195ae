#include "kms/broker/token_verifier.h"

#include <openssl/err.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "kms/broker/base64url.h"
#include "kms/broker/refusal.h"
#include "nlohmann/json.hpp"

namespace sealvol::broker {
namespace {

using nlohmann::json;

// Projected tokens are a few hundred bytes to ~1.5 KiB; a JSON part above
// this is garbage or an attack on the parser.
constexpr size_t kMaxDecodedPart = 8 * 1024;
// Seconds since the epoch that fit absl::Time with room: year ~2900.
constexpr double kMaxNumericDate = 30000000000.0;

absl::Status Malformed(std::string_view why) {
  return RefusalStatus(Reason::kMalformedToken, why);
}

absl::StatusOr<json> DecodeJsonPart(std::string_view part, const char* what) {
  auto decoded = Base64UrlDecode(part);
  if (!decoded.ok()) {
    return Malformed(absl::StrCat(what, " is not base64url"));
  }
  if (decoded->size() > kMaxDecodedPart) {
    return Malformed(absl::StrCat(what, " too large"));
  }
  // nlohmann's lexer takes a NUL byte as end of input, so "{...}\0junk"
  // would parse; valid JSON never holds a raw NUL.
  if (decoded->find('\0') != std::string::npos) {
    return Malformed(absl::StrCat(what, " contains a NUL byte"));
  }
  json doc = json::parse(*decoded, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Malformed(absl::StrCat(what, " is not a JSON object"));
  }
  return doc;
}

// A JWT NumericDate: integer or fractional seconds; absent -> nullopt.
absl::StatusOr<std::optional<absl::Time>> NumericDate(const json& claims,
                                                      const char* name) {
  auto it = claims.find(name);
  if (it == claims.end()) return std::optional<absl::Time>();
  if (!it->is_number()) {
    return Malformed(absl::StrCat("claim ", name, " is not a number"));
  }
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < 0 || v > kMaxNumericDate) {
    return Malformed(absl::StrCat("claim ", name, " out of range"));
  }
  return std::optional<absl::Time>(absl::FromUnixSeconds(
      static_cast<int64_t>(std::floor(v))));
}

// Reads obj[key] as a string; "" if absent; error if present but not a string.
absl::StatusOr<std::string> OptionalString(const json& obj, const char* key,
                                           const char* where) {
  auto it = obj.find(key);
  if (it == obj.end()) return std::string();
  if (!it->is_string()) {
    return Malformed(absl::StrCat(where, ".", key, " is not a string"));
  }
  return it->get<std::string>();
}

struct NameUid {
  std::string name;
  std::string uid;
};

absl::StatusOr<NameUid> NameUidClaim(const json& k8s, const char* key) {
  auto it = k8s.find(key);
  if (it == k8s.end()) return NameUid();
  if (!it->is_object()) {
    return Malformed(absl::StrCat("kubernetes.io.", key, " is not an object"));
  }
  NameUid out;
  ASSIGN_OR_RETURN(auto name, OptionalString(*it, "name", key));
  ASSIGN_OR_RETURN(auto uid, OptionalString(*it, "uid", key));
  out.name = std::move(name);
  out.uid = std::move(uid);
  return out;
}

}  // namespace

std::string Sha256Hex(std::string_view data) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(data.data()), data.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * sizeof(digest));
  for (uint8_t b : digest) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::string TokenId(std::string_view token, std::string_view jti) {
  if (!jti.empty()) return std::string(jti);
  return absl::StrCat("sha256:", Sha256Hex(token));
}

TokenVerifier::TokenVerifier(TokenVerifierOptions options, JwksCache& keys)
    : options_(std::move(options)), keys_(keys) {}

absl::StatusOr<VerifiedToken> TokenVerifier::Verify(
    std::string_view token) const {
  if (token.empty()) return Malformed("empty token");
  if (token.size() > options_.max_token_bytes) {
    return Malformed(absl::StrCat("token longer than ",
                                  options_.max_token_bytes, " bytes"));
  }
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(token.data(), token.size()), '.');
  if (parts.size() != 3) {
    return Malformed("a JWS compact token has exactly three parts");
  }
  if (parts[0].empty()) return Malformed("empty header");

  ASSIGN_OR_RETURN(auto header,
                   DecodeJsonPart({parts[0].data(), parts[0].size()}, "header"));
  auto alg_it = header.find("alg");
  if (alg_it == header.end() || !alg_it->is_string()) {
    return Malformed("header has no alg");
  }
  const std::string alg = alg_it->get<std::string>();
  if (alg != "RS256" && alg != "ES256") {
    return RefusalStatus(Reason::kAlgNotAllowed,
                         absl::StrCat("alg ", alg.substr(0, 16),
                                      " is not allowed (RS256, ES256 only)"));
  }
  if (header.contains("crit")) {
    return RefusalStatus(Reason::kUnsupportedHeader,
                         "crit header: no JWS extension is supported");
  }
  auto kid_it = header.find("kid");
  if (kid_it == header.end() || !kid_it->is_string() ||
      kid_it->get_ref<const std::string&>().empty()) {
    return RefusalStatus(Reason::kUnknownKid, "token header has no kid");
  }
  const std::string kid = kid_it->get<std::string>();
  if (parts[1].empty() || parts[2].empty()) {
    return Malformed("empty payload or signature");
  }
  auto signature = Base64UrlDecode({parts[2].data(), parts[2].size()});
  if (!signature.ok()) return Malformed("signature is not base64url");

  auto key = keys_.Find(kid);
  if (!key.ok()) {
    return RefusalStatus(Reason::kUnknownKid,
                         absl::StrCat("no issuer key with kid ",
                                      kid.substr(0, 64)));
  }
  if (JwsAlgorithmName((*key)->algorithm) != alg) {
    return RefusalStatus(
        Reason::kAlgNotAllowed,
        absl::StrCat("key ", kid, " verifies ",
                     std::string(JwsAlgorithmName((*key)->algorithm)),
                     ", token says ", alg));
  }
  const std::string_view signing_input(
      token.data(), parts[0].size() + 1 + parts[1].size());
  absl::Status sig = VerifyJwsSignature(**key, signing_input, *signature);
  ERR_clear_error();
  if (!sig.ok()) {
    return RefusalStatus(Reason::kBadSignature,
                         absl::StrCat("signature does not verify with key ", kid));
  }

  // Only now, with the signature checked, do the claims mean anything.
  ASSIGN_OR_RETURN(auto claims,
                   DecodeJsonPart({parts[1].data(), parts[1].size()}, "payload"));
  VerifiedToken out;
  ASSIGN_OR_RETURN(auto iss, OptionalString(claims, "iss", "claims"));
  if (iss != options_.issuer) {
    return RefusalStatus(Reason::kWrongIssuer,
                         absl::StrCat("issuer '", iss.substr(0, 128),
                                      "' is not '", options_.issuer, "'"));
  }
  out.issuer = std::move(iss);

  auto aud = claims.find("aud");
  if (aud != claims.end() && aud->is_string()) {
    out.audiences.push_back(aud->get<std::string>());
  } else if (aud != claims.end() && aud->is_array()) {
    for (const json& a : *aud) {
      if (!a.is_string()) return Malformed("aud has a non-string member");
      out.audiences.push_back(a.get<std::string>());
    }
  } else if (aud != claims.end()) {
    return Malformed("aud is neither a string nor an array");
  }
  if (std::find(out.audiences.begin(), out.audiences.end(),
                options_.audience) == out.audiences.end()) {
    return RefusalStatus(Reason::kWrongAudience,
                         absl::StrCat("audience does not include '",
                                      options_.audience, "'"));
  }

  const absl::Time now = options_.now();
  ASSIGN_OR_RETURN(auto exp, NumericDate(claims, "exp"));
  if (!exp.has_value()) return Malformed("token has no exp");
  out.expires_at = *exp;
  if (now > out.expires_at + options_.clock_skew) {
    return RefusalStatus(Reason::kTokenExpired,
                         absl::StrCat("token expired at ",
                                      absl::FormatTime(out.expires_at)));
  }
  ASSIGN_OR_RETURN(auto nbf, NumericDate(claims, "nbf"));
  if (nbf.has_value()) {
    out.not_before = *nbf;
    if (now + options_.clock_skew < out.not_before) {
      return RefusalStatus(Reason::kTokenNotYetValid,
                           absl::StrCat("token not valid before ",
                                        absl::FormatTime(out.not_before)));
    }
  }
  ASSIGN_OR_RETURN(auto iat, NumericDate(claims, "iat"));
  if (iat.has_value()) {
    out.issued_at = *iat;
    if (now + options_.clock_skew < out.issued_at) {
      return RefusalStatus(Reason::kTokenNotYetValid,
                           "token issued in the future");
    }
  }
  {
    // The lifetime the issuer gave the token, from each start it states.
    std::vector<absl::Time> starts;
    if (out.issued_at != absl::InfinitePast()) starts.push_back(out.issued_at);
    if (out.not_before != absl::InfinitePast()) starts.push_back(out.not_before);
    if (starts.empty()) starts.push_back(now);
    for (absl::Time start : starts) {
      if (out.expires_at - start > options_.max_lifetime) {
        return RefusalStatus(
            Reason::kTokenLifetimeTooLong,
            absl::StrCat("token is valid for ",
                         absl::FormatDuration(out.expires_at - start),
                         ", the broker accepts at most ",
                         absl::FormatDuration(options_.max_lifetime)));
      }
    }
  }
  ASSIGN_OR_RETURN(auto jti, OptionalString(claims, "jti", "claims"));
  out.jti = std::move(jti);
  ASSIGN_OR_RETURN(auto sub, OptionalString(claims, "sub", "claims"));
  out.subject = std::move(sub);

  auto k8s = claims.find("kubernetes.io");
  if (k8s == claims.end() || !k8s->is_object()) {
    return Malformed("token has no kubernetes.io claims");
  }
  ASSIGN_OR_RETURN(auto ns, OptionalString(*k8s, "namespace", "kubernetes.io"));
  out.namespace_name = std::move(ns);
  ASSIGN_OR_RETURN(auto sa, NameUidClaim(*k8s, "serviceaccount"));
  ASSIGN_OR_RETURN(auto pod, NameUidClaim(*k8s, "pod"));
  ASSIGN_OR_RETURN(auto node, NameUidClaim(*k8s, "node"));
  if (out.namespace_name.empty() || sa.name.empty()) {
    return Malformed("kubernetes.io claims lack namespace or service account");
  }
  out.service_account = std::move(sa.name);
  out.service_account_uid = std::move(sa.uid);
  out.pod_name = std::move(pod.name);
  out.pod_uid = std::move(pod.uid);
  out.node_name = std::move(node.name);
  out.node_uid = std::move(node.uid);
  // The API server sets sub to the service account; a token whose sub
  // disagrees with its own kubernetes.io claims was not minted by it.
  const std::string expected_sub = absl::StrCat(
      "system:serviceaccount:", out.namespace_name, ":", out.service_account);
  if (out.subject != expected_sub) {
    return Malformed("sub does not match the kubernetes.io claims");
  }
  return out;
}

}  // namespace sealvol::broker
