#include "kms/broker/key_broker_service.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "kms/broker/base64url.h"
#include "kms/broker/refusal.h"
#include "nlohmann/json.hpp"
#include "tests/kms/broker/broker_service_fixture.h"
#include "tests/kms/broker/broker_test_env.h"
#include "tests/support/http_test_server.h"

namespace sealvol::broker {
namespace {

namespace fs = std::filesystem;
using testing::FakeKeyProvider;
using ::sealvol::testing::HttpTestServer;
using testing::kNode;
using testing::kTenant;
using testing::MakeVolume;

constexpr char kVolume[] = "sv-0123456789abcdef0123456789abcdef";
constexpr char kOtherTenantVolume[] = "sv-ffffffffffffffffffffffffffffffff";
constexpr char kNodeTwoVolume[] = "sv-22222222222222222222222222222222";

class KeyBrokerServiceTest : public testing::BrokerServiceTest {
 protected:
  void SetUp() override {
    BrokerServiceTest::SetUp();
    keys_.AddVolume(MakeVolume(kVolume, kTenant), 0xA5);
    keys_.AddVolume(MakeVolume(kOtherTenantVolume, "team-b"), 0x5B);
  }

  ReleaseRequest Request(const MintOptions& pod) const {
    ReleaseRequest r;
    r.volume_id = kVolume;
    r.node_id = kNode;
    r.pod_token = env_->Mint(pod);
    r.pod = {.name = pod.pod_name,
             .namespace_name = pod.namespace_name,
             .uid = pod.pod_uid,
             .service_account = pod.service_account};
    return r;
  }

  // Expects a refusal with `reason`, no key unwrapped, and a matching audit
  // record and metric.
  void ExpectRefused(const ReleaseRequest& request, const std::string& node_token,
                     const std::string& reason) {
    const int unwraps = keys_.unwrap_calls();
    const size_t records = AuditRecords().size();
    auto result = service_->Release(request, node_token);
    ASSERT_FALSE(result.ok()) << "granted, expected " << reason;
    EXPECT_EQ(RefusalReason(result.status()), reason) << result.status();
    EXPECT_TRUE(absl::StartsWith(result.status().message(), reason + ": "))
        << result.status();
    EXPECT_EQ(keys_.unwrap_calls(), unwraps) << "refused, yet the key was unwrapped";
    auto audit = AuditRecords();
    ASSERT_EQ(audit.size(), records + 1);
    EXPECT_EQ(audit.back()["decision"], "refuse");
    EXPECT_EQ(audit.back()["reason"], reason);
    EXPECT_GE(metrics_.refusals(reason), 1);
    // The token itself never lands in the log.
    std::ifstream in(AuditPath());
    std::string all((std::istreambuf_iterator<char>(in)), {});
    if (request.pod_token.size() > 20) {
      std::vector<std::string> parts = absl::StrSplit(request.pod_token, '.');
      if (parts.back().size() > 16) {
        EXPECT_EQ(all.find(parts.back()), std::string::npos);
      }
    }
  }

  const fs::path dir_{tmp_.path()};
};

TEST_F(KeyBrokerServiceTest, GrantsKeyToAttestedPodAndAuditsIt) {
  auto pod = env_->PodMint();
  pod.jti = "jti-grant-1";
  auto result = service_->Release(Request(pod), NodeToken());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->dek.size(), 32u);
  EXPECT_EQ(result->dek.data()[0], 0xA5);
  EXPECT_EQ(result->dek.data()[31], 0xA5);
  EXPECT_EQ(result->key_version, 3);
  auto audit = AuditRecords();
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0]["decision"], "grant");
  EXPECT_EQ(audit[0]["reason"], "granted");
  EXPECT_EQ(audit[0]["volume"], kVolume);
  EXPECT_EQ(audit[0]["tenant"], kTenant);
  EXPECT_EQ(audit[0]["pod"], "web-0");
  EXPECT_EQ(audit[0]["pod_uid"], "uid-web-0");
  EXPECT_EQ(audit[0]["service_account"], "trainer");
  EXPECT_EQ(audit[0]["node"], kNode);
  EXPECT_EQ(audit[0]["token_id"], "jti-grant-1");
  EXPECT_EQ(metrics_.grants(), 1);
}

// A rotation that lands between the policy check and the unwrap must not
// make the broker release one record's key under another record's audit
// entry: it reads the registry once and unwraps the record it checked.
TEST_F(KeyBrokerServiceTest, ReleasesTheKeyOfTheRecordItReadAndAudited) {
  auto rotated = MakeVolume(kVolume, kTenant);
  rotated.key_version = 4;
  keys_.ReplaceAfterNextRead(rotated, 0x77);
  const int reads = keys_.read_calls();
  auto result = service_->Release(Request(env_->PodMint()), NodeToken());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(keys_.read_calls(), reads + 1) << "the registry was read twice";
  EXPECT_EQ(result->key_version, 3);
  EXPECT_EQ(result->dek.data()[0], 0xA5)
      << "released the key of the record that replaced the audited one";
  auto audit = AuditRecords();
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0]["key_version"], 3);
  // The next release sees the rotated record, audited as such.
  auto next = service_->Release(Request(env_->PodMint()), NodeToken());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->key_version, 4);
  EXPECT_EQ(next->dek.data()[0], 0x77);
}

TEST_F(KeyBrokerServiceTest, PodTokenWithoutNodeClaimOnlyWhenTheOperatorOptsIn) {
  keys_.AddVolume(
      [] {
        auto v = MakeVolume(kVolume, kTenant);
        v.parameters["allowedServiceAccounts"] = "reader, trainer";
        return v;
      }(),
      0xA5);
  auto pod = env_->PodMint();
  pod.node_name.clear();
  // Nothing binds such a token to a node: refused by default.
  ExpectRefused(Request(pod), NodeToken(), "token_without_node_claim");
  EXPECT_EQ(service_->Release(Request(pod), NodeToken()).status().code(),
            absl::StatusCode::kPermissionDenied);
  options_.policy.allow_tokens_without_node_claim = true;
  Rebuild();
  EXPECT_TRUE(service_->Release(Request(pod), NodeToken()).ok());
}

TEST_F(KeyBrokerServiceTest, KeysFollowPlacement) {
  // Issue 14: the key of a volume placed on n2 was released to n1 for a pod
  // of the same tenant on n1.
  keys_.AddVolume(
      [] {
        auto v = MakeVolume(kVolume, kTenant);
        v.node = "node-2";
        return v;
      }(),
      0xA5);
  ExpectRefused(Request(env_->PodMint()), NodeToken(), "node_not_owner");
  EXPECT_EQ(service_->Release(Request(env_->PodMint()), NodeToken()).status().code(),
            absl::StatusCode::kPermissionDenied);
  // The node it is placed on gets it.
  auto pod = env_->PodMint();
  pod.node_name = "node-2";
  auto request = Request(pod);
  request.node_id = "node-2";
  EXPECT_TRUE(service_->Release(request, NodeToken("node-2")).ok());
}

TEST_F(KeyBrokerServiceTest, AnUnplacedVolumeIsPlacedOnTheFirstNodeGrantedItsKey) {
  // Created without topology: no node until its first grant.
  keys_.AddVolume(
      [] {
        auto v = MakeVolume(kVolume, kTenant);
        v.node.clear();
        return v;
      }(),
      0xA5);
  ASSERT_TRUE(keys_.GetVolume(kVolume)->node.empty());
  // A refused request places nothing.
  auto other = env_->PodMint();
  other.node_name = "node-2";
  auto refused = Request(other);
  refused.node_id = "node-2";
  refused.pod.namespace_name = "team-b";
  EXPECT_FALSE(service_->Release(refused, NodeToken("node-2")).ok());
  EXPECT_TRUE(keys_.GetVolume(kVolume)->node.empty());

  ASSERT_TRUE(service_->Release(Request(env_->PodMint()), NodeToken()).ok());
  EXPECT_EQ(keys_.GetVolume(kVolume)->node, kNode);
  auto request = Request(other);
  request.node_id = "node-2";
  ExpectRefused(request, NodeToken("node-2"), "node_not_owner");
  EXPECT_TRUE(service_->Release(Request(env_->PodMint()), NodeToken()).ok());
}

TEST_F(KeyBrokerServiceTest, RefusesTokensValidLongerThanTheCap) {
  auto pod = env_->PodMint();
  pod.ttl = absl::Hours(25);
  ExpectRefused(Request(pod), NodeToken(), "token_lifetime_too_long");
  pod.ttl = absl::Hours(24 * 365 * 100);
  ExpectRefused(Request(pod), NodeToken(), "token_lifetime_too_long");
  // Node tokens too.
  auto node = env_->NodeMint();
  node.ttl = absl::Hours(48);
  ExpectRefused(Request(env_->PodMint()), env_->Mint(node), "node_identity_invalid");
  pod.ttl = absl::Hours(24);
  EXPECT_TRUE(service_->Release(Request(pod), NodeToken()).ok());
}

TEST_F(KeyBrokerServiceTest, OversizedFieldsAreInvalidArgumentAndAudited) {
  auto request = Request(env_->PodMint());
  request.pod.name = std::string(1500 * 1000, 'p');
  ExpectRefused(request, NodeToken(), "invalid_request");
  auto result = service_->Release(request, NodeToken());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("pod.name"), std::string::npos);
  EXPECT_LT(result.status().message().size(), 200u);
  request = Request(env_->PodMint());
  request.volume_id = std::string(200, 'v');
  ExpectRefused(request, NodeToken(), "invalid_request");
  request = Request(env_->PodMint());
  request.node_id = std::string(300, 'n');
  ExpectRefused(request, NodeToken(), "invalid_request");
  auto states = service_->VolumeStates(kNode, {std::string(5000, 'v')}, NodeToken());
  EXPECT_EQ(states.status().code(), absl::StatusCode::kInvalidArgument);
}

// Issue 18: one preamble for every node call on a volume. Each call bounds
// the two ids and its own fields before the caller's token is looked at,
// and checks its own values only once the caller is known.
TEST_F(KeyBrokerServiceTest, EveryNodeCallBoundsItsFieldsFirst) {
  const std::string long_id(200, 'v');
  const std::string long_node(300, 'n');
  const kms::CommittedState state{1, std::string(64, 'a'), true};
  auto expect_invalid = [&](const absl::Status& status, const char* field) {
    EXPECT_EQ(RefusalReason(status), "invalid_request") << status;
    EXPECT_NE(status.message().find(field), std::string::npos) << status;
    EXPECT_EQ(AuditRecords().back()["reason"], "invalid_request");
  };
  expect_invalid(
      service_->ClaimVolumeFormat(long_id, kNode, "0123", "").status(),
      "volume_id");
  expect_invalid(
      service_->ClaimVolumeFormat(kVolume, long_node, "0123", "").status(),
      "node_id");
  expect_invalid(
      service_->CommitVolumeState(long_id, kNode, state, false, NodeToken()),
      "volume_id");
  expect_invalid(service_->ReportVolumeRollback(kVolume, kNode,
                                                std::string(2000, 'd'),
                                                NodeToken()),
                 "detail");
  // A malformed value from an unknown caller is refused as the caller.
  auto unknown = service_->ClaimVolumeFormat(kVolume, kNode, "0123", "");
  EXPECT_EQ(RefusalReason(unknown.status()), "node_identity_invalid")
      << unknown.status();
  // From the node, it is refused as the value, with its own reason.
  auto bad = service_->ClaimVolumeFormat(kVolume, kNode, "0123", NodeToken());
  EXPECT_EQ(RefusalReason(bad.status()), "invalid_format_id") << bad.status();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_.read_calls(), 0) << "the registry was read for a refusal "
                                      "decided by the request alone";
}

TEST_F(KeyBrokerServiceTest, EveryPodAttestsOnItsOwn) {
  EXPECT_TRUE(service_->Release(Request(env_->PodMint("web-0")), NodeToken()).ok());
  EXPECT_TRUE(service_->Release(Request(env_->PodMint("web-1")), NodeToken()).ok());
  // web-1's token cannot ride on web-0's grant.
  auto request = Request(env_->PodMint("web-1"));
  request.pod.name = "web-0";
  request.pod.uid = "uid-web-0";
  ExpectRefused(request, NodeToken(), "pod_mismatch");
}

TEST_F(KeyBrokerServiceTest, RefusesTokenFromAnotherNamespace) {
  // A team-b pod asks for team-a's volume, honestly naming itself.
  ExpectRefused(Request(env_->PodMint("web-0", "team-b")), NodeToken(),
                "namespace_mismatch");
  // A team-b token with the volume context of a team-a pod.
  auto request = Request(env_->PodMint("web-0", "team-b"));
  request.pod.namespace_name = kTenant;
  ExpectRefused(request, NodeToken(), "namespace_mismatch");
  // A team-a pod with the other tenant's volume.
  request = Request(env_->PodMint());
  request.volume_id = kOtherTenantVolume;
  ExpectRefused(request, NodeToken(), "namespace_mismatch");
}

TEST_F(KeyBrokerServiceTest, RefusesExpiredAndNotYetValidTokens) {
  auto pod = env_->PodMint();
  pod.not_before = env_->clock.Now() - absl::Hours(2);
  pod.ttl = absl::Hours(1);
  ExpectRefused(Request(pod), NodeToken(), "token_expired");
  pod = env_->PodMint();
  pod.not_before = env_->clock.Now() + absl::Minutes(10);
  ExpectRefused(Request(pod), NodeToken(), "token_not_yet_valid");
}

TEST_F(KeyBrokerServiceTest, RefusesReplayOfAnExpiredToken) {
  auto pod = env_->PodMint();
  pod.ttl = absl::Minutes(10);
  pod.jti = "jti-replayed";
  const ReleaseRequest request = Request(pod);
  ASSERT_TRUE(service_->Release(request, NodeToken()).ok());
  env_->clock.Advance(absl::Minutes(20));
  ExpectRefused(request, NodeToken(), "token_expired");
  auto audit = AuditRecords();
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[0]["token_id"], "jti-replayed");
  EXPECT_EQ(audit[1]["token_id"], "sha256:" + Sha256Hex(request.pod_token));
}

TEST_F(KeyBrokerServiceTest, RefusesWrongAudienceAndWrongIssuer) {
  auto pod = env_->PodMint();
  pod.audience = "vault";
  ExpectRefused(Request(pod), NodeToken(), "wrong_audience");
  pod = env_->PodMint();
  pod.issuer = "https://other-cluster.test";
  ExpectRefused(Request(pod), NodeToken(), "wrong_issuer");
}

TEST_F(KeyBrokerServiceTest, RefusesForgedAndUnknownKeyTokens) {
  auto request = Request(env_->PodMint());
  // Same claims, signature by a key the issuer never had, under our kid.
  auto forger = TestIssuer::Generate(JwsAlgorithm::kEs256);
  ASSERT_TRUE(forger.ok());
  std::vector<std::string> parts = absl::StrSplit(request.pod_token, '.');
  auto forged = forger->SignRaw(*Base64UrlDecode(parts[0]),
                                *Base64UrlDecode(parts[1]));
  ASSERT_TRUE(forged.ok());
  request.pod_token = *forged;
  ExpectRefused(request, NodeToken(), "bad_signature");
  // Signed by another issuer key with its own kid.
  auto other = forger->Mint(env_->PodMint());
  ASSERT_TRUE(other.ok());
  request.pod_token = *other;
  ExpectRefused(request, NodeToken(), "unknown_kid");
  // alg none.
  request.pod_token = Base64UrlEncode(std::string(R"({"alg":"none"})")) + "." +
                      parts[1] + ".";
  ExpectRefused(request, NodeToken(), "alg_not_allowed");
  // Garbage.
  request.pod_token = "not.a.jwt";
  ExpectRefused(request, NodeToken(), "malformed_token");
}

TEST_F(KeyBrokerServiceTest, RefusesTokenForAnotherPod) {
  auto request = Request(env_->PodMint("web-0"));
  request.pod.name = "web-9";
  ExpectRefused(request, NodeToken(), "pod_mismatch");
  request = Request(env_->PodMint("web-0"));
  request.pod.uid = "uid-of-a-recreated-pod";
  ExpectRefused(request, NodeToken(), "pod_mismatch");
  request = Request(env_->PodMint("web-0"));
  request.pod.service_account = "default";
  ExpectRefused(request, NodeToken(), "pod_mismatch");
}

TEST_F(KeyBrokerServiceTest, RefusesPodTokenFromAnotherNode) {
  auto pod = env_->PodMint();
  pod.node_name = "node-2";
  ExpectRefused(Request(pod), NodeToken(), "node_mismatch");
}

TEST_F(KeyBrokerServiceTest, RefusesServiceAccountNotAllowed) {
  keys_.AddVolume(
      [] {
        auto v = MakeVolume(kVolume, kTenant);
        v.parameters["allowedServiceAccounts"] = "reader,team-a:writer";
        return v;
      }(),
      0xA5);
  ExpectRefused(Request(env_->PodMint()), NodeToken(),
                "service_account_not_allowed");
}

TEST_F(KeyBrokerServiceTest, RefusesNodeIdentityProblems) {
  const auto request = Request(env_->PodMint());
  // No caller token at all.
  ExpectRefused(request, "", "node_identity_invalid");
  // The pod's own token is not a node identity.
  ExpectRefused(request, request.pod_token, "node_identity_invalid");
  // A node token of the wrong service account.
  auto wrong_sa = env_->NodeMint();
  wrong_sa.namespace_name = "sealvol-system";
  wrong_sa.service_account = "sealvol-controller";
  ExpectRefused(request, env_->Mint(wrong_sa), "node_identity_invalid");
  auto wrong_ns = env_->NodeMint();
  wrong_ns.namespace_name = kTenant;
  ExpectRefused(request, env_->Mint(wrong_ns), "node_identity_invalid");
  // node-2's plugin claiming to be node-1.
  ExpectRefused(request, NodeToken("node-2"), "node_identity_invalid");
  // A node token without a node claim.
  auto unbound = env_->NodeMint();
  unbound.node_name.clear();
  ExpectRefused(request, env_->Mint(unbound), "node_identity_invalid");
  // An expired node token.
  auto expired = env_->NodeMint();
  expired.not_before = env_->clock.Now() - absl::Hours(3);
  ExpectRefused(request, env_->Mint(expired), "node_identity_invalid");
}

TEST_F(KeyBrokerServiceTest, RefusesUnknownVolume) {
  auto request = Request(env_->PodMint());
  request.volume_id = "sv-00000000000000000000000000000000";
  ExpectRefused(request, NodeToken(), "volume_not_found");
}

TEST_F(KeyBrokerServiceTest, RateLimitsPerNode) {
  options_.rate_limit.burst = 3;
  options_.rate_limit.tokens_per_second = 0.001;
  Rebuild();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(service_->Release(Request(env_->PodMint()), NodeToken()).ok());
  }
  ExpectRefused(Request(env_->PodMint()), NodeToken(), "rate_limited");
  auto result = service_->Release(Request(env_->PodMint()), NodeToken());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
  // Another node has its own bucket (asking for a volume placed on it).
  keys_.AddVolume(
      [] {
        auto v = MakeVolume(kNodeTwoVolume, kTenant);
        v.node = "node-2";
        return v;
      }(),
      0x22);
  auto pod = env_->PodMint();
  pod.node_name = "node-2";
  auto request = Request(pod);
  request.volume_id = kNodeTwoVolume;
  request.node_id = "node-2";
  EXPECT_TRUE(service_->Release(request, NodeToken("node-2")).ok());
}

TEST_F(KeyBrokerServiceTest, VolumeStatusAuthenticatesAndRateLimitsLikeRelease) {
  options_.rate_limit.burst = 2;
  options_.rate_limit.tokens_per_second = 0.001;
  Rebuild();
  const std::string deleted = "sv-00000000000000000000000000000000";
  auto states = service_->VolumeStates(kNode, {kVolume, deleted}, NodeToken());
  ASSERT_TRUE(states.ok()) << states.status();
  ASSERT_EQ(states->size(), 2u);
  EXPECT_EQ((*states)[0].volume_id, kVolume);
  EXPECT_TRUE((*states)[0].exists);
  EXPECT_EQ((*states)[1].volume_id, deleted);
  EXPECT_FALSE((*states)[1].exists);
  EXPECT_TRUE(AuditRecords().empty()) << "a granted status query was audited";
  // The same bucket as ReleaseKey: one release spends the rest of it.
  EXPECT_TRUE(service_->Release(Request(env_->PodMint()), NodeToken()).ok());
  states = service_->VolumeStates(kNode, {kVolume}, NodeToken());
  EXPECT_EQ(RefusalReason(states.status()), "rate_limited") << states.status();
  // Node identity: the request's node must be the token's.
  states = service_->VolumeStates("node-2", {kVolume}, NodeToken());
  EXPECT_EQ(RefusalReason(states.status()), "node_identity_invalid")
      << states.status();
  // Too many ids in one call.
  std::vector<std::string> many(kMaxVolumeStatusIds + 1, std::string(kVolume));
  options_.rate_limit.burst = 10;
  Rebuild();
  states = service_->VolumeStates(kNode, many, NodeToken());
  EXPECT_EQ(states.status().code(), absl::StatusCode::kInvalidArgument);
}

constexpr char kFormatA[] = "0123456789abcdef0123456789abcdef";
constexpr char kFormatB[] = "fedcba9876543210fedcba9876543210";

TEST_F(KeyBrokerServiceTest, FirstFormatClaimIsRecordedAndAudited) {
  auto claimed = service_->ClaimVolumeFormat(kVolume, kNode, kFormatA, NodeToken());
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_EQ(claimed->format_id, kFormatA);
  EXPECT_TRUE(claimed->recorded);
  auto record = keys_.GetVolume(kVolume);
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->format_id, kFormatA);
  EXPECT_EQ(record->formatted_node, kNode);
  EXPECT_GT(record->formatted_unix, 0);
  auto audit = AuditRecords();
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit.back()["decision"], "grant");
  EXPECT_EQ(audit.back()["reason"], "format_claimed");
  EXPECT_EQ(audit.back()["volume"], kVolume);
  EXPECT_EQ(audit.back()["tenant"], kTenant);
  EXPECT_EQ(audit.back()["node"], kNode);
  EXPECT_NE(audit.back()["message"].get<std::string>().find(kFormatA),
            std::string::npos);
  // The key release carries the registry's format id from now on.
  auto released = service_->Release(Request(env_->PodMint()), NodeToken());
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->format_id, kFormatA);
}

TEST_F(KeyBrokerServiceTest, RepeatedFormatClaimWithTheSameIdIsAccepted) {
  ASSERT_TRUE(service_->ClaimVolumeFormat(kVolume, kNode, kFormatA, NodeToken()).ok());
  auto again = service_->ClaimVolumeFormat(kVolume, kNode, kFormatA, NodeToken());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->recorded);
  auto audit = AuditRecords();
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit.back()["decision"], "grant");
  EXPECT_EQ(audit.back()["reason"], "format_matches");
  EXPECT_EQ(keys_.GetVolume(kVolume)->format_id, kFormatA);
}

TEST_F(KeyBrokerServiceTest, ConflictingFormatClaimIsRefusedAndAudited) {
  ASSERT_TRUE(service_->ClaimVolumeFormat(kVolume, kNode, kFormatA, NodeToken()).ok());
  auto refused = service_->ClaimVolumeFormat(kVolume, kNode, kFormatB, NodeToken());
  ASSERT_FALSE(refused.ok()) << "a second format of the volume was accepted";
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(RefusalReason(refused.status()), "already_formatted");
  EXPECT_TRUE(absl::StartsWith(refused.status().message(), "already_formatted: "))
      << refused.status();
  EXPECT_NE(refused.status().message().find(kVolume), std::string::npos);
  // The first claim stands.
  auto record = keys_.GetVolume(kVolume);
  EXPECT_EQ(record->format_id, kFormatA);
  auto audit = AuditRecords();
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit.back()["decision"], "refuse");
  EXPECT_EQ(audit.back()["reason"], "already_formatted");
  EXPECT_EQ(audit.back()["volume"], kVolume);
  EXPECT_EQ(metrics_.refusals("already_formatted"), 1);
}

TEST_F(KeyBrokerServiceTest, FormatClaimNeedsTheNodesOwnIdentity) {
  auto expect_refused = [&](const std::string& node_id,
                            const std::string& token) {
    const size_t records = AuditRecords().size();
    auto refused = service_->ClaimVolumeFormat(kVolume, node_id, kFormatA, token);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(RefusalReason(refused.status()), "node_identity_invalid")
        << refused.status();
    auto audit = AuditRecords();
    ASSERT_EQ(audit.size(), records + 1);
    EXPECT_EQ(audit.back()["decision"], "refuse");
    EXPECT_EQ(audit.back()["reason"], "node_identity_invalid");
  };
  expect_refused(kNode, "");                              // No token.
  expect_refused(kNode, env_->Mint(env_->PodMint()));     // A pod's token.
  expect_refused(kNode, NodeToken("node-2"));             // Another node's.
  expect_refused("node-2", NodeToken());                  // Names another node.
  EXPECT_TRUE(keys_.GetVolume(kVolume)->format_id.empty())
      << "an unauthenticated claim was recorded";
}

TEST_F(KeyBrokerServiceTest, FormatClaimComesOnlyFromTheVolumesNode) {
  auto placed = MakeVolume("sv-11111111111111111111111111111111", kTenant);
  placed.node = "node-2";
  keys_.AddVolume(placed, 0x11);
  auto refused = service_->ClaimVolumeFormat(placed.volume_id, kNode, kFormatA,
                                             NodeToken());
  EXPECT_EQ(RefusalReason(refused.status()), "node_not_owner") << refused.status();
  EXPECT_EQ(AuditRecords().back()["reason"], "node_not_owner");
  EXPECT_TRUE(keys_.GetVolume(placed.volume_id)->format_id.empty());
  auto owner = service_->ClaimVolumeFormat(placed.volume_id, "node-2", kFormatA,
                                           NodeToken("node-2"));
  EXPECT_TRUE(owner.ok()) << owner.status();
}

TEST_F(KeyBrokerServiceTest, FormatClaimIsRateLimitedWithReleases) {
  options_.rate_limit.burst = 1;
  options_.rate_limit.tokens_per_second = 0.001;
  Rebuild();
  EXPECT_TRUE(service_->Release(Request(env_->PodMint()), NodeToken()).ok());
  auto refused = service_->ClaimVolumeFormat(kVolume, kNode, kFormatA, NodeToken());
  EXPECT_EQ(RefusalReason(refused.status()), "rate_limited") << refused.status();
  EXPECT_TRUE(keys_.GetVolume(kVolume)->format_id.empty());
}

// State commits spend a bucket of their own: a node that used up its
// release budget can still commit the close of its sessions, and commits
// are limited on their own.
TEST_F(KeyBrokerServiceTest, StateCommitsHaveTheirOwnRateBudget) {
  options_.rate_limit.burst = 2;
  options_.rate_limit.tokens_per_second = 0.001;
  Rebuild();
  EXPECT_TRUE(service_->Release(Request(env_->PodMint()), NodeToken()).ok());
  EXPECT_TRUE(service_->Release(Request(env_->PodMint()), NodeToken()).ok());
  ExpectRefused(Request(env_->PodMint()), NodeToken(), "rate_limited");
  EXPECT_TRUE(service_->CommitVolumeState(kVolume, kNode, {1, std::string(64, 'a'), true},
                                          false, NodeToken()).ok());
  EXPECT_TRUE(service_->CommitVolumeState(kVolume, kNode, {1, std::string(64, 'a'), false},
                                          false, NodeToken()).ok());
  EXPECT_EQ(RefusalReason(service_->CommitVolumeState(
                kVolume, kNode, {2, std::string(64, 'a'), true}, false, NodeToken())),
            "rate_limited");
}

TEST_F(KeyBrokerServiceTest, FormatClaimRefusesBadInputAndUnknownVolumes) {
  auto bad = service_->ClaimVolumeFormat(kVolume, kNode, "0123", NodeToken());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("format id"), std::string::npos);
  EXPECT_EQ(AuditRecords().back()["reason"], "invalid_format_id");
  auto upper = service_->ClaimVolumeFormat(
      kVolume, kNode, "0123456789ABCDEF0123456789ABCDEF", NodeToken());
  EXPECT_EQ(upper.status().code(), absl::StatusCode::kInvalidArgument);
  auto unknown = service_->ClaimVolumeFormat(
      "sv-00000000000000000000000000000000", kNode, kFormatA, NodeToken());
  EXPECT_EQ(RefusalReason(unknown.status()), "volume_not_found");
  EXPECT_EQ(AuditRecords().back()["reason"], "volume_not_found");
  keys_.FailClaims(true);
  auto down = service_->ClaimVolumeFormat(kVolume, kNode, kFormatA, NodeToken());
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RefusalReason(down.status()), "kms_error");
  EXPECT_EQ(AuditRecords().back()["reason"], "kms_error");
}

TEST_F(KeyBrokerServiceTest, FormatClaimIsNotAcceptedWithoutAnAuditRecord) {
  auto full = AuditLog::Open({.path = "/dev/full"});
  ASSERT_TRUE(full.ok()) << full.status();
  KeyBrokerService service(keys_, env_->verifier, **full, options_);
  auto claimed = service.ClaimVolumeFormat(kVolume, kNode, kFormatA, NodeToken());
  EXPECT_EQ(claimed.status().code(), absl::StatusCode::kUnavailable)
      << claimed.status();
}

// State commitments (issue 13): the release carries the expected state, the
// node's commits never move the epoch back, and every decision is audited.
const std::string kRootA(64, 'a');
const std::string kRootB(64, 'b');

TEST_F(KeyBrokerServiceTest, FormatClaimRecordsTheFirstStateAndReleaseCarriesIt) {
  auto before = service_->Release(Request(env_->PodMint()), NodeToken());
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_FALSE(before->expected_state.has_value())
      << "a volume without a committed state must not be checked";
  const kms::CommittedState first{1, kRootA, false};
  auto claimed = service_->ClaimVolumeFormat(kVolume, kNode, kFormatA,
                                             NodeToken(), first);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_EQ(*keys_.GetVolume(kVolume)->state, first);
  auto released = service_->Release(Request(env_->PodMint()), NodeToken());
  ASSERT_TRUE(released.ok()) << released.status();
  ASSERT_TRUE(released->expected_state.has_value());
  EXPECT_EQ(*released->expected_state, first);
  EXPECT_FALSE(released->rollback_accepted);
  auto bad = service_->ClaimVolumeFormat(kVolume, kNode, kFormatA, NodeToken(),
                                         kms::CommittedState{1, "zz", false});
  EXPECT_EQ(RefusalReason(bad.status()), "invalid_state") << bad.status();
}

TEST_F(KeyBrokerServiceTest, StateCommitsAreAuditedAndNeverGoBack) {
  ASSERT_TRUE(service_->CommitVolumeState(kVolume, kNode, {1, kRootA, false},
                                          false, NodeToken()).ok());
  ASSERT_TRUE(service_->CommitVolumeState(kVolume, kNode, {2, kRootA, true},
                                          false, NodeToken()).ok());
  auto audit = AuditRecords();
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[0]["reason"], "state_committed");
  EXPECT_EQ(audit[1]["decision"], "grant");
  EXPECT_EQ(audit[1]["reason"], "state_opened");
  EXPECT_EQ(audit[1]["tenant"], kTenant);
  EXPECT_NE(audit[1]["message"].get<std::string>().find("epoch 2"),
            std::string::npos);
  EXPECT_EQ(audit[1]["message"].get<std::string>().find("never closed"),
            std::string::npos);
  // A session opened after one that never closed says so.
  ASSERT_TRUE(service_->CommitVolumeState(kVolume, kNode, {2, kRootA, true},
                                          false, NodeToken()).ok());
  EXPECT_NE(AuditRecords().back()["message"].get<std::string>().find(
                "(epoch 2) was never closed"),
            std::string::npos);
  ASSERT_TRUE(service_->CommitVolumeState(kVolume, kNode, {2, kRootB, false},
                                          false, NodeToken()).ok());
  EXPECT_EQ(AuditRecords().back()["reason"], "state_committed");
  // Back to epoch 1: refused, audited, the registry unchanged.
  absl::Status back = service_->CommitVolumeState(
      kVolume, kNode, {1, kRootA, false}, false, NodeToken());
  EXPECT_EQ(back.code(), absl::StatusCode::kFailedPrecondition) << back;
  EXPECT_EQ(RefusalReason(back), "state_regression");
  EXPECT_EQ(AuditRecords().back()["decision"], "refuse");
  EXPECT_EQ(AuditRecords().back()["reason"], "state_regression");
  EXPECT_EQ(metrics_.refusals("state_regression"), 1);
  EXPECT_EQ(*keys_.GetVolume(kVolume)->state, (kms::CommittedState{2, kRootB, false}));
  // The release hands the committed state on.
  auto released = service_->Release(Request(env_->PodMint()), NodeToken());
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(*released->expected_state, (kms::CommittedState{2, kRootB, false}));
  // A malformed root is refused by name.
  absl::Status bad = service_->CommitVolumeState(kVolume, kNode, {3, "00", true},
                                                 false, NodeToken());
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RefusalReason(bad), "invalid_state");
  EXPECT_NE(bad.message().find("state_root"), std::string::npos) << bad;
}

TEST_F(KeyBrokerServiceTest, StateCommitsComeOnlyFromTheVolumesOwnNode) {
  auto placed = MakeVolume("sv-11111111111111111111111111111111", kTenant);
  placed.node = "node-2";
  keys_.AddVolume(placed, 0x11);
  auto expect_refused = [&](const std::string& volume, const std::string& node,
                            const std::string& token, const std::string& reason) {
    absl::Status s = service_->CommitVolumeState(volume, node, {5, kRootA, true},
                                                 false, token);
    EXPECT_EQ(RefusalReason(s), reason) << s;
    EXPECT_EQ(AuditRecords().back()["decision"], "refuse");
    EXPECT_EQ(AuditRecords().back()["reason"], reason);
  };
  expect_refused(placed.volume_id, kNode, NodeToken(), "node_not_owner");
  expect_refused(kVolume, kNode, "", "node_identity_invalid");
  expect_refused(kVolume, kNode, env_->Mint(env_->PodMint()), "node_identity_invalid");
  expect_refused(kVolume, "node-2", NodeToken(), "node_identity_invalid");
  expect_refused("sv-00000000000000000000000000000000", kNode, NodeToken(),
                 "volume_not_found");
  EXPECT_FALSE(keys_.GetVolume(placed.volume_id)->state.has_value());
  EXPECT_FALSE(keys_.GetVolume(kVolume)->state.has_value());
  EXPECT_TRUE(service_->CommitVolumeState(placed.volume_id, "node-2",
                                          {5, kRootA, true}, false,
                                          NodeToken("node-2")).ok());
  keys_.FailClaims(true);
  absl::Status down = service_->CommitVolumeState(kVolume, kNode, {5, kRootA, true},
                                                  false, NodeToken());
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RefusalReason(down), "kms_error");
}

TEST_F(KeyBrokerServiceTest, AcceptedRollbackIsAuditedAndConsumedOnce) {
  ASSERT_TRUE(service_->CommitVolumeState(kVolume, kNode, {7, kRootA, false},
                                          false, NodeToken()).ok());
  // No acceptance pending: accept_rollback is refused.
  absl::Status early = service_->CommitVolumeState(kVolume, kNode, {3, kRootB, true},
                                                   true, NodeToken());
  EXPECT_EQ(RefusalReason(early), "state_regression") << early;
  ASSERT_TRUE(keys_.AcceptRollback(kVolume, "alice@admin", 1700000000).ok());
  auto released = service_->Release(Request(env_->PodMint()), NodeToken());
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_TRUE(released->rollback_accepted);
  // The registry's state still comes along: the image is opened past it.
  ASSERT_TRUE(released->expected_state.has_value());
  EXPECT_EQ(released->expected_state->epoch, 7u);
  auto audit = AuditRecords();
  ASSERT_GE(audit.size(), 2u);
  const auto& accepted = audit[audit.size() - 2];
  EXPECT_EQ(accepted["reason"], "rollback_accepted");
  EXPECT_NE(accepted["message"].get<std::string>().find("alice@admin"),
            std::string::npos);
  EXPECT_EQ(audit.back()["reason"], "granted");
  // The restored image's commit must still move the epoch forward (it is
  // opened past the registry's epoch), and consumes the acceptance.
  EXPECT_EQ(RefusalReason(service_->CommitVolumeState(
                kVolume, kNode, {3, kRootB, true}, true, NodeToken())),
            "state_regression");
  ASSERT_TRUE(service_->CommitVolumeState(kVolume, kNode, {8, kRootB, true},
                                          true, NodeToken()).ok());
  EXPECT_EQ(AuditRecords().back()["reason"], "rollback_consumed");
  EXPECT_EQ(*keys_.GetVolume(kVolume)->state, (kms::CommittedState{8, kRootB, true}));
  auto after = service_->Release(Request(env_->PodMint()), NodeToken());
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->rollback_accepted);
  EXPECT_EQ(*after->expected_state, (kms::CommittedState{8, kRootB, true}));
  EXPECT_EQ(RefusalReason(service_->CommitVolumeState(
                kVolume, kNode, {2, kRootB, true}, true, NodeToken())),
            "state_regression");
}

TEST_F(KeyBrokerServiceTest, ReportedRollbackIsAuditedWithBothStates) {
  ASSERT_TRUE(service_->CommitVolumeState(kVolume, kNode, {4, kRootA, false},
                                          false, NodeToken()).ok());
  const std::string detail =
      "rolled back: /var/img is at epoch 2 (root cc...), the registry expects "
      "epoch 4 (root aa...)";
  ASSERT_TRUE(service_->ReportVolumeRollback(kVolume, kNode, detail, NodeToken()).ok());
  auto audit = AuditRecords();
  EXPECT_EQ(audit.back()["decision"], "refuse");
  EXPECT_EQ(audit.back()["reason"], "rolled_back");
  EXPECT_EQ(audit.back()["volume"], kVolume);
  const std::string message = audit.back()["message"];
  EXPECT_NE(message.find("epoch 4"), std::string::npos) << message;
  EXPECT_NE(message.find("epoch 2"), std::string::npos) << message;
  EXPECT_EQ(metrics_.refusals("rolled_back"), 1);
  // Only the volume's node, authenticated, may report.
  absl::Status stranger = service_->ReportVolumeRollback(kVolume, "node-2", detail,
                                                         NodeToken("node-2"));
  EXPECT_FALSE(stranger.ok());
  EXPECT_EQ(AuditRecords().back()["reason"], RefusalReason(stranger));
  absl::Status huge = service_->ReportVolumeRollback(kVolume, kNode,
                                                     std::string(4096, 'x'),
                                                     NodeToken());
  EXPECT_EQ(RefusalReason(huge), "invalid_request");
}

TEST_F(KeyBrokerServiceTest, StateCommitFailsWithoutAnAuditRecord) {
  auto full = AuditLog::Open({.path = "/dev/full"});
  ASSERT_TRUE(full.ok()) << full.status();
  KeyBrokerService service(keys_, env_->verifier, **full, options_);
  absl::Status s = service.CommitVolumeState(kVolume, kNode, {1, kRootA, true},
                                             false, NodeToken());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST_F(KeyBrokerServiceTest, KmsFailureIsUnavailableAndCounted) {
  keys_.FailUnwrap(true);
  auto result = service_->Release(Request(env_->PodMint()), NodeToken());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RefusalReason(result.status()), "kms_error");
  EXPECT_EQ(metrics_.kms_errors(), 1);
  EXPECT_EQ(AuditRecords().back()["reason"], "kms_error");
  EXPECT_NE(metrics_.RenderPrometheus().find(
                "sealvol_broker_kms_latency_seconds_count 1"),
            std::string::npos);
}

TEST_F(KeyBrokerServiceTest, NoGrantWithoutAnAuditRecord) {
  // /dev/full accepts the open and fails every write with ENOSPC.
  auto full = AuditLog::Open({.path = "/dev/full"});
  if (!full.ok()) GTEST_SKIP() << "/dev/full unusable: " << full.status();
  KeyBrokerService service(keys_, env_->verifier, **full, options_);
  auto result = service.Release(Request(env_->PodMint()), NodeToken());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(metrics_.grants(), 0);
}

// TokenReview against a local server that speaks the API server's
// authentication.k8s.io/v1 protocol.
class TokenReviewTest : public KeyBrokerServiceTest {
 protected:
  void SetUp() override {
    KeyBrokerServiceTest::SetUp();
    bearer_file_ = (dir_ / "sa-token").string();
    std::ofstream(bearer_file_) << "controller-token\n";
    api_.server().Post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        [this](const httplib::Request& req, httplib::Response& res) {
          ++reviews_;
          if (req.get_header_value("Authorization") != "Bearer controller-token") {
            res.status = 401;
            return;
          }
          auto body = nlohmann::json::parse(req.body, nullptr, false);
          const std::string token = body["spec"]["token"];
          nlohmann::json status = {{"authenticated", false}};
          std::lock_guard lock(mu_);
          if (body["apiVersion"] == "authentication.k8s.io/v1" &&
              body["kind"] == "TokenReview" &&
              body["spec"]["audiences"][0] == "sealvol" &&
              live_tokens_.contains(token)) {
            status = {{"authenticated", true},
                      {"audiences", {"sealvol"}},
                      {"user",
                       {{"username", "system:serviceaccount:team-a:trainer"},
                        {"extra",
                         {{"authentication.kubernetes.io/pod-uid",
                           {live_tokens_.at(token)}}}}}}};
          } else {
            status["error"] = "pod not found";
          }
          res.status = 201;
          res.set_content(nlohmann::json({{"apiVersion", "authentication.k8s.io/v1"},
                                          {"kind", "TokenReview"},
                                          {"status", status}})
                              .dump(),
                          "application/json");
        });
    reviewer_ = std::make_unique<TokenReviewer>(
        TokenReviewOptions{.api_server_url = api_.Start(),
                           .ca_file = "",
                           .bearer_token_file = bearer_file_});
    options_.token_reviewer = reviewer_.get();
    Rebuild();
  }
  void TearDown() override {
    service_.reset();  // Closes the reviewer's pooled connection first.
    reviewer_.reset();
    api_.Stop();
    KeyBrokerServiceTest::TearDown();
  }

  // The API server's handler runs on httplib's threads: what it reads is
  // locked (a request over the socket is no edge ThreadSanitizer sees).
  void Live(const std::string& token, const std::string& pod_uid) {
    std::lock_guard lock(mu_);
    live_tokens_[token] = pod_uid;
  }

  HttpTestServer api_;
  std::string bearer_file_;
  std::mutex mu_;
  std::map<std::string, std::string> live_tokens_;  // token -> pod uid; mu_
  std::atomic<int> reviews_{0};
  std::unique_ptr<TokenReviewer> reviewer_;
};

TEST_F(TokenReviewTest, GrantsLiveTokenAndRefusesTokenOfDeletedPod) {
  auto live = Request(env_->PodMint());
  Live(live.pod_token, "uid-web-0");
  EXPECT_TRUE(service_->Release(live, NodeToken()).ok());
  // Still signed and unexpired, but the API server no longer knows it.
  auto deleted = Request(env_->PodMint());
  ExpectRefused(deleted, NodeToken(), "token_revoked");
  EXPECT_EQ(reviews_, 2);
}

TEST_F(TokenReviewTest, RefusesWhenTheApiServerBindsAnotherPod) {
  auto request = Request(env_->PodMint());
  Live(request.pod_token, "uid-someone-else");
  ExpectRefused(request, NodeToken(), "token_revoked");
}

TEST_F(TokenReviewTest, FailsClosedWhenTheApiServerIsDown) {
  auto request = Request(env_->PodMint());
  Live(request.pod_token, "uid-web-0");
  api_.Stop();
  auto result = service_->Release(request, NodeToken());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(RefusalReason(result.status()), "token_review_failed");
  EXPECT_EQ(AuditRecords().back()["reason"], "token_review_failed");
}

// Block volumes: the kubelet sends no pod token with their publish, so the
// broker (with pod_lookup) asks the API server about the pod instead. A local
// server answers GET of pods, persistentvolumeclaims and persistentvolumes
// from what each test puts in it, as kube-apiserver would.
class BlockPodAttestationTest : public KeyBrokerServiceTest {
 protected:
  void SetUp() override {
    KeyBrokerServiceTest::SetUp();
    bearer_file_ = (dir_ / "sa-token").string();
    std::ofstream(bearer_file_) << "controller-token\n";
    // One request per connection: stopping the server mid-test must not
    // wait for a pooled connection's keep-alive timeout.
    api_.server().set_keep_alive_max_count(1);
    api_.server().Get(
        R"(/api/v1/(.*))",
        [this](const httplib::Request& req, httplib::Response& res) {
          std::lock_guard lock(mu_);
          paths_.push_back(req.path);
          if (req.get_header_value("Authorization") != "Bearer controller-token") {
            res.status = 401;
            return;
          }
          if (fail_with_ != 0) {
            res.status = fail_with_;
            return;
          }
          auto it = objects_.find(req.path);
          if (it == objects_.end()) {
            res.status = 404;
            res.set_content(R"({"kind":"Status","reason":"NotFound"})",
                            "application/json");
            return;
          }
          res.status = 200;
          res.set_content(it->second.dump(), "application/json");
        });
    lookup_ = std::make_unique<PodLookup>(PodLookupOptions{
        .api_server = {.url = api_.Start(),
                       .ca_file = "",
                       .bearer_token_file = bearer_file_}});
    options_.pod_lookup = lookup_.get();
    Rebuild();
    // The pod of the happy path: team-a/raw-0 on this node, with a claim
    // bound to kVolume in Block mode.
    Pod(PodObject());
    Put("/api/v1/namespaces/team-a/persistentvolumeclaims/raw",
        {{"spec", {{"volumeName", "pv-raw"}}}, {"status", {{"phase", "Bound"}}}});
    Put("/api/v1/persistentvolumes/pv-raw", PvObject("Block"));
  }
  void TearDown() override {
    // The client first: its pooled connection would keep the server's
    // stop waiting for the keep-alive timeout (5 s).
    service_.reset();
    lookup_.reset();
    api_.Stop();
    KeyBrokerServiceTest::TearDown();
  }

  static nlohmann::json PodObject() {
    return {{"metadata", {{"name", "raw-0"}, {"namespace", "team-a"}, {"uid", "uid-raw-0"}}},
            {"spec",
             {{"serviceAccountName", "trainer"},
              {"nodeName", kNode},
              {"volumes",
               {{{"name", "scratch"}, {"emptyDir", nlohmann::json::object()}},
                {{"name", "data"}, {"persistentVolumeClaim", {{"claimName", "raw"}}}}}}}},
            {"status", {{"phase", "Pending"}}}};
  }
  static nlohmann::json PvObject(const std::string& mode) {
    return {{"spec",
             {{"volumeMode", mode},
              {"csi", {{"driver", "sealvol.csi.dev"}, {"volumeHandle", kVolume}}},
              {"claimRef", {{"namespace", "team-a"}, {"name", "raw"}}}}}};
  }
  void Put(const std::string& path, nlohmann::json object) {
    std::lock_guard lock(mu_);
    objects_[path] = std::move(object);
  }
  void Pod(nlohmann::json pod) {
    const std::string path = absl::StrCat(
        "/api/v1/namespaces/", pod["metadata"]["namespace"].get<std::string>(),
        "/pods/", pod["metadata"]["name"].get<std::string>());
    Put(path, std::move(pod));
  }
  // A request as the node sends it for a block publish: the kubelet's pod
  // info, no token.
  static ReleaseRequest BlockRequest() {
    ReleaseRequest r;
    r.volume_id = kVolume;
    r.node_id = kNode;
    r.pod = {.name = "raw-0", .namespace_name = "team-a", .uid = "uid-raw-0",
             .service_account = "trainer"};
    return r;
  }
  std::vector<std::string> Paths() {
    std::lock_guard lock(mu_);
    return paths_;
  }

  HttpTestServer api_;
  std::string bearer_file_;
  std::mutex mu_;
  std::map<std::string, nlohmann::json> objects_;  // By path; mu_
  std::vector<std::string> paths_;                 // Asked for; mu_
  int fail_with_ = 0;                              // HTTP status; mu_
  std::unique_ptr<PodLookup> lookup_;
};

TEST_F(BlockPodAttestationTest, GrantsTheKeyToAPodTheApiServerConfirmsAndAuditsIt) {
  auto result = service_->Release(BlockRequest(), NodeToken());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->dek.data()[0], 0xA5);
  auto audit = AuditRecords();
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0]["decision"], "grant");
  EXPECT_EQ(audit[0]["attestation"], "api_server");
  EXPECT_EQ(audit[0]["pod"], "raw-0");
  EXPECT_EQ(audit[0]["pod_uid"], "uid-raw-0");
  EXPECT_EQ(audit[0]["service_account"], "trainer");
  EXPECT_EQ(audit[0]["node"], kNode);
  EXPECT_EQ(audit[0]["token_id"], "");
  EXPECT_EQ(Paths(), (std::vector<std::string>{
                         "/api/v1/namespaces/team-a/pods/raw-0",
                         "/api/v1/namespaces/team-a/persistentvolumeclaims/raw",
                         "/api/v1/persistentvolumes/pv-raw"}));
}

TEST_F(BlockPodAttestationTest, RefusesAPodScheduledOnAnotherNode) {
  auto pod = PodObject();
  pod["spec"]["nodeName"] = "node-2";
  Pod(pod);
  ExpectRefused(BlockRequest(), NodeToken(), "node_mismatch");
  pod["spec"].erase("nodeName");  // Not scheduled yet.
  Pod(pod);
  ExpectRefused(BlockRequest(), NodeToken(), "node_mismatch");
}

TEST_F(BlockPodAttestationTest, RefusesWhenTheUidIsNotThePodsUid) {
  // A pod deleted and created again under the same name has a new uid.
  auto pod = PodObject();
  pod["metadata"]["uid"] = "uid-raw-0-successor";
  Pod(pod);
  ExpectRefused(BlockRequest(), NodeToken(), "pod_mismatch");
  Pod(PodObject());
  auto request = BlockRequest();
  request.pod.uid.clear();
  ExpectRefused(request, NodeToken(), "pod_mismatch");
}

TEST_F(BlockPodAttestationTest, RefusesAServiceAccountThePodDoesNotRunAs) {
  // The node names a service account the volume allows; the pod runs as
  // another one.
  auto pod = PodObject();
  pod["spec"]["serviceAccountName"] = "intruder";
  Pod(pod);
  ExpectRefused(BlockRequest(), NodeToken(), "pod_mismatch");
}

TEST_F(BlockPodAttestationTest, RefusesAServiceAccountTheVolumeDoesNotAllow) {
  keys_.AddVolume(
      [] {
        auto v = MakeVolume(kVolume, kTenant);
        v.parameters["allowedServiceAccounts"] = "reader";
        return v;
      }(),
      0xA5);
  ExpectRefused(BlockRequest(), NodeToken(), "service_account_not_allowed");
}

TEST_F(BlockPodAttestationTest, RefusesAPodOfAnotherNamespace) {
  auto pod = PodObject();
  pod["metadata"]["namespace"] = "team-b";
  Pod(pod);
  Put("/api/v1/namespaces/team-b/persistentvolumeclaims/raw",
      {{"spec", {{"volumeName", "pv-raw-b"}}}, {"status", {{"phase", "Bound"}}}});
  // An admin's static PV binding team-b's claim to team-a's volume handle.
  auto pv = PvObject("Block");
  pv["spec"]["claimRef"]["namespace"] = "team-b";
  Put("/api/v1/persistentvolumes/pv-raw-b", pv);
  auto request = BlockRequest();
  request.pod.namespace_name = "team-b";
  ExpectRefused(request, NodeToken(), "namespace_mismatch");
}

TEST_F(BlockPodAttestationTest, RefusesAMirrorPod) {
  // A compromised node's kubelet can create a mirror pod bound to itself.
  auto pod = PodObject();
  pod["metadata"]["annotations"] = {{"kubernetes.io/config.mirror", "abc"}};
  Pod(pod);
  ExpectRefused(BlockRequest(), NodeToken(), "pod_mismatch");
}

TEST_F(BlockPodAttestationTest, RefusesTerminatingAndFinishedPods) {
  auto pod = PodObject();
  pod["metadata"]["deletionTimestamp"] = "2026-12-02T10:00:00Z";
  Pod(pod);
  ExpectRefused(BlockRequest(), NodeToken(), "pod_not_active");
  pod = PodObject();
  pod["status"]["phase"] = "Succeeded";
  Pod(pod);
  ExpectRefused(BlockRequest(), NodeToken(), "pod_not_active");
  pod["status"]["phase"] = "Running";
  Pod(pod);
  EXPECT_TRUE(service_->Release(BlockRequest(), NodeToken()).ok());
}

TEST_F(BlockPodAttestationTest, RefusesAPodThatDoesNotUseTheVolumeAsABlockVolume) {
  // Its claim is bound to a file system volume: a compromised node cannot
  // use the token-less path for those.
  Put("/api/v1/persistentvolumes/pv-raw", PvObject("Filesystem"));
  ExpectRefused(BlockRequest(), NodeToken(), "volume_not_in_pod");
  // No volumeMode: the API's default, Filesystem.
  auto pv = PvObject("Block");
  pv["spec"].erase("volumeMode");
  Put("/api/v1/persistentvolumes/pv-raw", pv);
  ExpectRefused(BlockRequest(), NodeToken(), "volume_not_in_pod");
  // Another volume's PV.
  pv = PvObject("Block");
  pv["spec"]["csi"]["volumeHandle"] = kOtherTenantVolume;
  Put("/api/v1/persistentvolumes/pv-raw", pv);
  ExpectRefused(BlockRequest(), NodeToken(), "volume_not_in_pod");
  // The PV names the volume but is bound to another claim.
  pv = PvObject("Block");
  pv["spec"]["claimRef"]["name"] = "other";
  Put("/api/v1/persistentvolumes/pv-raw", pv);
  ExpectRefused(BlockRequest(), NodeToken(), "volume_not_in_pod");
  // Another driver's PV with the same handle.
  pv = PvObject("Block");
  pv["spec"]["csi"]["driver"] = "other.csi.dev";
  Put("/api/v1/persistentvolumes/pv-raw", pv);
  ExpectRefused(BlockRequest(), NodeToken(), "volume_not_in_pod");
  // The pod has no claim at all.
  Put("/api/v1/persistentvolumes/pv-raw", PvObject("Block"));
  auto pod = PodObject();
  pod["spec"]["volumes"] = nlohmann::json::array();
  Pod(pod);
  ExpectRefused(BlockRequest(), NodeToken(), "volume_not_in_pod");
}

TEST_F(BlockPodAttestationTest, AGenericEphemeralVolumesClaimCounts) {
  auto pod = PodObject();
  pod["spec"]["volumes"] = {{{"name", "scratch"},
                             {"ephemeral", {{"volumeClaimTemplate", nlohmann::json::object()}}}}};
  Pod(pod);
  Put("/api/v1/namespaces/team-a/persistentvolumeclaims/raw-0-scratch",
      {{"spec", {{"volumeName", "pv-eph"}}}, {"status", {{"phase", "Bound"}}}});
  auto pv = PvObject("Block");
  pv["spec"]["claimRef"]["name"] = "raw-0-scratch";
  Put("/api/v1/persistentvolumes/pv-eph", pv);
  EXPECT_TRUE(service_->Release(BlockRequest(), NodeToken()).ok());
}

TEST_F(BlockPodAttestationTest, RefusesAPodTheApiServerDoesNotKnow) {
  auto request = BlockRequest();
  request.pod.name = "ghost";
  ExpectRefused(request, NodeToken(), "pod_not_found");
}

TEST_F(BlockPodAttestationTest, NamesThatAreNotKubernetesNamesNeverReachAnApiPath) {
  auto request = BlockRequest();
  request.pod.name = "../../../persistentvolumes/pv-raw";
  ExpectRefused(request, NodeToken(), "invalid_request");
  request = BlockRequest();
  request.pod.namespace_name = "team-a/pods/raw-0?x=";
  ExpectRefused(request, NodeToken(), "invalid_request");
  EXPECT_TRUE(Paths().empty());
}

TEST_F(BlockPodAttestationTest, FailsClosedWhenTheApiServerCannotBeAsked) {
  {
    std::lock_guard lock(mu_);
    fail_with_ = 500;
  }
  auto result = service_->Release(BlockRequest(), NodeToken());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(RefusalReason(result.status()), "api_server_failed");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  api_.Stop();
  ExpectRefused(BlockRequest(), NodeToken(), "api_server_failed");
}

TEST_F(BlockPodAttestationTest, TheNodeMustStillAuthenticateAndOwnTheVolume) {
  ExpectRefused(BlockRequest(), NodeToken("node-2"), "node_identity_invalid");
  auto request = BlockRequest();
  request.node_id = "node-2";
  ExpectRefused(request, NodeToken("node-2"), "node_not_owner");
  EXPECT_TRUE(Paths().empty()) << "asked the API server for an unauthenticated node";
}

TEST_F(BlockPodAttestationTest, ARequestWithATokenIsDecidedByTheToken) {
  // The lookup is for requests without a token only: a token that fails is
  // not rescued by the API server.
  auto pod = env_->PodMint("raw-0");
  pod.node_name = "node-2";
  auto request = BlockRequest();
  request.pod_token = env_->Mint(pod);
  ExpectRefused(request, NodeToken(), "node_mismatch");
  EXPECT_TRUE(Paths().empty());
  EXPECT_EQ(AuditRecords().back()["attestation"], "token");
}

TEST_F(KeyBrokerServiceTest, WithoutTheOptInARequestWithoutTokenIsRefused) {
  ReleaseRequest request;
  request.volume_id = kVolume;
  request.node_id = kNode;
  request.pod = {.name = "raw-0", .namespace_name = kTenant, .uid = "uid-raw-0",
                 .service_account = "trainer"};
  ExpectRefused(request, NodeToken(), "no_token");
  EXPECT_EQ(AuditRecords().back()["attestation"], "none");
}

}  // namespace
}  // namespace sealvol::broker
