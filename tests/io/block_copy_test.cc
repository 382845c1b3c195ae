// The copy loop (io/block_copy.h) with a source that answers reads later,
// on its own thread, as an open sealed volume does: chunks are read ahead
// while earlier ones are sealed, yet sealed in order, holes and zero runs
// left out, and a failed read-ahead fails the copy naming its offset with
// nothing recorded past what was sealed before it.
#include "io/block_copy.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "engine_test_support.h"
#include "gtest/gtest.h"

namespace sealvol::io {
namespace {

using testing::FormatOf;
using testing::Pattern;
using testing::TempDir;
using testing::TestDek;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kChunk = 1 * kMiB;
constexpr uint64_t kSize = 16 * kMiB;

// Plaintext in memory, read on a thread of its own a little later than
// asked; a hole at [hole_begin, hole_end) that NextData skips; optionally
// one offset whose read fails.
class LaterSource : public BlockSource {
 public:
  LaterSource() : data_(kSize) {
    for (uint64_t at = 0; at < kSize; at += 4096) {
      // Every third block stays zero: a zero run in a data chunk.
      if ((at / 4096) % 3 == 2) continue;
      const std::vector<uint8_t> p = Pattern(at / 4096);
      std::copy(p.begin(), p.end(), data_.begin() + static_cast<ptrdiff_t>(at));
    }
    std::fill(data_.begin() + kHoleBegin, data_.begin() + kHoleEnd, 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~LaterSource() override {
    {
      MutexLock l(&mu_);
      stop_ = true;
      cv_.SignalAll();
    }
    thread_.join();
  }

  static constexpr uint64_t kHoleBegin = 5 * kMiB, kHoleEnd = 7 * kMiB;

  uint64_t size_bytes() const override { return kSize; }
  uint64_t NextData(uint64_t offset) override {
    return offset >= kHoleBegin && offset < kHoleEnd ? kHoleEnd : offset;
  }
  absl::Status Read(uint64_t offset, std::span<uint8_t> buffer) override {
    if (offset == fail_at_) {
      return absl::DataLossError(absl::StrCat("read source at ", offset));
    }
    std::copy_n(data_.begin() + static_cast<ptrdiff_t>(offset), buffer.size(),
                buffer.begin());
    return absl::OkStatus();
  }
  void StartRead(uint64_t offset, std::span<uint8_t> buffer,
                 std::function<void(absl::Status)> done) override {
    MutexLock l(&mu_);
    queue_.push_back(Pending{offset, buffer, std::move(done)});
    max_outstanding_ = std::max(max_outstanding_, queue_.size());
    read_offsets_.push_back(offset);
    cv_.SignalAll();
  }

  void FailAt(uint64_t offset) { fail_at_ = offset; }
  size_t max_outstanding() {
    MutexLock l(&mu_);
    return max_outstanding_;
  }
  std::vector<uint64_t> read_offsets() {
    MutexLock l(&mu_);
    return read_offsets_;
  }
  const std::vector<uint8_t>& data() const { return data_; }

 private:
  struct Pending {
    uint64_t offset;
    std::span<uint8_t> buffer;
    std::function<void(absl::Status)> done;
  };

  // Answers the oldest read 2 ms after it was asked for, one at a time.
  void Serve() {
    for (;;) {
      Pending p;
      {
        MutexLock l(&mu_);
        while (queue_.empty() && !stop_) cv_.Wait(&mu_);
        if (queue_.empty()) return;
        p = queue_.front();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      absl::Status s = Read(p.offset, p.buffer);
      {
        MutexLock l(&mu_);
        queue_.pop_front();
      }
      p.done(std::move(s));
    }
  }

  std::vector<uint8_t> data_;
  std::atomic<uint64_t> fail_at_{~uint64_t{0}};
  std::thread thread_;
  Mutex mu_;
  CondVar cv_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  size_t max_outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> read_offsets_ ABSL_GUARDED_BY(mu_);
};

class BlockCopyTest : public ::testing::Test {
 protected:
  BlockCopyTest()
      : dek_(TestDek(3)), path_(dir_.file("target.img")),
        file_(path_, ".copy", "copy") {
    FormatOptions f = FormatOf(kSize, 4);
    f.path = path_;
    EngineOptions e;
    e.worker_threads = 2;
    auto v = SealedVolume::FormatFile(f, dek_, e);
    EXPECT_TRUE(v.ok()) << v.status();
    target_ = std::move(v).value();
  }
  ~BlockCopyTest() override {
    if (target_) {
      EXPECT_TRUE(target_->Close().ok());
    }
  }

  static BlockCopyOptions Options() {
    BlockCopyOptions o;
    o.chunk_bytes = kChunk;
    o.depth = 4;
    o.progress_interval = 2 * kChunk;
    return o;
  }

  // A record as a copy into target_ starts with.
  CopyProgress Started() {
    CopyProgress p;
    p.phase = CopyProgress::Phase::kCopying;
    p.volume_id = VolumeIdString(target_->volume_id());
    p.format_id = FormatIdString(target_->format_id());
    p.created = true;
    p.source = "later";
    p.identity.size = kSize;
    return p;
  }

  std::vector<uint8_t> TargetBytes() {
    std::vector<uint8_t> out(kSize);
    EXPECT_EQ(target_->Io(IoOp::kRead, 0, out), 0);
    return out;
  }

  TempDir dir_;
  crypto::SecretBytes dek_;
  std::string path_;
  CopyProgressFile file_;
  std::unique_ptr<SealedVolume> target_;
};

TEST_F(BlockCopyTest, ReadsAheadYetSealsEveryChunkInOrder) {
  LaterSource source;
  CopyProgress progress = Started();
  std::vector<uint64_t> recorded;
  BlockCopyOptions o = Options();
  o.on_progress = [&](uint64_t at) { recorded.push_back(at); };
  auto counts = CopyBlocks(source, *target_, file_, progress, o);
  ASSERT_TRUE(counts.ok()) << counts.status();

  // depth 4: three chunks are asked for before the first is answered.
  EXPECT_EQ(source.max_outstanding(), 3u);
  // Every data chunk read once, in order; the hole never.
  std::vector<uint64_t> expected;
  for (uint64_t at = 0; at < kSize; at += kChunk) {
    if (at < LaterSource::kHoleBegin || at >= LaterSource::kHoleEnd) {
      expected.push_back(at);
    }
  }
  EXPECT_EQ(source.read_offsets(), expected);
  // Records only at step ends, ascending, ending at the source's end.
  ASSERT_FALSE(recorded.empty());
  EXPECT_TRUE(std::is_sorted(recorded.begin(), recorded.end()));
  EXPECT_EQ(recorded.back(), kSize);
  EXPECT_EQ(progress.next_offset, kSize);

  EXPECT_TRUE(TargetBytes() == source.data());
  // Two of every three blocks outside the hole hold data.
  const uint64_t blocks = (kSize - (LaterSource::kHoleEnd -
                                    LaterSource::kHoleBegin)) / 4096;
  uint64_t data_blocks = 0;
  for (uint64_t b = 0; b < kSize / 4096; ++b) {
    const uint64_t at = b * 4096;
    if (b % 3 != 2 && (at < LaterSource::kHoleBegin || at >= LaterSource::kHoleEnd)) {
      ++data_blocks;
    }
  }
  EXPECT_EQ(counts->written, data_blocks * 4096);
  EXPECT_EQ(counts->written + counts->zeros, kSize);
  EXPECT_LT(data_blocks, blocks);
}

TEST_F(BlockCopyTest, AFailedReadAheadFailsTheCopyAndRecordsNothingPastIt) {
  LaterSource source;
  source.FailAt(9 * kMiB);
  CopyProgress progress = Started();
  auto counts = CopyBlocks(source, *target_, file_, progress, Options());
  ASSERT_FALSE(counts.ok());
  EXPECT_TRUE(absl::IsDataLoss(counts.status())) << counts.status();
  EXPECT_NE(counts.status().message().find(std::to_string(9 * kMiB)),
            std::string::npos)
      << counts.status();
  // The last durable record lies before the failed chunk: a resume reads
  // it again.
  auto saved = file_.Load();
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_LE(saved->next_offset, 9 * kMiB);
  EXPECT_EQ(saved->next_offset, progress.next_offset);
  // Everything the record claims is in the target.
  std::vector<uint8_t> got = TargetBytes();
  EXPECT_TRUE(std::equal(got.begin(),
                         got.begin() + static_cast<ptrdiff_t>(saved->next_offset),
                         source.data().begin()));

  // Resumed from the record with the read healed, the copy completes.
  source.FailAt(~uint64_t{0});
  counts = CopyBlocks(source, *target_, file_, progress, Options());
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_TRUE(TargetBytes() == source.data());
}

}  // namespace
}  // namespace sealvol::io
