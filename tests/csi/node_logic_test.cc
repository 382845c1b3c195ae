// The Node service's own logic with the data path faked (FakeDataPath): what
// it asks the data path, what it records and what it reports, without root,
// FUSE, loop devices or mounts. The real data path under the same service is
// node_service_test (root).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "csi/capabilities.h"
#include "csi/controller_service.h"
#include "csi/node_service.h"
#include "gtest/gtest.h"
#include "kms/broker/refusal.h"
#include "tests/fakes/fake_data_path.h"
#include "tests/fakes/fixed_key_source.h"
#include "tests/support/temp_dir.h"

namespace sealvol::csi {
namespace {

using testing::FakeDataPath;
using testing::FixedKeySource;
using Mode = csipb::VolumeCapability::AccessMode;

constexpr uint64_t kSize = 64ull << 20;
constexpr char kVolume[] = "sv-0123456789abcdef0123456789abcdef";

csipb::VolumeCapability Capability(bool block) {
  csipb::VolumeCapability capability;
  if (block) {
    capability.mutable_block();
  } else {
    capability.mutable_mount()->set_fs_type("xfs");
  }
  capability.mutable_access_mode()->set_mode(Mode::SINGLE_NODE_WRITER);
  return capability;
}

class NodeLogicTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(Staging());
    StartNode();
  }

  // A fresh service over the same state directory and data path, as after
  // a restart of the node plugin that kept (or lost) its data path.
  void StartNode() {
    node_ = std::make_unique<NodeService>(
        NodeOptions{.node_id = "node-1",
                    .state_dir = dir_.file("state"),
                    .kubelet_dir = dir_.path()},
        &keys_, &data_path_);
    ASSERT_TRUE(node_->Recover().ok());
  }

  std::string Staging() const { return dir_.file("staging"); }
  std::string WorkDir() const {
    return dir_.file("state/volumes/") + kVolume + "/fuse";
  }

  grpc::Status Stage(bool block) {
    csipb::NodeStageVolumeRequest req;
    req.set_volume_id(kVolume);
    req.set_staging_target_path(Staging());
    *req.mutable_volume_capability() = Capability(block);
    (*req.mutable_volume_context())[kContextCapacity] = std::to_string(kSize);
    csipb::NodeStageVolumeResponse res;
    return node_->NodeStageVolume(nullptr, &req, &res);
  }

  grpc::Status Publish(bool block) {
    csipb::NodePublishVolumeRequest req;
    req.set_volume_id(kVolume);
    req.set_staging_target_path(Staging());
    req.set_target_path(dir_.file("pod/target"));
    *req.mutable_volume_capability() = Capability(block);
    auto& ctx = *req.mutable_volume_context();
    ctx[kPodName] = "trainer-0";
    ctx[kPodNamespace] = "team-a";
    ctx[kPodUid] = "uid-1";
    ctx[kPodServiceAccount] = "trainer";
    ctx[kPodTokens] = R"({"sealvol":{"token":"pod-token-1"}})";
    csipb::NodePublishVolumeResponse res;
    return node_->NodePublishVolume(nullptr, &req, &res);
  }

  csipb::VolumeCondition Condition() {
    csipb::NodeGetVolumeStatsRequest req;
    req.set_volume_id(kVolume);
    req.set_volume_path(Staging());
    csipb::NodeGetVolumeStatsResponse res;
    grpc::Status status = node_->NodeGetVolumeStats(nullptr, &req, &res);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return res.volume_condition();
  }

  sealvol::testing::TempDir dir_{"sealvol-node-logic"};
  FixedKeySource keys_;
  FakeDataPath data_path_;
  std::unique_ptr<NodeService> node_;
};

// What the registry says of the image reaches the data path as it is: the
// format id, the state to check, the epoch to move past; the key is handed
// over, and a refusal of the data path comes back unchanged with nothing
// published.
TEST_F(NodeLogicTest, PublishHandsTheRegistryViewAndTheKeyToTheDataPath) {
  ASSERT_TRUE(Stage(/*block=*/true).ok());
  keys_.formats[kVolume] = "00112233445566778899aabbccddeeff";
  keys_.states[kVolume] = {.epoch = 7, .root = std::string(64, 'a'), .open = false};
  data_path_.FailNextAttach(absl::PermissionDeniedError("wrong key"));
  grpc::Status status = Publish(/*block=*/true);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "wrong key"));
  EXPECT_EQ(keys_.calls, 1);
  EXPECT_EQ(keys_.last_token, "pod-token-1");

  auto attach = data_path_.last_attach();
  ASSERT_TRUE(attach.has_value());
  EXPECT_EQ(attach->volume_id, kVolume);
  EXPECT_EQ(attach->image_path, node_->ImagePath(kVolume));
  EXPECT_EQ(attach->work_dir, WorkDir());
  EXPECT_EQ(attach->size_bytes, kSize);
  EXPECT_FALSE(attach->read_only);
  EXPECT_EQ(attach->registry_format_id, "00112233445566778899aabbccddeeff");
  ASSERT_TRUE(attach->expected_state.has_value());
  EXPECT_EQ(attach->expected_state->epoch, 7u);
  EXPECT_EQ(attach->min_epoch, 7u);
  EXPECT_FALSE(attach->rollback_accepted);
  EXPECT_EQ(data_path_.last_key_size(), 32u);
  // Nothing was recorded as published, and the volume is not served.
  EXPECT_FALSE(std::filesystem::exists(dir_.file("pod/target")));
  EXPECT_TRUE(absl::IsNotFound(data_path_.Device(kVolume).status()));
}

// A node plugin that restarts without its data path reports the staged
// volume abnormal, after clearing what the dead data path left: its FUSE
// connection is aborted before anything else, and its leftovers cleared
// after the data path's own detach.
TEST_F(NodeLogicTest, RestartWithoutTheDataPathReportsTheVolumeLost) {
  ASSERT_TRUE(Stage(/*block=*/false).ok());
  EXPECT_TRUE(Condition().abnormal());  // Staged, never published.
  data_path_.LeaveStale(WorkDir());
  StartNode();
  const csipb::VolumeCondition condition = Condition();
  EXPECT_TRUE(condition.abnormal());
  EXPECT_TRUE(absl::StrContains(condition.message(), "node plugin restarted"))
      << condition.message();
  const std::vector<std::string> expected = {
      "abort-stale " + WorkDir(), "detach " + std::string(kVolume),
      "clear-stale " + WorkDir()};
  EXPECT_EQ(data_path_.calls(), expected);
  EXPECT_FALSE(*data_path_.StaleAt(WorkDir()));
}

// A restart that finds the volume still served (the data path outlived the
// service) leaves it alone.
TEST_F(NodeLogicTest, RestartWithTheDataPathKeepsTheVolumeServed) {
  ASSERT_TRUE(Stage(/*block=*/true).ok());
  ASSERT_TRUE(data_path_.Attach({.volume_id = kVolume}, *crypto::SecretBytes::Allocate(32)).ok());
  StartNode();
  EXPECT_EQ(data_path_.calls(), std::vector<std::string>{"attach " + std::string(kVolume)});
  data_path_.SetHealth(kVolume, absl::DataLossError("the backing store failed"));
  const csipb::VolumeCondition condition = Condition();
  EXPECT_TRUE(condition.abnormal());
  EXPECT_EQ(condition.message(), "the backing store failed");
}

// Expansion grows an attached volume through the data path and records the
// new size; a volume not attached only has its record updated, for the
// next attach.
TEST_F(NodeLogicTest, ExpandGrowsThroughTheDataPathOnlyWhenAttached) {
  ASSERT_TRUE(Stage(/*block=*/true).ok());
  auto expand = [this](uint64_t bytes) {
    csipb::NodeExpandVolumeRequest req;
    req.set_volume_id(kVolume);
    req.set_volume_path(Staging());
    req.mutable_capacity_range()->set_required_bytes(static_cast<int64_t>(bytes));
    csipb::NodeExpandVolumeResponse res;
    grpc::Status status = node_->NodeExpandVolume(nullptr, &req, &res);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return res.capacity_bytes();
  };
  EXPECT_EQ(expand(2 * kSize), static_cast<int64_t>(2 * kSize));
  EXPECT_TRUE(data_path_.calls().empty());
  ASSERT_TRUE(data_path_.Attach({.volume_id = kVolume, .size_bytes = 2 * kSize},
                                *crypto::SecretBytes::Allocate(32)).ok());
  EXPECT_EQ(expand(3 * kSize), static_cast<int64_t>(3 * kSize));
  EXPECT_EQ(data_path_.size_bytes(kVolume), 3 * kSize);
  EXPECT_EQ(data_path_.calls().back(),
            "grow " + std::string(kVolume) + " " + std::to_string(3 * kSize));
}

// Unstage detaches the data path (closing the engine wipes the key) and
// forgets the volume; a second unstage is a no-op.
TEST_F(NodeLogicTest, UnstageDetachesAndForgetsTheVolume) {
  ASSERT_TRUE(Stage(/*block=*/true).ok());
  ASSERT_TRUE(data_path_.Attach({.volume_id = kVolume}, *crypto::SecretBytes::Allocate(32)).ok());
  auto unstage = [this] {
    csipb::NodeUnstageVolumeRequest req;
    req.set_volume_id(kVolume);
    req.set_staging_target_path(Staging());
    csipb::NodeUnstageVolumeResponse res;
    return node_->NodeUnstageVolume(nullptr, &req, &res);
  };
  ASSERT_TRUE(unstage().ok());
  EXPECT_EQ(data_path_.calls().back(), "detach " + std::string(kVolume));
  EXPECT_TRUE(absl::IsNotFound(data_path_.Device(kVolume).status()));
  EXPECT_FALSE(std::filesystem::exists(dir_.file("state/volumes/") + kVolume + "/stage.json"));
  const size_t calls = data_path_.calls().size();
  ASSERT_TRUE(unstage().ok());
  EXPECT_EQ(data_path_.calls().size(), calls);
}

// The reaper never removes a volume the data path still serves or whose
// dead data path left its FUSE mount, even when the controller deleted it.
TEST_F(NodeLogicTest, ReapKeepsWhatTheDataPathStillHolds) {
  const std::string dir = dir_.file("state/volumes/") + kVolume;
  std::filesystem::create_directories(dir);
  { std::ofstream(dir + "/image") << "ciphertext"; }
  keys_.deleted.insert(kVolume);
  ASSERT_TRUE(data_path_.Attach({.volume_id = kVolume}, *crypto::SecretBytes::Allocate(32)).ok());
  EXPECT_EQ(*node_->ReapDeletedVolumes(), 0);
  ASSERT_TRUE(data_path_.Detach(kVolume).ok());
  data_path_.LeaveStale(WorkDir());
  EXPECT_EQ(*node_->ReapDeletedVolumes(), 0);
  EXPECT_TRUE(std::filesystem::exists(dir + "/image"));
  ASSERT_TRUE(data_path_.ClearStale(WorkDir()).ok());
  EXPECT_EQ(*node_->ReapDeletedVolumes(), 1);
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(PodAttestationTest, ReadsContextThenSecrets) {
  google::protobuf::Map<std::string, std::string> context, secrets;
  EXPECT_TRUE(absl::IsPermissionDenied(PodAttestationFrom(context, secrets).status()));
  secrets[kPodName] = "p";
  secrets[kPodNamespace] = "team-a";
  EXPECT_TRUE(absl::IsPermissionDenied(PodAttestationFrom(context, secrets).status()));
  secrets[kPodTokens] = R"({"other":{"token":"x"}})";
  EXPECT_TRUE(absl::IsPermissionDenied(PodAttestationFrom(context, secrets).status()));
  secrets[kPodTokens] = R"({"sealvol":{"token":"t-secret"}})";
  context[kPodName] = "from-context";
  auto attestation = PodAttestationFrom(context, secrets);
  ASSERT_TRUE(attestation.ok()) << attestation.status();
  EXPECT_EQ(attestation->pod.name, "from-context");
  EXPECT_EQ(attestation->pod.namespace_name, "team-a");
  EXPECT_EQ(attestation->token, "t-secret");
}

// The kubelet sends no token with a block volume's publish: the node then
// forwards the pod's identity alone (the broker asks the API server), but
// only for block volumes and only with the uid and service account named.
TEST(PodAttestationTest, OnlyABlockPublishMayComeWithoutAToken) {
  google::protobuf::Map<std::string, std::string> context, secrets;
  context[kPodName] = "raw-0";
  context[kPodNamespace] = "team-a";
  context[kPodUid] = "uid-raw-0";
  context[kPodServiceAccount] = "trainer";
  auto file_system = PodAttestationFrom(context, secrets, TokenRule::kRequired);
  EXPECT_TRUE(absl::IsPermissionDenied(file_system.status()));
  EXPECT_TRUE(absl::StartsWith(file_system.status().message(), "no_token"))
      << file_system.status();
  auto block = PodAttestationFrom(context, secrets, TokenRule::kAbsentForBlock);
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_EQ(block->token, "");
  EXPECT_EQ(block->pod.uid, "uid-raw-0");
  EXPECT_EQ(block->pod.service_account, "trainer");
  // Without the uid or the service account the broker could not compare.
  context.erase(kPodUid);
  EXPECT_TRUE(absl::StartsWith(
      PodAttestationFrom(context, secrets, TokenRule::kAbsentForBlock)
          .status()
          .message(),
      "no_pod_identity"));
  context[kPodUid] = "uid-raw-0";
  // A tokens key without a sealvol token is refused for block volumes too.
  context[kPodTokens] = R"({"other":{"token":"x"}})";
  EXPECT_TRUE(absl::IsPermissionDenied(
      PodAttestationFrom(context, secrets, TokenRule::kAbsentForBlock).status()));
  // A token that is there is used.
  context[kPodTokens] = R"({"sealvol":{"token":"t"}})";
  auto with_token = PodAttestationFrom(context, secrets, TokenRule::kAbsentForBlock);
  ASSERT_TRUE(with_token.ok()) << with_token.status();
  EXPECT_EQ(with_token->token, "t");
}

}  // namespace
}  // namespace sealvol::csi
