// P3 nonce uniqueness: no (key, counter) pair is used twice across
// reopenings, crashes and growth, and a crash skips the reserved range.
#include <cerrno>
#include <random>
#include <set>

#include "engine_test_support.h"
#include "io/layout.h"
#include "io/superblock.h"
#include "io/tag_table.h"

namespace sealvol::io {
namespace {

using testing::FormatOf;
using testing::Manual;
using testing::Pattern;
using testing::TestDek;

class NonceTest : public ::testing::Test {
 protected:
  EngineOptions Options() {
    EngineOptions o = Manual(2);
    o.nonce_range = 16;
    o.counter_observer = [this](uint64_t block, uint64_t counter) {
      EXPECT_NE(counter, 0u) << "counter 0 marks an empty slot";
      EXPECT_TRUE(used_.insert(counter).second)
          << "counter " << counter << " used twice (block " << block << ")";
      last_ = counter;
    };
    return o;
  }

  void WriteSome(Engine& v, int n, uint64_t tag) {
    for (int i = 0; i < n; ++i) {
      auto d = Pattern(tag + i, 3 * 4096);
      ASSERT_EQ(v.Io(IoOp::kWrite, (i % 7) * 4096 * 3, d), 0);
    }
  }

  // Every slot counter stored in the image, across all groups.
  static std::vector<uint64_t> StoredCounters(FaultStore& fs, uint64_t blocks) {
    const Layout l = Layout::Default();
    std::vector<uint64_t> out;
    for (uint64_t g = 0; g < l.groups_for(blocks); ++g) {
      for (uint32_t t = 0; t < l.tag_blocks_per_group; ++t) {
        FaultStore::Block b = fs.PeekBlock(l.tag_start(g) + t);
        GroupTags tags(b.data());
        for (uint32_t i = 0; i < kBlocksPerTagBlock; ++i) {
          for (int s = 0; s < 2; ++s) {
            if (tags.present(i, s)) out.push_back(tags.counter(i, s));
          }
        }
      }
    }
    return out;
  }

  std::set<uint64_t> used_;
  uint64_t last_ = 0;
};

TEST_F(NonceTest, CountersNeverRepeatAcrossReopenCrashAndGrow) {
  const auto dek = TestDek(5);
  uint64_t size = 8 << 20;
  auto v = Engine::FormatOn(std::make_unique<FaultStore>(0), FormatOf(size),
                            dek, Options());
  ASSERT_TRUE(v.ok());
  std::unique_ptr<Engine> vol = std::move(v).value();
  std::mt19937_64 rng(7);
  for (int cycle = 0; cycle < 12; ++cycle) {
    WriteSome(*vol, 20, cycle * 100);
    if (HasFatalFailure()) return;
    auto& fs = static_cast<FaultStore&>(vol->store());
    std::unique_ptr<FaultStore> image;
    switch (cycle % 3) {
      case 0:  // Clean reopen.
        ASSERT_TRUE(vol->Close().ok());
        image = fs.Snapshot();
        break;
      case 1:  // Crash with writes in flight: some reservations lost.
        image = fs.CrashImage(rng);
        break;
      case 2:  // Grow, write, then crash.
        size += 4 << 20;
        ASSERT_TRUE(vol->Grow(size).ok());
        {
          auto d = Pattern(cycle, 4096);
          ASSERT_EQ(vol->Io(IoOp::kWrite, size - 4096, d), 0);
        }
        image = fs.CrashImage(rng);
        break;
    }
    const uint64_t used_max = last_;
    auto sb0 = DecodeSuperblock(
        std::span<const uint8_t>(image->PeekBlock(0).data(), 4096));
    auto sb1 = DecodeSuperblock(
        std::span<const uint8_t>(image->PeekBlock(1).data(), 4096));
    ASSERT_TRUE(sb0.ok() && sb1.ok());
    const uint64_t persisted = std::max(sb0->nonce_reserved_mark,
                                        sb1->nonce_reserved_mark);
    // The mark was durable before any counter below it was used.
    EXPECT_GT(persisted, used_max);
    vol.reset();
    auto re = Engine::OpenOn(std::move(image), dek, Options());
    ASSERT_TRUE(re.ok()) << re.status();
    vol = std::move(re).value();
    // After a reopen the first counter is at or past the persisted mark:
    // the whole reserved range is skipped.
    auto d = Pattern(cycle + 1000, 4096);
    ASSERT_EQ(vol->Io(IoOp::kWrite, 0, d), 0);
    EXPECT_GE(last_, persisted) << "cycle " << cycle;
  }
  EXPECT_GT(used_.size(), 200u);
  // Independent of the hook: the counters stored on disk are distinct.
  ASSERT_TRUE(vol->Close().ok());
  auto stored = StoredCounters(static_cast<FaultStore&>(vol->store()), size / 4096);
  std::set<uint64_t> distinct(stored.begin(), stored.end());
  EXPECT_EQ(distinct.size(), stored.size()) << "a counter is stored twice";
  EXPECT_GT(stored.size(), 20u);
}

TEST_F(NonceTest, EveryBlockOfABatchGetsItsOwnCounter) {
  const auto dek = TestDek(6);
  auto v = Engine::FormatOn(std::make_unique<FaultStore>(0), FormatOf(8 << 20),
                            dek, Options());
  ASSERT_TRUE(v.ok());
  auto d = Pattern(1, 64 * 4096);
  ASSERT_EQ((*v)->Io(IoOp::kWrite, 0, d), 0);
  ASSERT_EQ((*v)->Io(IoOp::kWrite, 0, d), 0);  // Same plaintext again.
  EXPECT_EQ(used_.size(), 128u);
  ASSERT_TRUE((*v)->Close().ok());
  auto stored = StoredCounters(static_cast<FaultStore&>((*v)->store()), 2048);
  std::set<uint64_t> distinct(stored.begin(), stored.end());
  EXPECT_EQ(stored.size(), 128u);
  EXPECT_EQ(distinct.size(), stored.size());
}

}  // namespace
}  // namespace sealvol::io
