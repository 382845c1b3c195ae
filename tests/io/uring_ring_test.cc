#include "io/uring_ring.h"

#include <dirent.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sealvol::io {
namespace {

using ::testing::HasSubstr;

int OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  int n = 0;
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n;
}

TEST(UringRingTest, RequiredOperationsTheKernelHasPass) {
  const UringOp ops[] = {{IORING_OP_READ, "IORING_OP_READ"},
                         {IORING_OP_WRITE, "IORING_OP_WRITE"}};
  EXPECT_TRUE(RequireUringOps(ops).ok());
  // The second check reuses the first probe's answer.
  EXPECT_TRUE(RequireUringOps(ops).ok());
}

TEST(UringRingTest, MissingOperationsAreNamed) {
  const UringOp ops[] = {{IORING_OP_READ, "IORING_OP_READ"},
                         {255, "OP_255"},
                         {-1, "OP_NEGATIVE"}};
  const absl::Status status = RequireUringOps(ops);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("OP_255, OP_NEGATIVE"));
  EXPECT_THAT(status.message(), ::testing::Not(HasSubstr("IORING_OP_READ")));
}

TEST(UringRingTest, InitFailureNamesTheUser) {
  UringRing ring;
  // Zero entries is refused by io_uring_setup.
  const absl::Status status = ring.Init(0, 0, "test ring");
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("test ring"));
}

TEST(UringRingTest, DestructorReleasesTheRing) {
  {
    UringRing warm;  // The probe and any one-time setup happen here.
    ASSERT_TRUE(warm.Init(8, 0, "warm").ok());
  }
  const int before = OpenFds();
  for (int i = 0; i < 16; ++i) {
    UringRing ring;
    ASSERT_TRUE(ring.Init(8, 0, "ring").ok());
    io_uring_sqe* sqe = io_uring_get_sqe(ring.get());
    ASSERT_NE(sqe, nullptr);
    io_uring_prep_nop(sqe);
    ASSERT_EQ(io_uring_submit_and_wait(ring.get(), 1), 1);
  }
  EXPECT_EQ(OpenFds(), before);
}

}  // namespace
}  // namespace sealvol::io
