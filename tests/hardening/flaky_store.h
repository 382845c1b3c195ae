// FlakyStore wraps a BackingStore (the engine's seam to the OS) and makes its
// operations fail at random, the way a failing disk or a full filesystem
// does: EIO, ENOSPC, and short writes (part of the data lands; the real file
// store reports a short transfer as EIO). Faults can be switched off, after
// which the wrapped store behaves normally. Test-only. Thread-safe.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "io/backing_store.h"

namespace sealvol::hardening {

struct FaultCounts {
  std::atomic<uint64_t> eio{0};
  std::atomic<uint64_t> enospc{0};
  std::atomic<uint64_t> short_writes{0};
  uint64_t total() const { return eio + enospc + short_writes; }
};

class FlakyStore final : public io::BackingStore {
 public:
  // `one_in`: each operation fails with probability 1/one_in while faults
  // are on.
  FlakyStore(std::unique_ptr<io::BackingStore> inner, uint64_t seed,
             uint32_t one_in)
      : inner_(std::move(inner)), rng_(seed), one_in_(one_in) {}

  void set_faults(bool on) { faults_on_ = on; }
  const FaultCounts& counts() const { return counts_; }
  io::BackingStore& inner() { return *inner_; }

  absl::StatusOr<std::unique_ptr<io::StoreQueue>> CreateQueue() override;
  uint64_t size_bytes() const override { return inner_->size_bytes(); }
  absl::Status Resize(uint64_t bytes) override {
    if (faults_on_ && Roll() == Fault::kEnospc) {
      return absl::ResourceExhaustedError("flaky store: resize: ENOSPC");
    }
    return inner_->Resize(bytes);
  }
  bool needs_zeroing() const override { return inner_->needs_zeroing(); }
  const std::string& name() const override { return inner_->name(); }

 private:
  friend class FlakyQueue;
  enum class Fault { kNone, kEio, kEnospc, kShort };

  Fault Roll() {
    std::lock_guard lock(mu_);
    if (rng_() % one_in_ != 0) return Fault::kNone;
    switch (rng_() % 3) {
      case 0: return Fault::kEio;
      case 1: return Fault::kEnospc;
      default: return Fault::kShort;
    }
  }

  std::unique_ptr<io::BackingStore> inner_;
  std::mutex mu_;
  std::mt19937_64 rng_;  // GUARDED_BY(mu_)
  const uint32_t one_in_;
  std::atomic<bool> faults_on_{false};
  FaultCounts counts_;
};

class FlakyQueue final : public io::StoreQueue {
 public:
  FlakyQueue(FlakyStore* store, std::unique_ptr<io::StoreQueue> inner)
      : store_(store), inner_(std::move(inner)) {}

  void Execute(std::span<io::StoreOp> ops) override {
    if (!store_->faults_on_) return inner_->Execute(ops);
    // Decide each op's fate first; run the survivors (and the landed part of
    // short writes) on the real queue in one submission, as the engine
    // would have.
    std::vector<io::StoreOp> run;
    std::vector<size_t> index;
    std::vector<int> injected(ops.size(), 0);
    for (size_t i = 0; i < ops.size(); ++i) {
      io::StoreOp& op = ops[i];
      const FlakyStore::Fault fault = store_->Roll();
      if (fault == FlakyStore::Fault::kNone) {
        run.push_back(op);
        index.push_back(i);
        continue;
      }
      const bool is_write = op.kind == io::StoreOp::Kind::kWrite;
      if (fault == FlakyStore::Fault::kShort && is_write) {
        ++store_->counts_.short_writes;
        // The first half of the blocks lands; the caller is told EIO.
        const uint64_t blocks = op.length / 4096;
        if (blocks > 1) {
          io::StoreOp part = op;
          part.length = (blocks / 2) * 4096;
          run.push_back(part);
          index.push_back(ops.size());  // Result not reported.
        }
        injected[i] = -EIO;
      } else if (fault == FlakyStore::Fault::kEnospc &&
                 (is_write || op.kind == io::StoreOp::Kind::kSync)) {
        ++store_->counts_.enospc;
        injected[i] = -ENOSPC;
      } else {
        ++store_->counts_.eio;
        injected[i] = -EIO;
      }
    }
    if (!run.empty()) inner_->Execute(run);
    for (size_t k = 0; k < run.size(); ++k) {
      if (index[k] < ops.size()) ops[index[k]].result = run[k].result;
    }
    for (size_t i = 0; i < ops.size(); ++i) {
      if (injected[i] != 0) ops[i].result = injected[i];
    }
  }

 private:
  FlakyStore* store_;
  std::unique_ptr<io::StoreQueue> inner_;
};

inline absl::StatusOr<std::unique_ptr<io::StoreQueue>> FlakyStore::CreateQueue() {
  auto inner = inner_->CreateQueue();
  if (!inner.ok()) return inner.status();
  return std::unique_ptr<io::StoreQueue>(
      new FlakyQueue(this, std::move(inner).value()));
}

}  // namespace sealvol::hardening
