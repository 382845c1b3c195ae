#include "kms/broker/jwks_cache.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "kms/broker/refusal.h"
#include "kms/broker/test_issuer.h"
#include "kms/broker/token_verifier.h"
#include "nlohmann/json.hpp"
#include "tests/support/http_test_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"

namespace sealvol::broker {
namespace {

using ::sealvol::testing::HttpTestServer;

// A local OIDC issuer: discovery document and JWKS, with a switchable key
// set and fetch counters.
class JwksCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    first_ = std::make_unique<TestIssuer>(*TestIssuer::Generate(JwsAlgorithm::kEs256));
    second_ = std::make_unique<TestIssuer>(*TestIssuer::Generate(JwsAlgorithm::kEs256));
    jwks_ = first_->Jwks();
    http_.server().Get("/.well-known/openid-configuration",
                       [this](const httplib::Request&, httplib::Response& res) {
                         ++discovery_fetches_;
                         std::lock_guard lock(mu_);
                         res.set_content(
                             nlohmann::json({{"issuer", discovery_issuer_},
                                             {"jwks_uri", url_ + "/openid/v1/jwks"}})
                                 .dump(),
                             "application/json");
                       });
    // As kube-apiserver: the JWKS only as application/jwk-set+json, and
    // 406 Not Acceptable to a client whose Accept does not allow it.
    http_.server().Get("/openid/v1/jwks",
                       [this](const httplib::Request& req, httplib::Response& res) {
                         ++jwks_fetches_;
                         if (!AcceptsJwkSet(req.get_header_value("Accept"))) {
                           res.status = 406;
                           return;
                         }
                         std::lock_guard lock(mu_);
                         res.set_content(jwks_, "application/jwk-set+json");
                       });
    const std::string url = http_.Start();
    std::lock_guard lock(mu_);
    url_ = url;
    discovery_issuer_ = url;
  }

  // Whether an Accept header allows application/jwk-set+json (the media
  // types kube-apiserver's /openid/v1/jwks negotiates on).
  static bool AcceptsJwkSet(const std::string& accept) {
    if (accept.empty()) return true;
    for (absl::string_view type : absl::StrSplit(accept, ',')) {
      type = absl::StripAsciiWhitespace(type.substr(0, type.find(';')));
      if (type == "application/jwk-set+json" || type == "application/*" ||
          type == "*/*") {
        return true;
      }
    }
    return false;
  }

  // The handlers run on httplib's threads; a request over the socket is no
  // happens-before edge ThreadSanitizer can see, so what they read is locked.
  void ServeIssuer(const std::string& issuer) {
    std::lock_guard lock(mu_);
    discovery_issuer_ = issuer;
  }

  void ServeKeys(const std::string& jwks) {
    std::lock_guard lock(mu_);
    jwks_ = jwks;
  }

  std::string Token(const TestIssuer& issuer) {
    MintOptions m;
    m.issuer = url_;
    m.namespace_name = "team-a";
    m.service_account = "trainer";
    auto token = issuer.Mint(m);
    EXPECT_TRUE(token.ok());
    return *token;
  }

  std::mutex mu_;
  std::string url_;  // Written under mu_ (read unlocked on the test thread).
  std::string discovery_issuer_;  // Guarded by mu_.
  std::string jwks_;              // Guarded by mu_.
  std::atomic<int> discovery_fetches_{0};
  std::atomic<int> jwks_fetches_{0};
  std::unique_ptr<TestIssuer> first_;
  std::unique_ptr<TestIssuer> second_;
  // Last, so it is destroyed (stopped and joined) first: its handlers read
  // the members above.
  HttpTestServer http_;
};

TEST_F(JwksCacheTest, LoadsKeysByOidcDiscovery) {
  auto cache = JwksCache::Create({.oidc_issuer_url = url_});
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(discovery_fetches_, 1);
  EXPECT_EQ(jwks_fetches_, 1);
  TokenVerifier verifier({.issuer = url_}, **cache);
  EXPECT_TRUE(verifier.Verify(Token(*first_)).ok());
}

TEST_F(JwksCacheTest, LoadsKeysServedAsJwkSetJsonByUrl) {
  // The chart's default: the API server's /openid/v1/jwks, fetched directly.
  auto cache = JwksCache::Create({.url = url_ + "/openid/v1/jwks"});
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(jwks_fetches_, 1);
  TokenVerifier verifier({.issuer = url_}, **cache);
  EXPECT_TRUE(verifier.Verify(Token(*first_)).ok());
}

TEST_F(JwksCacheTest, RefusesDiscoveryDocumentOfAnotherIssuer) {
  ServeIssuer("https://someone-else.test");
  EXPECT_FALSE(JwksCache::Create({.oidc_issuer_url = url_}).ok());
}

TEST_F(JwksCacheTest, RefreshesOnUnknownKidAtMostOncePerInterval) {
  auto cache = JwksCache::Create(
      {.url = url_ + "/openid/v1/jwks", .min_refresh_interval = absl::Hours(1)});
  ASSERT_TRUE(cache.ok()) << cache.status();
  TokenVerifier verifier({.issuer = url_}, **cache);
  EXPECT_EQ(jwks_fetches_, 1);
  // The issuer rotates to a second key: the first token with the new kid
  // makes the cache refetch, and verifies.
  nlohmann::json both = nlohmann::json::parse(first_->Jwks());
  both["keys"].push_back(nlohmann::json::parse(second_->PublicJwk()));
  ServeKeys(both.dump());
  EXPECT_TRUE(verifier.Verify(Token(*second_)).ok());
  EXPECT_EQ(jwks_fetches_, 2);
  // A flood of unknown kids does not reach the issuer again.
  auto stranger = TestIssuer::Generate(JwsAlgorithm::kEs256);
  for (int i = 0; i < 20; ++i) {
    auto result = verifier.Verify(Token(*stranger));
    EXPECT_EQ(RefusalReason(result.status()), "unknown_kid");
  }
  EXPECT_EQ(jwks_fetches_, 2);
}

TEST_F(JwksCacheTest, KeepsOldKeysWhenTheIssuerIsUnreachable) {
  auto cache = JwksCache::Create(
      {.url = url_ + "/openid/v1/jwks", .min_refresh_interval = absl::ZeroDuration()});
  ASSERT_TRUE(cache.ok());
  http_.Stop();
  TokenVerifier verifier({.issuer = url_}, **cache);
  EXPECT_TRUE(verifier.Verify(Token(*first_)).ok());
  EXPECT_EQ(RefusalReason(verifier.Verify(Token(*second_)).status()),
            "unknown_kid");
}

TEST_F(JwksCacheTest, LoadsKeysFromFileAndRejectsBadSources) {
  const sealvol::testing::TempDir dir("sealvol-jwks");
  const std::string path = dir.file("jwks.json");
  sealvol::testing::WriteFile(path, first_->Jwks());
  auto cache = JwksCache::Create({.file = path});
  ASSERT_TRUE(cache.ok()) << cache.status();
  TokenVerifier verifier({.issuer = url_}, **cache);
  EXPECT_TRUE(verifier.Verify(Token(*first_)).ok());
  sealvol::testing::WriteFile(path, R"({"keys":[]})");
  EXPECT_FALSE(JwksCache::Create({.file = path}).ok()) << "no usable key";
  std::filesystem::remove(path);
  EXPECT_FALSE(JwksCache::Create({.file = path}).ok());
  EXPECT_FALSE(JwksCache::Create({}).ok());
  EXPECT_FALSE(JwksCache::Create({.file = path, .url = url_}).ok());
}

TEST_F(JwksCacheTest, FetchesOverHttpsWithTheGivenCa) {
  sealvol::testing::TestCa ca;
  auto cert = ca.Issue("issuer", "DNS:localhost,IP:127.0.0.1", true, 7);
  const sealvol::testing::TempDir work("sealvol-jwks-tls");
  const std::string dir = work.path();
  sealvol::testing::WriteFile(dir + "/ca.pem", ca.cert_pem());
  sealvol::testing::WriteFile(dir + "/cert.pem", cert.cert_pem);
  sealvol::testing::WriteFile(dir + "/key.pem", cert.key_pem);
  const std::string jwks = first_->Jwks();
  HttpTestServer tls(std::make_unique<httplib::SSLServer>(
      (dir + "/cert.pem").c_str(), (dir + "/key.pem").c_str()));
  ASSERT_TRUE(tls.server().is_valid());
  tls.server().Get("/jwks",
                   [&](const httplib::Request&, httplib::Response& res) {
                     res.set_content(jwks, "application/json");
                   });
  tls.Start();
  const std::string url =
      absl::StrCat("https://localhost:", tls.port(), "/jwks");
  EXPECT_TRUE(JwksCache::Create({.url = url, .ca_file = dir + "/ca.pem"}).ok());
  // Without our CA the server is not trusted.
  sealvol::testing::TestCa other;
  sealvol::testing::WriteFile(dir + "/other.pem", other.cert_pem());
  EXPECT_FALSE(JwksCache::Create({.url = url, .ca_file = dir + "/other.pem"}).ok());
}

}  // namespace
}  // namespace sealvol::broker
