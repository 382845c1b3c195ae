// SealedVolume::HoldWrites (docs/format.md, "Copies"): the writes in flight
// are waited for and made durable, new writes wait until the hold is
// released while reads and flushes go on, the wait is bounded, and a cut
// taken under the hold holds every acknowledged write and nothing after.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "engine_test_support.h"
#include "gtest/gtest.h"
#include "io/sealed_volume.h"
#include "io/volume_copy.h"

namespace sealvol::io {
namespace {

using namespace std::chrono_literals;
using testing::FormatOf;
using testing::Pattern;
using testing::TempDir;
using testing::TestDek;
using testing::TestId;

constexpr uint64_t kMiB = 1 << 20;

// A write submitted without waiting; done() tells whether it completed.
class AsyncWrite {
 public:
  AsyncWrite(SealedVolume& v, uint64_t offset, uint64_t pattern)
      : data_(Pattern(pattern, 16 * 4096)) {
    req_.op = IoOp::kWrite;
    req_.offset = offset;
    req_.length = data_.size();
    req_.buffer = data_;
    req_.context = this;
    req_.done = [](IoRequest* r, int result) {
      auto* self = static_cast<AsyncWrite*>(r->context);
      self->result_.store(result);
      self->done_.store(true);
    };
    v.Submit(&req_);
  }
  bool done() const { return done_.load(); }
  int result() const { return result_.load(); }
  bool WaitDone(std::chrono::milliseconds limit) const {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(1ms);
    }
    return done();
  }
  const std::vector<uint8_t>& data() const { return data_; }

 private:
  std::vector<uint8_t> data_;
  IoRequest req_;
  std::atomic<bool> done_{false};
  std::atomic<int> result_{1};
};

class WriteHoldTest : public ::testing::Test {
 protected:
  WriteHoldTest() : dek_(TestDek(3)) {}

  // A threaded volume over a FaultStore (durability is observable).
  std::unique_ptr<SealedVolume> FormatMem(uint64_t size = 16 * kMiB) {
    EngineOptions o;
    o.worker_threads = 2;
    o.keep_store_after_close = true;
    auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0),
                                    FormatOf(size), dek_, o);
    EXPECT_TRUE(v.ok()) << v.status();
    return std::move(v).value();
  }
  static FaultStore& Store(SealedVolume& v) {
    return static_cast<FaultStore&>(v.store());
  }
  static void WaitStalled(FaultStore& fs) {
    for (int i = 0; i < 5000 && fs.stalled() == 0; ++i) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_GT(fs.stalled(), 0) << "the write never reached the store";
  }

  crypto::SecretBytes dek_;
};

TEST_F(WriteHoldTest, WaitsForWritesInFlightAndMakesThemDurable) {
  auto v = FormatMem();
  FaultStore& fs = Store(*v);
  fs.StallWrites(true);
  AsyncWrite w(*v, 0, 1);
  WaitStalled(fs);
  std::atomic<bool> held{false};
  bool write_done_when_held = false;
  uint64_t unflushed_when_held = 99;
  absl::StatusOr<WriteHold> hold = absl::UnknownError("not run");
  std::thread t([&] {
    hold = v->HoldWrites(10s);
    write_done_when_held = w.done();
    unflushed_when_held = fs.unflushed_writes();
    held.store(true);
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(held.load()) << "the hold did not wait for the write in flight";
  fs.StallWrites(false);
  t.join();
  ASSERT_TRUE(hold.ok()) << hold.status();
  EXPECT_TRUE(write_done_when_held);
  EXPECT_EQ(w.result(), 0);
  EXPECT_EQ(unflushed_when_held, 0u) << "the hold did not flush";
  hold->Release();
  ASSERT_TRUE(v->Close().ok());
}

TEST_F(WriteHoldTest, WritesWaitForTheReleaseWhileReadsAndFlushesGoOn) {
  auto v = FormatMem();
  std::vector<uint8_t> before = Pattern(7, 16 * 4096);
  ASSERT_EQ(v->Io(IoOp::kWrite, 0, before), 0);
  auto hold = v->HoldWrites(10s);
  ASSERT_TRUE(hold.ok()) << hold.status();
  AsyncWrite w(*v, 0, 8);
  AsyncWrite discard_target(*v, 64 * 4096, 9);
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(w.done()) << "a write completed during the hold";
  EXPECT_FALSE(discard_target.done());
  // Reads and flushes are not held.
  std::vector<uint8_t> read(16 * 4096);
  EXPECT_EQ(v->Io(IoOp::kRead, 0, read), 0);
  EXPECT_EQ(read, before);
  EXPECT_EQ(v->Io(IoOp::kFlush, 0, {}), 0);
  // Nor are checkpoints and grows run under it.
  EXPECT_TRUE(absl::IsUnavailable(v->CheckpointNow()));
  EXPECT_TRUE(absl::IsUnavailable(v->Grow(32 * kMiB)));
  hold->Release();
  ASSERT_TRUE(w.WaitDone(10s)) << "a held write never completed";
  ASSERT_TRUE(discard_target.WaitDone(10s));
  EXPECT_EQ(w.result(), 0);
  EXPECT_EQ(v->Io(IoOp::kRead, 0, read), 0);
  EXPECT_EQ(read, w.data());
  EXPECT_TRUE(v->Grow(32 * kMiB).ok());
  ASSERT_TRUE(v->Close().ok());
}

TEST_F(WriteHoldTest, AStuckWriteFailsTheHoldWithAClearErrorAndWritesGoOn) {
  auto v = FormatMem();
  FaultStore& fs = Store(*v);
  fs.StallWrites(true);
  AsyncWrite w(*v, 0, 1);
  WaitStalled(fs);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<WriteHold> hold = absl::UnknownError("not run");
  std::atomic<bool> returned{false};
  std::thread t([&] {
    hold = v->HoldWrites(200ms);
    returned.store(true);
  });
  while (!returned.load() && std::chrono::steady_clock::now() - start < 5s) {
    std::this_thread::sleep_for(1ms);
  }
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(returned.load()) << "the hold waited past its timeout";
  fs.StallWrites(false);
  t.join();
  ASSERT_FALSE(hold.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(hold.status())) << hold.status();
  EXPECT_NE(hold.status().message().find("1 write"), std::string::npos)
      << hold.status();
  EXPECT_GE(waited, 200ms);
  ASSERT_TRUE(w.WaitDone(10s));
  // The failed hold let go: a new write completes.
  AsyncWrite after(*v, 64 * 4096, 2);
  EXPECT_TRUE(after.WaitDone(10s)) << "writes stayed held after a failed hold";
  ASSERT_TRUE(v->Close().ok());
}

TEST_F(WriteHoldTest, OneHoldAtATimeAndCloseReleasesHeldWrites) {
  auto v = FormatMem();
  auto hold = v->HoldWrites(10s);
  ASSERT_TRUE(hold.ok());
  auto second = v->HoldWrites(10s);
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  AsyncWrite w(*v, 0, 5);
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(w.done());
  // Close runs what was held, then closes; the hold's release is then a
  // no-op.
  ASSERT_TRUE(v->Close().ok());
  EXPECT_TRUE(w.done());
  EXPECT_EQ(w.result(), 0);
  hold->Release();
  auto closed = v->HoldWrites(1s);
  EXPECT_TRUE(absl::IsFailedPrecondition(closed.status())) << closed.status();
}

// The point in time: a cut under the hold has every acknowledged write
// (even unflushed ones: the hold flushes) and no write submitted during it.
TEST_F(WriteHoldTest, ACutUnderTheHoldHasWhatWasAcknowledgedAndNothingAfter) {
  TempDir dir;
  FormatOptions f = FormatOf(16 * kMiB, 4);
  f.path = dir.file("live.img");
  EngineOptions o;
  o.worker_threads = 2;
  auto v = SealedVolume::FormatFile(f, dek_, o);
  ASSERT_TRUE(v.ok()) << v.status();
  std::vector<uint8_t> acked = Pattern(11, 16 * 4096);
  ASSERT_EQ((*v)->Io(IoOp::kWrite, 0, acked), 0);  // No flush.
  auto hold = (*v)->HoldWrites(10s);
  ASSERT_TRUE(hold.ok()) << hold.status();
  AsyncWrite during(**v, 0, 12);
  AsyncWrite elsewhere(**v, 1024 * 4096, 13);
  std::this_thread::sleep_for(50ms);  // Time they would need to land.
  ASSERT_TRUE(CutImage(f.path, dir.file("cut.img")).ok());
  hold->Release();
  ASSERT_TRUE(during.WaitDone(10s));
  ASSERT_TRUE(elsewhere.WaitDone(10s));
  ASSERT_TRUE((*v)->Close().ok());

  const crypto::SecretBytes target_dek = TestDek(4);
  CopyOptions c;
  c.source_path = dir.file("cut.img");
  c.source_dek = &dek_;
  c.target_dek = &target_dek;
  c.target_path = dir.file("copy.img");
  c.target_volume_id = TestId(5);
  auto r = CopySealed(c);
  ASSERT_TRUE(r.ok()) << r.status();
  EngineOptions ro;
  ro.read_only = true;
  auto copy = SealedVolume::OpenFile(c.target_path, target_dek, ro);
  ASSERT_TRUE(copy.ok()) << copy.status();
  std::vector<uint8_t> read(16 * 4096);
  ASSERT_EQ((*copy)->Io(IoOp::kRead, 0, read), 0);
  EXPECT_EQ(read, acked) << "the cut lacks an acknowledged write, or has a held one";
  ASSERT_EQ((*copy)->Io(IoOp::kRead, 1024 * 4096, read), 0);
  EXPECT_TRUE(std::all_of(read.begin(), read.end(), [](uint8_t b) { return b == 0; }))
      << "a write submitted during the hold is in the cut";
}

}  // namespace
}  // namespace sealvol::io
