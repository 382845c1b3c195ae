// Issue 13's engine properties: every group's tag area is authenticated by
// a digest under the state root (a wiped or rolled-back tag entry fails,
// never reads as zeros), and an image older than the state its registry
// commits to is refused, while every crash state of the latest session
// still opens (crash_test covers that at 10,000 points).
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "base/error_kind.h"
#include "engine_test_support.h"
#include "gtest/gtest.h"
#include "io/layout.h"
#include "io/superblock.h"
#include "io/tag_table.h"

namespace sealvol::io {
namespace {

using testing::FormatOf;
using testing::Manual;
using testing::Pattern;
using testing::TestDek;

constexpr uint64_t kMiB = 1024 * 1024;

class StateRootTest : public ::testing::Test {
 protected:
  std::unique_ptr<SealedVolume> Format(uint64_t size = 16 * kMiB) {
    auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0), FormatOf(size),
                              dek_, Manual(2));
    EXPECT_TRUE(v.ok()) << v.status();
    committed_ = (*v)->state();
    return std::move(v).value();
  }
  // Opens `image` checked against the registry model, committing the new
  // epoch to it as a node does.
  absl::StatusOr<std::unique_ptr<SealedVolume>> Open(std::unique_ptr<FaultStore> image,
                                               bool read_only = false) {
    EngineOptions o = Manual(2);
    o.read_only = read_only;
    o.expected_state = committed_;
    o.commit_open = [this](const VolumeState& s) {
      committed_ = s;
      return absl::OkStatus();
    };
    return SealedVolume::OpenOn(std::move(image), dek_, o);
  }
  // Closes and commits the closed state; returns the image.
  std::unique_ptr<FaultStore> Close(std::unique_ptr<SealedVolume> v) {
    EXPECT_TRUE(v->Close().ok());
    committed_ = v->state();
    EXPECT_FALSE(committed_.open);
    return static_cast<FaultStore&>(v->store()).Snapshot();
  }
  int Write(SealedVolume& v, uint64_t block, uint64_t pattern) {
    auto d = Pattern(pattern);
    return v.Io(IoOp::kWrite, block * 4096, d);
  }
  std::vector<uint8_t> Read(SealedVolume& v, uint64_t block, int* r) {
    std::vector<uint8_t> out(4096);
    *r = v.Io(IoOp::kRead, block * 4096, out);
    return out;
  }

  const crypto::SecretBytes dek_ = TestDek(13);
  const Layout l_ = Layout::Default();
  VolumeState committed_;
};

TEST_F(StateRootTest, WipedTagEntryFailsInsteadOfReadingZeros) {
  auto v = Format();
  ASSERT_EQ(Write(*v, 5, 5), 0);
  ASSERT_EQ(Write(*v, 2000, 6), 0);  // Group 1.
  auto image = Close(std::move(v));
  // Zero block 5's whole tag entry (both slots): "never written".
  FaultStore::Block tb = image->PeekBlock(l_.tag_start(0));
  std::memset(&tb[5 * kTagEntryBytes], 0, kTagEntryBytes);
  image->PokeBlock(l_.tag_start(0), tb);
  auto opened = Open(std::move(image));
  ASSERT_TRUE(opened.ok()) << opened.status();
  int r = 0;
  auto out = Read(**opened, 5, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_EQ(out, std::vector<uint8_t>(4096, 0));  // Nothing leaks.
  // The never-written block next to it fails too: its group is not
  // authentic any more. Other groups are untouched.
  Read(**opened, 6, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_EQ(Read(**opened, 2000, &r), Pattern(6));
  EXPECT_EQ(r, 0);
  EXPECT_EQ((*opened)->mismatched_groups(), std::vector<uint64_t>{0});
  // Writes into the group fail too (they would launder the tampering).
  EXPECT_EQ(Write(**opened, 7, 7), -EIO);
}

TEST_F(StateRootTest, TagsPlantedInANeverWrittenGroupFail) {
  auto v = Format();
  ASSERT_EQ(Write(*v, 5, 5), 0);
  auto image = Close(std::move(v));
  // Copy group 0's tag block over group 2's (never written).
  image->PokeBlock(l_.tag_start(2), image->PeekBlock(l_.tag_start(0)));
  auto opened = Open(std::move(image));
  ASSERT_TRUE(opened.ok()) << opened.status();
  int r = 0;
  Read(**opened, 2 * 1024 + 5, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_EQ((*opened)->mismatched_groups(), std::vector<uint64_t>{2});
}

TEST_F(StateRootTest, SingleBlockRolledBackWithItsTagIsDetected) {
  auto v = Format();
  ASSERT_EQ(Write(*v, 5, 1), 0);
  auto old = Close(std::move(v));
  auto opened = Open(old->Snapshot());
  ASSERT_TRUE(opened.ok()) << opened.status();
  ASSERT_EQ(Write(**opened, 5, 2), 0);
  auto image = Close(std::move(opened).value());
  // Put back block 5's old ciphertext and old tag entry: both verify under
  // the key (same volume, same position), only the digest tells.
  image->PokeBlock(l_.data_position(5), old->PeekBlock(l_.data_position(5)));
  FaultStore::Block tb = image->PeekBlock(l_.tag_start(0));
  const FaultStore::Block old_tb = old->PeekBlock(l_.tag_start(0));
  std::memcpy(&tb[5 * kTagEntryBytes], &old_tb[5 * kTagEntryBytes],
              kTagEntryBytes);
  image->PokeBlock(l_.tag_start(0), tb);
  auto again = Open(std::move(image));
  ASSERT_TRUE(again.ok()) << again.status();
  int r = 0;
  auto out = Read(**again, 5, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_NE(out, Pattern(1));
}

TEST_F(StateRootTest, RolledBackImageIsRefusedAndTheLatestOpens) {
  auto v = Format();
  ASSERT_EQ(Write(*v, 5, 1), 0);
  auto copy = Close(std::move(v));  // The copy an attacker keeps.
  auto opened = Open(copy->Snapshot());
  ASSERT_TRUE(opened.ok()) << opened.status();
  ASSERT_EQ(Write(**opened, 5, 2), 0);
  auto latest = Close(std::move(opened).value());
  const VolumeState registry = committed_;

  auto refused = Open(copy->Snapshot());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(GetErrorKind(refused.status()), ErrorKind::kRolledBack);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status()));
  EXPECT_NE(refused.status().message().find("rolled back"), std::string::npos)
      << refused.status();
  // Read-only opens are checked too, and a refusal commits nothing.
  EXPECT_EQ(GetErrorKind(Open(copy->Snapshot(), /*read_only=*/true).status()),
            ErrorKind::kRolledBack);
  EXPECT_EQ(committed_, registry);

  auto ok = Open(std::move(latest));
  ASSERT_TRUE(ok.ok()) << ok.status();
  int r = 0;
  EXPECT_EQ(Read(**ok, 5, &r), Pattern(2));
  EXPECT_EQ(r, 0);
}

TEST_F(StateRootTest, AnImageAheadOfTheRegistryIsRefused) {
  auto v = Format();
  const VolumeState at_format = committed_;
  auto image = Close(std::move(v));
  for (int i = 0; i < 3; ++i) {
    auto o = Open(std::move(image));
    ASSERT_TRUE(o.ok()) << o.status();
    image = Close(std::move(o).value());
  }
  committed_ = at_format;  // A registry restored from an old backup.
  auto refused = Open(std::move(image));
  EXPECT_EQ(GetErrorKind(refused.status()), ErrorKind::kRolledBack)
      << refused.status();
}

TEST_F(StateRootTest, CrashedSessionOpensAtItsEpochAndNotBefore) {
  auto v = Format();
  ASSERT_EQ(Write(*v, 5, 1), 0);
  auto before = Close(std::move(v));
  auto opened = Open(before->Snapshot());
  ASSERT_TRUE(opened.ok());
  EXPECT_TRUE(committed_.open);
  ASSERT_EQ(Write(**opened, 5, 2), 0);
  ASSERT_EQ(Write(**opened, 3000, 3), 0);
  ASSERT_EQ((*opened)->Io(IoOp::kFlush, 0, {}), 0);
  // Crash: no close, nothing committed after the session's start.
  auto crashed = static_cast<FaultStore&>((*opened)->store()).Snapshot();
  opened->reset();
  // The pre-session copy is refused: the registry knows a session began.
  EXPECT_EQ(GetErrorKind(Open(before->Snapshot()).status()),
            ErrorKind::kRolledBack);
  auto again = Open(std::move(crashed));
  ASSERT_TRUE(again.ok()) << again.status();
  int r = 0;
  EXPECT_EQ(Read(**again, 5, &r), Pattern(2));
  EXPECT_EQ(r, 0);
  EXPECT_EQ(Read(**again, 3000, &r), Pattern(3));
  EXPECT_EQ(r, 0);
  // Recovered digests are committed by the next close.
  auto image = Close(std::move(again).value());
  auto last = Open(std::move(image));
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(Read(**last, 3000, &r), Pattern(3));
  EXPECT_EQ(r, 0);
}

TEST_F(StateRootTest, FailedCommitOfTheStartWritesNothingAndStillOpensLater) {
  auto v = Format();
  ASSERT_EQ(Write(*v, 5, 1), 0);
  auto image = Close(std::move(v));
  const VolumeState registry = committed_;
  EngineOptions o = Manual(1);
  o.expected_state = committed_;
  o.commit_open = [](const VolumeState&) {
    return absl::UnavailableError("broker down");
  };
  auto failed = SealedVolume::OpenOn(image->Snapshot(), dek_, o);
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(absl::IsUnavailable(failed.status())) << failed.status();
  EXPECT_EQ(committed_, registry);
  // The image that open left behind (one epoch on) opens against the
  // unchanged registry, once.
  auto store = image->Snapshot();
  o.commit_open = nullptr;
  auto first = SealedVolume::OpenOn(std::move(store), dek_, o);
  ASSERT_TRUE(first.ok()) << first.status();
}

TEST_F(StateRootTest, AlteredDigestTableIsRefused) {
  auto v = Format();
  ASSERT_EQ(Write(*v, 5, 1), 0);
  auto image = Close(std::move(v));
  const Superblock sb = [&] {
    auto a = DecodeSuperblock(image->PeekBlock(0));
    auto b = DecodeSuperblock(image->PeekBlock(1));
    return *NewestSuperblock(a, b);
  }();
  const uint64_t table = l_.digest_table(static_cast<int>(sb.digest_copy));
  FaultStore::Block tb = image->PeekBlock(table);
  tb[3] ^= 1;
  image->PokeBlock(table, tb);
  auto refused = Open(std::move(image));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsDataLoss(refused.status())) << refused.status();
}

TEST_F(StateRootTest, BitsPlantedOnACleanImageDoNotLaunderARollback) {
  auto v = Format();
  ASSERT_EQ(Write(*v, 5, 1), 0);
  auto old = Close(std::move(v));
  auto opened = Open(old->Snapshot());
  ASSERT_TRUE(opened.ok());
  ASSERT_EQ(Write(**opened, 5, 2), 0);
  auto image = Close(std::move(opened).value());
  // Roll group 0's tags and block 5 back, and set group 0's write-intent
  // bit so that recovery would recompute its digest from the old tags.
  image->PokeBlock(l_.data_position(5), old->PeekBlock(l_.data_position(5)));
  image->PokeBlock(l_.tag_start(0), old->PeekBlock(l_.tag_start(0)));
  FaultStore::Block bitmap = image->PeekBlock(l_.bitmap_start);
  bitmap[0] |= 1;
  image->PokeBlock(l_.bitmap_start, bitmap);
  auto again = Open(std::move(image));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->recovery_stats().groups_scanned, 0u);
  int r = 0;
  Read(**again, 5, &r);
  EXPECT_EQ(r, -EIO);
}

TEST_F(StateRootTest, GrownGroupsAreCoveredAfterClose) {
  auto v = Format(8 * kMiB);
  ASSERT_TRUE(v->Grow(24 * kMiB).ok());
  ASSERT_EQ(Write(*v, 5 * 1024 + 1, 9), 0);  // A group that grow added.
  auto image = Close(std::move(v));
  auto again = Open(std::move(image));
  ASSERT_TRUE(again.ok()) << again.status();
  int r = 0;
  EXPECT_EQ(Read(**again, 5 * 1024 + 1, &r), Pattern(9));
  EXPECT_EQ(r, 0);
  image = Close(std::move(again).value());
  // Its tags wiped: detected like any other group's.
  image->PokeBlock(l_.tag_start(5), FaultStore::Block{});
  auto wiped = Open(std::move(image));
  ASSERT_TRUE(wiped.ok()) << wiped.status();
  Read(**wiped, 5 * 1024 + 1, &r);
  EXPECT_EQ(r, -EIO);
}

TEST_F(StateRootTest, ReadOnlyOpenOfACrashedImageReadsWhatWasFlushed) {
  auto v = Format();
  ASSERT_EQ(Write(*v, 5, 1), 0);
  ASSERT_EQ(v->Io(IoOp::kFlush, 0, {}), 0);
  auto crashed = static_cast<FaultStore&>(v->store()).Snapshot();
  v.reset();
  auto ro = Open(std::move(crashed), /*read_only=*/true);
  ASSERT_TRUE(ro.ok()) << ro.status();
  int r = 0;
  EXPECT_EQ(Read(**ro, 5, &r), Pattern(1));
  EXPECT_EQ(r, 0);
}

// While open, a checkpoint is written once enough groups are dirty, so a
// crash after it recovers only the groups written since.
TEST_F(StateRootTest, CheckpointWhileOpenBoundsRecovery) {
  EngineOptions o;
  o.worker_threads = 2;
  o.keep_store_after_close = true;
  o.checkpoint_dirty_groups = 4;
  o.checkpoint_seconds = 0;
  auto f = SealedVolume::FormatOn(std::make_unique<FaultStore>(0),
                            FormatOf(64 * kMiB), dek_, o);
  ASSERT_TRUE(f.ok()) << f.status();
  std::unique_ptr<SealedVolume> v = std::move(f).value();
  committed_ = v->state();
  for (uint64_t g = 0; g < 12; ++g) {
    ASSERT_EQ(Write(*v, g * 1024 + 3, g + 1), 0);
    ASSERT_EQ(v->Io(IoOp::kFlush, 0, {}), 0);
  }
  // The trigger polls every 200 ms.
  for (int i = 0; i < 50 && v->checkpoints() < 1; ++i) {
    usleep(100 * 1000);
  }
  EXPECT_GE(v->checkpoints(), 1u);
  ASSERT_EQ(Write(*v, 13 * 1024, 99), 0);
  ASSERT_EQ(v->Io(IoOp::kFlush, 0, {}), 0);
  auto crashed = static_cast<FaultStore&>(v->store()).Snapshot();
  v.reset();
  auto again = Open(std::move(crashed));
  ASSERT_TRUE(again.ok()) << again.status();
  // Only the group written after the checkpoint (below the trigger).
  EXPECT_EQ((*again)->recovery_stats().groups_scanned, 1u);
  int r = 0;
  for (uint64_t g = 0; g < 12; ++g) {
    EXPECT_EQ(Read(**again, g * 1024 + 3, &r), Pattern(g + 1)) << g;
    EXPECT_EQ(r, 0);
  }
  EXPECT_EQ(Read(**again, 13 * 1024, &r), Pattern(99));
  EXPECT_EQ(r, 0);
}

}  // namespace
}  // namespace sealvol::io
