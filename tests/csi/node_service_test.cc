// The Node service through a real gRPC server on a unix socket, with the real
// data path (engine, FUSE export, loop device), real mkfs and mounts, and a
// key source standing in for the KeyBroker. Needs root and /dev/fuse.
#include "csi/node_service.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "base/volume_id.h"
#include "csi/capabilities.h"
#include "csi/committed_state.h"
#include "csi/controller_service.h"
#include "csi/copy_job_runner.h"
#include "csi/fuse_data_path.h"
#include "csi/filesystem.h"
#include "csi/mounter.h"
#include "gtest/gtest.h"
#include "io/sealed_volume.h"
#include "kms/broker/refusal.h"
#include "tests/csi/grpc_test_server.h"
#include "tests/fakes/durable_step_log.h"
#include "tests/fakes/fixed_key_source.h"
#include "tests/support/temp_dir.h"

namespace sealvol::csi {
namespace {

using testing::FixedKeySource;

using Mode = csipb::VolumeCapability::AccessMode;
constexpr uint64_t kSize = 64ull << 20;

csipb::VolumeCapability Cap(bool block, const std::string& fs = "ext4") {
  csipb::VolumeCapability cap;
  if (block) {
    cap.mutable_block();
  } else {
    cap.mutable_mount()->set_fs_type(fs);
  }
  cap.mutable_access_mode()->set_mode(Mode::SINGLE_NODE_WRITER);
  return cap;
}

class NodeServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for mounts and loop devices";
    if (access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    StartNode();
  }

  void StartNode() {
    data_path_ = std::make_unique<FuseDataPath>();
    node_ = std::make_unique<NodeService>(
        NodeOptions{.node_id = "node-1",
                    .state_dir = dir_.file("state"),
                    .kubelet_dir = dir_.path()}, &keys_,
        data_path_.get());
    ASSERT_TRUE(node_->Recover().ok());
    server_ = std::make_unique<GrpcTestServer>(
        std::initializer_list<grpc::Service*>{node_.get()});
    stub_ = csipb::Node::NewStub(server_->channel());
  }

  void StopNode() {
    stub_.reset();
    server_.reset();
    node_.reset();
    data_path_.reset();
  }

  void TearDown() override {
    StopNode();
    // Whatever a failed test left mounted under the temporary directory.
    for (int i = 0; i < 3; ++i) {
      std::ifstream mounts("/proc/self/mounts");
      std::string dev, point, rest;
      while (mounts >> dev >> point && std::getline(mounts, rest)) {
        if (point.rfind(dir_.path(), 0) == 0) DetachMountIfMounted(point).IgnoreError();
      }
    }
  }

  grpc::Status Stage(const std::string& id, bool block = false,
                     uint64_t size = kSize, const std::string& fs = "ext4") {
    csipb::NodeStageVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(dir_.file("staging"));
    *req.mutable_volume_capability() = Cap(block, fs);
    (*req.mutable_volume_context())[kContextCapacity] = std::to_string(size);
    std::filesystem::create_directories(dir_.file("staging"));
    grpc::ClientContext ctx;
    csipb::NodeStageVolumeResponse res;
    return stub_->NodeStageVolume(&ctx, req, &res);
  }

  csipb::NodePublishVolumeRequest PublishRequest(const std::string& id,
                                                 const std::string& target,
                                                 bool block = false,
                                                 const std::string& fs = "ext4") {
    csipb::NodePublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(dir_.file("staging"));
    req.set_target_path(target);
    *req.mutable_volume_capability() = Cap(block, fs);
    auto& ctx = *req.mutable_volume_context();
    ctx[kPodName] = "trainer-0";
    ctx[kPodNamespace] = "team-a";
    ctx[kPodUid] = "uid-1";
    ctx[kPodServiceAccount] = "trainer";
    ctx[kPodTokens] = R"({"sealvol":{"token":"pod-token-1","expirationTimestamp":"x"}})";
    return req;
  }

  grpc::Status Publish(const csipb::NodePublishVolumeRequest& req) {
    grpc::ClientContext ctx;
    csipb::NodePublishVolumeResponse res;
    return stub_->NodePublishVolume(&ctx, req, &res);
  }

  grpc::Status Unpublish(const std::string& id, const std::string& target) {
    csipb::NodeUnpublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_target_path(target);
    grpc::ClientContext ctx;
    csipb::NodeUnpublishVolumeResponse res;
    return stub_->NodeUnpublishVolume(&ctx, req, &res);
  }

  grpc::Status Unstage(const std::string& id) {
    csipb::NodeUnstageVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(dir_.file("staging"));
    grpc::ClientContext ctx;
    csipb::NodeUnstageVolumeResponse res;
    return stub_->NodeUnstageVolume(&ctx, req, &res);
  }

  grpc::Status Stats(const std::string& id, const std::string& path,
                     csipb::NodeGetVolumeStatsResponse* res) {
    csipb::NodeGetVolumeStatsRequest req;
    req.set_volume_id(id);
    req.set_volume_path(path);
    grpc::ClientContext ctx;
    return stub_->NodeGetVolumeStats(&ctx, req, res);
  }

  // Publishes a volume, expands it to twice its size through the Node
  // service, and checks the mounted filesystem grew while mounted.
  void ExpandOnline(const std::string& fs, uint64_t size) {
    const std::string id = NewVolumeId();
    const std::string target = dir_.file("pod/mount");
    ASSERT_TRUE(Stage(id, false, size, fs).ok());
    grpc::Status published = Publish(PublishRequest(id, target, false, fs));
    ASSERT_TRUE(published.ok()) << published.error_message();
    { std::ofstream(target + "/marker") << "kept-through-growth"; }
    struct statvfs before {};
    ASSERT_EQ(statvfs(target.c_str(), &before), 0);

    csipb::NodeExpandVolumeRequest req;
    req.set_volume_id(id);
    req.set_volume_path(target);
    req.mutable_capacity_range()->set_required_bytes(2 * size);
    grpc::ClientContext ctx;
    csipb::NodeExpandVolumeResponse res;
    grpc::Status expanded = stub_->NodeExpandVolume(&ctx, req, &res);
    ASSERT_TRUE(expanded.ok()) << expanded.error_message();
    EXPECT_EQ(res.capacity_bytes(), static_cast<int64_t>(2 * size));
    EXPECT_EQ(*BlockDeviceSize(*data_path_->Device(id)), 2 * size);

    struct statvfs after {};
    ASSERT_EQ(statvfs(target.c_str(), &after), 0);
    EXPECT_GT(uint64_t{after.f_blocks} * after.f_frsize,
              uint64_t{before.f_blocks} * before.f_frsize + size / 2);
    std::string read_back;
    { std::ifstream(target + "/marker") >> read_back; }
    EXPECT_EQ(read_back, "kept-through-growth");
    ASSERT_TRUE(Unpublish(id, target).ok());
    ASSERT_TRUE(Unstage(id).ok());
  }

  // Mounts, loop devices and FUSE connections of this test's directory.
  int MountsUnderDir() {
    std::ifstream mounts("/proc/self/mounts");
    std::string dev, point, rest;
    int n = 0;
    while (mounts >> dev >> point && std::getline(mounts, rest)) {
      if (point.rfind(dir_.path(), 0) == 0) ++n;
    }
    return n;
  }

  // Expects the publish to be refused for a missing or replaced image: the
  // message names the volume, the image and the way out; a refused claim
  // reached the broker; nothing is attached or mounted and no temporary
  // image is left.
  void ExpectImageRefused(const std::string& id, const std::string& target) {
    const int refused = keys_.refused_claims;
    grpc::Status status = Publish(PublishRequest(id, target));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << status.error_message();
    EXPECT_NE(status.error_message().find(id), std::string::npos);
    EXPECT_NE(status.error_message().find(node_->ImagePath(id)), std::string::npos)
        << status.error_message();
    EXPECT_NE(status.error_message().find("docs/operations.md"), std::string::npos);
    EXPECT_EQ(keys_.refused_claims, refused + 1) << "the refusal was not audited";
    EXPECT_TRUE(absl::IsNotFound(data_path_->Device(id).status()));
    EXPECT_EQ(MountsUnderDir(), 0);
    EXPECT_FALSE(std::filesystem::exists(node_->ImagePath(id) + kFormattingSuffix));
  }

  // Attaches a copy made by the copy-job runner, read-only, under its own
  // key (FixedKeySource's copy key) at the state the registry holds.
  absl::StatusOr<std::string> AttachSnapshot(const std::string& snapshot) {
    ASSIGN_OR_RETURN(crypto::SecretBytes key, crypto::SecretBytes::Allocate(32));
    for (size_t i = 0; i < 32; ++i) key.data()[i] = static_cast<uint8_t>(i * 13 + 5);
    AttachOptions attach;
    attach.volume_id = snapshot;
    attach.image_path = node_->ImagePath(snapshot);
    attach.work_dir = node_->stages()->WorkDir(snapshot);
    attach.size_bytes = kSize;
    attach.read_only = true;
    attach.registry_format_id = keys_.Format(snapshot);
    {
      std::lock_guard lock(keys_.mu);
      ASSIGN_OR_RETURN(attach.expected_state,
                       ToVolumeState(keys_.states.at(snapshot)));
    }
    return data_path_->Attach(attach, key);
  }

  // Removed after TearDown has detached what a failed test left mounted.
  sealvol::testing::TempDir dir_{"sealvol-node-test"};
  FixedKeySource keys_;
  std::unique_ptr<FuseDataPath> data_path_;
  std::unique_ptr<NodeService> node_;
  std::unique_ptr<GrpcTestServer> server_;
  std::unique_ptr<csipb::Node::Stub> stub_;
};

TEST_F(NodeServiceTest, PublishBeforeStageIsFailedPrecondition) {
  const std::string id = NewVolumeId();
  EXPECT_EQ(Publish(PublishRequest(id, dir_.file("target"))).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(keys_.calls, 0);
}

TEST_F(NodeServiceTest, RefusedKeyLeavesNothingAttached) {
  const std::string id = NewVolumeId();
  ASSERT_TRUE(Stage(id).ok());
  keys_.refusal = absl::PermissionDeniedError("namespace_mismatch: team-b is not team-a");
  grpc::Status status = Publish(PublishRequest(id, dir_.file("target")));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(status.error_message().find("namespace_mismatch"), std::string::npos);
  EXPECT_TRUE(absl::IsNotFound(data_path_->Device(id).status()));
  EXPECT_FALSE(*IsMountPoint(dir_.file("staging")));
  EXPECT_FALSE(std::filesystem::exists(node_->ImagePath(id)));
  EXPECT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, MountLifecycleAttestsEveryPublishAndKeepsData) {
  const std::string id = NewVolumeId();
  const std::string t1 = dir_.file("pod1/mount"), t2 = dir_.file("pod2/mount");
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Stage(id).ok());  // Idempotent.
  grpc::Status published = Publish(PublishRequest(id, t1));
  ASSERT_TRUE(published.ok()) << published.error_message();
  EXPECT_EQ(keys_.calls, 1);
  EXPECT_EQ(keys_.last_token, "pod-token-1");
  EXPECT_EQ(keys_.last_pod.namespace_name, "team-a");
  EXPECT_EQ(keys_.last_node, "node-1");
  ASSERT_TRUE(Publish(PublishRequest(id, t1)).ok());  // Idempotent, attests.
  EXPECT_EQ(keys_.calls, 2);
  ASSERT_TRUE(Publish(PublishRequest(id, t2)).ok());  // Second pod attests.
  EXPECT_EQ(keys_.calls, 3);

  { std::ofstream(t1 + "/marker") << "sealvol-node-test"; }
  std::string read_back;
  { std::ifstream(t2 + "/marker") >> read_back; }
  EXPECT_EQ(read_back, "sealvol-node-test");

  csipb::NodeGetVolumeStatsResponse stats;
  ASSERT_TRUE(Stats(id, t1, &stats).ok());
  ASSERT_EQ(stats.usage_size(), 2);
  EXPECT_GT(stats.usage(0).total(), 0);
  EXPECT_GT(stats.usage(1).total(), 0);
  EXPECT_FALSE(stats.volume_condition().abnormal());
  EXPECT_EQ(Stats(id, dir_.file("elsewhere"), &stats).error_code(),
            grpc::StatusCode::NOT_FOUND);

  EXPECT_EQ(Unstage(id).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(Unpublish(id, t1).ok());
  ASSERT_TRUE(Unpublish(id, t2).ok());
  ASSERT_TRUE(Unpublish(id, t2).ok());  // Idempotent.
  EXPECT_FALSE(std::filesystem::exists(t1));
  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Unstage(id).ok());
  EXPECT_TRUE(absl::IsNotFound(data_path_->Device(id).status()));
  EXPECT_FALSE(*IsMountPoint(dir_.file("staging")));

  // The image holds no plaintext.
  std::ifstream image(node_->ImagePath(id), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(image)), {});
  EXPECT_EQ(bytes.find("sealvol-node-test"), std::string::npos);

  // Staged and published again: the data is still there.
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, t1)).ok());
  read_back.clear();
  { std::ifstream(t1 + "/marker") >> read_back; }
  EXPECT_EQ(read_back, "sealvol-node-test");
  ASSERT_TRUE(Unpublish(id, t1).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

// stage.json is written durably (fsync of the file and its directory): at
// every crash point of a stage or publish it is the old or the new record,
// never an empty one, and the new one once the call returned.
TEST_F(NodeServiceTest, StageRecordIsOldOrNewAtEveryCrashPoint) {
  const std::string id = NewVolumeId();
  const std::string record =
      std::filesystem::path(node_->ImagePath(id)).parent_path().string() +
      "/stage.json";
  const std::string target = dir_.file("pod/mount");
  for (const bool publish : {false, true}) {
    sealvol::testing::DurableStepLog log;
    if (!publish) {
      ASSERT_TRUE(Stage(id).ok());
    } else {
      grpc::Status published = Publish(PublishRequest(id, target));
      ASSERT_TRUE(published.ok()) << published.error_message();
    }
    using Outcome = sealvol::testing::DurableStepLog::Outcome;
    for (size_t n = 0; n <= log.size(); ++n) {
      const auto outcomes = log.AfterCrash(record, n);
      EXPECT_FALSE(outcomes.count(Outcome::kEmpty) || outcomes.count(Outcome::kGone))
          << (publish ? "publish" : "stage") << ": a crash after " << n
          << " steps may leave stage.json "
          << sealvol::testing::OutcomesString(outcomes);
    }
    EXPECT_EQ(log.AfterCrash(record, log.size()), std::set<Outcome>{Outcome::kNew})
        << (publish ? "publish" : "stage")
        << ": after the call returned, a crash may leave stage.json "
        << sealvol::testing::OutcomesString(log.AfterCrash(record, log.size()));
  }
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, ReapNeverRemovesAStagedVolume) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  // Deleted at the controller while still published and staged here.
  keys_.deleted.insert(id);
  auto removed = node_->ReapDeletedVolumes();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0);
  EXPECT_TRUE(std::filesystem::exists(node_->ImagePath(id)));
  ASSERT_TRUE(Unpublish(id, target).ok());
  removed = node_->ReapDeletedVolumes();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0) << "removed a volume that is still staged";
  EXPECT_TRUE(std::filesystem::exists(node_->ImagePath(id)));
  // Unstaged: now it goes.
  ASSERT_TRUE(Unstage(id).ok());
  removed = node_->ReapDeletedVolumes();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1);
  EXPECT_FALSE(std::filesystem::exists(node_->ImagePath(id)));
  EXPECT_FALSE(std::filesystem::exists(dir_.file("state/volumes/") + id));
}

TEST_F(NodeServiceTest, ReapRemovesOnlyTheDeletedVolumesImage) {
  const std::string gone = NewVolumeId(), kept = NewVolumeId();
  for (const std::string& id : {gone, kept}) {
    ASSERT_TRUE(Stage(id).ok());
    ASSERT_TRUE(Publish(PublishRequest(id, dir_.file("pod/") + id)).ok());
    ASSERT_TRUE(Unpublish(id, dir_.file("pod/") + id).ok());
    ASSERT_TRUE(Unstage(id).ok());
    ASSERT_TRUE(std::filesystem::exists(node_->ImagePath(id)));
  }
  keys_.deleted.insert(gone);
  // Broker unreachable: everything stays.
  keys_.status_error = absl::UnavailableError("broker down");
  EXPECT_TRUE(absl::IsUnavailable(node_->ReapDeletedVolumes().status()));
  EXPECT_TRUE(std::filesystem::exists(node_->ImagePath(gone)));
  keys_.status_error = absl::OkStatus();
  auto removed = node_->ReapDeletedVolumes();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1);
  EXPECT_FALSE(std::filesystem::exists(dir_.file("state/volumes/") + gone));
  EXPECT_TRUE(std::filesystem::exists(node_->ImagePath(kept)));
}

TEST_F(NodeServiceTest, BlockPublishBindsTheDeviceOntoAFile) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/dev");
  ASSERT_TRUE(Stage(id, /*block=*/true).ok());
  grpc::Status published = Publish(PublishRequest(id, target, /*block=*/true));
  ASSERT_TRUE(published.ok()) << published.error_message();
  struct stat st {};
  ASSERT_EQ(stat(target.c_str(), &st), 0);
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  auto size = BlockDeviceSize(target);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, kSize);
  csipb::NodeGetVolumeStatsResponse stats;
  ASSERT_TRUE(Stats(id, target, &stats).ok());
  ASSERT_EQ(stats.usage_size(), 1);
  EXPECT_EQ(stats.usage(0).total(), static_cast<int64_t>(kSize));
  ASSERT_TRUE(Unpublish(id, target).ok());
  EXPECT_FALSE(std::filesystem::exists(target));
  ASSERT_TRUE(Unstage(id).ok());
}


// The node serves with the transport and INIT settings of `sealvol open`
// (io::ServingOptions): FUSE over io_uring turned on by the attach itself,
// and the benchmark knobs applied. The knob shows on the connection's
// fusectl entry, so the test needs no global state of its own: it does not
// switch the kernel's enable_uring off (tests running beside it use it).
TEST_F(NodeServiceTest, PublishServesWithTheSettingsOfSealvolOpen) {
  constexpr char kConnections[] = "/sys/fs/fuse/connections";
  bool fusectl = false;
  {
    std::ifstream mounts("/proc/self/mounts");
    std::string line;
    while (std::getline(mounts, line)) {
      fusectl |= line.find(" /sys/fs/fuse/connections fusectl ") != std::string::npos;
    }
  }
  if (!fusectl) {
    // fusectl lists connections; mounted here when missing and left
    // mounted, as the process tests do (others may count through it).
    ASSERT_EQ(mount("none", kConnections, "fusectl", 0, nullptr), 0)
        << "mount fusectl: " << std::strerror(errno);
  }
  setenv("SEALVOL_FUSE_MAX_BACKGROUND", "17", 1);
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  grpc::Status published = Publish(PublishRequest(id, target));
  unsetenv("SEALVOL_FUSE_MAX_BACKGROUND");
  ASSERT_TRUE(published.ok()) << published.error_message();

  struct stat st {};
  const std::string fuse_dir = dir_.file("state/volumes/") + id + "/fuse";
  ASSERT_EQ(stat(fuse_dir.c_str(), &st), 0) << fuse_dir;
  const std::string knob = std::string(kConnections) + "/" +
                           std::to_string(minor(st.st_dev)) + "/max_background";
  std::string max_background;
  ASSERT_TRUE(static_cast<bool>(std::ifstream(knob) >> max_background)) << knob;
  EXPECT_EQ(max_background, "17") << "the node did not apply ServingOptions";

  auto transport = data_path_->Transport(id);
  ASSERT_TRUE(transport.ok()) << transport.status();
  if (std::filesystem::exists("/sys/module/fuse/parameters/enable_uring")) {
    EXPECT_EQ(*transport, io::FuseTransport::kUring)
        << "the node serves over " << io::FuseTransportName(*transport);
  }
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  EXPECT_TRUE(absl::IsNotFound(data_path_->Transport(id).status()));
}

TEST_F(NodeServiceTest, ExpandGrowsEngineLoopAndXfsOnline) {
  ExpandOnline("xfs", 320ull << 20);  // mkfs.xfs wants at least 300 MB.
}

TEST_F(NodeServiceTest, ExpandGrowsEngineLoopAndExt4Online) {
  constexpr int kCapSysResource = 24;
  if (!HasCapability(kCapSysResource)) {
    GTEST_SKIP() << "online ext4 resize needs CAP_SYS_RESOURCE; this "
                    "sandbox's capability set lacks it";
  }
  ExpandOnline("ext4", kSize);
}

TEST_F(NodeServiceTest, RestartReportsLostVolumeAndRepublishReattaches) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  { std::ofstream(target + "/marker") << "before-restart"; }
  sync();

  StopNode();  // The data path goes away with the process.
  StartNode();

  csipb::NodeGetVolumeStatsResponse stats;
  ASSERT_TRUE(Stats(id, dir_.file("staging"), &stats).ok());
  EXPECT_TRUE(stats.volume_condition().abnormal());
  EXPECT_FALSE(*IsMountPoint(target));

  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  std::string read_back;
  { std::ifstream(target + "/marker") >> read_back; }
  EXPECT_EQ(read_back, "before-restart");
  ASSERT_TRUE(Stats(id, target, &stats).ok());
  EXPECT_FALSE(stats.volume_condition().abnormal());
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, FirstPublishClaimsTheFormatOfTheNewImage) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  const std::string claimed = keys_.Format(id);
  ASSERT_EQ(claimed.size(), 32u) << "the first format was not claimed";
  auto header = io::ReadHeader(node_->ImagePath(id));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(io::FormatIdString(header->format_id), claimed);
  EXPECT_FALSE(std::filesystem::exists(node_->ImagePath(id) + kFormattingSuffix));
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  // Republished: the same image, the same claim, nothing refused.
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  EXPECT_EQ(keys_.Format(id), claimed);
  EXPECT_EQ(keys_.refused_claims, 0);
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

// Issue 13: the registry's state of the image is committed at every open
// (before a write) and after every unstage, and checked at the next open.
TEST_F(NodeServiceTest, StateIsCommittedAtFormatOpenAndUnstage) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  kms::CommittedState opened;
  {
    std::lock_guard lock(keys_.mu);
    ASSERT_TRUE(keys_.states.count(id)) << "no state committed at the first open";
    opened = keys_.states[id];
  }
  EXPECT_TRUE(opened.open) << "the session's start was not committed";
  EXPECT_GE(opened.epoch, 1u);
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  std::lock_guard lock(keys_.mu);
  const kms::CommittedState closed = keys_.states[id];
  EXPECT_FALSE(closed.open) << "the close was not committed";
  EXPECT_EQ(closed.epoch, opened.epoch);
}

TEST_F(NodeServiceTest, RolledBackImageIsRefusedReportedAndNothingAttached) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  const std::string image = node_->ImagePath(id);
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  { std::ofstream(target + "/v") << "first"; }
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  std::filesystem::copy_file(image, dir_.file("old-image"));
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  { std::ofstream(target + "/v", std::ios::trunc) << "second"; }
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  std::filesystem::copy_file(dir_.file("old-image"), image,
                             std::filesystem::copy_options::overwrite_existing);

  ASSERT_TRUE(Stage(id).ok());
  grpc::Status status = Publish(PublishRequest(id, target));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << status.error_message();
  EXPECT_NE(status.error_message().find(id), std::string::npos);
  EXPECT_NE(status.error_message().find("rolled back"), std::string::npos)
      << status.error_message();
  {
    std::lock_guard lock(keys_.mu);
    ASSERT_EQ(keys_.rollback_reports.size(), 1u) << "the refusal was not reported";
    EXPECT_NE(keys_.rollback_reports[0].find(id), std::string::npos);
  }
  EXPECT_TRUE(absl::IsNotFound(data_path_->Device(id).status()));
  EXPECT_EQ(MountsUnderDir(), 0);
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, UnstageSucceedsWhenTheCloseCannotBeCommitted) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  ASSERT_TRUE(Unpublish(id, target).ok());
  {
    std::lock_guard lock(keys_.mu);
    keys_.commit_error = absl::UnavailableError("broker down");
  }
  const int commits = keys_.commits;
  grpc::Status unstaged = Unstage(id);
  EXPECT_TRUE(unstaged.ok()) << unstaged.error_message();
  EXPECT_EQ(keys_.commits, commits);
  EXPECT_EQ(MountsUnderDir(), 0);
  {
    std::lock_guard lock(keys_.mu);
    keys_.commit_error = absl::OkStatus();
  }
  // The registry still says the session is open; the next open accepts.
  ASSERT_TRUE(Stage(id).ok());
  grpc::Status again = Publish(PublishRequest(id, target));
  EXPECT_TRUE(again.ok()) << again.error_message();
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, PublishFailsWhenTheSessionStartCannotBeCommitted) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  {
    std::lock_guard lock(keys_.mu);
    keys_.commit_error = absl::UnavailableError("broker down");
  }
  ASSERT_TRUE(Stage(id).ok());
  grpc::Status status = Publish(PublishRequest(id, target));
  EXPECT_FALSE(status.ok()) << "served without committing the session's start";
  EXPECT_TRUE(absl::IsNotFound(data_path_->Device(id).status()));
  EXPECT_EQ(MountsUnderDir(), 0);
  {
    std::lock_guard lock(keys_.mu);
    keys_.commit_error = absl::OkStatus();
  }
  grpc::Status again = Publish(PublishRequest(id, target));
  EXPECT_TRUE(again.ok()) << again.error_message();
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, PublishRefusesADeletedEmptyOrForeignImage) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  const std::string image = node_->ImagePath(id);
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  const std::string claimed = keys_.Format(id);
  ASSERT_FALSE(claimed.empty());
  std::filesystem::copy_file(image, dir_.file("saved-image"));

  // Deleted.
  std::filesystem::remove(image);
  ASSERT_TRUE(Stage(id).ok());
  ExpectImageRefused(id, target);
  EXPECT_FALSE(std::filesystem::exists(image)) << "a new image was formatted";
  // Emptied.
  { std::ofstream(image, std::ios::trunc); }
  ExpectImageRefused(id, target);
  // Not a sealvol image.
  { std::ofstream(image, std::ios::trunc) << std::string(1 << 16, 'x'); }
  ExpectImageRefused(id, target);
  EXPECT_EQ(keys_.Format(id), claimed) << "the registry's claim changed";

  // Restored from the copy: published again with its data.
  std::filesystem::copy_file(dir_.file("saved-image"), image,
                             std::filesystem::copy_options::overwrite_existing);
  grpc::Status restored = Publish(PublishRequest(id, target));
  ASSERT_TRUE(restored.ok()) << restored.error_message();
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, PublishRefusesAnImageOfAnotherFormat) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  // Someone formats the same volume id under the same key elsewhere and
  // puts that image in place.
  auto dek = keys_.ReleaseKey(id, "node-1", "t", {});
  ASSERT_TRUE(dek.ok());
  io::FormatOptions format;
  format.path = dir_.file("other-image");
  format.size_bytes = kSize;
  format.volume_id = *io::ParseVolumeId(id);
  auto other = io::SealedVolume::Format(format, dek->dek);
  ASSERT_TRUE(other.ok()) << other.status();
  const std::string other_id = io::FormatIdString((*other)->format_id());
  ASSERT_TRUE((*other)->Close().ok());
  other->reset();
  std::filesystem::rename(dir_.file("other-image"), node_->ImagePath(id));
  ASSERT_TRUE(Stage(id).ok());
  ExpectImageRefused(id, target);
  grpc::Status status = Publish(PublishRequest(id, target));
  EXPECT_NE(status.error_message().find(other_id), std::string::npos)
      << status.error_message();
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, InterruptedFirstFormatIsCompletedOrRedone) {
  const std::string target = dir_.file("pod/mount");
  auto dek = keys_.ReleaseKey("sv-x", "node-1", "t", {});
  ASSERT_TRUE(dek.ok());
  auto format_temp = [&](const std::string& id) {
    io::FormatOptions format;
    format.path = node_->ImagePath(id) + kFormattingSuffix;
    format.size_bytes = kSize;
    format.volume_id = *io::ParseVolumeId(id);
    auto volume = io::SealedVolume::Format(format, dek->dek);
    EXPECT_TRUE(volume.ok()) << volume.status();
    const std::string format_id = io::FormatIdString((*volume)->format_id());
    EXPECT_TRUE((*volume)->Close().ok());
    return format_id;
  };
  // Killed between the claim and the rename: the claimed temp goes in place.
  const std::string claimed = NewVolumeId();
  ASSERT_TRUE(Stage(claimed).ok());
  const std::string claimed_id = format_temp(claimed);
  ASSERT_TRUE(keys_.ClaimFormat(claimed, "node-1", claimed_id, std::nullopt).ok());
  ASSERT_TRUE(Publish(PublishRequest(claimed, target)).ok());
  EXPECT_EQ(io::FormatIdString(io::ReadHeader(node_->ImagePath(claimed))->format_id),
            claimed_id);
  EXPECT_FALSE(std::filesystem::exists(node_->ImagePath(claimed) + kFormattingSuffix));
  ASSERT_TRUE(Unpublish(claimed, target).ok());
  ASSERT_TRUE(Unstage(claimed).ok());
  // Killed between the format and the claim: the unclaimed temp is dropped
  // and the volume formatted afresh, with one claim.
  const std::string unclaimed = NewVolumeId();
  ASSERT_TRUE(Stage(unclaimed).ok());
  const std::string dropped_id = format_temp(unclaimed);
  ASSERT_TRUE(Publish(PublishRequest(unclaimed, target)).ok());
  const std::string fresh_id = keys_.Format(unclaimed);
  EXPECT_EQ(fresh_id.size(), 32u);
  EXPECT_NE(fresh_id, dropped_id);
  EXPECT_EQ(io::FormatIdString(io::ReadHeader(node_->ImagePath(unclaimed))->format_id),
            fresh_id);
  EXPECT_FALSE(std::filesystem::exists(node_->ImagePath(unclaimed) + kFormattingSuffix));
  ASSERT_TRUE(Unpublish(unclaimed, target).ok());
  ASSERT_TRUE(Unstage(unclaimed).ok());
  EXPECT_EQ(keys_.refused_claims, 0);
}

TEST_F(NodeServiceTest, UnreachableBrokerAtClaimKeepsTheTempForTheRetry) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  keys_.claim_error = absl::UnavailableError("broker down");
  grpc::Status status = Publish(PublishRequest(id, target));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_FALSE(std::filesystem::exists(node_->ImagePath(id)));
  EXPECT_EQ(MountsUnderDir(), 0);
  keys_.claim_error = absl::OkStatus();
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  EXPECT_EQ(keys_.Format(id).size(), 32u);
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, AnImageFromBeforeFormatClaimsIsAdopted) {
  const std::string id = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  const std::string claimed = keys_.Format(id);
  {
    std::lock_guard lock(keys_.mu);
    keys_.formats.erase(id);  // A registry record written before claims.
  }
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishRequest(id, target)).ok());
  EXPECT_EQ(keys_.Format(id), claimed);
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

// Issue 16: a snapshot of a published ext4 volume through the copy-job
// runner with the real FIFREEZE, data path and copy engine. A file written
// (not synced) before the cut is in the snapshot, because the freeze
// flushes it into the engine; a file written after is not; the volume is
// thawed (writable) after the cut; the snapshot mounts under its own key.
TEST_F(NodeServiceTest, SnapshotOfAMountedVolumeHoldsWhatWasWrittenBeforeTheCut) {
  const std::string id = NewVolumeId();
  const std::string snapshot = NewVolumeId();
  const std::string target = dir_.file("pod/mount");
  ASSERT_TRUE(Stage(id).ok());
  grpc::Status published = Publish(PublishRequest(id, target));
  ASSERT_TRUE(published.ok()) << published.error_message();
  { std::ofstream(target + "/before") << "written-before-the-cut"; }

  keys_.copy_jobs[snapshot] = {.target_id = snapshot,
                               .source_id = id,
                               .kind = broker::CopyKind::kSnapshot,
                               .capacity_bytes = kSize};
  CopyJobRunner runner({.node_id = "node-1"}, &keys_, data_path_.get(),
                       node_->stages(), node_->volume_locks());
  auto pass = runner.RunOnce();
  ASSERT_TRUE(pass.ok()) << pass.status();
  ASSERT_EQ(pass->ready, 1) << "failed: " << pass->failed;
  EXPECT_EQ(keys_.CopyStateOf(snapshot), kms::CopyState::kReady);
  // Thawed: the volume takes writes again.
  { std::ofstream(target + "/after") << "written-after-the-cut"; }
  std::string after;
  { std::ifstream(target + "/after") >> after; }
  EXPECT_EQ(after, "written-after-the-cut");

  auto device = AttachSnapshot(snapshot);
  ASSERT_TRUE(device.ok()) << device.status();
  const std::string mounted = dir_.file("snapshot");
  std::filesystem::create_directories(mounted);
  ASSERT_EQ(mount(device->c_str(), mounted.c_str(), "ext4", MS_RDONLY, "noload"), 0)
      << std::strerror(errno);
  std::string before;
  { std::ifstream(mounted + "/before") >> before; }
  EXPECT_EQ(before, "written-before-the-cut");
  EXPECT_FALSE(std::filesystem::exists(mounted + "/after"));
  ASSERT_TRUE(UnmountIfMounted(mounted).ok());
  ASSERT_TRUE(data_path_->Detach(snapshot).ok());
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

// A snapshot of a raw block volume in use: the engine's write hold makes
// the cut (no file system to freeze). A block written and synced before the
// cut is in the snapshot; the same block rewritten after it is not; the
// volume goes on serving. Without the hold it was refused.
TEST_F(NodeServiceTest, LiveRawBlockSnapshotHoldsWhatWasSyncedBeforeTheCut) {
  const std::string id = NewVolumeId();
  const std::string snapshot = NewVolumeId();
  const std::string target = dir_.file("pod/dev");
  ASSERT_TRUE(Stage(id, /*block=*/true).ok());
  grpc::Status published = Publish(PublishRequest(id, target, /*block=*/true));
  ASSERT_TRUE(published.ok()) << published.error_message();
  constexpr off_t kOffset = 3 * 1024 * 1024;
  const auto write_block = [&](char fill) {
    std::vector<char> block(4096, fill);
    UniqueFd fd(open(target.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid()) << std::strerror(errno);
    ASSERT_EQ(pwrite(fd.get(), block.data(), block.size(), kOffset), 4096);
    ASSERT_EQ(fsync(fd.get()), 0) << std::strerror(errno);
  };
  const auto read_block = [&](const std::string& device) {
    // O_DIRECT: the device's page cache would not show the engine's data.
    alignas(4096) char buffer[4096] = {};
    UniqueFd fd(open(device.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
    EXPECT_TRUE(fd.valid()) << device << ": " << std::strerror(errno);
    EXPECT_EQ(pread(fd.get(), buffer, sizeof buffer, kOffset), 4096);
    return std::vector<char>(buffer, buffer + sizeof buffer);
  };
  write_block('b');

  keys_.copy_jobs[snapshot] = {.target_id = snapshot,
                               .source_id = id,
                               .kind = broker::CopyKind::kSnapshot,
                               .capacity_bytes = kSize};
  CopyJobRunner runner({.node_id = "node-1"}, &keys_, data_path_.get(),
                       node_->stages(), node_->volume_locks());
  auto pass = runner.RunOnce();
  ASSERT_TRUE(pass.ok()) << pass.status();
  ASSERT_EQ(pass->ready, 1)
      << (keys_.copy_reports.empty() ? "" : keys_.copy_reports.back().error);
  EXPECT_EQ(keys_.CopyStateOf(snapshot), kms::CopyState::kReady);
  write_block('a');  // After the cut: the hold was released.
  EXPECT_EQ(read_block(target), std::vector<char>(4096, 'a'));

  auto device = AttachSnapshot(snapshot);
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(read_block(*device), std::vector<char>(4096, 'b'));
  // Attached read-only: nothing writes, so its hold holds nothing (the
  // engine itself refuses to hold a read-only volume).
  auto read_only_hold = data_path_->HoldWrites(snapshot);
  EXPECT_TRUE(read_only_hold.ok()) << read_only_hold.status();
  read_only_hold = absl::NotFoundError("released");
  ASSERT_TRUE(data_path_->Detach(snapshot).ok());
  EXPECT_TRUE(data_path_->Health(id).ok());
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(NodeServiceTest, RequestsMissingFieldsAreInvalidArgument) {
  auto req = PublishRequest("", dir_.file("t"));
  EXPECT_EQ(Publish(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req = PublishRequest(NewVolumeId(), "");
  EXPECT_EQ(Publish(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req = PublishRequest(NewVolumeId(), dir_.file("t"));
  req.clear_volume_capability();
  EXPECT_EQ(Publish(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  csipb::NodeGetVolumeStatsResponse stats;
  EXPECT_EQ(Stats("fake-id", "some/path", &stats).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Stats(NewVolumeId(), "", &stats).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace sealvol::csi
