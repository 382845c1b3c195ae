// The runtime record `sealvol open` leaves for `status` and `close` is
// written durably: at every crash point of a write the record is the old or
// the new one, never empty, and the new one once the write returned.
#include "io/frontend/runtime_record.h"

#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "tests/fakes/durable_step_log.h"
#include "tests/support/temp_dir.h"

namespace sealvol::io {
namespace {

using sealvol::testing::DurableStepLog;
using sealvol::testing::OutcomesString;
using Outcome = DurableStepLog::Outcome;

class RuntimeRecordTest : public ::testing::Test {
 protected:
  static RuntimeRecord Record(pid_t pid) {
    RuntimeRecord r;
    r.pid = pid;
    r.volume_id = "sv-00112233445566778899aabbccddeeff";
    r.image = "/images/a.img";
    r.loop_device = "/dev/loop7";
    r.mountpoint = "/mnt/a";
    r.fuse_dir = "/state/fuse/sv-00112233445566778899aabbccddeeff";
    r.transport = "dev";
    r.fs = "ext4";
    r.started_unix = 1700000000;
    return r;
  }

  sealvol::testing::TempDir state_{"sealvol-runtime-record"};
};

TEST_F(RuntimeRecordTest, WriteIsOldOrNewAtEveryCrashPoint) {
  ASSERT_TRUE(WriteRuntimeRecord(state_.path(), Record(100)).ok());
  const std::string path = RuntimeDir(state_.path()) + "/" + Record(0).volume_id + ".json";
  DurableStepLog log;
  ASSERT_TRUE(WriteRuntimeRecord(state_.path(), Record(200)).ok());
  for (size_t n = 0; n <= log.size(); ++n) {
    const auto outcomes = log.AfterCrash(path, n);
    EXPECT_TRUE(outcomes == std::set<Outcome>{Outcome::kOld} ||
                outcomes == std::set<Outcome>{Outcome::kNew} ||
                outcomes == (std::set<Outcome>{Outcome::kOld, Outcome::kNew}))
        << "a crash after " << n << " steps may leave the record "
        << OutcomesString(outcomes);
  }
  EXPECT_EQ(log.AfterCrash(path, log.size()), std::set<Outcome>{Outcome::kNew})
      << "written without fsync of the file and its directory: a crash after "
         "the write returned may leave the record "
      << OutcomesString(log.AfterCrash(path, log.size()));

  auto records = ListRuntimeRecords(state_.path());
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ((*records)[0].pid, 200);
  EXPECT_EQ((*records)[0].mountpoint, "/mnt/a");
}

TEST_F(RuntimeRecordTest, RemovalIsDurableAndIdempotent) {
  ASSERT_TRUE(WriteRuntimeRecord(state_.path(), Record(100)).ok());
  const std::string path = RuntimeDir(state_.path()) + "/" + Record(0).volume_id + ".json";
  DurableStepLog log;
  ASSERT_TRUE(RemoveRuntimeRecord(state_.path(), Record(0).volume_id).ok());
  EXPECT_EQ(log.AfterCrash(path, log.size()), std::set<Outcome>{Outcome::kGone});
  EXPECT_TRUE(RemoveRuntimeRecord(state_.path(), Record(0).volume_id).ok());
  auto records = ListRuntimeRecords(state_.path());
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_TRUE(records->empty());
}

}  // namespace
}  // namespace sealvol::io
