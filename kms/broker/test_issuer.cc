#include "kms/broker/test_issuer.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "kms/broker/base64url.h"
#include "nlohmann/json.hpp"

namespace sealvol::broker {
namespace {

using nlohmann::json;

std::string BignumParam(EVP_PKEY* key, const char* name, int pad) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1) return "";
  crypto::SslUniquePtr<BIGNUM> bn(raw);
  const int size = pad > 0 ? pad : BN_num_bytes(bn.get());
  std::string out(static_cast<size_t>(size), '\0');
  BN_bn2binpad(bn.get(), reinterpret_cast<uint8_t*>(out.data()), size);
  return Base64UrlEncode(out);
}

}  // namespace

std::string RandomUuid() {
  uint8_t b[16];
  RAND_bytes(b, sizeof(b));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return absl::StrFormat(
      "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
      b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
      b[12], b[13], b[14], b[15]);
}

TestIssuer::TestIssuer(JwsAlgorithm algorithm, crypto::SslUniquePtr<EVP_PKEY> key)
    : algorithm_(algorithm), key_(std::move(key)) {
  // RFC 7638: members in lexicographic order, no whitespace.
  if (algorithm_ == JwsAlgorithm::kRs256) {
    jwk_members_ = absl::StrCat(
        "{\"e\":\"", BignumParam(key_.get(), OSSL_PKEY_PARAM_RSA_E, 0),
        "\",\"kty\":\"RSA\",\"n\":\"",
        BignumParam(key_.get(), OSSL_PKEY_PARAM_RSA_N, 0), "\"}");
  } else {
    jwk_members_ = absl::StrCat(
        "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"",
        BignumParam(key_.get(), OSSL_PKEY_PARAM_EC_PUB_X, 32), "\",\"y\":\"",
        BignumParam(key_.get(), OSSL_PKEY_PARAM_EC_PUB_Y, 32), "\"}");
  }
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(jwk_members_.data()),
         jwk_members_.size(), digest);
  kid_ = Base64UrlEncode(std::span<const uint8_t>(digest, sizeof(digest)));
}

absl::StatusOr<TestIssuer> TestIssuer::Generate(JwsAlgorithm algorithm) {
  EVP_PKEY* raw = algorithm == JwsAlgorithm::kRs256
                      ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                      : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (raw == nullptr) {
    ERR_clear_error();
    return absl::InternalError("test issuer: key generation failed");
  }
  return TestIssuer(algorithm, crypto::SslUniquePtr<EVP_PKEY>(raw));
}

absl::StatusOr<TestIssuer> TestIssuer::FromPem(std::string_view pem) {
  crypto::SslUniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  crypto::SslUniquePtr<EVP_PKEY> key(
      bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
          : nullptr);
  ERR_clear_error();
  if (key == nullptr) {
    return absl::InvalidArgumentError("test issuer: not a PEM private key");
  }
  if (EVP_PKEY_is_a(key.get(), "RSA")) {
    return TestIssuer(JwsAlgorithm::kRs256, std::move(key));
  }
  if (EVP_PKEY_is_a(key.get(), "EC")) {
    char group[32] = {};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME,
                                       group, sizeof(group), &len) == 1 &&
        std::string(group) == "prime256v1") {
      return TestIssuer(JwsAlgorithm::kEs256, std::move(key));
    }
  }
  return absl::InvalidArgumentError(
      "test issuer: key must be RSA or EC P-256");
}

absl::StatusOr<std::string> TestIssuer::PrivateKeyPem() const {
  crypto::SslUniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr,
                                                 nullptr, 0, nullptr,
                                                 nullptr) != 1) {
    return absl::InternalError("test issuer: PEM encoding failed");
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string TestIssuer::PublicJwk() const {
  json jwk = json::parse(jwk_members_);
  jwk["kid"] = kid_;
  jwk["alg"] = std::string(JwsAlgorithmName(algorithm_));
  jwk["use"] = "sig";
  return jwk.dump();
}

std::string TestIssuer::Jwks() const {
  json doc;
  doc["keys"] = json::array({json::parse(PublicJwk())});
  return doc.dump();
}

absl::StatusOr<std::string> TestIssuer::SignRaw(
    std::string_view header_json, std::string_view payload_json) const {
  const std::string signing_input = absl::StrCat(
      Base64UrlEncode(std::string(header_json)), ".",
      Base64UrlEncode(std::string(payload_json)));
  crypto::SslUniquePtr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr,
                         key_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len,
                     reinterpret_cast<const uint8_t*>(signing_input.data()),
                     signing_input.size()) != 1) {
    ERR_clear_error();
    return absl::InternalError("test issuer: EVP_DigestSign failed");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<uint8_t*>(sig.data()), &len,
                     reinterpret_cast<const uint8_t*>(signing_input.data()),
                     signing_input.size()) != 1) {
    ERR_clear_error();
    return absl::InternalError("test issuer: EVP_DigestSign failed");
  }
  sig.resize(len);
  if (algorithm_ == JwsAlgorithm::kEs256) {
    ASSIGN_OR_RETURN(auto raw, EcdsaDerToRaw(sig));
    sig = std::move(raw);
  }
  return absl::StrCat(signing_input, ".", Base64UrlEncode(sig));
}

absl::StatusOr<std::string> TestIssuer::Mint(const MintOptions& o) const {
  if (o.issuer.empty() || o.namespace_name.empty() ||
      o.service_account.empty()) {
    return absl::InvalidArgumentError(
        "mint: issuer, namespace and service account are required");
  }
  json header = {{"alg", std::string(JwsAlgorithmName(algorithm_))},
                 {"kid", kid_},
                 {"typ", "JWT"}};
  const int64_t nbf = absl::ToUnixSeconds(o.not_before);
  json k8s;
  k8s["namespace"] = o.namespace_name;
  k8s["serviceaccount"] = {
      {"name", o.service_account},
      {"uid", o.service_account_uid.empty() ? RandomUuid()
                                            : o.service_account_uid}};
  if (!o.pod_name.empty()) {
    k8s["pod"] = {{"name", o.pod_name}, {"uid", o.pod_uid}};
  }
  if (!o.node_name.empty()) {
    k8s["node"] = {{"name", o.node_name},
                   {"uid", o.node_uid.empty() ? RandomUuid() : o.node_uid}};
  }
  json payload = {
      {"aud", json::array({o.audience})},
      {"exp", nbf + absl::ToInt64Seconds(o.ttl)},
      {"iat", nbf},
      {"iss", o.issuer},
      {"jti", o.jti.empty() ? RandomUuid() : o.jti},
      {"kubernetes.io", k8s},
      {"nbf", nbf},
      {"sub", absl::StrCat("system:serviceaccount:", o.namespace_name, ":",
                           o.service_account)}};
  return SignRaw(header.dump(), payload.dump());
}

}  // namespace sealvol::broker
