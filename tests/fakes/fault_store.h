// FaultStore is an in-memory BackingStore for tests that records every write
// and simulates power loss: writes and punches stay "unflushed" until a sync
// covers them, and a crash keeps or drops each unflushed 4 KiB write at
// random. Thread-safe (one mutex; it is a test seam, not a fast path).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "io/backing_store.h"

namespace sealvol::io {

class FaultStore : public BackingStore {
 public:
  using Block = std::array<uint8_t, 4096>;

  explicit FaultStore(uint64_t size_bytes);

  absl::StatusOr<std::unique_ptr<StoreQueue>> CreateQueue() override;
  uint64_t size_bytes() const override;
  absl::Status Resize(uint64_t bytes) override;
  bool needs_zeroing() const override { return false; }
  const std::string& name() const override { return name_; }

  // After `ops` more mutating operations (write, punch or sync, counted per
  // operation), power is lost: that and every later operation fails with
  // -EIO and changes nothing.
  void ArmCrash(uint64_t ops);
  bool crashed() const;

  // The image a reboot would see: everything synced, plus each unflushed
  // 4 KiB write or punch kept with probability 1/2 (in issue order).
  std::unique_ptr<FaultStore> CrashImage(std::mt19937_64& rng) const;
  // The image as if every unflushed write had landed.
  std::unique_ptr<FaultStore> Snapshot() const;

  // While stalled, every Execute that holds a write waits (in flight) until
  // StallWrites(false); reads go on. For tests of what waits for writes.
  void StallWrites(bool stall);
  // Executes waiting in a stall right now.
  int stalled() const;

  // Read accounting, for asserting what recovery touched.
  std::vector<uint64_t> read_blocks() const;  // Block numbers read, in order.
  void ClearReadLog();
  uint64_t syncs() const;
  uint64_t unflushed_writes() const;

  // Direct access for tamper tests (bypasses the crash model: durable).
  void PokeBlock(uint64_t block, const Block& data);
  Block PeekBlock(uint64_t block) const;

 private:
  friend class FaultQueue;
  struct Pending {
    uint64_t block;
    bool punch;
    uint64_t epoch;  // Execute call that issued it.
    Block data;
  };
  void Run(std::span<StoreOp> ops);

  const std::string name_ = "memory";
  mutable Mutex mu_;
  uint64_t size_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Block> durable_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Block> current_ ABSL_GUARDED_BY(mu_);
  std::vector<Pending> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  bool crash_armed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t crash_countdown_ ABSL_GUARDED_BY(mu_) = 0;
  bool crashed_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<uint64_t> read_log_ ABSL_GUARDED_BY(mu_);
  uint64_t syncs_ ABSL_GUARDED_BY(mu_) = 0;
  bool stall_writes_ ABSL_GUARDED_BY(mu_) = false;
  int stalled_ ABSL_GUARDED_BY(mu_) = 0;
  CondVar stall_cv_;
};

}  // namespace sealvol::io
