// P4 crash consistency: random workloads over FaultStore, power loss at a
// random store operation (each unflushed 4 KiB write kept or dropped at
// random), recovery at open, then every block is checked against a model:
// it must read its last flushed content or the content of a write issued
// after that flush; never EIO, never anything else.
//
// Some chains roll the image back to an earlier crash state (a restored
// backup or storage snapshot) and write again; across the whole history no
// (session id, counter) pair — no (key, nonce) — is ever sealed twice (P3).
//
// Seeded: SEALVOL_CRASH_SEED=N reproduces a run; SEALVOL_CRASH_POINTS=N
// changes how many crash points are checked (default 10000).
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "base/error_kind.h"
#include "engine_test_support.h"
#include "io/layout.h"
#include "io/tag_table.h"

namespace sealvol::io {
namespace {

using testing::FormatOf;
using testing::Manual;
using testing::Pattern;
using testing::TestDek;

// Small groups keep each crash point cheap; the engine code is the same.
// Five groups of 128 blocks (two tag blocks each), the last one partial.
constexpr uint64_t kBlocks = 128 * 4 + 64;

Layout SmallLayout() {
  Layout l;
  l.data_blocks_per_group = 128;
  l.tag_blocks_per_group = 2;
  l.bitmap_start = 2;
  l.bitmap_blocks = 1;
  l.PlaceDigestTable();
  return l;
}

// Content id 0 is zeros; any other id is Pattern(id).
std::vector<uint8_t> Content(uint64_t id) {
  return id == 0 ? std::vector<uint8_t>(4096, 0) : Pattern(id);
}

struct BlockModel {
  uint64_t durable = 0;          // Guaranteed as of the last flush.
  std::vector<uint64_t> issued;  // Issued since, in order.
  uint64_t latest() const { return issued.empty() ? durable : issued.back(); }
};

struct Op {
  IoRequest req;
  std::vector<uint8_t> buf;
  std::vector<uint64_t> ids;  // Per block, for writes/discards; expected for reads.
  int result = 1;
};

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* s = std::getenv("SEALVOL_CRASH_SEED");
    seed_ = s != nullptr ? std::strtoull(s, nullptr, 10) : std::random_device{}();
    const char* p = std::getenv("SEALVOL_CRASH_POINTS");
    points_ = p != nullptr ? std::strtoull(p, nullptr, 10) : 10000;
    rng_.seed(seed_);
    for (uint64_t b = 0; b < 8; ++b) hot_.push_back(b);
    hot_.push_back(63);   // Last block of tag block 0 ...
    hot_.push_back(64);   // ... and first of tag block 1.
    hot_.push_back(127);  // Group boundary.
    for (uint64_t b = 128; b < 131; ++b) hot_.push_back(b);
    for (uint64_t b = 256; b < 259; ++b) hot_.push_back(b);
    for (uint64_t b = 512; b < 516; ++b) hot_.push_back(b);
  }

  // Alternating chains: one worker caching 3 of the 4 hot groups (so groups
  // are evicted and reloaded), or two workers sharing the groups.
  EngineOptions Options() {
    EngineOptions o = Manual(chain_ % 2 == 0 ? 1 : 2);
    o.cache_groups = chain_ % 2 == 0 ? 3 : 4;
    o.format_layout = SmallLayout();
    o.seal_observer = [this](uint64_t, const TagSlot& slot) {
      if (!sealed_.insert({slot.session, slot.counter}).second) ++nonce_reuses_;
    };
    return o;
  }

  // Opens checked against the registry model, committing new epochs to it.
  EngineOptions Checked() {
    EngineOptions o = Options();
    o.expected_state = registry_;
    o.commit_open = [this](const VolumeState& s) {
      registry_ = s;
      return absl::OkStatus();
    };
    return o;
  }

  // Runs `rounds` rounds of random requests against `v`, updating the model.
  // Returns false once the store has lost power.
  void Workload(SealedVolume& v, int rounds) {
    std::vector<std::unique_ptr<Op>> ops;
    for (int round = 0; round < rounds; ++round) {
      ops.clear();
      if (rng_() % 13 == 0) {
        // A checkpoint while open (the crash may cut it anywhere); its
        // sync makes everything issued so far durable.
        ++checkpoints_;
        if (v.CheckpointNow().ok()) {
          for (auto& [b, m] : model_) {
            m.durable = m.latest();
            m.issued.clear();
          }
        }
        continue;
      }
      if (rng_() % 7 == 0) {
        auto op = std::make_unique<Op>();
        op->req.op = IoOp::kFlush;
        ops.push_back(std::move(op));
      } else {
        const int n = 1 + rng_() % 5;
        for (int i = 0; i < n; ++i) ops.push_back(RandomOp());
      }
      for (auto& op : ops) {
        op->req.context = op.get();
        op->req.done = [](IoRequest* r, int result) {
          static_cast<Op*>(r->context)->result = result;
        };
        v.Submit(&op->req);
      }
      v.RunPending();
      // Once a request has failed (the store lost power) a failed write's
      // block may read old or new content: reads are checked only before.
      for (auto& op : ops) saw_failure_ |= op->result != 0;
      for (auto& op : ops) Settle(*op);
    }
  }

  std::unique_ptr<Op> RandomOp() {
    auto op = std::make_unique<Op>();
    const uint64_t start = hot_[rng_() % hot_.size()];
    const uint32_t len = static_cast<uint32_t>(
        std::min<uint64_t>(1 + rng_() % 3, kBlocks - start));
    op->req.offset = start * 4096;
    op->req.length = uint64_t{len} * 4096;
    const int kind = rng_() % 10;
    if (kind < 7) {
      op->req.op = IoOp::kWrite;
      op->req.fua = rng_() % 5 == 0;
      for (uint32_t k = 0; k < len; ++k) {
        const uint64_t id = next_id_++;
        op->ids.push_back(id);
        auto c = Content(id);
        op->buf.insert(op->buf.end(), c.begin(), c.end());
        model_[start + k].issued.push_back(id);
      }
    } else if (kind < 8) {
      op->req.op = IoOp::kDiscard;
      for (uint32_t k = 0; k < len; ++k) {
        op->ids.push_back(0);
        model_[start + k].issued.push_back(0);
      }
    } else {
      op->req.op = IoOp::kRead;
      op->buf.assign(size_t{len} * 4096, 0xAA);
      for (uint32_t k = 0; k < len; ++k) op->ids.push_back(model_[start + k].latest());
    }
    op->req.buffer = op->buf;
    return op;
  }

  void Settle(Op& op) {
    ASSERT_NE(op.result, 1) << "request did not complete; seed " << seed_;
    if (op.result != 0) {
      // Only a lost store may fail requests.
      ASSERT_TRUE(lost_power_) << "request failed " << op.result
                               << " before the crash; seed " << seed_;
      return;
    }
    const uint64_t first = op.req.offset / 4096;
    switch (op.req.op) {
      case IoOp::kFlush:
        for (auto& [b, m] : model_) {
          m.durable = m.latest();
          m.issued.clear();
        }
        break;
      case IoOp::kWrite:
        if (!op.req.fua) break;
        for (size_t k = 0; k < op.ids.size(); ++k) {
          BlockModel& m = model_[first + k];
          auto it = std::find(m.issued.begin(), m.issued.end(), op.ids[k]);
          if (it == m.issued.end()) continue;
          m.durable = *it;
          m.issued.erase(m.issued.begin(), it + 1);
        }
        break;
      case IoOp::kRead:
        if (saw_failure_) break;
        for (size_t k = 0; k < op.ids.size(); ++k) {
          ASSERT_TRUE(std::equal(op.buf.begin() + k * 4096,
                                 op.buf.begin() + (k + 1) * 4096,
                                 Content(op.ids[k]).begin()))
              << "read of block " << first + k << " before the crash saw "
              << "stale data; seed " << seed_;
        }
        break;
      case IoOp::kDiscard:
        break;
    }
  }

  // Checks every block of the recovered volume and makes what it read the
  // new durable baseline.
  void Verify(SealedVolume& v, uint64_t point) {
    std::vector<uint8_t> all(kBlocks * 4096);
    const int r = v.Io(IoOp::kRead, 0, all);
    if (r != 0) {
      for (uint64_t b = 0; b < kBlocks; ++b) {
        std::vector<uint8_t> one(4096);
        if (v.Io(IoOp::kRead, b * 4096, one) != 0) {
          std::printf("block %llu: EIO; durable %llu, issued",
                      static_cast<unsigned long long>(b),
                      static_cast<unsigned long long>(model_[b].durable));
          for (uint64_t id : model_[b].issued) std::printf(" %llu", static_cast<unsigned long long>(id));
          std::printf("\n");
        }
      }
    }
    ASSERT_EQ(r, 0) << "read after recovery failed at crash point " << point
                    << "; seed " << seed_;
    for (uint64_t b = 0; b < kBlocks; ++b) {
      BlockModel& m = model_[b];
      std::vector<uint64_t> ok = m.issued;
      ok.push_back(m.durable);
      bool matched = false;
      for (uint64_t id : ok) {
        if (std::equal(all.begin() + b * 4096, all.begin() + (b + 1) * 4096,
                       Content(id).begin())) {
          m.durable = id;
          matched = true;
          break;
        }
      }
      ASSERT_TRUE(matched) << "block " << b << " holds neither its flushed "
                           << "content nor a later write at crash point "
                           << point << "; seed " << seed_;
      m.issued.clear();
    }
  }

  uint64_t seed_ = 0;
  uint64_t points_ = 0;
  std::mt19937_64 rng_;
  std::vector<uint64_t> hot_;
  std::map<uint64_t, BlockModel> model_;
  uint64_t next_id_ = 1;
  bool lost_power_ = false;
  bool saw_failure_ = false;
  uint64_t chain_ = 0;
  // Every (session id, counter) sealed in the whole test, and repeats.
  std::set<std::pair<crypto::SessionId, uint64_t>> sealed_;
  uint64_t nonce_reuses_ = 0;
  uint64_t rollbacks_ = 0;
  // The registry's record of the volume's state (what a broker would keep).
  VolumeState registry_;
  uint64_t closes_ = 0;
  uint64_t checkpoints_ = 0;
  uint64_t refusals_ = 0;
};

TEST_F(CrashTest, EveryBlockReadsFlushedOrLaterContentAfterRandomCrashes) {
  const auto dek = TestDek(3);
  uint64_t point = 0;
  while (point < points_) {
    // A fresh volume per chain; each chain crashes and recovers three times,
    // so recovery's own repairs are crash-tested too.
    ++chain_;
    model_.clear();
    for (uint64_t b = 0; b < kBlocks; ++b) model_[b] = BlockModel{};
    auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0),
                              FormatOf(kBlocks * 4096), dek, Options());
    ASSERT_TRUE(v.ok()) << v.status();
    std::unique_ptr<SealedVolume> vol = std::move(v).value();
    registry_ = vol->state();
    // Earlier crash states of this chain, with the model as it was then.
    std::vector<std::pair<std::unique_ptr<FaultStore>,
                          std::map<uint64_t, BlockModel>>> earlier;
    for (int crash = 0; crash < 3 && point < points_; ++crash, ++point) {
      auto& store = static_cast<FaultStore&>(vol->store());
      const uint64_t at = rng_() % 60;
      store.ArmCrash(at);
      lost_power_ = true;  // Requests may fail from here on.
      Workload(*vol, 10);
      if (HasFatalFailure()) return;
      if (rng_() % 4 == 0) {
        // A close (checkpoint) that the crash may interrupt; committed to
        // the registry only when it succeeded, as the node does.
        ++closes_;
        if (vol->Close().ok()) {
          registry_ = vol->state();
          for (auto& [b, m] : model_) {
            m.durable = m.latest();
            m.issued.clear();
          }
        }
      }
      auto image = store.CrashImage(rng_);
      vol.reset();  // Its Close fails against the dead store; ignored.
      earlier.emplace_back(image->Snapshot(), model_);
      bool rolled_back = false;
      if (earlier.size() > 1 && chain_ % 3 == 0) {
        rolled_back = true;
        // Roll back: the image is put back to an earlier crash state and
        // used from there (recovery runs on it again).
        auto& [old_image, old_model] = earlier[rng_() % (earlier.size() - 1)];
        image = old_image->Snapshot();
        model_ = old_model;
        ++rollbacks_;
      }
      // Every crash point reopens against the registry; a rollback is a
      // restore on purpose: not checked, its new epoch past the registry's.
      EngineOptions o = Checked();
      if (rolled_back) {
        o.expected_state.reset();
        o.min_epoch = registry_.epoch;
      }
      auto reopened = SealedVolume::OpenOn(std::move(image), dek, o);
      ASSERT_TRUE(reopened.ok())
          << "open after crash point " << point << ": " << reopened.status()
          << "; seed " << seed_;
      vol = std::move(reopened).value();
      ASSERT_EQ(registry_, vol->state()) << "seed " << seed_;
      // Once reopened, every earlier crash state of the chain is refused.
      for (auto& [old_image, old_model] : earlier) {
        auto stale = SealedVolume::OpenOn(old_image->Snapshot(), dek, Checked());
        ASSERT_FALSE(stale.ok())
            << "an earlier crash state was accepted at crash point " << point
            << "; seed " << seed_;
        ASSERT_EQ(GetErrorKind(stale.status()), ErrorKind::kRolledBack)
            << stale.status() << "; seed " << seed_;
        ++refusals_;
      }
      lost_power_ = false;
      saw_failure_ = false;
      Verify(*vol, point);
      if (HasFatalFailure()) return;
      ASSERT_TRUE(vol->recovery_stats().unrecoverable.empty())
          << "seed " << seed_;
      ASSERT_EQ(nonce_reuses_, 0u)
          << "a (session, counter) pair was sealed twice by crash point "
          << point << "; seed " << seed_;
    }
  }
  RecordProperty("crash_points", std::to_string(point));
  EXPECT_GT(rollbacks_, 0u);
  EXPECT_GT(closes_, 0u);
  EXPECT_GT(checkpoints_, 0u);
  EXPECT_GT(refusals_, 0u);
  EXPECT_GT(sealed_.size(), point);
  std::printf("checked %llu crash points (%llu after a rollback, %llu "
              "closes tried), %llu earlier states refused, %zu nonces "
              "sealed, none twice, seed %llu\n",
              static_cast<unsigned long long>(point),
              static_cast<unsigned long long>(rollbacks_),
              static_cast<unsigned long long>(closes_),
              static_cast<unsigned long long>(refusals_), sealed_.size(),
              static_cast<unsigned long long>(seed_));
}

// Recovery reads only the superblocks, the bitmap, the digest table and the
// groups written since the last checkpoint (close).
TEST(CrashRecoveryCostTest, RecoveryReadsOnlyDirtyGroups) {
  const auto dek = TestDek(4);
  const Layout l = Layout::Default();
  constexpr uint64_t kGroups = 8;
  auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0),
                            FormatOf(kGroups * 1024 * 4096), dek, Manual(2));
  ASSERT_TRUE(v.ok());
  std::unique_ptr<SealedVolume> vol = std::move(v).value();
  for (uint64_t g = 0; g < kGroups; ++g) {
    auto d = Pattern(g, 64 * 4096);
    ASSERT_EQ(vol->Io(IoOp::kWrite, g * 1024 * 4096, d), 0);
  }
  // A checkpoint (clean close), then a new session.
  ASSERT_TRUE(vol->Close().ok());
  auto closed = static_cast<FaultStore&>(vol->store()).Snapshot();
  vol.reset();
  auto reopened = SealedVolume::OpenOn(std::move(closed), dek, Manual(2));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  vol = std::move(reopened).value();
  // In flight at the crash: writes into group 5 only.
  auto d = Pattern(99, 16 * 4096);
  ASSERT_EQ(vol->Io(IoOp::kWrite, (5 * 1024 + 8) * 4096, d), 0);
  auto& store = static_cast<FaultStore&>(vol->store());
  std::mt19937_64 rng(1);
  auto image = store.CrashImage(rng);
  FaultStore* raw = image.get();
  vol.reset();
  auto re = SealedVolume::OpenOn(std::move(image), dek, Manual(2));
  ASSERT_TRUE(re.ok()) << re.status();
  EXPECT_EQ((*re)->recovery_stats().groups_scanned, 1u);
  for (uint64_t b : raw->read_blocks()) {
    if (b < l.groups_start) continue;  // Superblocks, bitmap, digests.
    const uint64_t g = (b - l.groups_start) / l.group_span();
    EXPECT_EQ(g, 5u) << "recovery read block " << b << " of clean group " << g;
  }
  // A clean close leaves nothing to scan.
  ASSERT_TRUE((*re)->Close().ok());
  auto clean = raw->Snapshot();
  FaultStore* craw = clean.get();
  re->reset();
  auto again = SealedVolume::OpenOn(std::move(clean), dek, Manual(2));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->recovery_stats().groups_scanned, 0u);
  for (uint64_t b : craw->read_blocks()) EXPECT_LT(b, l.groups_start);
}

}  // namespace
}  // namespace sealvol::io
