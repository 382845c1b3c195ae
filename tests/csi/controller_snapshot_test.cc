// The Controller service's snapshots and clones through a real gRPC server
// on a unix socket, over the fake key provider: the node's side of a copy
// job is played by the test, through KeyProvider::UpdateCopy and
// ClaimFormat as the KeyBroker would call them.
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "csi/capabilities.h"
#include "csi/controller_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/csi/grpc_test_server.h"
#include "tests/fakes/fake_key_provider.h"

namespace sealvol::csi {
namespace {

using ::testing::HasSubstr;
using Mode = csipb::VolumeCapability::AccessMode;
using Rpc = csipb::ControllerServiceCapability::RPC;

constexpr char kFormatId[] = "0123456789abcdef0123456789abcdef";

ControllerOptions SnapshotOptions() {
  ControllerOptions options;
  options.snapshots = true;
  options.snapshot_cut_timeout = absl::Seconds(5);
  options.snapshot_poll_interval = absl::Milliseconds(10);
  return options;
}

class ControllerSnapshotTest : public ::testing::Test {
 protected:
  explicit ControllerSnapshotTest(ControllerOptions options = SnapshotOptions())
      : controller_(&keys_, options),
        server_({&controller_}),
        stub_(csipb::Controller::NewStub(server_.channel())) {}

  csipb::CreateVolumeRequest VolumeRequest(const std::string& name,
                                           int64_t required = 1 << 20) {
    csipb::CreateVolumeRequest request;
    request.set_name(name);
    auto* cap = request.add_volume_capabilities();
    cap->mutable_mount();
    cap->mutable_access_mode()->set_mode(Mode::SINGLE_NODE_WRITER);
    (*request.mutable_parameters())[kParamTenant] = "team-a";
    if (required) request.mutable_capacity_range()->set_required_bytes(required);
    return request;
  }
  csipb::CreateVolumeRequest RestoreRequest(const std::string& name,
                                            const std::string& snapshot_id,
                                            int64_t required = 1 << 20) {
    auto request = VolumeRequest(name, required);
    request.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id(
        snapshot_id);
    return request;
  }
  csipb::CreateVolumeRequest CloneRequest(const std::string& name,
                                          const std::string& volume_id,
                                          int64_t required = 1 << 20) {
    auto request = VolumeRequest(name, required);
    request.mutable_volume_content_source()->mutable_volume()->set_volume_id(
        volume_id);
    return request;
  }

  grpc::Status CreateVolume(const csipb::CreateVolumeRequest& request,
                            csipb::CreateVolumeResponse* response = nullptr) {
    csipb::CreateVolumeResponse ignored;
    grpc::ClientContext context;
    return stub_->CreateVolume(&context, request,
                               response ? response : &ignored);
  }
  // A volume of 1 MiB; with `formatted_on`, its image was formatted there.
  std::string NewVolume(const std::string& name,
                        const std::string& formatted_on = "") {
    csipb::CreateVolumeResponse response;
    grpc::Status s = CreateVolume(VolumeRequest(name), &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    const std::string id = response.volume().volume_id();
    if (!formatted_on.empty()) {
      auto claimed = keys_.ClaimFormat(id, {kFormatId, formatted_on, 1});
      EXPECT_TRUE(claimed.ok()) << claimed.status();
    }
    return id;
  }
  grpc::Status CreateSnapshot(const std::string& name, const std::string& source,
                              csipb::CreateSnapshotResponse* response = nullptr) {
    csipb::CreateSnapshotRequest request;
    request.set_name(name);
    request.set_source_volume_id(source);
    csipb::CreateSnapshotResponse ignored;
    grpc::ClientContext context;
    return stub_->CreateSnapshot(&context, request,
                                 response ? response : &ignored);
  }
  grpc::Status DeleteSnapshot(const std::string& id) {
    csipb::DeleteSnapshotRequest request;
    request.set_snapshot_id(id);
    csipb::DeleteSnapshotResponse response;
    grpc::ClientContext context;
    return stub_->DeleteSnapshot(&context, request, &response);
  }
  grpc::Status DeleteVolume(const std::string& id) {
    csipb::DeleteVolumeRequest request;
    request.set_volume_id(id);
    csipb::DeleteVolumeResponse response;
    grpc::ClientContext context;
    return stub_->DeleteVolume(&context, request, &response);
  }
  grpc::Status ListSnapshots(const csipb::ListSnapshotsRequest& request,
                             csipb::ListSnapshotsResponse* response) {
    grpc::ClientContext context;
    return stub_->ListSnapshots(&context, request, response);
  }
  // The registry's record of the snapshot or volume named `name`, as the
  // node's job finds it ("" when there is none yet).
  std::string RecordIdByName(const std::string& name) {
    auto all = keys_.ListVolumes("");
    if (!all.ok()) return "";
    for (const auto& r : *all) {
      if (r.name == name) return r.volume_id;
    }
    return "";
  }
  // A snapshot of a formatted volume, cut and copied by the "node" (the
  // test): ready, with its own image formatted on `node`.
  std::string ReadySnapshot(const std::string& name, const std::string& source,
                            const std::string& node) {
    std::thread cutter([&] {
      for (int i = 0; i < 500 && RecordIdByName(name).empty(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      (void)keys_.UpdateCopy(RecordIdByName(name),
                             {kms::CopyState::kCut, 0, 1 << 20, "", 1000});
    });
    csipb::CreateSnapshotResponse response;
    grpc::Status s = CreateSnapshot(name, source, &response);
    cutter.join();
    EXPECT_TRUE(s.ok()) << s.error_message();
    const std::string id = response.snapshot().snapshot_id();
    EXPECT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kReady, 1 << 20, 1 << 20,
                                      "", 1001})
                    .ok());
    EXPECT_TRUE(keys_.ClaimFormat(id, {"fedcba9876543210fedcba9876543210",
                                       node, 1001})
                    .ok());
    return id;
  }

  ::sealvol::testing::FakeKeyProvider keys_;
  ControllerService controller_;
  GrpcTestServer server_;
  std::unique_ptr<csipb::Controller::Stub> stub_;
};

class ControllerWithoutSnapshotsTest : public ControllerSnapshotTest {
 protected:
  ControllerWithoutSnapshotsTest() : ControllerSnapshotTest(ControllerOptions{}) {}
};

std::set<int> Capabilities(csipb::Controller::Stub& stub) {
  grpc::ClientContext context;
  csipb::ControllerGetCapabilitiesResponse response;
  EXPECT_TRUE(stub.ControllerGetCapabilities(&context, {}, &response).ok());
  std::set<int> types;
  for (const auto& cap : response.capabilities()) types.insert(cap.rpc().type());
  return types;
}

TEST_F(ControllerWithoutSnapshotsTest, NothingOfSnapshotsIsAdvertisedOrServed) {
  EXPECT_EQ(Capabilities(*stub_),
            (std::set<int>{Rpc::CREATE_DELETE_VOLUME, Rpc::LIST_VOLUMES,
                           Rpc::EXPAND_VOLUME}));
  const std::string source = NewVolume("pvc-src");
  grpc::Status s = CreateSnapshot("snap-1", source);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_THAT(s.error_message(), HasSubstr("--enable-snapshots"));
  EXPECT_EQ(DeleteSnapshot(source).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  csipb::ListSnapshotsResponse listed;
  EXPECT_EQ(ListSnapshots({}, &listed).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(CreateVolume(CloneRequest("pvc-clone", source)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(keys_.size(), 1u);
}

TEST_F(ControllerSnapshotTest, AdvertisesSnapshotsAndClones) {
  EXPECT_EQ(Capabilities(*stub_),
            (std::set<int>{Rpc::CREATE_DELETE_VOLUME, Rpc::LIST_VOLUMES,
                           Rpc::EXPAND_VOLUME, Rpc::CREATE_DELETE_SNAPSHOT,
                           Rpc::LIST_SNAPSHOTS, Rpc::CLONE_VOLUME}));
}

TEST_F(ControllerSnapshotTest, SnapshotOfAnUnformattedVolumeIsReadyAtOnce) {
  const std::string source = NewVolume("pvc-src");
  csipb::CreateSnapshotResponse response;
  grpc::Status s = CreateSnapshot("snap-1", source, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const auto& snapshot = response.snapshot();
  EXPECT_TRUE(snapshot.ready_to_use());
  EXPECT_EQ(snapshot.source_volume_id(), source);
  EXPECT_EQ(snapshot.size_bytes(), 1 << 20);
  EXPECT_GT(snapshot.creation_time().seconds(), 0);
  EXPECT_NE(snapshot.snapshot_id(), source);
  // Its own record, kind snapshot, in the source's tenant, with its own key.
  auto record = keys_.GetVolume(snapshot.snapshot_id());
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->kind, kms::RecordKind::kSnapshot);
  EXPECT_EQ(record->tenant, "team-a");
  EXPECT_EQ(record->copy.state, kms::CopyState::kReady);
  auto source_key = keys_.UnwrapVolumeKey(source);
  auto snapshot_key = keys_.UnwrapVolumeKey(snapshot.snapshot_id());
  ASSERT_TRUE(source_key.ok() && snapshot_key.ok());
  EXPECT_FALSE(source_key->Equals(*snapshot_key));
}

TEST_F(ControllerSnapshotTest, CreateSnapshotIsIdempotentByName) {
  const std::string a = NewVolume("pvc-a");
  const std::string b = NewVolume("pvc-b");
  csipb::CreateSnapshotResponse first, second;
  ASSERT_TRUE(CreateSnapshot("snap-1", a, &first).ok());
  ASSERT_TRUE(CreateSnapshot("snap-1", a, &second).ok());
  EXPECT_EQ(first.snapshot().snapshot_id(), second.snapshot().snapshot_id());
  EXPECT_EQ(first.snapshot().creation_time().seconds(),
            second.snapshot().creation_time().seconds());
  grpc::Status other = CreateSnapshot("snap-1", b);
  EXPECT_EQ(other.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(other.error_message(), HasSubstr(a));
  // A volume of the same name is another thing.
  ASSERT_TRUE(CreateSnapshot("pvc-a", a).ok());
  EXPECT_EQ(keys_.size(), 4u);
}

TEST_F(ControllerSnapshotTest, CreateSnapshotRefusesBadRequestsCreatingNothing) {
  const std::string source = NewVolume("pvc-src");
  EXPECT_EQ(CreateSnapshot("", source).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::Status no_source = CreateSnapshot("snap-1", "");
  EXPECT_EQ(no_source.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(no_source.error_message(), HasSubstr("source_volume_id"));
  EXPECT_EQ(CreateSnapshot("snap-1", "no-such-volume").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(CreateSnapshot("snap-1", "sv-0123456789abcdef0123456789abcdef")
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  csipb::CreateSnapshotRequest request;
  request.set_name("snap-1");
  request.set_source_volume_id(source);
  (*request.mutable_parameters())["retention"] = "7d";
  csipb::CreateSnapshotResponse response;
  grpc::ClientContext context;
  grpc::Status unknown = stub_->CreateSnapshot(&context, request, &response);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(unknown.error_message(), HasSubstr("retention"));
  EXPECT_EQ(keys_.size(), 1u);
  // A snapshot is not a source of snapshots.
  csipb::CreateSnapshotResponse made;
  ASSERT_TRUE(CreateSnapshot("snap-2", source, &made).ok());
  EXPECT_EQ(CreateSnapshot("snap-3", made.snapshot().snapshot_id()).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ControllerSnapshotTest, SnapshotOfAFormattedVolumeWaitsForTheNodesCut) {
  const std::string source = NewVolume("pvc-src", "node-1");
  std::thread node([&] {
    std::string id;
    for (int i = 0; i < 500 && id.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      id = RecordIdByName("snap-1");
    }
    // The job is pending on the source's node until the node cuts.
    auto pending = keys_.GetVolume(id);
    ASSERT_TRUE(pending.ok());
    EXPECT_EQ(pending->copy.state, kms::CopyState::kPending);
    EXPECT_EQ(pending->node, "node-1");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kCut, 0, 1 << 20, "", 1234})
                    .ok());
  });
  const auto start = std::chrono::steady_clock::now();
  csipb::CreateSnapshotResponse response;
  grpc::Status s = CreateSnapshot("snap-1", source, &response);
  node.join();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(std::chrono::steady_clock::now() - start,
            std::chrono::milliseconds(200));
  // Cut, not copied yet: the point in time is the cut's.
  EXPECT_FALSE(response.snapshot().ready_to_use());
  EXPECT_EQ(response.snapshot().creation_time().seconds(), 1234);
  const std::string id = response.snapshot().snapshot_id();
  ASSERT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kReady, 1 << 20, 1 << 20, "", 1300})
                  .ok());
  csipb::CreateSnapshotResponse again;
  ASSERT_TRUE(CreateSnapshot("snap-1", source, &again).ok());
  EXPECT_EQ(again.snapshot().snapshot_id(), id);
  EXPECT_TRUE(again.snapshot().ready_to_use());
  EXPECT_EQ(again.snapshot().creation_time().seconds(), 1234);
}

class ControllerShortCutTimeoutTest : public ControllerSnapshotTest {
 protected:
  static ControllerOptions Options() {
    ControllerOptions options = SnapshotOptions();
    options.snapshot_cut_timeout = absl::Milliseconds(300);
    return options;
  }
  ControllerShortCutTimeoutTest() : ControllerSnapshotTest(Options()) {}
};

TEST_F(ControllerShortCutTimeoutTest, NoCutInTimeIsDeadlineExceededAndARetryWaitsForTheSameSnapshot) {
  const std::string source = NewVolume("pvc-src", "node-1");
  grpc::Status late = CreateSnapshot("snap-1", source);
  EXPECT_EQ(late.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(late.error_message(), HasSubstr("node-1"));
  const std::string id = RecordIdByName("snap-1");
  ASSERT_FALSE(id.empty());
  // Not cut: not listed (CSI lists no snapshot before its cut).
  csipb::ListSnapshotsResponse listed;
  ASSERT_TRUE(ListSnapshots({}, &listed).ok());
  EXPECT_EQ(listed.entries_size(), 0);
  ASSERT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kCut, 0, 0, "", 77}).ok());
  csipb::CreateSnapshotResponse response;
  ASSERT_TRUE(CreateSnapshot("snap-1", source, &response).ok());
  EXPECT_EQ(response.snapshot().snapshot_id(), id);
  ASSERT_TRUE(ListSnapshots({}, &listed).ok());
  ASSERT_EQ(listed.entries_size(), 1);
  EXPECT_FALSE(listed.entries(0).snapshot().ready_to_use());
}

TEST_F(ControllerSnapshotTest, SnapshotThatFailsBeforeItsCutIsShreddedAndRetaken) {
  const std::string source = NewVolume("pvc-src", "node-1");
  std::thread node([&] {
    std::string id;
    for (int i = 0; i < 500 && id.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      id = RecordIdByName("snap-1");
    }
    ASSERT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kFailed, 0, 0,
                                      "FIFREEZE: device busy", 50})
                    .ok());
  });
  grpc::Status failed = CreateSnapshot("snap-1", source);
  node.join();
  EXPECT_EQ(failed.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(failed.error_message(), HasSubstr("FIFREEZE: device busy"));
  EXPECT_TRUE(RecordIdByName("snap-1").empty());  // Shredded.
  EXPECT_EQ(keys_.size(), 1u);
}

TEST_F(ControllerSnapshotTest, SnapshotThatFailsAfterItsCutIsAnErrorAndStaysListed) {
  const std::string source = NewVolume("pvc-src", "node-1");
  const std::string id = ReadySnapshot("snap-ok", source, "node-1");
  std::thread node([&] {
    std::string id;
    for (int i = 0; i < 500 && id.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      id = RecordIdByName("snap-1");
    }
    ASSERT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kCut, 0, 0, "", 60}).ok());
  });
  ASSERT_TRUE(CreateSnapshot("snap-1", source).ok());
  node.join();
  const std::string failed_id = RecordIdByName("snap-1");
  ASSERT_TRUE(keys_.UpdateCopy(failed_id, {kms::CopyState::kFailed, 0, 0,
                                           "ENOSPC", 70})
                  .ok());
  grpc::Status s = CreateSnapshot("snap-1", source);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(s.error_message(), HasSubstr("ENOSPC"));
  csipb::ListSnapshotsRequest one;
  one.set_snapshot_id(failed_id);
  csipb::ListSnapshotsResponse listed;
  ASSERT_TRUE(ListSnapshots(one, &listed).ok());
  ASSERT_EQ(listed.entries_size(), 1);
  EXPECT_FALSE(listed.entries(0).snapshot().ready_to_use());
  EXPECT_NE(id, failed_id);
}

TEST_F(ControllerSnapshotTest, DeleteSnapshotShredsOnlySnapshots) {
  const std::string source = NewVolume("pvc-src");
  csipb::CreateSnapshotResponse made;
  ASSERT_TRUE(CreateSnapshot("snap-1", source, &made).ok());
  const std::string id = made.snapshot().snapshot_id();
  // Each kind's delete leaves the other kind alone.
  EXPECT_TRUE(DeleteSnapshot(source).ok());
  EXPECT_TRUE(keys_.GetVolume(source).ok());
  EXPECT_TRUE(DeleteVolume(id).ok());
  EXPECT_TRUE(keys_.GetVolume(id).ok());

  EXPECT_EQ(DeleteSnapshot("").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(DeleteSnapshot("not-ours").ok());
  ASSERT_TRUE(DeleteSnapshot(id).ok());
  EXPECT_EQ(keys_.GetVolume(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(DeleteSnapshot(id).ok());  // Idempotent.
  EXPECT_TRUE(keys_.GetVolume(source).ok());
}

TEST_F(ControllerSnapshotTest, SourcesInUseByACopyAreNotDeleted) {
  const std::string source = NewVolume("pvc-src", "node-1");
  const std::string snapshot = ReadySnapshot("snap-1", source, "node-1");
  grpc::Status restoring = CreateVolume(RestoreRequest("pvc-restore", snapshot));
  ASSERT_EQ(restoring.error_code(), grpc::StatusCode::ABORTED);
  grpc::Status in_use = DeleteSnapshot(snapshot);
  EXPECT_EQ(in_use.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(in_use.error_message(), HasSubstr(RecordIdByName("pvc-restore")));
  EXPECT_TRUE(keys_.GetVolume(snapshot).ok());
  grpc::Status cloning = CreateVolume(CloneRequest("pvc-clone", source));
  ASSERT_EQ(cloning.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(DeleteVolume(source).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(keys_.GetVolume(source).ok());
  // Once the copies are done, their sources go (and the copies stay).
  for (const char* name : {"pvc-restore", "pvc-clone"}) {
    ASSERT_TRUE(keys_.UpdateCopy(RecordIdByName(name),
                                 {kms::CopyState::kReady, 0, 0, "", 9})
                    .ok());
  }
  EXPECT_TRUE(DeleteSnapshot(snapshot).ok());
  EXPECT_TRUE(DeleteVolume(source).ok());
  EXPECT_TRUE(keys_.GetVolume(RecordIdByName("pvc-restore")).ok());
}

TEST_F(ControllerSnapshotTest, ListSnapshotsPagesFiltersAndHidesVolumes) {
  const std::string a = NewVolume("pvc-a");
  const std::string b = NewVolume("pvc-b");
  std::set<std::string> of_a;
  for (int i = 0; i < 5; ++i) {
    csipb::CreateSnapshotResponse made;
    ASSERT_TRUE(CreateSnapshot("snap-a" + std::to_string(i), a, &made).ok());
    of_a.insert(made.snapshot().snapshot_id());
  }
  csipb::CreateSnapshotResponse of_b;
  ASSERT_TRUE(CreateSnapshot("snap-b", b, &of_b).ok());

  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    csipb::ListSnapshotsRequest request;
    request.set_max_entries(2);
    request.set_starting_token(token);
    csipb::ListSnapshotsResponse page;
    ASSERT_TRUE(ListSnapshots(request, &page).ok());
    EXPECT_LE(page.entries_size(), 2);
    for (const auto& entry : page.entries()) {
      EXPECT_TRUE(seen.insert(entry.snapshot().snapshot_id()).second);
    }
    token = page.next_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_EQ(seen.count(a), 0u);

  csipb::ListSnapshotsRequest by_source;
  by_source.set_source_volume_id(a);
  csipb::ListSnapshotsResponse listed;
  ASSERT_TRUE(ListSnapshots(by_source, &listed).ok());
  std::set<std::string> got;
  for (const auto& entry : listed.entries()) got.insert(entry.snapshot().snapshot_id());
  EXPECT_EQ(got, of_a);

  csipb::ListSnapshotsRequest by_id;
  by_id.set_snapshot_id(of_b.snapshot().snapshot_id());
  ASSERT_TRUE(ListSnapshots(by_id, &listed).ok());
  ASSERT_EQ(listed.entries_size(), 1);
  EXPECT_EQ(listed.entries(0).snapshot().source_volume_id(), b);
  // Unknown ids and a volume's id list nothing.
  for (const std::string& id : {std::string("sv-0123456789abcdef0123456789abcdef"),
                                std::string("nonsense"), a}) {
    by_id.set_snapshot_id(id);
    ASSERT_TRUE(ListSnapshots(by_id, &listed).ok());
    EXPECT_EQ(listed.entries_size(), 0) << id;
  }
  by_source.set_source_volume_id("sv-0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(ListSnapshots(by_source, &listed).ok());
  EXPECT_EQ(listed.entries_size(), 0);

  csipb::ListSnapshotsRequest bad;
  bad.set_starting_token("invalid-token");
  EXPECT_EQ(ListSnapshots(bad, &listed).error_code(), grpc::StatusCode::ABORTED);
  bad.set_starting_token("");
  bad.set_max_entries(-1);
  EXPECT_EQ(ListSnapshots(bad, &listed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // ListVolumes shows the two volumes and no snapshot.
  grpc::ClientContext context;
  csipb::ListVolumesResponse volumes;
  ASSERT_TRUE(stub_->ListVolumes(&context, {}, &volumes).ok());
  std::set<std::string> volume_ids;
  for (const auto& entry : volumes.entries()) {
    volume_ids.insert(entry.volume().volume_id());
  }
  EXPECT_EQ(volume_ids, (std::set<std::string>{a, b}));
}

TEST_F(ControllerSnapshotTest, RestoreOfAnEmptySnapshotIsReadyAtOnceUnderItsOwnKey) {
  const std::string source = NewVolume("pvc-src");
  csipb::CreateSnapshotResponse made;
  ASSERT_TRUE(CreateSnapshot("snap-1", source, &made).ok());
  const std::string snapshot = made.snapshot().snapshot_id();
  csipb::CreateVolumeResponse restored;
  grpc::Status s = CreateVolume(RestoreRequest("pvc-restore", snapshot, 0), &restored);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const auto& volume = restored.volume();
  EXPECT_EQ(volume.capacity_bytes(), 1 << 20);  // The snapshot's size.
  EXPECT_EQ(volume.content_source().snapshot().snapshot_id(), snapshot);
  auto record = keys_.GetVolume(volume.volume_id());
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->kind, kms::RecordKind::kVolume);
  EXPECT_EQ(record->source_volume_id, snapshot);
  EXPECT_EQ(record->tenant, "team-a");
  auto k_source = keys_.UnwrapVolumeKey(source);
  auto k_restore = keys_.UnwrapVolumeKey(volume.volume_id());
  auto k_snapshot = keys_.UnwrapVolumeKey(snapshot);
  ASSERT_TRUE(k_source.ok() && k_restore.ok() && k_snapshot.ok());
  EXPECT_FALSE(k_restore->Equals(*k_source));
  EXPECT_FALSE(k_restore->Equals(*k_snapshot));
  // Idempotent by name.
  csipb::CreateVolumeResponse again;
  ASSERT_TRUE(CreateVolume(RestoreRequest("pvc-restore", snapshot, 0), &again).ok());
  EXPECT_EQ(again.volume().volume_id(), volume.volume_id());
}

TEST_F(ControllerSnapshotTest, RestoreOfAFormattedSnapshotIsAbortedUntilTheCopyIsReady) {
  const std::string source = NewVolume("pvc-src", "node-1");
  const std::string snapshot = ReadySnapshot("snap-1", source, "node-7");
  auto request = RestoreRequest("pvc-restore", snapshot, 4 << 20);
  grpc::Status first = CreateVolume(request);
  EXPECT_EQ(first.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(first.error_message(), HasSubstr("copy in progress (0%)"));
  const std::string id = RecordIdByName("pvc-restore");
  auto record = keys_.GetVolume(id);
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->copy.state, kms::CopyState::kPending);
  EXPECT_EQ(record->node, "node-7");  // Where the snapshot's image is.
  EXPECT_EQ(record->capacity_bytes, 4u << 20);  // Larger than the source.

  ASSERT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kCut, 1 << 20, 2 << 20, "", 5})
                  .ok());
  grpc::Status half = CreateVolume(request);
  EXPECT_EQ(half.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(half.error_message(), HasSubstr("copy in progress (50%)"));
  EXPECT_EQ(keys_.size(), 3u);  // Retries make no second copy.

  ASSERT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kReady, 2 << 20, 2 << 20, "", 6})
                  .ok());
  csipb::CreateVolumeResponse done;
  grpc::Status s = CreateVolume(request, &done);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(done.volume().volume_id(), id);
  ASSERT_EQ(done.volume().accessible_topology_size(), 1);
  EXPECT_EQ(done.volume().accessible_topology(0).segments().at(kTopologyKey),
            "node-7");
  EXPECT_EQ(done.volume().content_source().snapshot().snapshot_id(), snapshot);
}

TEST_F(ControllerSnapshotTest, FailedCopyIsShreddedAndTheRetryStartsANewOne) {
  const std::string source = NewVolume("pvc-src", "node-1");
  ASSERT_EQ(CreateVolume(CloneRequest("pvc-clone", source)).error_code(),
            grpc::StatusCode::ABORTED);
  const std::string first = RecordIdByName("pvc-clone");
  ASSERT_TRUE(keys_.UpdateCopy(first, {kms::CopyState::kFailed, 0, 0,
                                       "node restarted before the cut", 5})
                  .ok());
  grpc::Status failed = CreateVolume(CloneRequest("pvc-clone", source));
  EXPECT_EQ(failed.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(failed.error_message(), HasSubstr("node restarted before the cut"));
  EXPECT_EQ(keys_.GetVolume(first).status().code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(CreateVolume(CloneRequest("pvc-clone", source)).error_code(),
            grpc::StatusCode::ABORTED);
  const std::string second = RecordIdByName("pvc-clone");
  EXPECT_FALSE(second.empty());
  EXPECT_NE(second, first);
}

TEST_F(ControllerSnapshotTest, CloneIsPlacedOnTheSourcesNode) {
  const std::string source = NewVolume("pvc-src", "node-3");
  auto request = CloneRequest("pvc-clone", source);
  auto* requisite = request.mutable_accessibility_requirements()->add_requisite();
  (*requisite->mutable_segments())[kTopologyKey] = "node-9";
  grpc::Status elsewhere = CreateVolume(request);
  EXPECT_EQ(elsewhere.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(elsewhere.error_message(), HasSubstr("node-3"));
  EXPECT_TRUE(RecordIdByName("pvc-clone").empty());
  auto* also = request.mutable_accessibility_requirements()->add_requisite();
  (*also->mutable_segments())[kTopologyKey] = "node-3";
  ASSERT_EQ(CreateVolume(request).error_code(), grpc::StatusCode::ABORTED);
  const std::string id = RecordIdByName("pvc-clone");
  ASSERT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kReady, 0, 0, "", 5}).ok());
  csipb::CreateVolumeResponse done;
  ASSERT_TRUE(CreateVolume(request, &done).ok());
  EXPECT_EQ(done.volume().accessible_topology(0).segments().at(kTopologyKey),
            "node-3");
  EXPECT_EQ(done.volume().content_source().volume().volume_id(), source);
}

TEST_F(ControllerSnapshotTest, CopiesFromABadSourceAreRefusedNamingTheProblem) {
  const std::string source = NewVolume("pvc-src");
  csipb::CreateSnapshotResponse made;
  ASSERT_TRUE(CreateSnapshot("snap-1", source, &made).ok());
  const std::string snapshot = made.snapshot().snapshot_id();
  const size_t records = keys_.size();

  EXPECT_EQ(CreateVolume(RestoreRequest("pvc-x", "sv-0123456789abcdef0123456789abcdef"))
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(CreateVolume(RestoreRequest("pvc-x", "not-an-id")).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // A volume id as a snapshot source, and a snapshot id as a volume source.
  EXPECT_EQ(CreateVolume(RestoreRequest("pvc-x", source)).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(CreateVolume(CloneRequest("pvc-x", snapshot)).error_code(),
            grpc::StatusCode::NOT_FOUND);

  auto other_tenant = RestoreRequest("pvc-x", snapshot);
  (*other_tenant.mutable_parameters())[kParamTenant] = "team-b";
  grpc::Status tenant = CreateVolume(other_tenant);
  EXPECT_EQ(tenant.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(tenant.error_message(), HasSubstr("tenant"));

  auto other_fs = RestoreRequest("pvc-x", snapshot);
  (*other_fs.mutable_parameters())[kParamFsType] = "xfs";
  grpc::Status fs = CreateVolume(other_fs);
  EXPECT_EQ(fs.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(fs.error_message(), HasSubstr("fsType"));

  // CSI: smaller than the source is OUT_OF_RANGE.
  auto smaller = RestoreRequest("pvc-x", snapshot, 0);
  smaller.mutable_capacity_range()->set_limit_bytes(512 << 10);
  grpc::Status small = CreateVolume(smaller);
  EXPECT_EQ(small.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_THAT(small.error_message(), HasSubstr("smaller than the source"));
  EXPECT_EQ(keys_.size(), records);

  // A smaller required size with room in the limit gets the source's size.
  auto room = RestoreRequest("pvc-room", snapshot, 4096);
  room.mutable_capacity_range()->set_limit_bytes(8 << 20);
  csipb::CreateVolumeResponse roomy;
  ASSERT_TRUE(CreateVolume(room, &roomy).ok());
  EXPECT_EQ(roomy.volume().capacity_bytes(), 1 << 20);

  // The same name from another source is another volume.
  EXPECT_EQ(CreateVolume(CloneRequest("pvc-room", source)).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(CreateVolume(VolumeRequest("pvc-room")).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(ControllerSnapshotTest, SnapshotNotCopiedYetIsNotARestoreSource) {
  const std::string source = NewVolume("pvc-src", "node-1");
  std::thread node([&] {
    std::string id;
    for (int i = 0; i < 500 && id.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      id = RecordIdByName("snap-1");
    }
    ASSERT_TRUE(keys_.UpdateCopy(id, {kms::CopyState::kCut, 0, 0, "", 1}).ok());
  });
  csipb::CreateSnapshotResponse made;
  ASSERT_TRUE(CreateSnapshot("snap-1", source, &made).ok());
  node.join();
  grpc::Status s = CreateVolume(RestoreRequest("pvc-x", made.snapshot().snapshot_id()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("not ready yet"));
  EXPECT_TRUE(RecordIdByName("pvc-x").empty());
}

// The controller announces every copy job it creates, with its node, so
// that the KeyBroker's waiting CopyJobs call of that node answers at once.
class ControllerAnnouncedJobsTest : public ControllerSnapshotTest {
 protected:
  static ControllerOptions Options(ControllerAnnouncedJobsTest* test) {
    ControllerOptions options = SnapshotOptions();
    options.snapshot_cut_timeout = absl::Milliseconds(300);
    options.copy_job_created = [test](const std::string& node) {
      MutexLock lock(&test->mu_);
      test->announced_.push_back(node);
    };
    return options;
  }
  ControllerAnnouncedJobsTest() : ControllerSnapshotTest(Options(this)) {}
  std::vector<std::string> Announced() {
    MutexLock lock(&mu_);
    return announced_;
  }

  Mutex mu_;
  std::vector<std::string> announced_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ControllerAnnouncedJobsTest, EveryCopyJobCreatedIsAnnouncedWithItsNode) {
  // Unformatted sources: copies ready at once, no job, nothing announced.
  const std::string empty = NewVolume("pvc-empty");
  csipb::CreateSnapshotResponse made;
  ASSERT_TRUE(CreateSnapshot("snap-empty", empty, &made).ok());
  ASSERT_TRUE(CreateVolume(RestoreRequest("pvc-r0", made.snapshot().snapshot_id())).ok());
  EXPECT_TRUE(Announced().empty());

  // A snapshot of a formatted volume: one job on its node (the retry finds
  // the same snapshot, no new job).
  const std::string source = NewVolume("pvc-src", "node-4");
  EXPECT_EQ(CreateSnapshot("snap-1", source).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Announced(), std::vector<std::string>{"node-4"});
  EXPECT_EQ(CreateSnapshot("snap-1", source).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Announced().size(), 1u);

  // A clone and a restore: one job each, on the source's node.
  EXPECT_EQ(CreateVolume(CloneRequest("pvc-clone", source)).error_code(),
            grpc::StatusCode::ABORTED);
  EXPECT_EQ(Announced(), (std::vector<std::string>{"node-4", "node-4"}));
  const std::string snapshot = ReadySnapshot("snap-2", source, "node-4");
  const size_t before = Announced().size();
  EXPECT_EQ(CreateVolume(RestoreRequest("pvc-restore", snapshot)).error_code(),
            grpc::StatusCode::ABORTED);
  ASSERT_EQ(Announced().size(), before + 1);
  EXPECT_EQ(Announced().back(), "node-4");
}

}  // namespace
}  // namespace sealvol::csi
