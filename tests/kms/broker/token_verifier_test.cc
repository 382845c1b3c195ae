#include "kms/broker/token_verifier.h"

#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "kms/broker/base64url.h"
#include "kms/broker/refusal.h"
#include "nlohmann/json.hpp"
#include "tests/kms/broker/broker_test_env.h"

namespace sealvol::broker {
namespace {

using testing::IssuerEnv;
using testing::kIssuer;

std::string ReasonOf(const absl::StatusOr<VerifiedToken>& result) {
  EXPECT_FALSE(result.ok());
  if (result.ok()) return "ok";
  EXPECT_EQ(result.status().code(), absl::StatusCode::kPermissionDenied)
      << result.status();
  return RefusalReason(result.status());
}

// Re-signs nothing: swaps the payload of a signed token for another.
std::string WithPayload(const std::string& token, const nlohmann::json& payload) {
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  return parts[0] + "." + Base64UrlEncode(payload.dump()) + "." + parts[2];
}

nlohmann::json PayloadOf(const std::string& token) {
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  return nlohmann::json::parse(*Base64UrlDecode(parts[1]));
}

TEST(Base64UrlTest, RoundTripsEveryLength) {
  std::string data;
  for (int i = 0; i < 40; ++i) {
    auto decoded = Base64UrlDecode(Base64UrlEncode(data));
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, data);
    data += static_cast<char>(i * 37);
  }
}

TEST(Base64UrlTest, RejectsPaddingForeignCharactersAndNonCanonicalBits) {
  EXPECT_FALSE(Base64UrlDecode("YQ==").ok());
  EXPECT_FALSE(Base64UrlDecode("a+b/").ok());
  EXPECT_FALSE(Base64UrlDecode("abcde").ok());  // Length 1 mod 4.
  EXPECT_TRUE(Base64UrlDecode("YQ").ok());
  EXPECT_FALSE(Base64UrlDecode("YR").ok());  // Same byte, dirty low bits.
}

class TokenVerifierTest : public ::testing::TestWithParam<JwsAlgorithm> {
 protected:
  TokenVerifierTest() : env_(GetParam()) {}
  IssuerEnv env_;
};

TEST_P(TokenVerifierTest, AcceptsValidTokenAndExtractsKubernetesClaims) {
  auto m = env_.PodMint();
  m.jti = "jti-1";
  auto token = env_.verifier.Verify(env_.Mint(m));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(token->issuer, kIssuer);
  EXPECT_EQ(token->namespace_name, "team-a");
  EXPECT_EQ(token->service_account, "trainer");
  EXPECT_FALSE(token->service_account_uid.empty());
  EXPECT_EQ(token->pod_name, "web-0");
  EXPECT_EQ(token->pod_uid, "uid-web-0");
  EXPECT_EQ(token->node_name, "node-1");
  EXPECT_EQ(token->jti, "jti-1");
  EXPECT_EQ(token->subject, "system:serviceaccount:team-a:trainer");
}

TEST_P(TokenVerifierTest, RefusesExpiredTokenButToleratesSkew) {
  auto m = env_.PodMint();
  m.ttl = absl::Minutes(10);
  const std::string token = env_.Mint(m);
  env_.clock.Advance(absl::Minutes(10) + absl::Seconds(30));
  EXPECT_TRUE(env_.verifier.Verify(token).ok()) << "within 60 s skew";
  env_.clock.Advance(absl::Seconds(31));
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(token)), "token_expired");
}

TEST_P(TokenVerifierTest, RefusesTokenNotYetValid) {
  auto m = env_.PodMint();
  m.not_before = env_.clock.Now() + absl::Minutes(5);
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(env_.Mint(m))),
            "token_not_yet_valid");
}

TEST_P(TokenVerifierTest, RefusesWrongAudienceAndWrongIssuer) {
  auto m = env_.PodMint();
  m.audience = "https://kubernetes.default.svc";
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(env_.Mint(m))), "wrong_audience");
  m = env_.PodMint();
  m.issuer = "https://evil.test";
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(env_.Mint(m))), "wrong_issuer");
}

TEST_P(TokenVerifierTest, AcceptsAudienceAsPlainString) {
  const std::string token = env_.Mint(env_.PodMint());
  nlohmann::json payload = PayloadOf(token);
  payload["aud"] = "sealvol";
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  auto resigned = env_.issuer.SignRaw(*Base64UrlDecode(parts[0]), payload.dump());
  ASSERT_TRUE(resigned.ok());
  EXPECT_TRUE(env_.verifier.Verify(*resigned).ok());
}

TEST_P(TokenVerifierTest, RefusesEditedPayload) {
  const std::string token = env_.Mint(env_.PodMint());
  nlohmann::json payload = PayloadOf(token);
  payload["kubernetes.io"]["namespace"] = "team-b";
  payload["sub"] = "system:serviceaccount:team-b:trainer";
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(WithPayload(token, payload))),
            "bad_signature");
}

TEST_P(TokenVerifierTest, RefusesTokenSignedByAnotherKeyUnderOurKid) {
  auto forger = TestIssuer::Generate(GetParam());
  ASSERT_TRUE(forger.ok());
  const std::string real = env_.Mint(env_.PodMint());
  std::vector<std::string> parts = absl::StrSplit(real, '.');
  auto forged = forger->SignRaw(*Base64UrlDecode(parts[0]),
                                *Base64UrlDecode(parts[1]));
  ASSERT_TRUE(forged.ok());
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(*forged)), "bad_signature");
}

TEST_P(TokenVerifierTest, RefusesAlgNone) {
  const std::string token = env_.Mint(env_.PodMint());
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  const std::string header =
      Base64UrlEncode(std::string(R"({"alg":"none","typ":"JWT"})"));
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(header + "." + parts[1] + ".")),
            "alg_not_allowed");
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(header + "." + parts[1] + "." +
                                          parts[2])),
            "alg_not_allowed");
}

TEST_P(TokenVerifierTest, RefusesHs256SignedWithThePublicKeyAsSecret) {
  const std::string token = env_.Mint(env_.PodMint());
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  nlohmann::json header = {{"alg", "HS256"}, {"kid", env_.issuer.kid()}};
  const std::string input = Base64UrlEncode(header.dump()) + "." + parts[1];
  // The classic confusion attack: the verifier's public key as HMAC secret,
  // in the forms a confused verifier might hold it (PEM, JWK, JWKS).
  auto public_key = PublicKeyFromJwk(env_.issuer.PublicJwk());
  ASSERT_TRUE(public_key.ok());
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PUBKEY(bio, (*public_key)->pkey.get()), 1);
  char* pem_data = nullptr;
  const long pem_len = BIO_get_mem_data(bio, &pem_data);
  const std::string pem(pem_data, static_cast<size_t>(pem_len));
  BIO_free(bio);
  for (const std::string& secret :
       {pem, env_.issuer.PublicJwk(), env_.issuer.Jwks()}) {
    uint8_t mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const uint8_t*>(input.data()), input.size(), mac, &len);
    const std::string forged =
        input + "." + Base64UrlEncode(std::span<const uint8_t>(mac, len));
    EXPECT_EQ(ReasonOf(env_.verifier.Verify(forged)), "alg_not_allowed");
  }
}

TEST_P(TokenVerifierTest, RefusesUnknownKid) {
  auto other = TestIssuer::Generate(GetParam());
  ASSERT_TRUE(other.ok());
  auto m = env_.PodMint();
  auto token = other->Mint(m);
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(*token)), "unknown_kid");
}

TEST_P(TokenVerifierTest, RefusesAlgThatDoesNotMatchTheKey) {
  const std::string token = env_.Mint(env_.PodMint());
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  const char* other_alg = GetParam() == JwsAlgorithm::kRs256 ? "ES256" : "RS256";
  nlohmann::json header = {{"alg", other_alg}, {"kid", env_.issuer.kid()}};
  const std::string swapped =
      Base64UrlEncode(header.dump()) + "." + parts[1] + "." + parts[2];
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(swapped)), "alg_not_allowed");
}

TEST_P(TokenVerifierTest, RefusesCritHeader) {
  const std::string token = env_.Mint(env_.PodMint());
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  nlohmann::json header = nlohmann::json::parse(*Base64UrlDecode(parts[0]));
  header["crit"] = {"b64"};
  auto signed_token = env_.issuer.SignRaw(header.dump(), *Base64UrlDecode(parts[1]));
  ASSERT_TRUE(signed_token.ok());
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(*signed_token)), "unsupported_header");
}

TEST_P(TokenVerifierTest, RefusesSignedTokenWithoutKubernetesClaims) {
  nlohmann::json payload = {{"iss", kIssuer},
                            {"aud", "sealvol"},
                            {"sub", "someone"},
                            {"exp", absl::ToUnixSeconds(env_.clock.Now()) + 60}};
  nlohmann::json header = {
      {"alg", std::string(JwsAlgorithmName(GetParam()))},
      {"kid", env_.issuer.kid()}};
  auto token = env_.issuer.SignRaw(header.dump(), payload.dump());
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(*token)), "malformed_token");
}

TEST_P(TokenVerifierTest, RefusesOversizedToken) {
  std::string token(20000, 'a');
  EXPECT_EQ(ReasonOf(env_.verifier.Verify(token)), "malformed_token");
}

INSTANTIATE_TEST_SUITE_P(Algorithms, TokenVerifierTest,
                         ::testing::Values(JwsAlgorithm::kRs256,
                                           JwsAlgorithm::kEs256),
                         [](const auto& info) {
                           return std::string(JwsAlgorithmName(info.param));
                         });

// Every *.jwt seed in tests/fuzz/corpus/jwt is named "<reason>--<what>.jwt" and
// must be refused with exactly that reason.
TEST(TokenVerifierCorpusTest, RefusesEveryMalformedSeedWithItsReason) {
  IssuerEnv env;
  const std::filesystem::path dir =
      std::filesystem::path(SEALVOL_SOURCE_DIR) / "tests/fuzz/corpus/jwt";
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    // Other seeds (the fuzz harness's *.bin) have their own format.
    if (entry.path().extension() != ".jwt") continue;
    const std::string name = entry.path().filename().string();
    const size_t sep = name.find("--");
    ASSERT_NE(sep, std::string::npos) << name;
    std::ifstream in(entry.path(), std::ios::binary);
    std::ostringstream buf;
    buf << in.rdbuf();
    auto result = env.verifier.Verify(buf.str());
    EXPECT_EQ(ReasonOf(result), name.substr(0, sep)) << name;
    ++seen;
  }
  EXPECT_GE(seen, 20);
}

TEST(JwkTest, RejectsSmallRsaKeysAndOffCurvePoints) {
  auto small = KeySet::Parse(R"({"keys":[{"kty":"RSA","kid":"s","n":"AQAB","e":"AQAB"}]})");
  EXPECT_FALSE(small.ok());
  const std::string x = Base64UrlEncode(std::string(32, '\x01'));
  auto off_curve = KeySet::Parse(
      R"({"keys":[{"kty":"EC","crv":"P-256","kid":"e","x":")" + x +
      R"(","y":")" + x + R"("}]})");
  EXPECT_FALSE(off_curve.ok());
}

TEST(JwkTest, SkipsKeysForOtherUses) {
  auto keys = KeySet::Parse(
      R"({"keys":[{"kty":"oct","kid":"h","k":"AQAB"},{"kty":"OKP","kid":"o"}]})");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), 0u);
}

}  // namespace
}  // namespace sealvol::broker
