// The threaded engine under concurrent submitters: many requests in flight,
// requests split across groups and workers, flushes and FUA writes racing
// with I/O. Also run under ThreadSanitizer (label tsan).
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "engine_test_support.h"

namespace sealvol::io {
namespace {

using testing::FormatOf;
using testing::Pattern;
using testing::TempDir;
using testing::TestDek;

constexpr uint64_t kMiB = 1 << 20;

// A fixed window of asynchronous requests.
class Window {
 public:
  struct Slot {
    IoRequest req;
    std::vector<uint8_t> buf;
    std::vector<uint8_t> expect;
    Window* owner = nullptr;
  };
  explicit Window(size_t depth) : slots_(depth) {
    for (auto& s : slots_) {
      s.owner = this;
      free_.push_back(&s);
    }
  }
  Slot* Acquire() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return !free_.empty(); });
    Slot* s = free_.back();
    free_.pop_back();
    return s;
  }
  static void Done(IoRequest* r, int result) {
    auto* s = static_cast<Slot*>(r->context);
    Window* w = s->owner;
    if (result != 0) w->errors_.fetch_add(1);
    if (r->op == IoOp::kRead && result == 0 && !s->expect.empty() &&
        s->buf != s->expect) {
      w->mismatches_.fetch_add(1);
    }
    std::lock_guard<std::mutex> l(w->mu_);
    w->free_.push_back(s);
    w->cv_.notify_all();
  }
  void Drain() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return free_.size() == slots_.size(); });
  }
  int errors() const { return errors_.load(); }
  int mismatches() const { return mismatches_.load(); }

 private:
  std::vector<Slot> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot*> free_;
  std::atomic<int> errors_{0};
  std::atomic<int> mismatches_{0};
};

// With `inline_threads`, that many of the submitters use SubmitInline (the
// FUSE front-end's path for a lone request), racing with queued ones.
void ParallelSubmitters(int inline_threads) {
  TempDir dir("sealvol-concurrency", "/dev/shm");
  FormatOptions f = FormatOf(64 * kMiB);
  f.path = dir.file("c.img");
  const auto dek = TestDek(9);
  auto v = SealedVolume::Format(f, dek);
  ASSERT_TRUE(v.ok()) << v.status();
  SealedVolume& vol = **v;
  constexpr int kThreads = 4;
  // Thread t owns 16 KiB extents t, t+4, ...; extents straddle the 4 MiB
  // group boundaries (offset 2 KiB blocks before them) so requests split.
  auto extent_offset = [](uint64_t e) {
    return (e * 64 + 1022) * 4096 % (60 * kMiB);
  };
  std::vector<std::thread> threads;
  std::atomic<int> errors{0}, mismatches{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Window w(8);
      for (int round = 0; round < 3; ++round) {
        for (uint64_t e = t; e < 64; e += kThreads) {
          Window::Slot* s = w.Acquire();
          s->buf = Pattern(e * 10 + round, 16 * 1024);
          s->expect.clear();
          s->req = IoRequest{};
          s->req.op = IoOp::kWrite;
          s->req.fua = (e % 5 == 0);
          s->req.offset = extent_offset(e);
          s->req.length = s->buf.size();
          s->req.buffer = s->buf;
          s->req.done = &Window::Done;
          s->req.context = s;
          if (t < inline_threads) {
            vol.SubmitInline(&s->req);
          } else {
            vol.Submit(&s->req);
          }
        }
        w.Drain();
        for (uint64_t e = t; e < 64; e += kThreads) {
          Window::Slot* s = w.Acquire();
          s->expect = Pattern(e * 10 + round, 16 * 1024);
          s->buf.assign(16 * 1024, 0xAA);
          s->req = IoRequest{};
          s->req.op = IoOp::kRead;
          s->req.offset = extent_offset(e);
          s->req.length = s->buf.size();
          s->req.buffer = s->buf;
          s->req.done = &Window::Done;
          s->req.context = s;
          if (t < inline_threads) {
            vol.SubmitInline(&s->req);
          } else {
            vol.Submit(&s->req);
          }
        }
        w.Drain();
      }
      errors += w.errors();
      mismatches += w.mismatches();
    });
  }
  std::thread flusher([&] {
    auto* e = &vol;
    for (int i = 0; i < 20; ++i) {
      if (e->Io(IoOp::kFlush, 0, {}) != 0) errors++;
      std::this_thread::yield();
    }
  });
  for (auto& th : threads) th.join();
  flusher.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  ASSERT_TRUE(vol.Close().ok());

  OpenOptions o;
  o.path = f.path;
  auto re = SealedVolume::Open(o, dek);
  ASSERT_TRUE(re.ok()) << re.status();
  auto* e = re->get();
  for (uint64_t x = 0; x < 64; ++x) {
    std::vector<uint8_t> got(16 * 1024);
    ASSERT_EQ(e->Io(IoOp::kRead, extent_offset(x), got), 0);
    EXPECT_EQ(got, Pattern(x * 10 + 2, 16 * 1024)) << "extent " << x;
  }
}

TEST(ConcurrencyTest, ParallelSubmittersKeepEveryBlockIntact) {
  ParallelSubmitters(0);
}

TEST(ConcurrencyTest, InlineAndQueuedSubmittersKeepEveryBlockIntact) {
  ParallelSubmitters(2);
}

// A lone request on an idle engine runs on the submitting thread: it has
// completed when SubmitInline returns, with nothing handed to a worker.
TEST(ConcurrencyTest, SubmitInlineRunsALoneRequestOnTheCallingThread) {
  TempDir dir("sealvol-concurrency", "/dev/shm");
  FormatOptions f = FormatOf(16 * kMiB);
  f.path = dir.file("i.img");
  auto v = SealedVolume::Format(f, TestDek(4));
  ASSERT_TRUE(v.ok()) << v.status();
  struct Seen {
    std::atomic<int> result{1};
    std::thread::id thread;
  };
  auto done = [](IoRequest* r, int result) {
    auto* seen = static_cast<Seen*>(r->context);
    seen->thread = std::this_thread::get_id();
    seen->result.store(result);
  };
  std::vector<uint8_t> data = Pattern(7, 8192), back(8192, 0);
  for (IoOp op : {IoOp::kWrite, IoOp::kFlush, IoOp::kRead}) {
    Seen seen;
    IoRequest req;
    req.op = op;
    req.fua = op == IoOp::kWrite;
    req.offset = op == IoOp::kFlush ? 0 : 5 * 4096;
    req.length = op == IoOp::kFlush ? 0 : 8192;
    req.buffer = op == IoOp::kFlush ? std::span<uint8_t>()
                 : op == IoOp::kWrite ? std::span<uint8_t>(data)
                                      : std::span<uint8_t>(back);
    req.done = done;
    req.context = &seen;
    (*v)->SubmitInline(&req);
    const bool completed_on_return = seen.result.load() != 1;
    while (seen.result.load() == 1) std::this_thread::yield();
    EXPECT_TRUE(completed_on_return) << "op " << static_cast<int>(op);
    EXPECT_EQ(seen.result.load(), 0) << "op " << static_cast<int>(op);
    EXPECT_EQ(seen.thread, std::this_thread::get_id())
        << "op " << static_cast<int>(op);
  }
  EXPECT_EQ(back, data);
  ASSERT_TRUE((*v)->Close().ok());
}

TEST(ConcurrencyTest, SameBlockWritesApplyInSubmissionOrder) {
  TempDir dir("sealvol-concurrency", "/dev/shm");
  FormatOptions f = FormatOf(16 * kMiB);
  f.path = dir.file("o.img");
  const auto dek = TestDek(10);
  auto v = SealedVolume::Format(f, dek);
  ASSERT_TRUE(v.ok()) << v.status();
  Window w(32);
  for (int i = 0; i < 200; ++i) {
    Window::Slot* s = w.Acquire();
    s->buf = Pattern(i, 4096);
    s->expect.clear();
    s->req = IoRequest{};
    s->req.op = IoOp::kWrite;
    s->req.offset = 4096 * 7;
    s->req.length = 4096;
    s->req.buffer = s->buf;
    s->req.done = &Window::Done;
    s->req.context = s;
    (*v)->Submit(&s->req);
  }
  w.Drain();
  EXPECT_EQ(w.errors(), 0);
  std::vector<uint8_t> got(4096);
  ASSERT_EQ(v->get()->Io(IoOp::kRead, 4096 * 7, got), 0);
  EXPECT_EQ(got, Pattern(199, 4096));
}

}  // namespace
}  // namespace sealvol::io
