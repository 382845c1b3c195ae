// The Identity and Controller services through a real gRPC server on a unix
// socket, with an in-memory KMS.
#include "csi/controller_service.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "csi/capabilities.h"
#include "csi/identity_service.h"
#include "csi/request_limits.h"
#include "gtest/gtest.h"
#include "kms/local_key_provider.h"
#include "tests/csi/grpc_test_server.h"
#include "tests/fakes/fake_key_provider.h"
#include "tests/support/temp_dir.h"

namespace sealvol::csi {
namespace {

using Mode = csipb::VolumeCapability::AccessMode;

csipb::VolumeCapability MountCap(Mode::Mode mode = Mode::SINGLE_NODE_WRITER,
                                 const std::string& fs = "") {
  csipb::VolumeCapability cap;
  cap.mutable_mount()->set_fs_type(fs);
  cap.mutable_access_mode()->set_mode(mode);
  return cap;
}

csipb::VolumeCapability BlockCap() {
  csipb::VolumeCapability cap;
  cap.mutable_block();
  cap.mutable_access_mode()->set_mode(Mode::SINGLE_NODE_WRITER);
  return cap;
}

class ControllerServiceTest : public ::testing::Test {
 protected:
  ControllerServiceTest()
      : controller_(&keys_),
        identity_("test", [this] { return keys_.Ping(); }),
        server_({&controller_, &identity_}),
        stub_(csipb::Controller::NewStub(server_.channel())),
        identity_stub_(csipb::Identity::NewStub(server_.channel())) {}

  csipb::CreateVolumeRequest CreateRequest(const std::string& name,
                                           int64_t required = 0) {
    csipb::CreateVolumeRequest request;
    request.set_name(name);
    *request.add_volume_capabilities() = MountCap();
    (*request.mutable_parameters())[kParamTenant] = "team-a";
    if (required) request.mutable_capacity_range()->set_required_bytes(required);
    return request;
  }

  grpc::Status Create(const csipb::CreateVolumeRequest& request,
                      csipb::CreateVolumeResponse* response) {
    grpc::ClientContext context;
    return stub_->CreateVolume(&context, request, response);
  }

  grpc::Status Delete(const std::string& id) {
    grpc::ClientContext context;
    csipb::DeleteVolumeRequest request;
    request.set_volume_id(id);
    csipb::DeleteVolumeResponse response;
    return stub_->DeleteVolume(&context, request, &response);
  }

  grpc::Status List(int32_t max, const std::string& token,
                    csipb::ListVolumesResponse* response) {
    grpc::ClientContext context;
    csipb::ListVolumesRequest request;
    request.set_max_entries(max);
    request.set_starting_token(token);
    return stub_->ListVolumes(&context, request, response);
  }

  ::sealvol::testing::FakeKeyProvider keys_;
  ControllerService controller_;
  IdentityService identity_;
  GrpcTestServer server_;
  std::unique_ptr<csipb::Controller::Stub> stub_;
  std::unique_ptr<csipb::Identity::Stub> identity_stub_;
};

TEST_F(ControllerServiceTest, IdentityNamesDriverAndCapabilities) {
  ASSERT_TRUE(server_.started());
  grpc::ClientContext c1;
  csipb::GetPluginInfoResponse info;
  ASSERT_TRUE(identity_stub_->GetPluginInfo(&c1, {}, &info).ok());
  EXPECT_EQ(info.name(), "sealvol.csi.dev");
  EXPECT_EQ(info.vendor_version(), "test");

  grpc::ClientContext c2;
  csipb::GetPluginCapabilitiesResponse caps;
  ASSERT_TRUE(identity_stub_->GetPluginCapabilities(&c2, {}, &caps).ok());
  std::set<int> services;
  for (const auto& cap : caps.capabilities()) {
    if (cap.has_service()) services.insert(cap.service().type());
  }
  EXPECT_EQ(services,
            (std::set<int>{
                csipb::PluginCapability::Service::CONTROLLER_SERVICE,
                csipb::PluginCapability::Service::
                    VOLUME_ACCESSIBILITY_CONSTRAINTS}));
}

TEST_F(ControllerServiceTest, ProbeIsReadyOnlyWhileKmsAnswers) {
  grpc::ClientContext c1;
  csipb::ProbeResponse ready;
  ASSERT_TRUE(identity_stub_->Probe(&c1, {}, &ready).ok());
  EXPECT_TRUE(ready.ready().value());

  keys_.set_reachable(false);
  grpc::ClientContext c2;
  csipb::ProbeResponse not_ready;
  ASSERT_TRUE(identity_stub_->Probe(&c2, {}, &not_ready).ok());
  ASSERT_TRUE(not_ready.has_ready());
  EXPECT_FALSE(not_ready.ready().value());
}

TEST_F(ControllerServiceTest, CreateVolumeRoundsCapacityUpTo4KiB) {
  csipb::CreateVolumeResponse response;
  ASSERT_TRUE(Create(CreateRequest("pvc-1", 10000), &response).ok());
  EXPECT_EQ(response.volume().capacity_bytes(), 12288);
  EXPECT_EQ(response.volume().volume_id().substr(0, 3), "sv-");
  EXPECT_EQ(response.volume().volume_id().size(), 35u);
  EXPECT_EQ(response.volume().volume_context().at(kContextTenant), "team-a");
  EXPECT_EQ(response.volume().volume_context().at(kContextFsType), "ext4");
  auto record = keys_.GetVolume(response.volume().volume_id());
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->tenant, "team-a");
  EXPECT_EQ(record->capacity_bytes, 12288u);
  EXPECT_EQ(record->name, "pvc-1");
}

TEST_F(ControllerServiceTest, CreateVolumeWithoutRangeGetsDefaultSize) {
  csipb::CreateVolumeResponse response;
  ASSERT_TRUE(Create(CreateRequest("pvc-default"), &response).ok());
  EXPECT_EQ(response.volume().capacity_bytes(), int64_t{1} << 30);
}

TEST_F(ControllerServiceTest, CreateVolumeOutOfRangeWhenNothingFits) {
  auto request = CreateRequest("pvc-tight", 5000);
  request.mutable_capacity_range()->set_limit_bytes(6000);
  csipb::CreateVolumeResponse response;
  EXPECT_EQ(Create(request, &response).error_code(),
            grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(keys_.size(), 0u);
}

TEST_F(ControllerServiceTest, CreateVolumeIsIdempotentByName) {
  csipb::CreateVolumeResponse first, second;
  ASSERT_TRUE(Create(CreateRequest("pvc-2", 1 << 20), &first).ok());
  ASSERT_TRUE(Create(CreateRequest("pvc-2", 1 << 20), &second).ok());
  EXPECT_EQ(first.volume().volume_id(), second.volume().volume_id());
  EXPECT_EQ(keys_.size(), 1u);
}

TEST_F(ControllerServiceTest, CreateVolumeSameNameOtherCapacityIsAlreadyExists) {
  csipb::CreateVolumeResponse first, second;
  ASSERT_TRUE(Create(CreateRequest("pvc-3", 1 << 20), &first).ok());
  EXPECT_EQ(Create(CreateRequest("pvc-3", 2 << 20), &second).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(ControllerServiceTest, CreateVolumeSameNameOtherTenantIsAlreadyExists) {
  csipb::CreateVolumeResponse first, second;
  ASSERT_TRUE(Create(CreateRequest("pvc-4"), &first).ok());
  auto request = CreateRequest("pvc-4");
  (*request.mutable_parameters())[kParamTenant] = "team-b";
  EXPECT_EQ(Create(request, &second).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(ControllerServiceTest, CreateVolumeRejectsBadRequests) {
  csipb::CreateVolumeResponse response;
  auto no_name = CreateRequest("");
  EXPECT_EQ(Create(no_name, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto no_caps = CreateRequest("pvc-5");
  no_caps.clear_volume_capabilities();
  EXPECT_EQ(Create(no_caps, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto no_tenant = CreateRequest("pvc-5");
  no_tenant.mutable_parameters()->erase(kParamTenant);
  EXPECT_EQ(Create(no_tenant, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto multi = CreateRequest("pvc-5");
  *multi.mutable_volume_capabilities(0) = MountCap(Mode::MULTI_NODE_MULTI_WRITER);
  EXPECT_EQ(Create(multi, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto bad_fs = CreateRequest("pvc-5");
  *bad_fs.mutable_volume_capabilities(0) =
      MountCap(Mode::SINGLE_NODE_WRITER, "ntfs");
  EXPECT_EQ(Create(bad_fs, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto unknown = CreateRequest("pvc-5");
  (*unknown.mutable_parameters())["encryption"] = "none";
  EXPECT_EQ(Create(unknown, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(keys_.size(), 0u);
}

TEST_F(ControllerServiceTest, CreateVolumeStoresPolicyParameters) {
  auto request = CreateRequest("pvc-6");
  *request.add_volume_capabilities() = BlockCap();
  (*request.mutable_parameters())[kParamAllowedServiceAccounts] = "trainer,eval";
  (*request.mutable_parameters())[kParamKmsKeyTemplate] = "tenant-${namespace}";
  (*request.mutable_parameters())[kParamFsType] = "xfs";
  csipb::CreateVolumeResponse response;
  ASSERT_TRUE(Create(request, &response).ok());
  auto record = keys_.GetVolume(response.volume().volume_id());
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->parameters.at(kParamAllowedServiceAccounts), "trainer,eval");
  EXPECT_EQ(record->parameters.at(kParamFsType), "xfs");
  EXPECT_EQ(record->key_name, "tenant-${namespace}");
}

TEST_F(ControllerServiceTest, CreateVolumePreferredTopologyPicksNode) {
  auto request = CreateRequest("pvc-7");
  auto* req = request.mutable_accessibility_requirements();
  (*req->add_requisite()->mutable_segments())[kTopologyKey] = "node-a";
  (*req->add_requisite()->mutable_segments())[kTopologyKey] = "node-b";
  (*req->add_preferred()->mutable_segments())[kTopologyKey] = "node-b";
  csipb::CreateVolumeResponse response;
  ASSERT_TRUE(Create(request, &response).ok());
  ASSERT_EQ(response.volume().accessible_topology_size(), 1);
  EXPECT_EQ(response.volume().accessible_topology(0).segments().at(kTopologyKey),
            "node-b");
  EXPECT_EQ(keys_.GetVolume(response.volume().volume_id())->node, "node-b");
}

TEST_F(ControllerServiceTest, DeleteVolumeShredsAndIsIdempotent) {
  csipb::CreateVolumeResponse response;
  ASSERT_TRUE(Create(CreateRequest("pvc-8"), &response).ok());
  const std::string id = response.volume().volume_id();
  ASSERT_TRUE(Delete(id).ok());
  EXPECT_TRUE(absl::IsNotFound(keys_.GetVolume(id).status()));
  EXPECT_TRUE(Delete(id).ok());
  EXPECT_TRUE(Delete("not-a-sealvol-id").ok());
  EXPECT_EQ(Delete("").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ControllerServiceTest, CreateVolumeIsUnavailableWhileKmsIsDown) {
  csipb::CreateVolumeResponse response;
  ASSERT_TRUE(Create(CreateRequest("pvc-9"), &response).ok());
  keys_.set_reachable(false);
  csipb::CreateVolumeResponse again;
  EXPECT_EQ(Create(CreateRequest("pvc-10"), &again).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ControllerServiceTest, ListVolumesPagesThroughEveryVolumeOnce) {
  std::set<std::string> created;
  for (int i = 0; i < 5; ++i) {
    csipb::CreateVolumeResponse response;
    ASSERT_TRUE(Create(CreateRequest("pvc-l" + std::to_string(i)), &response).ok());
    created.insert(response.volume().volume_id());
  }
  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    csipb::ListVolumesResponse page;
    ASSERT_TRUE(List(2, token, &page).ok());
    EXPECT_LE(page.entries_size(), 2);
    for (const auto& entry : page.entries()) {
      EXPECT_TRUE(seen.insert(entry.volume().volume_id()).second);
    }
    token = page.next_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, created);
}

TEST_F(ControllerServiceTest, ListVolumesAbortsOnForeignToken) {
  csipb::ListVolumesResponse page;
  EXPECT_EQ(List(0, "invalid-token", &page).error_code(),
            grpc::StatusCode::ABORTED);
  EXPECT_EQ(List(-1, "", &page).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ControllerServiceTest, ValidateConfirmsOnlySupportedCapabilities) {
  csipb::CreateVolumeResponse created;
  ASSERT_TRUE(Create(CreateRequest("pvc-11"), &created).ok());
  csipb::ValidateVolumeCapabilitiesRequest request;
  request.set_volume_id(created.volume().volume_id());
  *request.add_volume_capabilities() = MountCap();
  {
    grpc::ClientContext context;
    csipb::ValidateVolumeCapabilitiesResponse response;
    ASSERT_TRUE(stub_->ValidateVolumeCapabilities(&context, request, &response).ok());
    EXPECT_TRUE(response.has_confirmed());
  }
  *request.add_volume_capabilities() = MountCap(Mode::MULTI_NODE_READER_ONLY);
  {
    grpc::ClientContext context;
    csipb::ValidateVolumeCapabilitiesResponse response;
    ASSERT_TRUE(stub_->ValidateVolumeCapabilities(&context, request, &response).ok());
    EXPECT_FALSE(response.has_confirmed());
    EXPECT_NE(response.message().find("MULTI_NODE_READER_ONLY"), std::string::npos);
  }
  request.set_volume_id("sv-00000000000000000000000000000000");
  {
    grpc::ClientContext context;
    csipb::ValidateVolumeCapabilitiesResponse response;
    EXPECT_EQ(stub_->ValidateVolumeCapabilities(&context, request, &response)
                  .error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
}

TEST_F(ControllerServiceTest, ExpandRecordsCapacityAndAsksTheNode) {
  csipb::CreateVolumeResponse created;
  ASSERT_TRUE(Create(CreateRequest("pvc-12", 1 << 20), &created).ok());
  const std::string id = created.volume().volume_id();
  csipb::ControllerExpandVolumeRequest request;
  request.set_volume_id(id);
  request.mutable_capacity_range()->set_required_bytes((2 << 20) + 1);
  grpc::ClientContext context;
  csipb::ControllerExpandVolumeResponse response;
  ASSERT_TRUE(stub_->ControllerExpandVolume(&context, request, &response).ok());
  EXPECT_EQ(response.capacity_bytes(), (2 << 20) + 4096);
  EXPECT_TRUE(response.node_expansion_required());
  EXPECT_EQ(keys_.GetVolume(id)->capacity_bytes, uint64_t{(2 << 20) + 4096});

  request.set_volume_id("sv-00000000000000000000000000000000");
  grpc::ClientContext c2;
  EXPECT_EQ(stub_->ControllerExpandVolume(&c2, request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  request.clear_capacity_range();
  grpc::ClientContext c3;
  EXPECT_EQ(stub_->ControllerExpandVolume(&c3, request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ControllerServiceTest, CapabilitiesDoNotClaimCapacityOrPublish) {
  grpc::ClientContext context;
  csipb::ControllerGetCapabilitiesResponse response;
  ASSERT_TRUE(stub_->ControllerGetCapabilities(&context, {}, &response).ok());
  std::set<int> types;
  for (const auto& cap : response.capabilities()) types.insert(cap.rpc().type());
  using Rpc = csipb::ControllerServiceCapability::RPC;
  EXPECT_EQ(types, (std::set<int>{Rpc::CREATE_DELETE_VOLUME, Rpc::LIST_VOLUMES,
                                  Rpc::EXPAND_VOLUME}));
}

}  // namespace
}  // namespace sealvol::csi

namespace sealvol::csi {
namespace {

// The same service over the real embedded key provider: the record, the
// wrapped key and crypto-shredding land in its directory.
TEST(ControllerServiceLocalKmsTest, CreateUnwrapsAndDeleteShreds) {
  const sealvol::testing::TempDir dir("sealvol-ctrl-kms");
  auto provider = kms::LocalKeyProvider::Open(dir.file("kms"));
  ASSERT_TRUE(provider.ok()) << provider.status();
  ControllerService controller(provider->get());
  GrpcTestServer server({&controller});
  auto stub = csipb::Controller::NewStub(server.channel());

  csipb::CreateVolumeRequest request;
  request.set_name("pvc-local");
  *request.add_volume_capabilities() = MountCap();
  (*request.mutable_parameters())[kParamTenant] = "team-a";
  request.mutable_capacity_range()->set_required_bytes(1 << 20);
  csipb::CreateVolumeResponse created;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->CreateVolume(&context, request, &created).ok());
  }
  const std::string id = created.volume().volume_id();
  auto record = (*provider)->GetVolume(id);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->tenant, "team-a");
  EXPECT_EQ(record->key_name, "sealvol-team-a");
  auto dek = (*provider)->UnwrapVolumeKey(id);
  ASSERT_TRUE(dek.ok()) << dek.status();
  EXPECT_EQ(dek->size(), 32u);

  {
    grpc::ClientContext context;
    csipb::DeleteVolumeRequest del;
    del.set_volume_id(id);
    csipb::DeleteVolumeResponse response;
    ASSERT_TRUE(stub->DeleteVolume(&context, del, &response).ok());
  }
  EXPECT_TRUE(absl::IsNotFound((*provider)->UnwrapVolumeKey(id).status()));
}

// Issue 14: a 1.5 MB name was accepted and written as a 1.5 MB record,
// which then broke CreateVolume and ListVolumes for every tenant.
class ControllerLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto provider = kms::LocalKeyProvider::Open(dir_.file("kms"));
    ASSERT_TRUE(provider.ok()) << provider.status();
    provider_ = std::move(*provider);
    controller_ = std::make_unique<ControllerService>(provider_.get());
    server_ = std::make_unique<GrpcTestServer>(
        std::initializer_list<grpc::Service*>{controller_.get()});
    stub_ = csipb::Controller::NewStub(server_->channel());
  }
  void TearDown() override {
    stub_.reset();
    server_.reset();
    controller_.reset();
    provider_.reset();
  }
  grpc::Status Create(const std::string& name, csipb::CreateVolumeResponse* out,
                      const std::map<std::string, std::string>& extra = {}) {
    csipb::CreateVolumeRequest request;
    request.set_name(name);
    *request.add_volume_capabilities() = MountCap();
    (*request.mutable_parameters())[kParamTenant] = "team-a";
    for (const auto& [k, v] : extra) (*request.mutable_parameters())[k] = v;
    request.mutable_capacity_range()->set_required_bytes(1 << 20);
    grpc::ClientContext context;
    return stub_->CreateVolume(&context, request, out);
  }
  size_t RecordFiles() const {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_.file("kms/volumes"))) {
      (void)e;
      ++n;
    }
    return n;
  }
  sealvol::testing::TempDir dir_{"sealvol-ctrl-limits"};
  std::unique_ptr<kms::KeyProvider> provider_;
  std::unique_ptr<ControllerService> controller_;
  std::unique_ptr<GrpcTestServer> server_;
  std::unique_ptr<csipb::Controller::Stub> stub_;
};

TEST_F(ControllerLimitsTest, OversizedNameIsRefusedAndWritesNothing) {
  csipb::CreateVolumeResponse response;
  grpc::Status status = Create(std::string(1500 * 1000, 'n'), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("name is 1500000 bytes"), std::string::npos)
      << status.error_message();
  EXPECT_LT(status.error_message().size(), 200u) << "the value is not echoed";
  EXPECT_EQ(RecordFiles(), 0u);
  // At the limit: accepted.
  EXPECT_TRUE(Create(std::string(kMaxStringBytes, 'n'), &response).ok());
}

TEST_F(ControllerLimitsTest, OversizedMapsAndIdsAreRefusedNamingTheField) {
  csipb::CreateVolumeResponse response;
  grpc::Status status =
      Create("pvc-big-param", &response,
             {{"csi.storage.k8s.io/pvc/name", std::string(5000, 'p')}});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("parameters"), std::string::npos);
  // What the provisioner really sends: names of up to 253 bytes.
  EXPECT_TRUE(Create("pvc-k8s", &response,
                     {{"csi.storage.k8s.io/pvc/name", std::string(253, 'p')},
                      {"csi.storage.k8s.io/pvc/namespace", "team-a"},
                      {"csi.storage.k8s.io/pv/name", std::string(253, 'v')}})
                  .ok());
  {
    grpc::ClientContext context;
    csipb::DeleteVolumeRequest del;
    del.set_volume_id(std::string(4096, 'x'));
    csipb::DeleteVolumeResponse out;
    grpc::Status s = stub_->DeleteVolume(&context, del, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("volume_id"), std::string::npos);
  }
  {
    grpc::ClientContext context;
    csipb::ListVolumesRequest list;
    list.set_starting_token(std::string(1000, 't'));
    csipb::ListVolumesResponse out;
    grpc::Status s = stub_->ListVolumes(&context, list, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("starting_token"), std::string::npos);
  }
}

TEST_F(ControllerLimitsTest, OneOversizedRecordDoesNotBreakTheOthers) {
  csipb::CreateVolumeResponse first;
  ASSERT_TRUE(Create("pvc-first", &first).ok());
  // A record as an older version (or a hand edit) could leave it: 1.5 MB.
  const std::string bad_id = "sv-00000000000000000000000000000bad";
  {
    std::ofstream out(dir_.file("kms/volumes/") + bad_id + ".json");
    out << "{\"volume_id\":\"" << bad_id << "\",\"name\":\""
        << std::string(1500 * 1000, 'n') << "\"}";
  }
  grpc::ClientContext context;
  csipb::ListVolumesResponse listed;
  grpc::Status status = stub_->ListVolumes(&context, {}, &listed);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(listed.entries_size(), 1);
  EXPECT_EQ(listed.entries(0).volume().volume_id(), first.volume().volume_id());
  csipb::CreateVolumeResponse second;
  ASSERT_TRUE(Create("pvc-second", &second).ok());
  ASSERT_TRUE(Create("pvc-first", &first).ok()) << "idempotent by name still";
  // The bad record is left for an operator to look at, not deleted.
  EXPECT_TRUE(std::filesystem::exists(dir_.file("kms/volumes/") + bad_id + ".json"));
}

}  // namespace
}  // namespace sealvol::csi
