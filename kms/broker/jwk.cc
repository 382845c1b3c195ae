#include "kms/broker/jwk.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/rsa.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kms/broker/base64url.h"
#include "nlohmann/json.hpp"

namespace sealvol::broker {
namespace {

using nlohmann::json;

constexpr int kMinRsaBits = 2048;
constexpr size_t kP256CoordinateSize = 32;

absl::StatusOr<std::string> DecodeMember(const json& jwk, const char* name,
                                         const std::string& kid) {
  auto it = jwk.find(name);
  if (it == jwk.end() || !it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWK ", kid, ": member '", name, "' missing"));
  }
  auto decoded = Base64UrlDecode(it->get_ref<const std::string&>());
  if (!decoded.ok() || decoded->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWK ", kid, ": member '", name, "' is not base64url"));
  }
  return decoded;
}

crypto::SslUniquePtr<BIGNUM> BignumFromBytes(const std::string& bytes) {
  return crypto::SslUniquePtr<BIGNUM>(BN_bin2bn(reinterpret_cast<const uint8_t*>(bytes.data()),
                             static_cast<int>(bytes.size()), nullptr));
}

absl::StatusOr<crypto::SslUniquePtr<EVP_PKEY>> PkeyFromParams(const char* type,
                                          OSSL_PARAM_BLD* builder,
                                          const std::string& kid) {
  crypto::SslUniquePtr<OSSL_PARAM> params(OSSL_PARAM_BLD_to_param(builder));
  crypto::SslUniquePtr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  if (params == nullptr || ctx == nullptr ||
      EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) !=
          1) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWK ", kid, ": OpenSSL rejected the ", type, " key"));
  }
  crypto::SslUniquePtr<EVP_PKEY> pkey(raw);
  crypto::SslUniquePtr<EVP_PKEY_CTX> check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  if (check == nullptr || EVP_PKEY_public_check(check.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWK ", kid, ": public key fails validation"));
  }
  return pkey;
}

absl::StatusOr<crypto::SslUniquePtr<EVP_PKEY>> RsaFromJwk(const json& jwk, const std::string& kid) {
  ASSIGN_OR_RETURN(auto n, DecodeMember(jwk, "n", kid));
  ASSIGN_OR_RETURN(auto e, DecodeMember(jwk, "e", kid));
  crypto::SslUniquePtr<BIGNUM> bn_n = BignumFromBytes(n);
  crypto::SslUniquePtr<BIGNUM> bn_e = BignumFromBytes(e);
  if (bn_n == nullptr || bn_e == nullptr) {
    return absl::ResourceExhaustedError("JWK: BN_bin2bn failed");
  }
  if (BN_num_bits(bn_n.get()) < kMinRsaBits) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWK ", kid, ": RSA modulus under ", kMinRsaBits, " bits"));
  }
  crypto::SslUniquePtr<OSSL_PARAM_BLD> builder(OSSL_PARAM_BLD_new());
  if (builder == nullptr ||
      OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_N,
                             bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_E,
                             bn_e.get()) != 1) {
    return absl::ResourceExhaustedError("JWK: OSSL_PARAM_BLD failed");
  }
  return PkeyFromParams("RSA", builder.get(), kid);
}

absl::StatusOr<crypto::SslUniquePtr<EVP_PKEY>> EcFromJwk(const json& jwk, const std::string& kid) {
  auto crv = jwk.find("crv");
  if (crv == jwk.end() || !crv->is_string() || *crv != "P-256") {
    return absl::InvalidArgumentError(
        absl::StrCat("JWK ", kid, ": only EC curve P-256 is supported"));
  }
  ASSIGN_OR_RETURN(auto x, DecodeMember(jwk, "x", kid));
  ASSIGN_OR_RETURN(auto y, DecodeMember(jwk, "y", kid));
  if (x.size() != kP256CoordinateSize || y.size() != kP256CoordinateSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWK ", kid, ": P-256 coordinates must be 32 bytes"));
  }
  std::string point = absl::StrCat(std::string(1, '\x04'), x, y);
  crypto::SslUniquePtr<OSSL_PARAM_BLD> builder(OSSL_PARAM_BLD_new());
  if (builder == nullptr ||
      OSSL_PARAM_BLD_push_utf8_string(builder.get(),
                                      OSSL_PKEY_PARAM_GROUP_NAME,
                                      "prime256v1", 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY,
                                       point.data(), point.size()) != 1) {
    return absl::ResourceExhaustedError("JWK: OSSL_PARAM_BLD failed");
  }
  return PkeyFromParams("EC", builder.get(), kid);
}

// Returns nullptr (no error) for keys this broker does not use.
absl::StatusOr<std::shared_ptr<const PublicKey>> KeyFromJson(const json& jwk) {
  if (!jwk.is_object()) return absl::InvalidArgumentError("JWK: not an object");
  auto kid_it = jwk.find("kid");
  auto kty_it = jwk.find("kty");
  if (kid_it == jwk.end() || !kid_it->is_string() || kty_it == jwk.end() ||
      !kty_it->is_string()) {
    return std::shared_ptr<const PublicKey>();
  }
  const std::string kid = kid_it->get<std::string>();
  const std::string kty = kty_it->get<std::string>();
  if (auto use = jwk.find("use");
      use != jwk.end() && (!use->is_string() || *use != "sig")) {
    return std::shared_ptr<const PublicKey>();
  }
  std::string alg;
  if (auto it = jwk.find("alg"); it != jwk.end() && it->is_string()) {
    alg = it->get<std::string>();
  }
  auto key = std::make_shared<PublicKey>();
  key->kid = kid;
  if (kty == "RSA") {
    if (!alg.empty() && alg != "RS256") return std::shared_ptr<const PublicKey>();
    auto pkey = RsaFromJwk(jwk, kid);
    if (!pkey.ok()) return pkey.status();
    key->algorithm = JwsAlgorithm::kRs256;
    key->pkey = std::move(*pkey);
  } else if (kty == "EC") {
    if (!alg.empty() && alg != "ES256") return std::shared_ptr<const PublicKey>();
    ASSIGN_OR_RETURN(auto pkey, EcFromJwk(jwk, kid));
    key->algorithm = JwsAlgorithm::kEs256;
    key->pkey = std::move(pkey);
  } else {
    return std::shared_ptr<const PublicKey>();
  }
  return std::shared_ptr<const PublicKey>(std::move(key));
}

}  // namespace

std::string_view JwsAlgorithmName(JwsAlgorithm alg) {
  return alg == JwsAlgorithm::kRs256 ? "RS256" : "ES256";
}

absl::StatusOr<KeySet> KeySet::Parse(std::string_view jwks_json) {
  json doc = json::parse(jwks_json.begin(), jwks_json.end(), nullptr,
                         /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError("JWKS: not a JSON object");
  }
  auto keys = doc.find("keys");
  if (keys == doc.end() || !keys->is_array()) {
    return absl::InvalidArgumentError("JWKS: no 'keys' array");
  }
  KeySet set;
  for (const json& jwk : *keys) {
    ASSIGN_OR_RETURN(auto key, KeyFromJson(jwk));
    if (key == nullptr) continue;
    if (!set.keys_.emplace(key->kid, key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("JWKS: duplicate kid ", key->kid));
    }
  }
  return set;
}

std::shared_ptr<const PublicKey> KeySet::Find(const std::string& kid) const {
  auto it = keys_.find(kid);
  return it == keys_.end() ? nullptr : it->second;
}

std::vector<std::string> KeySet::Kids() const {
  std::vector<std::string> kids;
  for (const auto& [kid, key] : keys_) kids.push_back(kid);
  return kids;
}

absl::StatusOr<std::shared_ptr<const PublicKey>> PublicKeyFromJwk(
    std::string_view jwk_json) {
  json jwk = json::parse(jwk_json.begin(), jwk_json.end(), nullptr, false);
  if (jwk.is_discarded()) return absl::InvalidArgumentError("JWK: not JSON");
  ASSIGN_OR_RETURN(auto key, KeyFromJson(jwk));
  if (key == nullptr) {
    return absl::InvalidArgumentError("JWK: unsupported key type or no kid");
  }
  return key;
}

absl::StatusOr<std::string> EcdsaRawToDer(std::string_view raw) {
  if (raw.size() != 2 * kP256CoordinateSize) {
    return absl::InvalidArgumentError("ES256 signature must be 64 bytes");
  }
  const auto* p = reinterpret_cast<const uint8_t*>(raw.data());
  crypto::SslUniquePtr<BIGNUM> r(BN_bin2bn(p, kP256CoordinateSize, nullptr));
  crypto::SslUniquePtr<BIGNUM> s(BN_bin2bn(p + kP256CoordinateSize, kP256CoordinateSize, nullptr));
  crypto::SslUniquePtr<ECDSA_SIG> sig(ECDSA_SIG_new());
  if (r == nullptr || s == nullptr || sig == nullptr ||
      ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
    return absl::ResourceExhaustedError("ECDSA_SIG allocation failed");
  }
  r.release();  // Owned by sig now.
  s.release();
  uint8_t* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig.get(), &der);
  if (len <= 0) return absl::InternalError("i2d_ECDSA_SIG failed");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

absl::StatusOr<std::string> EcdsaDerToRaw(std::string_view der) {
  const auto* p = reinterpret_cast<const uint8_t*>(der.data());
  crypto::SslUniquePtr<ECDSA_SIG> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (sig == nullptr) return absl::InvalidArgumentError("bad DER ECDSA sig");
  std::string out(2 * kP256CoordinateSize, '\0');
  auto* o = reinterpret_cast<uint8_t*>(out.data());
  if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), o, kP256CoordinateSize) < 0 ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), o + kP256CoordinateSize,
                   kP256CoordinateSize) < 0) {
    return absl::InvalidArgumentError("ECDSA component too large");
  }
  return out;
}

absl::Status VerifyJwsSignature(const PublicKey& key,
                                std::string_view signing_input,
                                std::string_view signature) {
  std::string der;
  if (key.algorithm == JwsAlgorithm::kEs256) {
    ASSIGN_OR_RETURN(auto converted, EcdsaRawToDer(signature));
    der = std::move(converted);
    signature = der;
  }
  crypto::SslUniquePtr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr,
                           key.pkey.get()) != 1) {
    return absl::InternalError("EVP_DigestVerifyInit failed");
  }
  if (key.algorithm == JwsAlgorithm::kRs256 &&
      EVP_PKEY_CTX_set_rsa_padding(EVP_MD_CTX_get_pkey_ctx(ctx.get()),
                                   RSA_PKCS1_PADDING) != 1) {
    return absl::InternalError("EVP_PKEY_CTX_set_rsa_padding failed");
  }
  const int rc = EVP_DigestVerify(
      ctx.get(), reinterpret_cast<const uint8_t*>(signature.data()),
      signature.size(), reinterpret_cast<const uint8_t*>(signing_input.data()),
      signing_input.size());
  if (rc != 1) {
    return absl::InvalidArgumentError("signature does not verify");
  }
  return absl::OkStatus();
}

}  // namespace sealvol::broker
