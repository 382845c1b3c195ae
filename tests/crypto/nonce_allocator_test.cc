#include "crypto/nonce_allocator.h"

#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace sealvol::crypto {
namespace {

TEST(NonceAllocatorTest, ReservesBeforeHandingOutPastTheMark) {
  uint64_t persisted = 100;
  NonceAllocator alloc(persisted, 10, [&](uint64_t mark) {
    persisted = mark;
    return absl::OkStatus();
  });
  for (int i = 0; i < 35; ++i) {
    auto c = alloc.Allocate();
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(*c, 100u + i);
    EXPECT_LT(*c, persisted) << "counter handed out beyond the durable mark";
  }
}

TEST(NonceAllocatorTest, ReopeningAtThePersistedMarkNeverRepeats) {
  uint64_t persisted = 0;
  std::set<uint64_t> used;
  auto reserve = [&](uint64_t mark) {
    persisted = mark;
    return absl::OkStatus();
  };
  for (int run = 0; run < 5; ++run) {  // Each run "crashes" mid-range.
    NonceAllocator alloc(persisted, 16, reserve);
    for (int i = 0; i < 7 + run * 5; ++i) {
      auto c = alloc.Allocate(3);
      ASSERT_TRUE(c.ok());
      for (uint64_t k = *c; k < *c + 3; ++k) {
        EXPECT_TRUE(used.insert(k).second) << "counter " << k << " repeated";
      }
    }
  }
}

TEST(NonceAllocatorTest, FailedReservationHandsOutNothing) {
  bool fail = true;
  NonceAllocator alloc(0, 4, [&](uint64_t) {
    return fail ? absl::UnavailableError("disk gone") : absl::OkStatus();
  });
  EXPECT_FALSE(alloc.Allocate().ok());
  EXPECT_EQ(alloc.next(), 0u);
  fail = false;
  auto c = alloc.Allocate();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, 0u);
}

TEST(NonceAllocatorTest, ExhaustionIsAnError) {
  NonceAllocator alloc(UINT64_MAX - 2, 4,
                       [](uint64_t) { return absl::OkStatus(); });
  EXPECT_TRUE(alloc.Allocate(2).ok());
  EXPECT_EQ(alloc.Allocate(2).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(NonceAllocatorTest, ConcurrentAllocationsAreUnique) {
  NonceAllocator alloc(0, 64, [](uint64_t) { return absl::OkStatus(); });
  std::vector<std::vector<uint64_t>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) got[t].push_back(*alloc.Allocate());
    });
  }
  for (auto& th : threads) th.join();
  std::set<uint64_t> all;
  for (auto& v : got) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), 8000u);
}

}  // namespace
}  // namespace sealvol::crypto
