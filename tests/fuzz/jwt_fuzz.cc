// Fuzzes attestation token parsing. First byte even: the rest is a token as a
// pod would present it (TokenVerifier::Verify). Odd: the rest is header JSON,
// a newline, claims JSON; the test issuer signs them (after replacing the
// string KID with its key id) so the fuzzer reaches claim parsing, which sits
// behind the signature check.
#include <string>
#include <string_view>

#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "base/check.h"
#include "kms/broker/jwk.h"
#include "kms/broker/jwks_cache.h"
#include "kms/broker/test_issuer.h"
#include "kms/broker/token_verifier.h"
#include "tests/fuzz/fuzz_targets.h"

namespace sealvol::fuzz {
namespace {

struct Verifier {
  std::unique_ptr<broker::TestIssuer> issuer;
  std::unique_ptr<broker::JwksCache> keys;
  std::unique_ptr<broker::TokenVerifier> verifier;
};

Verifier& TheVerifier() {
  static Verifier* v = [] {
    auto* out = new Verifier;
    auto issuer = broker::TestIssuer::Generate(broker::JwsAlgorithm::kEs256);
    CHECK(issuer.ok());
    out->issuer = std::make_unique<broker::TestIssuer>(std::move(issuer).value());
    auto set = broker::KeySet::Parse(out->issuer->Jwks());
    CHECK(set.ok());
    out->keys = broker::JwksCache::FromKeySet(std::move(set).value());
    broker::TokenVerifierOptions options;
    options.issuer = "https://issuer.test";
    // A fixed clock: the same input always takes the same path.
    options.now = [] { return absl::FromUnixSeconds(1800000000); };
    out->verifier =
        std::make_unique<broker::TokenVerifier>(options, *out->keys);
    return out;
  }();
  return *v;
}

void CheckVerified(const absl::StatusOr<broker::VerifiedToken>& token) {
  if (!token.ok()) {
    // Refusals carry a reason and never the token.
    CHECK(!token.status().message().empty());
    return;
  }
  CHECK_EQ(token->issuer, "https://issuer.test");
  bool has_audience = false;
  for (const auto& a : token->audiences) has_audience |= a == "sealvol";
  CHECK(has_audience);
}

}  // namespace

int FuzzJwt(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Verifier& v = TheVerifier();
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) == 0) {
    CheckVerified(v.verifier->Verify(rest));
    return 0;
  }
  const size_t newline = rest.find('\n');
  if (newline == std::string_view::npos) return 0;
  const std::string header = absl::StrReplaceAll(
      std::string(rest.substr(0, newline)), {{"KID", v.issuer->kid()}});
  auto token = v.issuer->SignRaw(header, rest.substr(newline + 1));
  if (!token.ok()) return 0;
  CheckVerified(v.verifier->Verify(*token));
  return 0;
}

int FuzzJwks(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto set = broker::KeySet::Parse(text);
  if (set.ok()) {
    for (const std::string& kid : set->Kids()) {
      auto key = set->Find(kid);
      CHECK(key != nullptr);
      CHECK_EQ(key->kid, kid);
      // A fixed, wrong signature must never verify.
      CHECK(!broker::VerifyJwsSignature(*key, "e30.e30", std::string(64, 'A')).ok());
    }
  }
  (void)broker::PublicKeyFromJwk(text);
  (void)broker::EcdsaRawToDer(text);
  (void)broker::EcdsaDerToRaw(text);
  return 0;
}

}  // namespace sealvol::fuzz
