#include "tests/fakes/fault_store.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sealvol::io {

class FaultQueue : public StoreQueue {
 public:
  explicit FaultQueue(FaultStore* store) : store_(store) {}
  void Execute(std::span<StoreOp> ops) override { store_->Run(ops); }

 private:
  FaultStore* store_;
};

FaultStore::FaultStore(uint64_t size_bytes) : size_(size_bytes) {}

absl::StatusOr<std::unique_ptr<StoreQueue>> FaultStore::CreateQueue() {
  return std::unique_ptr<StoreQueue>(std::make_unique<FaultQueue>(this));
}

uint64_t FaultStore::size_bytes() const {
  MutexLock l(&mu_);
  return size_;
}

absl::Status FaultStore::Resize(uint64_t bytes) {
  MutexLock l(&mu_);
  if (bytes > size_) size_ = bytes;
  return absl::OkStatus();
}

void FaultStore::ArmCrash(uint64_t ops) {
  MutexLock l(&mu_);
  crash_armed_ = true;
  crash_countdown_ = ops;
}

bool FaultStore::crashed() const {
  MutexLock l(&mu_);
  return crashed_;
}

void FaultStore::StallWrites(bool stall) {
  MutexLock l(&mu_);
  stall_writes_ = stall;
  if (!stall) stall_cv_.SignalAll();
}

int FaultStore::stalled() const {
  MutexLock l(&mu_);
  return stalled_;
}

void FaultStore::Run(std::span<StoreOp> ops) {
  MutexLock l(&mu_);
  const bool writes = std::any_of(ops.begin(), ops.end(), [](const StoreOp& op) {
    return op.kind == StoreOp::Kind::kWrite;
  });
  if (writes && stall_writes_) {
    ++stalled_;
    while (stall_writes_) stall_cv_.Wait(&mu_);
    --stalled_;
  }
  // A sync covers only writes issued by earlier Execute calls: writes in the
  // same call are concurrent with it, as on a real ring.
  const uint64_t epoch = ++epoch_;
  for (StoreOp& op : ops) {
    const bool mutating = op.kind != StoreOp::Kind::kRead;
    if (mutating && crash_armed_ && !crashed_) {
      if (crash_countdown_ == 0) crashed_ = true;
      else --crash_countdown_;
    }
    if (crashed_) {
      op.result = -EIO;
      continue;
    }
    if (op.offset % 4096 != 0 || op.length % 4096 != 0 ||
        (op.kind != StoreOp::Kind::kSync && op.offset + op.length > size_)) {
      op.result = -EINVAL;
      continue;
    }
    const uint64_t first = op.offset / 4096;
    const uint64_t count = op.length / 4096;
    switch (op.kind) {
      case StoreOp::Kind::kRead:
        for (uint64_t i = 0; i < count; ++i) {
          read_log_.push_back(first + i);
          auto it = current_.find(first + i);
          if (it == current_.end()) {
            std::memset(op.buffer + i * 4096, 0, 4096);
          } else {
            std::memcpy(op.buffer + i * 4096, it->second.data(), 4096);
          }
        }
        break;
      case StoreOp::Kind::kWrite:
        for (uint64_t i = 0; i < count; ++i) {
          Pending p{first + i, false, epoch, {}};
          std::memcpy(p.data.data(), op.buffer + i * 4096, 4096);
          current_[first + i] = p.data;
          pending_.push_back(p);
        }
        break;
      case StoreOp::Kind::kPunch:
        for (uint64_t i = 0; i < count; ++i) {
          current_.erase(first + i);
          pending_.push_back(Pending{first + i, true, epoch, {}});
        }
        break;
      case StoreOp::Kind::kSync: {
        ++syncs_;
        size_t kept = 0;
        for (Pending& p : pending_) {
          if (p.epoch < epoch) {
            if (p.punch) durable_.erase(p.block);
            else durable_[p.block] = p.data;
          } else {
            pending_[kept++] = p;
          }
        }
        pending_.resize(kept);
        break;
      }
    }
    op.result = 0;
  }
}

std::unique_ptr<FaultStore> FaultStore::CrashImage(std::mt19937_64& rng) const {
  MutexLock l(&mu_);
  auto out = std::make_unique<FaultStore>(size_);
  MutexLock lo(&out->mu_);  // Not shared yet; for the analysis.
  out->durable_ = durable_;
  for (const Pending& p : pending_) {
    if ((rng() & 1) == 0) continue;
    if (p.punch) out->durable_.erase(p.block);
    else out->durable_[p.block] = p.data;
  }
  out->current_ = out->durable_;
  return out;
}

std::unique_ptr<FaultStore> FaultStore::Snapshot() const {
  MutexLock l(&mu_);
  auto out = std::make_unique<FaultStore>(size_);
  MutexLock lo(&out->mu_);  // Not shared yet; for the analysis.
  out->durable_ = current_;
  out->current_ = current_;
  return out;
}

std::vector<uint64_t> FaultStore::read_blocks() const {
  MutexLock l(&mu_);
  return read_log_;
}

void FaultStore::ClearReadLog() {
  MutexLock l(&mu_);
  read_log_.clear();
}

uint64_t FaultStore::syncs() const {
  MutexLock l(&mu_);
  return syncs_;
}

uint64_t FaultStore::unflushed_writes() const {
  MutexLock l(&mu_);
  return pending_.size();
}

void FaultStore::PokeBlock(uint64_t block, const Block& data) {
  MutexLock l(&mu_);
  durable_[block] = data;
  current_[block] = data;
}

FaultStore::Block FaultStore::PeekBlock(uint64_t block) const {
  MutexLock l(&mu_);
  auto it = current_.find(block);
  if (it == current_.end()) return Block{};
  return it->second;
}

}  // namespace sealvol::io
