#include "io/block_copy.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/mutex.h"
#include "base/status_macros.h"

namespace sealvol::io {
namespace {

uint64_t RoundUpToBlock(uint64_t n) {
  return (n + kBlockSize - 1) / kBlockSize * kBlockSize;
}

bool IsZero(const uint8_t* p, size_t n) {
  return p[0] == 0 && std::equal(p, p + n - 1, p + 1);
}

// One step of the copy: a chunk read into its buffer, or a hole of the
// source, and the target requests that still use the buffer. Up to
// depth - 1 steps are read ahead while the target seals earlier ones; a slot
// is reused only once its requests completed.
class Slot {
 public:
  explicit Slot(uint64_t chunk_bytes)
      : buffer_(chunk_bytes), requests_(chunk_bytes / kBlockSize + 1) {}

  std::span<uint8_t> buffer() { return buffer_; }

  // The step this slot holds; only the copying thread touches them.
  uint64_t step_offset = 0;
  uint64_t step_length = 0;
  bool step_hole = false;

  // Starts reading `length` bytes at `offset` of `source` into buffer().
  void StartRead(BlockSource& source, uint64_t offset, uint64_t length) {
    {
      MutexLock l(&mu_);
      ++pending_;
    }
    source.StartRead(offset, buffer().first(length), [this](absl::Status s) {
      MutexLock l(&mu_);
      if (!s.ok() && read_error_.ok()) read_error_ = std::move(s);
      if (--pending_ == 0) cv_.SignalAll();
    });
  }

  // Submits an asynchronous write of `part` (inside buffer()), or with an
  // empty `part` a discard of `length` bytes.
  void Submit(SealedVolume& target, IoOp op, uint64_t offset, uint64_t length,
              std::span<uint8_t> part = {}) {
    CHECK(used_ < requests_.size());
    IoRequest& r = requests_[used_++];
    r = IoRequest{};
    r.op = op;
    r.offset = offset;
    r.length = length;
    r.buffer = part;
    r.context = this;
    r.done = [](IoRequest* request, int result) {
      static_cast<Slot*>(request->context)->Completed(*request, result);
    };
    {
      MutexLock l(&mu_);
      ++pending_;
    }
    target.Submit(&r);
  }

  // Waits for the read and every request started since the last Wait. OK,
  // or the read's error, or the first failed request as DataLoss naming
  // `target` and the offset.
  absl::Status Wait(const std::string& target) {
    MutexLock l(&mu_);
    while (pending_ > 0) cv_.Wait(&mu_);
    used_ = 0;
    if (!read_error_.ok()) return std::exchange(read_error_, absl::OkStatus());
    if (error_ == 0) return absl::OkStatus();
    const int err = std::exchange(error_, 0);
    return absl::DataLossError(absl::StrCat(
        target, ": ", error_op_ == IoOp::kWrite ? "write" : "discard", " at ",
        error_offset_, ": ", std::strerror(-err)));
  }

 private:
  void Completed(const IoRequest& r, int result) {
    MutexLock l(&mu_);
    if (result != 0 && error_ == 0) {
      error_ = result;
      error_op_ = r.op;
      error_offset_ = r.offset;
    }
    if (--pending_ == 0) cv_.SignalAll();
  }

  std::vector<uint8_t> buffer_;
  std::vector<IoRequest> requests_;
  size_t used_ = 0;  // Only the copying thread touches it.
  Mutex mu_;
  CondVar cv_;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status read_error_ ABSL_GUARDED_BY(mu_);
  int error_ ABSL_GUARDED_BY(mu_) = 0;
  IoOp error_op_ ABSL_GUARDED_BY(mu_) = IoOp::kWrite;
  uint64_t error_offset_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

absl::StatusOr<BlockCopyCounts> CopyBlocks(BlockSource& source,
                                           SealedVolume& target,
                                           const CopyProgressFile& file,
                                           CopyProgress& progress,
                                           const BlockCopyOptions& options) {
  const std::string& name = file.target();
  const uint64_t end = RoundUpToBlock(source.size_bytes());
  if (end > target.size_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the source's ", source.size_bytes(), " bytes do not fit in ", name,
        " (", target.size_bytes(), " bytes)"));
  }
  const uint64_t chunk =
      std::max<uint64_t>(RoundUpToBlock(options.chunk_bytes), kBlockSize);
  std::vector<std::unique_ptr<Slot>> slots;
  for (int i = 0; i < std::max(1, options.depth); ++i) {
    slots.push_back(std::make_unique<Slot>(chunk));
  }
  BlockCopyCounts counts;

  auto wait_all = [&]() -> absl::Status {
    absl::Status first;
    for (auto& s : slots) first.Update(s->Wait(name));
    return first;
  };
  auto sync = [&](const char* what, uint64_t at) -> absl::Status {
    if (const int r = target.Io(IoOp::kFlush, 0, {}); r != 0) {
      return absl::DataLossError(
          absl::StrCat(name, ": ", what, " at ", at, ": ", std::strerror(-r)));
    }
    return absl::OkStatus();
  };
  uint64_t durable = progress.next_offset;
  // Everything below `offset` is made durable, then recorded.
  auto record = [&](uint64_t offset) -> absl::Status {
    RETURN_IF_ERROR(wait_all());
    RETURN_IF_ERROR(sync("flush", offset));
    progress.next_offset = offset;
    RETURN_IF_ERROR(file.Save(progress));
    durable = offset;
    if (options.on_progress) options.on_progress(offset);
    return absl::OkStatus();
  };
  auto discard = [&](Slot& slot, uint64_t at, uint64_t len) {
    if (!options.fresh) slot.Submit(target, IoOp::kDiscard, at, len);
    counts.zeros += len;
  };

  // Starts the step at `at` in `slot`: a hole of the source (nothing is
  // read) or the next chunk, read ahead. Returns where the step ends.
  auto start_step = [&](Slot& slot, uint64_t at) {
    const uint64_t data = std::min(end, std::max(at, source.NextData(at)));
    slot.step_offset = at;
    slot.step_hole = data > at;
    slot.step_length = slot.step_hole ? data - at : std::min(chunk, end - at);
    if (!slot.step_hole) slot.StartRead(source, at, slot.step_length);
    return at + slot.step_length;
  };
  // Seals the chunk a step read: runs of data blocks are written, runs of
  // zero blocks skipped.
  auto seal_step = [&](Slot& slot) {
    const uint64_t at = slot.step_offset, len = slot.step_length;
    if (slot.step_hole) {
      discard(slot, at, len);
      return;
    }
    std::span<uint8_t> buf = slot.buffer().first(len);
    uint64_t run = 0;
    while (run < len) {
      const bool zero = IsZero(buf.data() + run, kBlockSize);
      uint64_t stop = run + kBlockSize;
      while (stop < len && IsZero(buf.data() + stop, kBlockSize) == zero) {
        stop += kBlockSize;
      }
      if (zero) {
        discard(slot, at + run, stop - run);
      } else {
        slot.Submit(target, IoOp::kWrite, at + run, stop - run,
                    buf.subspan(run, stop - run));
        counts.written += stop - run;
      }
      run = stop;
    }
  };

  // Step k lives in slot k % depth. Steps are sealed in order; up to
  // depth - 1 of them are read ahead, so the slot a new read needs is the
  // one sealed a step earlier, whose writes had that step's time to finish.
  const uint64_t ahead = std::max<uint64_t>(1, slots.size() - 1);
  uint64_t started = 0, sealed = 0;
  uint64_t next_start = progress.next_offset;
  uint64_t offset = progress.next_offset;
  absl::Status failed;
  while (failed.ok()) {
    while (next_start < end && started < sealed + ahead) {
      Slot& slot = *slots[started % slots.size()];
      failed = slot.Wait(name);  // Its earlier step's writes.
      if (!failed.ok()) break;
      next_start = start_step(slot, next_start);
      ++started;
    }
    if (!failed.ok() || sealed == started) break;
    Slot& slot = *slots[sealed % slots.size()];
    failed = slot.Wait(name);  // Its read.
    if (!failed.ok()) break;
    seal_step(slot);
    ++sealed;
    offset = slot.step_offset + slot.step_length;
    if (offset - durable >= options.progress_interval) failed = record(offset);
  }
  // Nothing may still use a buffer when they go.
  const absl::Status drained = wait_all();
  RETURN_IF_ERROR(failed);
  RETURN_IF_ERROR(drained);
  if (!options.fresh && end < target.size_bytes()) {
    slots[0]->Submit(target, IoOp::kDiscard, end, target.size_bytes() - end);
    RETURN_IF_ERROR(slots[0]->Wait(name));
  }
  RETURN_IF_ERROR(record(end));
  return counts;
}

}  // namespace sealvol::io
