// The sealed-volume engine beside plain io_uring on the same tmpfs-backed
// image (/dev/shm): 4 KiB random write/read at QD32 and 1 MiB sequential
// write/read at QD16. Run: build/bench/engine_bench
// Env: SEALVOL_BENCH_DIR (default /dev/shm), SEALVOL_BENCH_WORKERS (2).
#include <fcntl.h>
#include <liburing.h>
#include <sys/resource.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "io/backing_store.h"
#include "io/sealed_volume.h"
#include "io/layout.h"

namespace sealvol::io {
namespace {

constexpr uint64_t kVolumeBytes = uint64_t{1} << 30;  // 1 GiB.

std::string ImagePath() {
  const char* d = std::getenv("SEALVOL_BENCH_DIR");
  return std::string(d ? d : "/dev/shm") + "/sealvol-engine-bench.img";
}

int Workers() {
  const char* w = std::getenv("SEALVOL_BENCH_WORKERS");
  return w ? std::atoi(w) : 2;
}

crypto::SecretBytes Dek() {
  auto k = crypto::SecretBytes::Allocate(32);
  for (size_t i = 0; i < 32; ++i) k->data()[i] = static_cast<uint8_t>(i + 9);
  return std::move(k).value();
}

// CPU time of the whole process (every thread, the kernel's io_uring workers
// included) and its context switches: what the load on a shared machine
// distorts less than wall time.
struct Usage {
  double cpu_s = 0;
  double switches = 0;
  static Usage Now() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    Usage u;
    u.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
              static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    u.switches = static_cast<double>(ru.ru_nvcsw + ru.ru_nivcsw);
    return u;
  }
};

// Per GiB moved: CPU seconds and context switches over the timed loop.
void ReportUsage(benchmark::State& state, const Usage& start, uint64_t bytes) {
  const Usage end = Usage::Now();
  const double gib = static_cast<double>(bytes) / double(uint64_t{1} << 30);
  if (gib <= 0) return;
  state.counters["cpu_s_per_GiB"] = (end.cpu_s - start.cpu_s) / gib;
  state.counters["ctxsw_per_MiB"] = (end.switches - start.switches) / (gib * 1024);
}

// Offsets for one run: random 4 KiB blocks or sequential 1 MiB steps.
std::vector<uint64_t> Offsets(uint64_t io_size, bool random, size_t n) {
  std::vector<uint64_t> out(n);
  const uint64_t slots = kVolumeBytes / io_size;
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = (random ? x % slots : i % slots) * io_size;
  }
  return out;
}

// A fresh formatted image, filled so reads decrypt real data.
std::unique_ptr<SealedVolume> FreshVolume(bool fill) {
  ::unlink(ImagePath().c_str());
  FileStoreOptions fo;
  fo.path = ImagePath();
  fo.create = true;
  auto store = OpenFileStore(fo);
  if (!store.ok()) return nullptr;
  FormatOptions f;
  f.size_bytes = kVolumeBytes;
  f.volume_id[0] = 7;
  EngineOptions eo;
  eo.worker_threads = Workers();
  auto dek = Dek();
  auto v = SealedVolume::FormatOn(std::move(*store), f, dek, eo);
  if (!v.ok()) return nullptr;
  if (fill) {
    std::vector<uint8_t> buf(1 << 20, 0x3C);
    for (uint64_t off = 0; off < kVolumeBytes; off += buf.size()) {
      (*v)->Io(IoOp::kWrite, off, buf);
    }
    (*v)->Io(IoOp::kFlush, 0, {});
  }
  return std::move(v).value();
}

// Keeps `qd` engine requests in flight over `offsets`.
class EngineDriver {
 public:
  EngineDriver(SealedVolume& v, IoOp op, uint64_t io_size, int qd)
      : v_(v), slots_(qd) {
    for (auto& s : slots_) {
      s.buf = AlignedBuffer(io_size);
      std::memset(s.buf.data(), 0x5A, io_size);
      s.req.op = op;
      s.req.length = io_size;
      s.req.buffer = s.buf.span();
      s.req.context = this;
      s.req.done = &Done;
      free_.push_back(&s);
    }
  }
  // Returns the number of failed requests.
  int Run(const std::vector<uint64_t>& offsets) {
    for (uint64_t off : offsets) {
      Slot* s;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return !free_.empty(); });
        s = free_.back();
        free_.pop_back();
      }
      s->req.offset = off;
      v_.Submit(&s->req);
    }
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return free_.size() == slots_.size(); });
    return errors_;
  }

 private:
  struct Slot {
    IoRequest req;
    AlignedBuffer buf;
  };
  static void Done(IoRequest* r, int result) {
    auto* self = static_cast<EngineDriver*>(r->context);
    std::lock_guard<std::mutex> l(self->mu_);
    if (result != 0) ++self->errors_;
    // The request is the first member of its slot.
    self->free_.push_back(reinterpret_cast<Slot*>(r));
    self->cv_.notify_one();
  }
  SealedVolume& v_;
  std::vector<Slot> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot*> free_;
  int errors_ = 0;
};

void RunEngine(benchmark::State& state, IoOp op, uint64_t io_size, bool random,
               int qd) {
  auto v = FreshVolume(/*fill=*/op == IoOp::kRead);
  if (!v) {
    state.SkipWithError("cannot create the image");
    return;
  }
  const size_t per_iter = io_size >= (1 << 20) ? 256 : 8192;
  EngineDriver d(*v, op, io_size, qd);
  uint64_t round = 0;
  const Usage usage = Usage::Now();
  for (auto _ : state) {
    auto offsets = Offsets(io_size, random, per_iter);
    for (auto& o : offsets) o = (o + round * io_size * 7919) % kVolumeBytes;
    if (d.Run(offsets) != 0) {
      state.SkipWithError("engine request failed");
      break;
    }
    ++round;
  }
  ReportUsage(state, usage, state.iterations() * per_iter * io_size);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * per_iter));
  state.SetBytesProcessed(
      static_cast<int64_t>(state.iterations() * per_iter * io_size));
  (void)v->Close();
}

// Plain io_uring on the same image file (O_DIRECT), same offsets, same QD.
void RunPlain(benchmark::State& state, bool write, uint64_t io_size,
              bool random, int qd) {
  {
    auto v = FreshVolume(/*fill=*/!write);  // Same file, same allocation.
    if (!v) {
      state.SkipWithError("cannot create the image");
      return;
    }
    (void)v->Close();
  }
  int fd = ::open(ImagePath().c_str(), O_RDWR | O_DIRECT);
  if (fd < 0) fd = ::open(ImagePath().c_str(), O_RDWR);
  io_uring ring;
  io_uring_queue_init(static_cast<unsigned>(qd) * 2, &ring, 0);
  std::vector<AlignedBuffer> bufs;
  for (int i = 0; i < qd; ++i) {
    bufs.emplace_back(io_size);
    std::memset(bufs.back().data(), 0x5A, io_size);
  }
  // Data area of the image: where the engine keeps block 0 onwards.
  const uint64_t base = Layout::Default().data_position(0) * 4096;
  const size_t per_iter = io_size >= (1 << 20) ? 256 : 8192;
  uint64_t round = 0;
  bool failed = false;
  const Usage usage = Usage::Now();
  for (auto _ : state) {
    auto offsets = Offsets(io_size, random, per_iter);
    size_t next = 0, inflight = 0;
    std::vector<int> free_idx;
    for (int i = 0; i < qd; ++i) free_idx.push_back(i);
    while (next < offsets.size() || inflight > 0) {
      while (next < offsets.size() && !free_idx.empty()) {
        const int b = free_idx.back();
        free_idx.pop_back();
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        // Volume offset -> image offset, as the engine maps it.
        const uint64_t vo = (offsets[next] + round * io_size * 7919) % kVolumeBytes;
        const uint64_t block = vo / 4096;
        const uint64_t off = (Layout::Default().data_position(block)) * 4096;
        (void)base;
        if (write) {
          io_uring_prep_write(sqe, fd, bufs[b].data(), static_cast<unsigned>(io_size), off);
        } else {
          io_uring_prep_read(sqe, fd, bufs[b].data(), static_cast<unsigned>(io_size), off);
        }
        sqe->user_data = static_cast<uint64_t>(b);
        ++next;
        ++inflight;
      }
      io_uring_submit_and_wait(&ring, 1);
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(&ring, head, cqe) {
        if (cqe->res < 0) failed = true;
        free_idx.push_back(static_cast<int>(cqe->user_data));
        ++seen;
      }
      io_uring_cq_advance(&ring, seen);
      inflight -= seen;
    }
    ++round;
    if (failed) {
      state.SkipWithError("plain I/O failed");
      break;
    }
  }
  ReportUsage(state, usage, state.iterations() * per_iter * io_size);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * per_iter));
  state.SetBytesProcessed(
      static_cast<int64_t>(state.iterations() * per_iter * io_size));
  io_uring_queue_exit(&ring);
  ::close(fd);
  ::unlink(ImagePath().c_str());
}

void BM_Plain_RandWrite4K_QD32(benchmark::State& s) { RunPlain(s, true, 4096, true, 32); }
void BM_Engine_RandWrite4K_QD32(benchmark::State& s) { RunEngine(s, IoOp::kWrite, 4096, true, 32); }
void BM_Plain_RandRead4K_QD32(benchmark::State& s) { RunPlain(s, false, 4096, true, 32); }
void BM_Engine_RandRead4K_QD32(benchmark::State& s) { RunEngine(s, IoOp::kRead, 4096, true, 32); }
void BM_Plain_SeqWrite1M_QD16(benchmark::State& s) { RunPlain(s, true, 1 << 20, false, 16); }
void BM_Engine_SeqWrite1M_QD16(benchmark::State& s) { RunEngine(s, IoOp::kWrite, 1 << 20, false, 16); }
void BM_Plain_SeqRead1M_QD16(benchmark::State& s) { RunPlain(s, false, 1 << 20, false, 16); }
void BM_Engine_SeqRead1M_QD16(benchmark::State& s) { RunEngine(s, IoOp::kRead, 1 << 20, false, 16); }

// Each engine figure runs right after its baseline. Wall-clock time: the
// engine works on its own threads.
BENCHMARK(BM_Plain_RandWrite4K_QD32)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Engine_RandWrite4K_QD32)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Plain_RandRead4K_QD32)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Engine_RandRead4K_QD32)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Plain_SeqWrite1M_QD16)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Engine_SeqWrite1M_QD16)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Plain_SeqRead1M_QD16)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Engine_SeqRead1M_QD16)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sealvol::io

BENCHMARK_MAIN();
