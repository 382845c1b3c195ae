// MemoryVolume is an in-memory VolumeIo fake for front-end tests: requests
// complete asynchronously on its own thread, as the engine's do, and it
// counts flushes and discards. Thread-safe.
#pragma once

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "io/volume_io.h"

namespace sealvol::io {

class MemoryVolume final : public VolumeIo {
 public:
  explicit MemoryVolume(uint64_t size_bytes)
      : data_(size_bytes), thread_([this] { Run(); }) {}
  ~MemoryVolume() override {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  uint64_t size_bytes() const override {
    std::lock_guard lock(mu_);
    return data_.size();
  }
  void Submit(IoRequest* request) override {
    std::lock_guard lock(mu_);
    queue_.push_back(request);
    cv_.notify_one();
  }

  void Grow(uint64_t size) {
    std::lock_guard lock(mu_);
    data_.resize(size);
  }
  int flushes() const {
    std::lock_guard lock(mu_);
    return flushes_;
  }
  int discards() const {
    std::lock_guard lock(mu_);
    return discards_;
  }
  int misaligned() const {
    std::lock_guard lock(mu_);
    return misaligned_;
  }
  std::vector<uint8_t> Snapshot() const {
    std::lock_guard lock(mu_);
    return data_;
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return done_ || !queue_.empty(); });
      if (queue_.empty()) return;
      IoRequest* r = queue_.front();
      queue_.pop_front();
      const int result = Execute(r);
      lock.unlock();
      r->done(r, result);
      lock.lock();
    }
  }

  int Execute(IoRequest* r) {
    if (r->op == IoOp::kFlush) {
      ++flushes_;
      return 0;
    }
    if (r->offset % kBlockSize || r->length % kBlockSize ||
        r->offset + r->length > data_.size()) {
      ++misaligned_;
      return -EINVAL;
    }
    switch (r->op) {
      case IoOp::kRead:
        std::memcpy(r->buffer.data(), data_.data() + r->offset, r->length);
        break;
      case IoOp::kWrite:
        std::memcpy(data_.data() + r->offset, r->buffer.data(), r->length);
        if (r->fua) ++flushes_;
        break;
      case IoOp::kDiscard:
        std::memset(data_.data() + r->offset, 0, r->length);
        ++discards_;
        break;
      case IoOp::kFlush:
        break;
    }
    return 0;
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint8_t> data_;       // GUARDED_BY(mu_)
  std::deque<IoRequest*> queue_;    // GUARDED_BY(mu_)
  int flushes_ = 0;                 // GUARDED_BY(mu_)
  int discards_ = 0;                // GUARDED_BY(mu_)
  int misaligned_ = 0;              // GUARDED_BY(mu_)
  bool done_ = false;               // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace sealvol::io
