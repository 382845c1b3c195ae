// End to end with the real embedded KMS: a volume key created by the local
// provider is released over the broker's unix socket to an attested pod,
// matches what the KMS unwraps, and is gone after crypto-shredding.
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kms/broker/key_broker_client.h"
#include "kms/broker/key_broker_service.h"
#include "kms/broker/refusal.h"
#include "kms/key_provider.h"
#include "tests/kms/broker/broker_test_env.h"
#include "tests/support/temp_dir.h"

namespace sealvol::broker {
namespace {

namespace fs = std::filesystem;
using testing::IssuerEnv;
using testing::kNode;
using testing::kTenant;

constexpr char kVolume[] = "sv-00112233445566778899aabbccddeeff";

TEST(LocalProviderEndToEndTest, ReleasesTheKmsKeyOnlyToTheAttestedPod) {
  const sealvol::testing::TempDir work("sealvol-broker-e2e");
  const fs::path dir = work.path();
  auto provider = kms::OpenKeyProvider("local:" + (dir / "kms").string());
  ASSERT_TRUE(provider.ok()) << provider.status();
  auto record = (*provider)->CreateVolumeKey(
      {.volume_id = kVolume,
       .name = "pvc-1",
       .tenant = kTenant,
       .capacity_bytes = 1 << 20,
       .node = kNode,
       .parameters = {{"allowedServiceAccounts", "trainer"}}});
  ASSERT_TRUE(record.ok()) << record.status();

  IssuerEnv env(JwsAlgorithm::kRs256);
  auto audit = AuditLog::Open({.path = (dir / "audit.log").string()});
  ASSERT_TRUE(audit.ok());
  KeyBrokerService service(**provider, env.verifier, **audit, {});
  auto server = StartBrokerServer(
      {.listen = "unix://" + (dir / "broker.sock").string()}, service);
  ASSERT_TRUE(server.ok()) << server.status();
  sealvol::testing::WriteFile((dir / "node-token").string(),
                     env.Mint(env.NodeMint()));
  auto client = KeyBrokerClient::Create(
      {.target = "unix://" + (dir / "broker.sock").string(),
       .node_token_file = (dir / "node-token").string()});
  ASSERT_TRUE(client.ok());

  auto mint = env.PodMint("trainer-0");
  const ReleaseRequest params{
      .volume_id = kVolume,
      .node_id = kNode,
      .pod_token = env.Mint(mint),
      .pod = {.name = "trainer-0", .namespace_name = kTenant,
              .uid = mint.pod_uid, .service_account = "trainer"}};
  auto released = (*client)->ReleaseKey(params);
  ASSERT_TRUE(released.ok()) << released.status();
  auto direct = (*provider)->UnwrapVolumeKey(kVolume);
  ASSERT_TRUE(direct.ok());
  EXPECT_TRUE(released->Equals(*direct));

  // Another service account of the same tenant is not on the volume's list.
  auto other = env.PodMint("shell-0");
  other.service_account = "default";
  auto refused = (*client)->ReleaseKey(
      {.volume_id = kVolume, .node_id = kNode, .pod_token = env.Mint(other),
       .pod = {.name = "shell-0", .namespace_name = kTenant,
               .uid = other.pod_uid, .service_account = "default"}});
  EXPECT_EQ(RefusalReason(refused.status()), "service_account_not_allowed");

  // Crypto-shredded: the same valid request now finds nothing.
  ASSERT_TRUE((*provider)->DestroyVolumeKey(kVolume).ok());
  EXPECT_EQ(RefusalReason((*client)->ReleaseKey(params).status()),
            "volume_not_found");

  server->server->Shutdown();
  auto verified = VerifyAuditFiles({(dir / "audit.log").string()}, {});
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->records, 3);
}

}  // namespace
}  // namespace sealvol::broker
