// base/durable_file: contents round-trip, and crash safety checked against a
// worst-case model of what survives a crash (tests/fakes/durable_step_log.h):
// at every crash point a replaced file is the old or the new one, never
// empty, and once the call returned it is the new one.
#include "base/durable_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/fakes/durable_step_log.h"
#include "tests/support/temp_dir.h"

namespace sealvol {
namespace {

using testing::DurableStepLog;
using testing::OutcomesString;
using Outcome = DurableStepLog::Outcome;

class DurableFileTest : public ::testing::Test {
 protected:
  // Every crash point of `log` leaves `path` in one of `allowed`, and the
  // end leaves exactly `final`.
  static void ExpectCrashSafe(const DurableStepLog& log,
                              const std::string& path,
                              std::set<Outcome> allowed, Outcome final) {
    for (size_t n = 0; n <= log.size(); ++n) {
      const auto outcomes = log.AfterCrash(path, n);
      for (const Outcome o : outcomes) {
        EXPECT_TRUE(allowed.count(o))
            << "a crash after " << n << " of " << log.size()
            << " steps may leave " << path << " as "
            << OutcomesString(outcomes);
      }
    }
    EXPECT_EQ(log.AfterCrash(path, log.size()), std::set<Outcome>{final})
        << "after the call returned, a crash may leave " << path << " as "
        << OutcomesString(log.AfterCrash(path, log.size()));
  }

  sealvol::testing::TempDir dir_{"sealvol-durable"};
};

TEST_F(DurableFileTest, ReplaceIsOldOrNewAtEveryCrashPoint) {
  ASSERT_TRUE(WriteFileAtomically(dir_.path(), "f", std::string_view("old"), 0600).ok());
  DurableStepLog log;
  ASSERT_TRUE(WriteFileAtomically(dir_.path(), "f", std::string_view("new"), 0600).ok());
  ASSERT_GT(log.size(), 0u);
  ExpectCrashSafe(log, dir_.file("f"), {Outcome::kOld, Outcome::kNew},
                  Outcome::kNew);
  auto text = ReadSmallFile(dir_.file("f"), 16);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "new");
}

TEST_F(DurableFileTest, CreateIsAbsentOrCompleteAtEveryCrashPoint) {
  DurableStepLog log;
  const std::string content = "first";
  ASSERT_TRUE(CreateFileAtomically(
                  dir_.path(), "c",
                  {reinterpret_cast<const uint8_t*>(content.data()),
                   content.size()},
                  0600)
                  .ok());
  ExpectCrashSafe(log, dir_.file("c"), {Outcome::kOld, Outcome::kNew},
                  Outcome::kNew);
  EXPECT_TRUE(absl::IsAlreadyExists(
      CreateFileAtomically(dir_.path(), "c", {}, 0600)));
}

TEST_F(DurableFileTest, RemovalIsDurable) {
  ASSERT_TRUE(WriteFileAtomically(dir_.path(), "r", std::string_view("x"), 0600).ok());
  DurableStepLog log;
  ASSERT_TRUE(RemoveFileDurably(dir_.path(), "r").ok());
  ExpectCrashSafe(log, dir_.file("r"), {Outcome::kOld, Outcome::kGone},
                  Outcome::kGone);
  EXPECT_TRUE(absl::IsNotFound(RemoveFileDurably(dir_.path(), "r")));
}

// The model itself: a write whose data is never fsynced, or whose rename no
// directory fsync follows, is caught.
TEST_F(DurableFileTest, ModelCatchesMissingFsyncs) {
  DurableStepLog log;
  const std::string tmp = dir_.file(".tmp-x"), path = dir_.file("x");
  log.Observe({DurableStep::Kind::kWrite, tmp, ""});
  log.Observe({DurableStep::Kind::kRename, tmp, path});
  log.Observe({DurableStep::Kind::kSyncDir, dir_.path(), ""});
  EXPECT_EQ(log.AfterCrash(path, 3),
            (std::set<Outcome>{Outcome::kNew, Outcome::kEmpty}));
  DurableStepLog no_dir_sync;
  no_dir_sync.Observe({DurableStep::Kind::kWrite, tmp, ""});
  no_dir_sync.Observe({DurableStep::Kind::kSyncFile, tmp, ""});
  no_dir_sync.Observe({DurableStep::Kind::kRename, tmp, path});
  EXPECT_EQ(no_dir_sync.AfterCrash(path, 3),
            (std::set<Outcome>{Outcome::kOld, Outcome::kNew}));
}

// A large file written in place by another layer (an image copy), then put
// in place of the old one.
TEST_F(DurableFileTest, ReplaceFileIsOldOrNewAtEveryCrashPoint) {
  ASSERT_TRUE(WriteFileAtomically(dir_.path(), "img", std::string_view("old"), 0600).ok());
  const std::string temp = dir_.file("img.upgrade"), path = dir_.file("img");
  std::ofstream(temp) << "new";
  DurableStepLog log;
  // The writer's unsynced write, as the model must see it.
  log.Observe({DurableStep::Kind::kWrite, temp, ""});
  ASSERT_TRUE(ReplaceFileDurably(temp, path).ok());
  ExpectCrashSafe(log, path, {Outcome::kOld, Outcome::kNew}, Outcome::kNew);
  auto text = ReadSmallFile(path, 16);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "new");
  EXPECT_FALSE(std::filesystem::exists(temp));
  const absl::Status missing = ReplaceFileDurably(temp, path);
  EXPECT_TRUE(absl::IsNotFound(missing)) << missing;
}

TEST(ParentDirectoryTest, NamesTheDirectoryOfAPath) {
  EXPECT_EQ(ParentDirectory("/var/lib/sealvol/v1.img"), "/var/lib/sealvol");
  EXPECT_EQ(ParentDirectory("/v1.img"), "/");
  EXPECT_EQ(ParentDirectory("v1.img"), ".");
  EXPECT_EQ(ParentDirectory("state/v1.img"), "state");
}

TEST_F(DurableFileTest, ReadSmallFileRefusesLargerFiles) {
  ASSERT_TRUE(WriteFileAtomically(dir_.path(), "big", std::string(100, 'x'), 0600).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(
      ReadSmallFile(dir_.file("big"), 99).status()));
  EXPECT_TRUE(absl::IsNotFound(ReadSmallFile(dir_.file("none"), 99).status()));
  struct stat st {};
  ASSERT_EQ(::stat(dir_.file("big").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

}  // namespace
}  // namespace sealvol
