// P3 nonce uniqueness: no (key, nonce) pair is ever used for two blocks,
// across reopenings, crashes, growth, and across any sequence of copies,
// rollbacks and restores of the image or re-formats of the volume. Every
// session (each worker of each open) seals under its own key, derived from a
// fresh random session id, with an in-session counter; the (session id,
// counter) pair identifies (key, nonce).
#include <cerrno>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include "crypto/key_schedule.h"
#include "engine_test_support.h"
#include "io/layout.h"
#include "io/slot_codec.h"
#include "io/superblock.h"
#include "io/tag_table.h"

namespace sealvol::io {
namespace {

using testing::FormatOf;
using testing::Manual;
using testing::Pattern;
using testing::TestDek;

using Nonce = std::pair<crypto::SessionId, uint64_t>;

// One stored slot: where it is, and the ciphertext it describes.
struct StoredSlot {
  size_t image;
  uint64_t block;
  std::vector<uint8_t> cipher;
};

// Every slot of every image that verifies against the data stored for its
// block (a stale slot describes data that was overwritten since), by
// (session, counter).
std::map<Nonce, std::vector<StoredSlot>> ScanSlots(
    const std::vector<const FaultStore*>& images, uint64_t blocks,
    const crypto::SecretBytes& dek, const Layout& l = Layout::Default()) {
  std::map<Nonce, std::vector<StoredSlot>> out;
  std::vector<uint8_t> plain(4096);
  for (size_t i = 0; i < images.size(); ++i) {
    auto sb = NewestSuperblock(
        DecodeSuperblock({images[i]->PeekBlock(0).data(), 4096}),
        DecodeSuperblock({images[i]->PeekBlock(1).data(), 4096}));
    EXPECT_TRUE(sb.ok()) << sb.status();
    if (!sb.ok()) return out;
    auto keys = crypto::DeriveVolumeKeys(dek, sb->volume_id, sb->format_id);
    EXPECT_TRUE(keys.ok());
    auto codec = SlotCodec::Create(keys->session_root, sb->volume_id);
    EXPECT_TRUE(codec.ok());
    for (uint64_t b = 0; b < blocks; ++b) {
      const uint64_t g = l.group_of(b);
      const uint32_t idx = b % l.data_blocks_per_group;
      FaultStore::Block tb = images[i]->PeekBlock(
          l.tag_start(g) + GroupTags::tag_block_of(idx));
      GroupTags tags(tb.data());  // One tag block: index within it.
      const uint32_t in_block = idx % kBlocksPerTagBlock;
      for (int s = 0; s < 2; ++s) {
        if (!tags.present(in_block, s)) continue;
        const TagSlot slot = tags.slot(in_block, s);
        FaultStore::Block data = images[i]->PeekBlock(l.data_position(b));
        if (!(*codec)->Open(b, slot, data.data(), plain.data())) continue;
        out[{slot.session, slot.counter}].push_back(
            {i, b, std::vector<uint8_t>(data.begin(), data.end())});
      }
    }
  }
  return out;
}

// Nonces stored for two different blocks, or for one block with two
// different ciphertexts: each is a (key, nonce) reuse; XOR of the two
// ciphertexts would give the XOR of the plaintexts.
size_t Reuses(const std::map<Nonce, std::vector<StoredSlot>>& slots) {
  size_t n = 0;
  for (const auto& [nonce, where] : slots) {
    for (size_t a = 0; a < where.size(); ++a) {
      for (size_t b = a + 1; b < where.size(); ++b) {
        if (where[a].block != where[b].block ||
            where[a].cipher != where[b].cipher) {
          ++n;
        }
      }
    }
  }
  return n;
}

class NonceTest : public ::testing::Test {
 protected:
  EngineOptions Options(int workers = 2) {
    EngineOptions o = Manual(workers);
    o.seal_observer = [this](uint64_t block, const TagSlot& slot) {
      EXPECT_NE(slot.counter, 0u);
      EXPECT_TRUE(used_.insert({slot.session, slot.counter}).second)
          << "(session, counter " << slot.counter << ") used twice (block "
          << block << ")";
    };
    return o;
  }

  void WriteSome(SealedVolume& v, int n, uint64_t tag) {
    for (int i = 0; i < n; ++i) {
      auto d = Pattern(tag + i, 3 * 4096);
      ASSERT_EQ(v.Io(IoOp::kWrite, (i % 7) * 4096 * 3, d), 0);
    }
  }

  std::set<Nonce> used_;
};

TEST_F(NonceTest, NoncesNeverRepeatAcrossReopenCrashAndGrow) {
  const auto dek = TestDek(5);
  uint64_t size = 8 << 20;
  auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0), FormatOf(size),
                            dek, Options());
  ASSERT_TRUE(v.ok());
  std::unique_ptr<SealedVolume> vol = std::move(v).value();
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
      case 1:  // Crash with writes in flight.
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
    vol.reset();
    auto re = SealedVolume::OpenOn(std::move(image), dek, Options());
    ASSERT_TRUE(re.ok()) << re.status();
    vol = std::move(re).value();
  }
  EXPECT_GT(used_.size(), 200u);
  // Independent of the hook: the nonces stored on disk are distinct.
  ASSERT_TRUE(vol->Close().ok());
  auto slots = ScanSlots({&static_cast<FaultStore&>(vol->store())}, size / 4096, dek);
  EXPECT_GT(slots.size(), 20u);
  EXPECT_EQ(Reuses(slots), 0u);
}

TEST_F(NonceTest, EveryBlockOfABatchGetsItsOwnCounter) {
  const auto dek = TestDek(6);
  auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0), FormatOf(8 << 20),
                            dek, Options());
  ASSERT_TRUE(v.ok());
  auto d = Pattern(1, 64 * 4096);
  ASSERT_EQ((*v)->Io(IoOp::kWrite, 0, d), 0);
  ASSERT_EQ((*v)->Io(IoOp::kWrite, 0, d), 0);  // Same plaintext again.
  EXPECT_EQ(used_.size(), 128u);
  ASSERT_TRUE((*v)->Close().ok());
  auto slots = ScanSlots({&static_cast<FaultStore&>((*v)->store())}, 2048, dek);
  EXPECT_EQ(slots.size(), 64u);  // The older slots describe overwritten data.
  EXPECT_EQ(Reuses(slots), 0u);
}

// Issue 12's third attack: an image put back to an earlier copy (a restored
// backup, a storage snapshot) and written again. Before format version 2 the
// counters went back with the image and 123 blocks of plaintext were
// recovered by XOR. Now the writes after the restore are in new sessions.
TEST_F(NonceTest, RolledBackImageWrittenAgainSharesNoNonce) {
  const auto dek = TestDek(8);
  const uint64_t size = 8 << 20;
  auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0), FormatOf(size),
                            dek, Options());
  ASSERT_TRUE(v.ok());
  auto d = Pattern(1, 256 * 4096);
  ASSERT_EQ((*v)->Io(IoOp::kWrite, 0, d), 0);
  ASSERT_TRUE((*v)->Close().ok());
  auto backup = static_cast<FaultStore&>((*v)->store()).Snapshot();
  // Life goes on: another session writes 4 MiB.
  auto later = SealedVolume::OpenOn(static_cast<FaultStore&>((*v)->store()).Snapshot(),
                              dek, Options());
  ASSERT_TRUE(later.ok());
  auto d2 = Pattern(2, 1024 * 4096);
  ASSERT_EQ((*later)->Io(IoOp::kWrite, 0, d2), 0);
  ASSERT_TRUE((*later)->Close().ok());
  // The backup is restored and written again, the same amount.
  auto restored = SealedVolume::OpenOn(backup->Snapshot(), dek, Options());
  ASSERT_TRUE(restored.ok());
  auto d3 = Pattern(3, 1024 * 4096);
  ASSERT_EQ((*restored)->Io(IoOp::kWrite, 0, d3), 0);
  ASSERT_TRUE((*restored)->Close().ok());
  auto slots = ScanSlots({backup.get(),
                          &static_cast<FaultStore&>((*later)->store()),
                          &static_cast<FaultStore&>((*restored)->store())},
                         size / 4096, dek);
  EXPECT_EQ(Reuses(slots), 0u);
  EXPECT_GT(slots.size(), 2000u);
}

// A volume re-created under the same DEK and volume id (issue 12's first two
// attacks, at the engine level) gets a new format id, hence other subkeys: a
// block of the earlier image does not open in the new one, and no nonce is
// shared.
TEST_F(NonceTest, ReformatUnderTheSameKeyDerivesOtherKeys) {
  const auto dek = TestDek(9);
  const uint64_t size = 4 << 20;
  auto a = SealedVolume::FormatOn(std::make_unique<FaultStore>(0), FormatOf(size, 3),
                            dek, Options());
  auto b = SealedVolume::FormatOn(std::make_unique<FaultStore>(0), FormatOf(size, 3),
                            dek, Options());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->volume_id(), (*b)->volume_id());
  EXPECT_NE((*a)->format_id(), (*b)->format_id());
  auto d = Pattern(4, 16 * 4096);
  ASSERT_EQ((*a)->Io(IoOp::kWrite, 0, d), 0);
  ASSERT_EQ((*b)->Io(IoOp::kWrite, 0, d), 0);
  ASSERT_TRUE((*a)->Close().ok());
  ASSERT_TRUE((*b)->Close().ok());
  auto& sa = static_cast<FaultStore&>((*a)->store());
  auto& sb = static_cast<FaultStore&>((*b)->store());
  EXPECT_EQ(Reuses(ScanSlots({&sa, &sb}, 16, dek)), 0u);
  // Move block 5 with its tag block from a into b: it must not verify.
  const Layout l = Layout::Default();
  auto image = sb.Snapshot();
  image->PokeBlock(l.data_position(5), sa.PeekBlock(l.data_position(5)));
  image->PokeBlock(l.tag_start(0), sa.PeekBlock(l.tag_start(0)));
  auto reopened = SealedVolume::OpenOn(std::move(image), dek, Options());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  std::vector<uint8_t> out(4096);
  EXPECT_EQ((*reopened)->Io(IoOp::kRead, 5 * 4096, out), -EIO);
}

// Property: any random sequence of opens, writes, crashes, copies of the
// image, restores of an earlier copy and closes stores no nonce twice, over
// every copy ever made.
TEST_F(NonceTest, RandomCopiesAndRestoresNeverRepeatANonce) {
  const auto dek = TestDek(10);
  const uint64_t size = 8 << 20;
  const uint64_t blocks = size / 4096;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    std::mt19937_64 rng(seed);
    used_.clear();
    std::vector<std::unique_ptr<FaultStore>> copies;
    auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0), FormatOf(size),
                              dek, Options(1 + seed % 2));
    ASSERT_TRUE(v.ok());
    std::unique_ptr<SealedVolume> vol = std::move(v).value();
    std::set<Nonce> sealed_in_history;
    for (int step = 0; step < 40; ++step) {
      auto& fs = static_cast<FaultStore&>(vol->store());
      switch (rng() % 6) {
        case 0:
        case 1: {  // Write a few blocks.
          const uint64_t first = rng() % (blocks - 8);
          auto d = Pattern(rng(), (1 + rng() % 8) * 4096);
          ASSERT_EQ(vol->Io(IoOp::kWrite, first * 4096, d), 0);
          break;
        }
        case 2:  // Copy the image as it is now (a backup or snapshot).
          copies.push_back(fs.Snapshot());
          break;
        case 3:
        case 4: {  // Close, or crash, and open either the image or a copy.
          std::unique_ptr<FaultStore> next;
          if (rng() % 2 == 0) {
            ASSERT_TRUE(vol->Close().ok());
            next = fs.Snapshot();
          } else {
            next = fs.CrashImage(rng);
          }
          copies.push_back(next->Snapshot());
          if (!copies.empty() && rng() % 2 == 0) {
            next = copies[rng() % copies.size()]->Snapshot();  // Restore.
          }
          vol.reset();
          auto re = SealedVolume::OpenOn(std::move(next), dek, Options(1 + seed % 2));
          ASSERT_TRUE(re.ok()) << re.status();
          vol = std::move(re).value();
          break;
        }
        case 5:
          ASSERT_EQ(vol->Io(IoOp::kFlush, 0, {}), 0);
          break;
      }
      if (HasFatalFailure()) return;
    }
    ASSERT_TRUE(vol->Close().ok());
    copies.push_back(static_cast<FaultStore&>(vol->store()).Snapshot());
    std::vector<const FaultStore*> all;
    for (const auto& c : copies) all.push_back(c.get());
    auto slots = ScanSlots(all, blocks, dek);
    EXPECT_EQ(Reuses(slots), 0u) << "seed " << seed;
    EXPECT_GT(slots.size(), 10u) << "seed " << seed;
  }
}

// A session that runs out of counters is replaced by a fresh one before a
// counter could wrap (the real bound is 2^40 - 1 blocks per session).
TEST(SlotCodecTest, ExhaustedSessionStartsANewOne) {
  auto root = crypto::SecretBytes::Random(32);
  ASSERT_TRUE(root.ok());
  VolumeId vid{};
  std::set<Nonce> seen;
  auto codec = SlotCodec::Create(
      *root, vid,
      [&](uint64_t, const TagSlot& s) {
        EXPECT_LE(s.counter, 4u);
        EXPECT_TRUE(seen.insert({s.session, s.counter}).second);
      },
      /*session_counters=*/4);
  ASSERT_TRUE(codec.ok());
  std::vector<uint8_t> in(4096, 1), out(4096), back(4096);
  std::vector<TagSlot> slots;
  for (int batch = 0; batch < 5; ++batch) {
    ASSERT_TRUE((*codec)->Reserve(3).ok());
    for (int i = 0; i < 3; ++i) {
      TagSlot slot;
      ASSERT_TRUE((*codec)->Seal(batch * 3 + i, 0, in.data(), out.data(), slot));
      slots.push_back(slot);
    }
    TagSlot extra;
    EXPECT_FALSE((*codec)->Seal(99, 0, in.data(), out.data(), extra))
        << "sealed beyond the reservation";
  }
  EXPECT_EQ(seen.size(), 15u);
  EXPECT_EQ((*codec)->sessions_started(), 5u);
  EXPECT_FALSE((*codec)->Reserve(5).ok());
}

}  // namespace
}  // namespace sealvol::io
