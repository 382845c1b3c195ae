#include "crypto/secret_bytes.h"

#include <sys/mman.h>
#include <sys/prctl.h>

#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/sanitizer.h"

namespace sealvol::crypto {
namespace {

// Reads this process's VmLck (locked memory, kB) from /proc.
long LockedKb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmLck:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// The sanitizer run-times intercept mlock and turn it into a no-op that
// succeeds, so VmLck cannot show the lock in their builds.
using ::sealvol::testing::kUnderSanitizer;

TEST(SecretBytesTest, RandomBytesAreLockedAndDiffer) {
  const long before = LockedKb();
  auto a = SecretBytes::Random(32);
  auto b = SecretBytes::Random(32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(a->Equals(*b));
  if (!kUnderSanitizer) {
    EXPECT_GT(LockedKb(), before);
  }
  unsigned char vec = 0;
  ASSERT_EQ(mincore(a->data() - (reinterpret_cast<uintptr_t>(a->data()) % 4096),
                    4096, &vec),
            0);
  EXPECT_TRUE(vec & 1) << "secret page must be resident";
}

TEST(SecretBytesTest, WipeZeroizesBeforeRelease) {
  std::vector<uint8_t> seen;
  SetSecretReleaseObserverForTesting(
      [&](std::span<const uint8_t> r) { seen.assign(r.begin(), r.end()); });
  {
    auto s = SecretBytes::Random(64);
    ASSERT_TRUE(s.ok());
  }
  SetSecretReleaseObserverForTesting(nullptr);
  ASSERT_FALSE(seen.empty());
  for (uint8_t byte : seen) ASSERT_EQ(byte, 0);
}

TEST(SecretBytesTest, MoveTransfersOwnershipAndCountsStayBalanced) {
  const int64_t live = LiveSecretAllocations();
  {
    auto s = SecretBytes::Random(32);
    ASSERT_TRUE(s.ok());
    SecretBytes moved = std::move(s).value();
    EXPECT_EQ(moved.size(), 32u);
    auto clone = moved.Clone();
    ASSERT_TRUE(clone.ok());
    EXPECT_TRUE(clone->Equals(moved));
    EXPECT_EQ(LiveSecretAllocations(), live + 2);
  }
  EXPECT_EQ(LiveSecretAllocations(), live);
}

TEST(SecretBytesTest, HardenProcessMakesItNonDumpable) {
  ASSERT_TRUE(HardenProcess().ok());
  EXPECT_EQ(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
}

}  // namespace
}  // namespace sealvol::crypto
