#include "kms/local_key_provider.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "crypto/key_schedule.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kms/base64.h"
#include "nlohmann/json.hpp"
#include "tests/kms/copy_record_checks.h"
#include "tests/kms/state_commit_checks.h"
#include "tests/support/temp_dir.h"
#include "tests/support/volume_ids.h"

namespace sealvol::kms {
namespace {

namespace fs = std::filesystem;
// Readable well-formed volume ids: Vol("a") (tests/support/volume_ids.h).
constexpr auto* Vol = &::sealvol::testing::TestVolumeId;
using ::testing::HasSubstr;

class LocalKeyProviderTest : public ::testing::Test {
 protected:
  std::unique_ptr<LocalKeyProvider> OpenOrDie() {
    auto p = LocalKeyProvider::Open(dir_);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  static CreateVolumeKeyRequest Request(std::string id, std::string tenant) {
    CreateVolumeKeyRequest r;
    r.volume_id = std::move(id);
    r.tenant = std::move(tenant);
    r.name = "pvc-" + r.volume_id;
    r.capacity_bytes = 1 << 30;
    r.parameters = {{"fsType", "ext4"}};
    return r;
  }

  static std::string Hex(const crypto::SecretBytes& b) {
    std::string out;
    char buf[3];
    for (uint8_t c : b.span()) {
      std::snprintf(buf, sizeof(buf), "%02x", c);
      out += buf;
    }
    return out;
  }

  std::string ReadFile(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  sealvol::testing::TempDir root_{"sealvol-kms-test"};
  const std::string dir_ = root_.file("kms");
};

TEST_F(LocalKeyProviderTest, CreateThenUnwrapGivesTheSame32ByteKey) {
  auto p = OpenOrDie();
  auto rec = p->CreateVolumeKey(Request(Vol("a"), "team-a"));
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->key_name, "sealvol-team-a");
  EXPECT_EQ(rec->key_version, 1);
  EXPECT_THAT(rec->wrapped_dek, ::testing::StartsWith("local:v1:"));
  auto dek1 = p->UnwrapVolumeKey(Vol("a"));
  ASSERT_TRUE(dek1.ok()) << dek1.status();
  EXPECT_EQ(dek1->size(), 32u);
  auto dek2 = p->UnwrapVolumeKey(Vol("a"));
  ASSERT_TRUE(dek2.ok());
  EXPECT_TRUE(dek1->Equals(*dek2));
  // A second provider on the same directory (another process, in effect)
  // sees the same key.
  auto other = OpenOrDie();
  auto dek3 = other->UnwrapVolumeKey(Vol("a"));
  ASSERT_TRUE(dek3.ok());
  EXPECT_TRUE(dek1->Equals(*dek3));
}

TEST_F(LocalKeyProviderTest, EveryVolumeGetsItsOwnDek) {
  auto p = OpenOrDie();
  std::set<std::string> seen;
  for (int i = 0; i < 20; ++i) {
    const std::string id = Vol(std::to_string(i));
    ASSERT_TRUE(p->CreateVolumeKey(Request(id, "team-a")).ok());
    auto dek = p->UnwrapVolumeKey(id);
    ASSERT_TRUE(dek.ok());
    EXPECT_TRUE(seen.insert(Hex(*dek)).second);
  }
}

TEST_F(LocalKeyProviderTest, KekFileIsCreatedWith0600AndDirsWith0700) {
  auto p = OpenOrDie();
  ::umask(022);
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  struct stat st;
  const std::string kek = dir_ + "/keks/sealvol-team-a.v1.key";
  ASSERT_EQ(::stat(kek.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  ASSERT_EQ(::stat((dir_ + "/volumes/" + Vol("a") + ".json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  for (const char* d : {"", "/keks", "/volumes"}) {
    ASSERT_EQ(::stat((dir_ + d).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u) << d;
  }
}

TEST_F(LocalKeyProviderTest, RefusesAKekFileReadableByOthers) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  ASSERT_EQ(::chmod((dir_ + "/keks/sealvol-team-a.v1.key").c_str(), 0644), 0);
  auto dek = p->UnwrapVolumeKey(Vol("a"));
  EXPECT_EQ(dek.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(dek.status().message(), HasSubstr("0600"));
}

TEST_F(LocalKeyProviderTest, RecordHoldsNoPlaintextKey) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  auto dek = p->UnwrapVolumeKey(Vol("a"));
  ASSERT_TRUE(dek.ok());
  const std::string record = ReadFile(dir_ + "/volumes/" + Vol("a") + ".json");
  EXPECT_EQ(record.find(Hex(*dek)), std::string::npos);
  EXPECT_EQ(record.find(Base64Encode(dek->span())), std::string::npos);
  const std::string raw(reinterpret_cast<const char*>(dek->data()), 32);
  EXPECT_EQ(record.find(raw), std::string::npos);
}

TEST_F(LocalKeyProviderTest, DuplicateVolumeIdIsAlreadyExists) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  auto again = p->CreateVolumeKey(Request(Vol("a"), "team-b"));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  auto rec = p->GetVolume(Vol("a"));
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->tenant, "team-a");
}

TEST_F(LocalKeyProviderTest, RejectsNamesThatCouldEscapeTheDirectory) {
  auto p = OpenOrDie();
  EXPECT_EQ(p->CreateVolumeKey(Request("../x", "team-a")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->CreateVolumeKey(Request(Vol("a"), "../../etc")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->CreateVolumeKey(Request(Vol("a"), "Team_A")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->UnwrapVolumeKey("a/b").status().code(),
            absl::StatusCode::kInvalidArgument);
  // The one volume-id rule (base/volume_id.h): a name the node would refuse
  // is refused by the registry too.
  const auto named = p->CreateVolumeKey(Request("pvc-1", "team-a"));
  EXPECT_EQ(named.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(named.status().message(), HasSubstr("volume id \"pvc-1\""));
  auto req = Request(Vol("a"), "team-a");
  req.key_name_template = "shared-kek";  // No ${namespace}: tenants would share.
  EXPECT_EQ(p->CreateVolumeKey(req).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LocalKeyProviderTest, KeyNameTemplateIsApplied) {
  auto p = OpenOrDie();
  auto req = Request(Vol("a"), "team-a");
  req.key_name_template = "prod-${namespace}-kek";
  auto rec = p->CreateVolumeKey(req);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->key_name, "prod-team-a-kek");
  EXPECT_TRUE(fs::exists(dir_ + "/keks/prod-team-a-kek.v1.key"));
  EXPECT_TRUE(p->UnwrapVolumeKey(Vol("a")).ok());
}

TEST_F(LocalKeyProviderTest, RecordMovedToAnotherVolumeOrTenantFailsToUnwrap) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("b"), "team-a")).ok());
  // Copy sv-a's wrapped key into sv-b's record: the AAD names sv-b.
  std::string a = ReadFile(dir_ + "/volumes/" + Vol("a") + ".json");
  auto ja = nlohmann::json::parse(a);
  std::string b = ReadFile(dir_ + "/volumes/" + Vol("b") + ".json");
  auto jb = nlohmann::json::parse(b);
  jb["wrapped_dek"] = ja["wrapped_dek"];
  std::ofstream(dir_ + "/volumes/" + Vol("b") + ".json") << jb.dump();
  auto dek = p->UnwrapVolumeKey(Vol("b"));
  EXPECT_EQ(dek.status().code(), absl::StatusCode::kDataLoss);
  // Re-label a record with another tenant.
  ja["tenant"] = "team-b";
  ja["key_name"] = "sealvol-team-a";
  std::ofstream(dir_ + "/volumes/" + Vol("a") + ".json") << ja.dump();
  EXPECT_EQ(p->UnwrapVolumeKey(Vol("a")).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(LocalKeyProviderTest, FlippedWrappedByteIsDataLoss) {
  auto p = OpenOrDie();
  auto rec = p->CreateVolumeKey(Request(Vol("a"), "team-a"));
  ASSERT_TRUE(rec.ok());
  auto j = nlohmann::json::parse(ReadFile(dir_ + "/volumes/" + Vol("a") + ".json"));
  std::string w = j["wrapped_dek"];
  const size_t pos = std::string("local:v1:").size() + 20;
  w[pos] = w[pos] == 'A' ? 'B' : 'A';
  j["wrapped_dek"] = w;
  std::ofstream(dir_ + "/volumes/" + Vol("a") + ".json") << j.dump();
  EXPECT_EQ(p->UnwrapVolumeKey(Vol("a")).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(LocalKeyProviderTest, MalformedRecordGivesDataLossNamingTheFile) {
  auto p = OpenOrDie();
  const std::string id = Vol("x");
  std::ofstream(dir_ + "/volumes/" + id + ".json")
      << "{\"volume_id\": \"" << id << "\", ";
  auto rec = p->GetVolume(id);
  EXPECT_EQ(rec.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(rec.status().message(), HasSubstr(id + ".json"));
  std::ofstream(dir_ + "/volumes/" + id + ".json")
      << R"({"volume_id": ")" << id << R"(", "key_version": "one"})";
  rec = p->GetVolume(id);
  EXPECT_EQ(rec.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(LocalKeyProviderTest, UpdateChangesOnlyMutableFields) {
  auto p = OpenOrDie();
  auto rec = p->CreateVolumeKey(Request(Vol("a"), "team-a"));
  ASSERT_TRUE(rec.ok());
  VolumeRecord update = *rec;
  update.capacity_bytes = 2ull << 30;
  update.node = "node-1";
  update.parameters["k"] = "v";
  update.tenant = "team-evil";
  update.wrapped_dek = "local:v1:AAAA";
  ASSERT_TRUE(p->UpdateVolume(update).ok());
  auto got = p->GetVolume(Vol("a"));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->capacity_bytes, 2ull << 30);
  EXPECT_EQ(got->node, "node-1");
  EXPECT_EQ(got->parameters.at("k"), "v");
  EXPECT_EQ(got->tenant, "team-a");
  EXPECT_EQ(got->wrapped_dek, rec->wrapped_dek);
  EXPECT_TRUE(p->UnwrapVolumeKey(Vol("a")).ok());
}

TEST_F(LocalKeyProviderTest, FormatClaimIsSetOnceAndSurvivesUpdates) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  EXPECT_TRUE(p->GetVolume(Vol("a"))->format_id.empty());
  const std::string first = "0123456789abcdef0123456789abcdef";
  auto claimed = p->ClaimFormat(Vol("a"), {first, "node-1", 1700000000});
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_EQ(claimed->format_id, first);
  // A second claim leaves the first in place and returns it.
  auto again = p->ClaimFormat(
      Vol("a"), {"fedcba9876543210fedcba9876543210", "node-2", 1800000000});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->format_id, first);
  EXPECT_EQ(again->formatted_node, "node-1");
  // UpdateVolume does not touch the claim; another process sees it.
  VolumeRecord update = *again;
  update.format_id.clear();
  update.capacity_bytes = 4ull << 30;
  ASSERT_TRUE(p->UpdateVolume(update).ok());
  auto got = OpenOrDie()->GetVolume(Vol("a"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->format_id, first);
  EXPECT_EQ(got->formatted_node, "node-1");
  EXPECT_EQ(got->formatted_unix, 1700000000);
  EXPECT_EQ(got->capacity_bytes, 4ull << 30);
  EXPECT_EQ(p->ClaimFormat(Vol("a"), {"0123", "node-1", 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->ClaimFormat(Vol("none"), {first, "node-1", 1}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(LocalKeyProviderTest, ConcurrentFormatClaimsHaveOneWinner) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(std::string(31, 'a') + char('0' + i));
  std::vector<std::string> seen(ids.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ids.size(); ++i) {
    threads.emplace_back([&, i] {
      auto other = LocalKeyProvider::Open(dir_);  // One per "process".
      if (!other.ok()) return;
      auto r = (*other)->ClaimFormat(Vol("a"), {ids[i], "node-1", 1});
      if (r.ok()) seen[i] = r->format_id;
    });
  }
  for (auto& t : threads) t.join();
  const std::string winner = p->GetVolume(Vol("a"))->format_id;
  EXPECT_NE(std::find(ids.begin(), ids.end(), winner), ids.end());
  for (const std::string& s : seen) EXPECT_EQ(s, winner);
}

TEST_F(LocalKeyProviderTest, RecordWithoutFormatFieldsReadsAsNeverFormatted) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  const std::string path = dir_ + "/volumes/" + Vol("a") + ".json";
  auto json = nlohmann::json::parse(ReadFile(path));
  ASSERT_TRUE(json.contains("format_id"));
  json.erase("format_id");
  json.erase("formatted_node");
  json.erase("formatted_unix");
  std::ofstream(path, std::ios::trunc) << json.dump(2);
  auto old = p->GetVolume(Vol("a"));
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_TRUE(old->format_id.empty());
  EXPECT_EQ(old->formatted_unix, 0);
  EXPECT_TRUE(p->UnwrapVolumeKey(Vol("a")).ok());
  // A malformed format id is DataLoss naming the field.
  json["format_id"] = "not-hex";
  std::ofstream(path, std::ios::trunc) << json.dump(2);
  auto bad = p->GetVolume(Vol("a"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(bad.status().message(), HasSubstr("format_id"));
}

TEST_F(LocalKeyProviderTest, StateCommitsNeverMoveTheEpochBack) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  ExpectStateCommitRules(*p, Vol("a"));
  // Another process reads the same state.
  auto other = OpenOrDie()->GetVolume(Vol("a"));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(*other->state, (CommittedState{3, RootOf('9'), true}));
}

TEST_F(LocalKeyProviderTest, ConcurrentStateCommitsEndAtTheHighestEpoch) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  std::vector<std::thread> threads;
  for (uint64_t epoch = 1; epoch <= 8; ++epoch) {
    threads.emplace_back([&, epoch] {
      auto other = LocalKeyProvider::Open(dir_);  // One per "process".
      if (!other.ok()) return;
      (void)(*other)->CommitState(
          Vol("a"), {CommittedState{epoch, RootOf('a'), true}, "node-1", 1});
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(p->GetVolume(Vol("a"))->state->epoch, 8u);
}

TEST_F(LocalKeyProviderTest, StateFieldsAreValidatedByName) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  ASSERT_TRUE(p->CommitState(Vol("a"), {CommittedState{4, RootOf('b'), false},
                                      "node-1", 1})
                  .ok());
  const std::string path = dir_ + "/volumes/" + Vol("a") + ".json";
  const auto good = nlohmann::json::parse(ReadFile(path));
  EXPECT_EQ(good["state_epoch"], 4);
  EXPECT_EQ(good["state_root"], RootOf('b'));
  EXPECT_EQ(good["state_open"], false);
  auto expect_bad = [&](nlohmann::json json, const std::string& field) {
    std::ofstream(path, std::ios::trunc) << json.dump(2);
    auto bad = p->GetVolume(Vol("a"));
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << field;
    EXPECT_THAT(bad.status().message(), HasSubstr(field));
  };
  nlohmann::json j = good;
  j["state_root"] = "xyz";
  expect_bad(j, "state_root");
  j = good;
  j["state_epoch"] = -1;
  expect_bad(j, "state_epoch");
  j = good;
  j["state_open"] = "yes";
  expect_bad(j, "state_open");
  j = good;
  j.erase("state_root");
  expect_bad(j, "state_root");
  // A record from before state commitments has none (not checked).
  j = good;
  j.erase("state_epoch");
  j.erase("state_root");
  j.erase("state_open");
  std::ofstream(path, std::ios::trunc) << j.dump(2);
  auto old = p->GetVolume(Vol("a"));
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_FALSE(old->state.has_value());
}

TEST_F(LocalKeyProviderTest, SnapshotsAndClonesGetFreshKeys) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("src"), "team-a")).ok());
  ExpectCopiesGetFreshKeys(*p, "team-a", Vol("src"), Vol("snap"), Vol("clone"));
  // Another process reads the same copy records.
  auto other = OpenOrDie()->GetVolume(Vol("snap"));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->kind, RecordKind::kSnapshot);
  EXPECT_EQ(other->source_volume_id, Vol("src"));
  // The JSON form names the kind and the copy job.
  const auto json = nlohmann::json::parse(
      ReadFile(dir_ + "/volumes/" + Vol("snap") + ".json"));
  EXPECT_EQ(json["kind"], "snapshot");
  EXPECT_EQ(json["source_volume_id"], Vol("src"));
  EXPECT_EQ(json["copy_state"], "pending");
  const auto plain = nlohmann::json::parse(
      ReadFile(dir_ + "/volumes/" + Vol("src") + ".json"));
  EXPECT_EQ(plain["kind"], "volume");
  EXPECT_FALSE(plain.contains("copy_state"));
  EXPECT_FALSE(plain.contains("source_volume_id"));
}

TEST_F(LocalKeyProviderTest, CopyStatesOnlyMoveForward) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("src"), "team-a")).ok());
  ExpectCopyStatesOnlyMoveForward(*p, "team-a", Vol("src"), Vol("copy"),
                                  Vol("other"));
}

TEST_F(LocalKeyProviderTest, ConcurrentCopyReportsNeverMoveBack) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("src"), "team-a")).ok());
  ASSERT_TRUE(p->CreateVolumeKey(CopyRequest(Vol("copy"), "team-a", Vol("src"),
                                             RecordKind::kSnapshot,
                                             CopyState::kPending))
                  .ok());
  // Progress reports and the cut race from several "processes": whatever
  // order they land in, the end is cut with the highest bytes_done.
  std::vector<std::thread> threads;
  for (uint64_t i = 1; i <= 8; ++i) {
    threads.emplace_back([&, i] {
      auto other = LocalKeyProvider::Open(dir_);
      if (!other.ok()) return;
      const CopyState state = i == 4 ? CopyState::kCut : CopyState::kPending;
      (void)(*other)->UpdateCopy(Vol("copy"), {state, i << 20, 16 << 20, "", 1});
    });
  }
  for (auto& t : threads) t.join();
  auto end = p->GetVolume(Vol("copy"));
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->copy.state, CopyState::kCut);
  EXPECT_GE(end->copy.bytes_done, 4u << 20);
}

TEST_F(LocalKeyProviderTest, RotationRewrapsSnapshotsAndShredsAreIndependent) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("src"), "team-a")).ok());
  ExpectRotationRewrapsSnapshotsAndShredsAreIndependent(
      *p, "team-a", Vol("src"), Vol("snap"), Vol("snap2"));
  // The rotation deleted the KEK version the snapshot was first wrapped
  // under: nothing still needs it.
  auto versions = p->KekVersions("sealvol-team-a");
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(*versions, std::vector<int64_t>({2}));
}

TEST_F(LocalKeyProviderTest, RecordFromBeforeSnapshotsReadsAsAVolume) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  const std::string path = dir_ + "/volumes/" + Vol("a") + ".json";
  auto json = nlohmann::json::parse(ReadFile(path));
  ASSERT_TRUE(json.contains("kind"));
  json.erase("kind");
  std::ofstream(path, std::ios::trunc) << json.dump(2);
  auto old = p->GetVolume(Vol("a"));
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->kind, RecordKind::kVolume);
  EXPECT_TRUE(old->source_volume_id.empty());
  EXPECT_EQ(old->copy, CopyJob{});
  EXPECT_TRUE(p->UnwrapVolumeKey(Vol("a")).ok());
  auto listed = p->ListVolumes("team-a");
  ASSERT_TRUE(listed.ok() && listed->size() == 1u);
  EXPECT_EQ((*listed)[0].kind, RecordKind::kVolume);

  // Malformed copy fields are DataLoss naming the field.
  auto expect_bad = [&](nlohmann::json j, const std::string& field) {
    std::ofstream(path, std::ios::trunc) << j.dump(2);
    auto bad = p->GetVolume(Vol("a"));
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << field;
    EXPECT_THAT(bad.status().message(), HasSubstr(field));
  };
  nlohmann::json j = json;
  j["kind"] = "bucket";
  expect_bad(j, "\"kind\"");
  j = json;
  j["kind"] = "snapshot";  // A snapshot must name its source.
  expect_bad(j, "source_volume_id");
  j = json;
  j["source_volume_id"] = "../../etc";
  expect_bad(j, "source_volume_id");
  j = json;
  j["copy_state"] = "done";
  expect_bad(j, "copy_state");
  j = json;
  j["copy_state"] = "cut";
  j["copy_bytes_done"] = -5;
  expect_bad(j, "copy_bytes_done");
}

TEST_F(LocalKeyProviderTest, ListFiltersByTenantAndSortsById) {
  auto p = OpenOrDie();
  for (const std::string& id : {Vol("c"), Vol("a"), Vol("b")}) {
    ASSERT_TRUE(p->CreateVolumeKey(Request(id, "team-a")).ok());
  }
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("0"), "team-b")).ok());
  auto all = p->ListVolumes("");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[0].volume_id, Vol("0"));
  auto a = p->ListVolumes("team-a");
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->size(), 3u);
  EXPECT_EQ((*a)[0].volume_id, Vol("a"));
  EXPECT_EQ((*a)[2].volume_id, Vol("c"));
}

TEST_F(LocalKeyProviderTest, DestroyShredsTheOnlyWrappedCopy) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  ASSERT_TRUE(p->DestroyVolumeKey(Vol("a")).ok());
  EXPECT_FALSE(fs::exists(dir_ + "/volumes/" + Vol("a") + ".json"));
  auto dek = p->UnwrapVolumeKey(Vol("a"));
  EXPECT_EQ(dek.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(dek.status().message(), HasSubstr("destroyed"));
  EXPECT_EQ(p->DestroyVolumeKey(Vol("a")).code(), absl::StatusCode::kNotFound);
  // Nothing else in the directory holds the wrapped key.
  for (const auto& e : fs::recursive_directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(Vol("a")), std::string::npos)
        << e.path();
  }
}

// The node's reaper deletes the image of a volume the KMS says is gone, so a
// key store that has gone missing must never answer "not found".
TEST_F(LocalKeyProviderTest, MissingStoreDirectoryIsUnavailableNotDestroyed) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  // The volume registry folder alone is gone.
  fs::rename(dir_ + "/volumes", root_.file("volumes.moved"));
  for (auto s : {p->GetVolume(Vol("a")).status(),
                 p->UnwrapVolumeKey(Vol("a")).status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(s.message(), HasSubstr("missing"));
  }
  fs::rename(root_.file("volumes.moved"), dir_ + "/volumes");
  // The whole store is gone (an unmounted volume, say).
  fs::rename(dir_, root_.file("kms.moved"));
  for (auto s : {p->GetVolume(Vol("a")).status(),
                 p->UnwrapVolumeKey(Vol("a")).status(),
                 p->DestroyVolumeKey(Vol("a"))}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(s.message(), HasSubstr("missing"));
  }
  fs::rename(root_.file("kms.moved"), dir_);
  // Back in place: the key is still there, and a truly absent record is
  // still "not found".
  EXPECT_TRUE(p->UnwrapVolumeKey(Vol("a")).ok());
  EXPECT_EQ(p->GetVolume(Vol("b")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(LocalKeyProviderTest, RotationRewrapsAllTenantVolumesAndDropsOldKek) {
  auto p = OpenOrDie();
  std::map<std::string, std::string> before;
  for (const std::string& id : {Vol("a"), Vol("b"), Vol("c")}) {
    ASSERT_TRUE(p->CreateVolumeKey(Request(id, "team-a")).ok());
    before[id] = Hex(*p->UnwrapVolumeKey(id));
  }
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("other"), "team-b")).ok());
  auto other_before = p->GetVolume(Vol("other"));
  ASSERT_TRUE(other_before.ok());

  auto result = p->RotateTenantKey("team-a");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->key_name, "sealvol-team-a");
  EXPECT_EQ(result->new_key_version, 2);
  EXPECT_EQ(result->volumes_rewrapped, 3);
  for (const auto& [id, hex] : before) {
    auto rec = p->GetVolume(id);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ(rec->key_version, 2);
    EXPECT_THAT(rec->wrapped_dek, ::testing::StartsWith("local:v2:"));
    EXPECT_EQ(Hex(*p->UnwrapVolumeKey(id)), hex) << id;
  }
  auto versions = p->KekVersions("sealvol-team-a");
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(*versions, std::vector<int64_t>{2});
  // Another tenant is untouched.
  auto other_after = p->GetVolume(Vol("other"));
  ASSERT_TRUE(other_after.ok());
  EXPECT_EQ(other_after->wrapped_dek, other_before->wrapped_dek);
  EXPECT_EQ(*p->KekVersions("sealvol-team-b"), std::vector<int64_t>{1});
  // New volumes use the new version.
  auto fresh = p->CreateVolumeKey(Request(Vol("d"), "team-a"));
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->key_version, 2);
}

TEST_F(LocalKeyProviderTest, OldRecordCopyDoesNotUnwrapAfterRotation) {
  auto p = OpenOrDie();
  ASSERT_TRUE(p->CreateVolumeKey(Request(Vol("a"), "team-a")).ok());
  const std::string old_copy = ReadFile(dir_ + "/volumes/" + Vol("a") + ".json");
  ASSERT_TRUE(p->RotateTenantKey("team-a").ok());
  std::ofstream(dir_ + "/volumes/" + Vol("a") + ".json") << old_copy;
  auto dek = p->UnwrapVolumeKey(Vol("a"));
  EXPECT_EQ(dek.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(dek.status().message(), HasSubstr("version 1 is missing"));
}

TEST_F(LocalKeyProviderTest, ConcurrentCreatesAndRotationsKeepEveryKey) {
  auto p = OpenOrDie();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const std::string id = Vol(std::to_string(t) + "-" + std::to_string(i));
        EXPECT_TRUE(p->CreateVolumeKey(Request(id, "team-a")).ok());
        if (i % 3 == 0) {
          EXPECT_TRUE(p->RotateTenantKey("team-a").ok());
        }
        EXPECT_TRUE(p->UnwrapVolumeKey(id).ok()) << id;
      }
    });
  }
  for (auto& t : threads) t.join();
  auto all = p->ListVolumes("team-a");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 40u);
  for (const auto& r : *all) EXPECT_TRUE(p->UnwrapVolumeKey(r.volume_id).ok());
}

// A child process creates, rotates and destroys keys in a loop and reports
// each completed step on a pipe; the parent kills it with SIGKILL at a
// random moment and checks that the directory is consistent: every
// confirmed volume is there and unwraps to the DEK the child saw, every
// record present unwraps, no destroyed volume came back.
TEST_F(LocalKeyProviderTest, SurvivesKill9AtRandomPoints) {
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  ASSERT_TRUE(OpenOrDie() != nullptr);
  int next_id = 0;
  std::map<std::string, std::string> confirmed;  // id -> DEK hex.
  std::set<std::string> destroyed, maybe_destroyed;
  for (int round = 0; round < 25; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const int first = next_id;
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      auto p = LocalKeyProvider::Open(dir_);
      if (!p.ok()) ::_exit(3);
      for (int i = first;; ++i) {
        const std::string id = Vol(std::to_string(i));
        if (!(*p)->CreateVolumeKey(Request(id, "team-a")).ok()) ::_exit(4);
        auto dek = (*p)->UnwrapVolumeKey(id);
        if (!dek.ok()) ::_exit(5);
        std::string line =
            "C " + id + " " + Hex(*dek) + " " + std::to_string(i) + "\n";
        if (i % 3 == 0) {
          if (!(*p)->RotateTenantKey("team-a").ok()) ::_exit(6);
        }
        if (i % 4 == 1) {
          const std::string victim = Vol(std::to_string(i - 1));
          line += "D? " + victim + "\n";
          if (::write(fds[1], line.data(), line.size()) < 0) ::_exit(7);
          line.clear();
          absl::Status s = (*p)->DestroyVolumeKey(victim);
          if (!s.ok() && !absl::IsNotFound(s)) ::_exit(8);
          line = "D " + victim + "\n";
        }
        if (::write(fds[1], line.data(), line.size()) < 0) ::_exit(7);
      }
    }
    ::close(fds[1]);
    // Let the child confirm a few steps (so every round makes progress
    // however loaded the machine is), then kill it a random moment later.
    std::string out;
    char buf[4096];
    ssize_t n;
    const int steps = std::uniform_int_distribution<int>(1, 4)(rng);
    while (std::count(out.begin(), out.end(), '\n') < steps &&
           (n = ::read(fds[0], buf, sizeof(buf))) > 0) {
      out.append(buf, n);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(
        std::uniform_int_distribution<int>(0, 20000)(rng)));
    ::kill(pid, SIGKILL);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited with "
                                      << WEXITSTATUS(wstatus);
    while ((n = ::read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, n);
    ::close(fds[0]);
    std::istringstream lines(out);
    std::string line;
    int max_seen = first - 1;
    while (std::getline(lines, line)) {
      std::istringstream f(line);
      std::string op, id, hex;
      int number = -1;
      f >> op >> id >> hex >> number;
      if (op == "C" && number >= 0) {
        confirmed[id] = hex;
        max_seen = std::max(max_seen, number);
      } else if (op == "D?") {
        maybe_destroyed.insert(id);
      } else if (op == "D") {
        destroyed.insert(id);
        confirmed.erase(id);
      }
    }
    // The child may have created one more volume than it confirmed.
    next_id = max_seen + 2;

    auto p = OpenOrDie();
    ASSERT_TRUE(p != nullptr);
    for (const auto& [id, hex] : confirmed) {
      auto dek = p->UnwrapVolumeKey(id);
      if (maybe_destroyed.count(id) && absl::IsNotFound(dek.status())) {
        continue;
      }
      ASSERT_TRUE(dek.ok()) << "round " << round << " " << id << ": "
                            << dek.status();
      EXPECT_EQ(Hex(*dek), hex) << id;
    }
    for (const auto& id : destroyed) {
      EXPECT_TRUE(absl::IsNotFound(p->GetVolume(id).status())) << id;
    }
    auto all = p->ListVolumes("");
    ASSERT_TRUE(all.ok()) << all.status();
    for (const auto& r : *all) {
      EXPECT_TRUE(p->UnwrapVolumeKey(r.volume_id).ok()) << r.volume_id;
    }
    // Open removed the leftovers of interrupted writes.
    for (const char* sub : {"/keks", "/volumes"}) {
      for (const auto& e : fs::directory_iterator(dir_ + sub)) {
        EXPECT_NE(e.path().filename().string().rfind(".tmp-", 0), 0u)
            << e.path();
      }
    }
  }
  EXPECT_GT(confirmed.size() + destroyed.size(), 25u)
      << "the child made too little progress for the test to mean much";
}

}  // namespace
}  // namespace sealvol::kms
