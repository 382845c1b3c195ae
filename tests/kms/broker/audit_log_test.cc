#include "kms/broker/audit_log.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/temp_dir.h"

namespace sealvol::broker {
namespace {

namespace fs = std::filesystem;

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (dir_ / "audit.log").string();
  }

  std::unique_ptr<AuditLog> OpenLog(uint64_t max_bytes = 0) {
    auto log = AuditLog::Open({.path = path_, .max_file_bytes = max_bytes});
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? std::move(*log) : nullptr;
  }

  static AuditRecord Record(int i) {
    AuditRecord r;
    r.decision = i % 3 == 0 ? kDecisionRefuse : kDecisionGrant;
    r.reason = i % 3 == 0 ? "namespace_mismatch" : "granted";
    r.volume = absl::StrCat("sv-", i);
    r.tenant = "team-a";
    r.namespace_name = "team-a";
    r.pod = absl::StrCat("pod-", i);
    r.pod_uid = absl::StrCat("uid-", i);
    r.service_account = "trainer";
    r.node = "node-1";
    r.token_id = absl::StrCat("jti-", i);
    return r;
  }

  void WriteRecords(int n) {
    auto log = OpenLog();
    for (int i = 0; i < n; ++i) ASSERT_TRUE(log->Append(Record(i)).ok());
  }

  std::vector<std::string> Lines(const std::string& file) const {
    std::ifstream in(file);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }
  void WriteLines(const std::string& file, const std::vector<std::string>& lines) {
    std::ofstream out(file, std::ios::trunc);
    for (const auto& l : lines) out << l << "\n";
  }

  // The verify error for `files`, or "" when the chain holds.
  std::string VerifyError(const std::vector<std::string>& files,
                          bool partial = false) {
    auto result = VerifyAuditFiles(files, {.allow_partial_start = partial});
    if (result.ok()) return "";
    EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
    return std::string(result.status().message());
  }

  sealvol::testing::TempDir tmp_{"sealvol-audit"};
  const fs::path dir_{tmp_.path()};
  std::string path_;
};

TEST_F(AuditLogTest, WritesOneJsonLinePerRecordWithStableKeys) {
  WriteRecords(3);
  auto lines = Lines(path_);
  ASSERT_EQ(lines.size(), 3u);
  auto doc = nlohmann::ordered_json::parse(lines[1]);
  std::vector<std::string> keys;
  for (auto it = doc.begin(); it != doc.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "time", "seq", "decision", "reason", "volume", "tenant",
                      "namespace", "pod", "pod_uid", "service_account", "node",
                      "token_id", "attestation", "key_version", "message", "prev"}));
  EXPECT_EQ(doc["seq"], 2);
  EXPECT_EQ(doc["decision"], "grant");
  EXPECT_EQ(doc["pod_uid"], "uid-1");
  // RFC 3339 UTC with milliseconds.
  const std::string time = doc["time"];
  EXPECT_EQ(time.size(), 24u) << time;
  EXPECT_EQ(time.back(), 'Z');
  auto result = VerifyAuditFiles({path_}, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->records, 3);
  EXPECT_EQ(result->last_seq, 3);
}

TEST_F(AuditLogTest, EscapesHostileFieldsAndStaysOneLine) {
  {
    auto log = OpenLog();
    AuditRecord r = Record(1);
    r.pod = "evil\"pod\n{\"decision\":\"grant\"}\xff\xfe";
    r.message = std::string(1000, 'x');
    ASSERT_TRUE(log->Append(r).ok());
  }
  auto lines = Lines(path_);
  ASSERT_EQ(lines.size(), 1u);
  auto doc = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(doc["message"].get<std::string>().size(), 256u);
  EXPECT_EQ(VerifyError({path_}), "");
}

TEST_F(AuditLogTest, VerifyDetectsAnEditedRecord) {
  WriteRecords(5);
  auto lines = Lines(path_);
  const size_t pos = lines[2].find("\"grant\"");
  ASSERT_NE(pos, std::string::npos);
  lines[2].replace(pos, 7, "\"deny!\"");
  WriteLines(path_, lines);
  // Line 3 was edited; line 4's prev no longer matches it.
  EXPECT_NE(VerifyError({path_}).find("audit.log:4:"), std::string::npos)
      << VerifyError({path_});
}

TEST_F(AuditLogTest, VerifyDetectsADeletedRecord) {
  WriteRecords(5);
  auto lines = Lines(path_);
  lines.erase(lines.begin() + 1);
  WriteLines(path_, lines);
  EXPECT_NE(VerifyError({path_}).find("audit.log:2:"), std::string::npos)
      << VerifyError({path_});
}

TEST_F(AuditLogTest, VerifyDetectsAnInsertedRecord) {
  WriteRecords(5);
  auto lines = Lines(path_);
  // A replayed old record at line 3 is caught right there.
  auto replayed = lines;
  replayed.insert(replayed.begin() + 2, lines[0]);
  WriteLines(path_, replayed);
  EXPECT_NE(VerifyError({path_}).find("audit.log:3:"), std::string::npos)
      << VerifyError({path_});
  // A forged record that carries the right seq and prev for its slot looks
  // like a genuine line 3; the genuine record after it no longer chains.
  auto forged = nlohmann::ordered_json::parse(lines[2]);
  forged["pod"] = "intruder";
  lines.insert(lines.begin() + 2, forged.dump());
  WriteLines(path_, lines);
  EXPECT_NE(VerifyError({path_}).find("audit.log:4:"), std::string::npos)
      << VerifyError({path_});
}

TEST_F(AuditLogTest, VerifyDetectsReorderedRecords) {
  WriteRecords(5);
  auto lines = Lines(path_);
  std::swap(lines[1], lines[2]);
  WriteLines(path_, lines);
  EXPECT_NE(VerifyError({path_}).find("audit.log:2:"), std::string::npos)
      << VerifyError({path_});
}

TEST_F(AuditLogTest, VerifyDetectsATruncatedStartUnlessPartialIsAllowed) {
  WriteRecords(5);
  auto lines = Lines(path_);
  lines.erase(lines.begin());
  WriteLines(path_, lines);
  EXPECT_NE(VerifyError({path_}).find("audit.log:1:"), std::string::npos);
  EXPECT_EQ(VerifyError({path_}, /*partial=*/true), "");
}

TEST_F(AuditLogTest, ReopenContinuesTheChain) {
  WriteRecords(3);
  WriteRecords(2);
  EXPECT_EQ(Lines(path_).size(), 5u);
  EXPECT_EQ(VerifyError({path_}), "");
}

TEST_F(AuditLogTest, ReopenCutsOffATornLastRecord) {
  WriteRecords(3);
  {
    std::ofstream out(path_, std::ios::app);
    out << R"({"time":"2026-01-01T00:00:00.000Z","seq":4,"decis)";
  }
  EXPECT_NE(VerifyError({path_}).find("torn"), std::string::npos);
  WriteRecords(1);
  EXPECT_EQ(Lines(path_).size(), 4u);
  EXPECT_EQ(VerifyError({path_}), "");
}

TEST_F(AuditLogTest, RotationKeepsTheChainAcrossFiles) {
  auto log = OpenLog();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(log->Append(Record(i)).ok());
  ASSERT_TRUE(log->Rotate().ok());
  for (int i = 3; i < 5; ++i) ASSERT_TRUE(log->Append(Record(i)).ok());
  ASSERT_TRUE(log->Rotate().ok());
  ASSERT_TRUE(log->Append(Record(5)).ok());
  log.reset();
  // A restart after rotation continues from the rotated file.
  const std::string first = path_ + ".00000000000000000003";
  const std::string second = path_ + ".00000000000000000005";
  ASSERT_TRUE(fs::exists(first));
  ASSERT_TRUE(fs::exists(second));
  EXPECT_EQ(VerifyError({first, second, path_}), "");
  // Out of order, or with a file missing, the chain breaks.
  EXPECT_NE(VerifyError({second, first, path_}), "");
  EXPECT_NE(VerifyError({first, path_}).find("audit.log:1:"), std::string::npos)
      << VerifyError({first, path_});
  // The later files alone verify as a partial chain.
  EXPECT_EQ(VerifyError({second, path_}, true), "");
}

TEST_F(AuditLogTest, RestartRightAfterRotationChainsToTheRotatedFile) {
  {
    auto log = OpenLog();
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(log->Append(Record(i)).ok());
    ASSERT_TRUE(log->Rotate().ok());
  }
  WriteRecords(2);
  EXPECT_EQ(VerifyError({path_ + ".00000000000000000003", path_}), "");
}

TEST_F(AuditLogTest, SizeBasedRotationKeepsEveryRecordInOrder) {
  {
    auto log = OpenLog(/*max_bytes=*/2000);
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(log->Append(Record(i)).ok());
  }
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir_)) {
    if (e.path().string() != path_) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 5u);
  files.push_back(path_);
  auto result = VerifyAuditFiles(files, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->records, 40);
}

TEST_F(AuditLogTest, ConcurrentAppendsLoseNoRecord) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 100;
  {
    auto log = OpenLog(/*max_bytes=*/16 * 1024);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          EXPECT_TRUE(log->Append(Record(t * kPerThread + i)).ok());
          if (t == 0 && i % 25 == 0) {
            EXPECT_TRUE(log->Rotate().ok());
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(log->last_seq(), kThreads * kPerThread);
  }
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir_)) {
    if (e.path().string() != path_) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  files.push_back(path_);
  auto result = VerifyAuditFiles(files, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->records, kThreads * kPerThread);
  // Every record is there exactly once.
  std::set<std::string> volumes;
  for (const auto& f : files) {
    for (const auto& line : Lines(f)) {
      volumes.insert(nlohmann::json::parse(line)["volume"].get<std::string>());
    }
  }
  EXPECT_EQ(volumes.size(), static_cast<size_t>(kThreads * kPerThread));
}

}  // namespace
}  // namespace sealvol::broker
