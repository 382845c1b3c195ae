// Shared fixtures for the broker tests: the KeyProvider fake, a test
// issuer with its JWKS, a verifier on a controllable clock, and token
// minting for pods and nodes.
#pragma once

#include <atomic>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "crypto/secret_bytes.h"
#include "gtest/gtest.h"
#include "kms/broker/jwks_cache.h"
#include "kms/broker/test_issuer.h"
#include "kms/broker/token_verifier.h"
#include "kms/key_provider.h"
#include "tests/fakes/fake_key_provider.h"

namespace sealvol::broker::testing {

inline constexpr char kIssuer[] = "https://issuer.test";
inline constexpr char kTenant[] = "team-a";
inline constexpr char kNode[] = "node-1";

// The one KeyProvider fake (tests/fakes/fake_key_provider.h).
using ::sealvol::testing::FakeKeyProvider;

inline kms::VolumeRecord MakeVolume(const std::string& id,
                                    const std::string& tenant) {
  kms::VolumeRecord v;
  v.volume_id = id;
  v.tenant = tenant;
  v.key_name = "sealvol-" + tenant;
  v.key_version = 3;
  v.node = kNode;  // Placed on the test's node, as CreateVolume records it.
  return v;
}

// Clock the tests can move. Thread-safe.
class TestClock {
 public:
  absl::Time Now() const { return absl::FromUnixNanos(nanos_.load()); }
  void Set(absl::Time t) { nanos_ = absl::ToUnixNanos(t); }
  void Advance(absl::Duration d) { nanos_ += absl::ToInt64Nanoseconds(d); }

 private:
  std::atomic<int64_t> nanos_{absl::ToUnixNanos(absl::Now())};
};

// An issuer, its JWKS cache and a verifier on `clock`.
struct IssuerEnv {
  explicit IssuerEnv(JwsAlgorithm alg = JwsAlgorithm::kRs256)
      : issuer(*TestIssuer::Generate(alg)),
        jwks(JwksCache::FromKeySet(*KeySet::Parse(issuer.Jwks()))),
        verifier(
            TokenVerifierOptions{.issuer = kIssuer,
                                 .now = [this] { return clock.Now(); }},
            *jwks) {}

  MintOptions PodMint(const std::string& pod = "web-0",
                      const std::string& ns = kTenant) const {
    MintOptions m;
    m.issuer = kIssuer;
    m.namespace_name = ns;
    m.service_account = "trainer";
    m.pod_name = pod;
    m.pod_uid = "uid-" + pod;
    m.node_name = kNode;
    m.not_before = clock.Now();
    return m;
  }
  MintOptions NodeMint(const std::string& node = kNode) const {
    MintOptions m;
    m.issuer = kIssuer;
    m.namespace_name = "sealvol-system";
    m.service_account = "sealvol-node";
    m.pod_name = "sealvol-node-x";
    m.pod_uid = "uid-sealvol-node-x";
    m.node_name = node;
    m.not_before = clock.Now();
    return m;
  }
  std::string Mint(const MintOptions& m) const {
    auto token = issuer.Mint(m);
    EXPECT_TRUE(token.ok()) << token.status();
    return token.ok() ? *token : "";
  }

  TestClock clock;
  TestIssuer issuer;
  std::unique_ptr<JwksCache> jwks;
  TokenVerifier verifier;
};

}  // namespace sealvol::broker::testing
