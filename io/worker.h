// Worker owns a shard of the volume's groups (group % workers == index): their
// cached tag blocks, one store queue (io_uring) and one SectorCodec. It drains
// its request queue and runs each drain as a batch with one group commit.
// Thread-compatible: driven by one thread (its own, or the test's in manual
// mode); Enqueue is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "crypto/secret_bytes.h"
#include "io/backing_store.h"
#include "io/layout.h"
#include "io/metadata_writer.h"
#include "io/slot_codec.h"
#include "io/state_table.h"
#include "io/volume_io.h"

namespace sealvol::io {

// Tracks one IoRequest split into parts; completes it when the last part is
// done. Lives in the engine's fixed pool.
struct RequestTracker {
  IoRequest* request = nullptr;
  std::atomic<int> remaining{0};
  std::atomic<int> error{0};
  RequestTracker* next_free = nullptr;
};

// The part of a request that lies in one group (or, for kFlush, one worker).
struct Part {
  RequestTracker* tracker = nullptr;
  IoOp op = IoOp::kRead;
  bool fua = false;
  uint64_t first_block = 0;
  uint32_t blocks = 0;
  uint8_t* data = nullptr;  // Into the request's buffer.
};

// What every worker shares; owned by the engine.
struct EngineContext {
  BackingStore* store = nullptr;
  Layout layout;
  VolumeId volume_id{};
  // Root of the per-session data keys; outlives the workers.
  const crypto::SecretBytes* session_root = nullptr;
  MetadataWriter* metadata = nullptr;
  // Every group's digest (null only for a pre-state-root image, read by
  // `upgrade`). A group's tags are checked against it when loaded; a worker
  // keeps its groups' entries current (at eviction and SettleDigests).
  DigestTable* digests = nullptr;
  // Groups whose tags are accepted as found (bits of a read-only open of an
  // unclean image: their digests were not recomputed). May be empty.
  std::vector<uint8_t> accept_as_found;
  // Called (from a worker thread) when a group's tags do not match its
  // digest: every block of the group then fails with EIO.
  std::function<void(uint64_t group)> on_digest_mismatch;
  std::atomic<bool>* failed = nullptr;
  int workers = 1;
  size_t cache_groups = 128;
  uint64_t batch_blocks = 2048;  // >= data_blocks_per_group.
  // Test hook: called for every block sealed, with its slot.
  SlotCodec::SealObserver seal_observer;
  // Completes a part; the engine finishes the request on the last part.
  std::function<void(Part&, int)> complete;
};

class Worker {
 public:
  // Starts the worker's own nonce session (a fresh random session id).
  static absl::StatusOr<std::unique_ptr<Worker>> Create(
      const EngineContext* ctx);
  ~Worker();

  // Queues parts; blocks while the queue is full (in manual mode the caller
  // must drain with RunPending instead: returns false when full).
  bool Enqueue(const Part& part, bool may_block);
  // Runs `part` to completion on the calling thread, as the worker thread
  // would, when nothing is queued and no thread is driving the worker; false
  // (and nothing done) otherwise. Blocks on the part's I/O; its completion
  // runs on the calling thread. Not in manual mode.
  bool TryRunInline(const Part& part);
  // Processes everything queued, in this thread.
  void RunPending();
  // True while parts are queued (manual mode: RunPending has work).
  bool HasPending();
  // Nonce sessions this worker has started (thread-safe).
  uint64_t sessions_started() const { return slots_->sessions_started(); }
  void Start();  // Starts the worker thread.
  void Stop();   // Processes what is queued, then joins the thread.
  // After Stop: brings the digest of every cached group whose tags changed
  // up to date.
  void SettleDigests();
  // For a checkpoint while the volume is open: Quiesce waits until no batch
  // runs and keeps batches from starting (queued parts wait) until Resume.
  // While quiesced, SyncAndSettle (from the checkpointing thread) makes the
  // worker's writes durable, brings its digests up to date and forgets that
  // its groups' bits are set (the checkpoint clears them). False if the
  // sync failed.
  void Quiesce();
  bool SyncAndSettle();
  void Resume();

 private:
  struct GroupEntry {
    uint64_t group = ~uint64_t{0};
    AlignedBuffer tags;
    std::vector<uint64_t> unflushed;  // One bit per block in the group.
    uint32_t unflushed_count = 0;
    uint64_t dirty_tag_blocks = 0;  // Bit per tag block to write.
    bool marked = false;            // The group's bitmap bit is set.
    bool digest_stale = false;      // Tags changed since its digest.
    bool load_failed = false;
    uint64_t last_use = 0;
    uint64_t pinned_in = 0;  // Sub-batch epoch that uses it.
  };

  Worker(const EngineContext* ctx, std::unique_ptr<StoreQueue> queue,
         std::unique_ptr<SlotCodec> slots);
  void Loop();
  void ProcessBatch(std::span<Part> parts);
  // The steps of one sub-batch (a group commit), in order (worker.cc).
  struct SubBatchPlan {
    bool has_mutation = false;
    bool need_presync = false;     // A block written has an unflushed write.
    bool need_final_sync = false;  // A flush or a FUA write.
    uint64_t write_blocks = 0;
  };
  void RunSubBatch(std::span<Part> parts);
  void PlaceInBounce(std::span<const Part> parts);
  SubBatchPlan Plan(std::span<const Part> parts);
  void MarkIntent(std::span<Part> parts, const SubBatchPlan& plan);
  void SealMutations(std::span<Part> parts);
  void WriteTags(std::span<Part> parts);
  void RunDataOps(std::span<Part> parts);
  void QueueDataOps(std::span<Part> parts);
  void FinalSync(std::span<Part> parts);
  bool Conflicts(std::span<Part> taken, const Part& p) const;
  GroupEntry* Lookup(uint64_t group);
  bool LoadGroups(std::span<Part> parts);
  bool TagsMatchDigest(const GroupEntry& e) const;
  void SettleDigest(GroupEntry& e);
  bool Sync();
  void AfterSync();
  void FailWrites(std::span<Part> parts, int err);
  int Seal(GroupEntry& e, uint64_t block, const uint8_t* in, uint8_t* out);
  int OpenBlock(GroupEntry& e, uint64_t block, const uint8_t* in,
                uint8_t* out);
  int OpenRange(Part& p, size_t i, uint32_t k, uint32_t count);
  void FinishPart(Part& p, size_t i);

  const EngineContext* ctx_;
  std::unique_ptr<StoreQueue> queue_;
  std::unique_ptr<SlotCodec> slots_;

  // Request queue: a fixed ring.
  Mutex mu_;
  CondVar not_empty_;
  CondVar not_full_;
  std::vector<Part> ring_ ABSL_GUARDED_BY(mu_);
  size_t head_ ABSL_GUARDED_BY(mu_) = 0;
  size_t count_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // A thread (the worker's, or an inline caller) is running a batch: the
  // batch state below and the store queue are its alone until it clears it.
  bool driving_ ABSL_GUARDED_BY(mu_) = false;
  CondVar quiesce_cv_;  // driving_ became false.
  Part inline_part_;  // The driving inline caller's part.
  std::thread thread_;

  // Batch state, touched only by the driving thread; allocated once.
  std::vector<Part> batch_;
  std::vector<GroupEntry> cache_;
  std::vector<int32_t> entry_of_group_;  // Group -> cache index or -1.
  std::vector<StoreOp> ops_;
  std::vector<uint64_t> groups_scratch_;
  std::vector<int> part_result_;
  std::vector<uint64_t> part_bounce_;  // Block offset in bounce_ per part.
  std::vector<size_t> op_part_;         // Data op index -> part index.
  std::vector<uint32_t> part_pending_;  // Data ops still in flight per part.
  // kInFlight -> kFinished (data ops done; FUA and flush wait for the final
  // sync) -> kCompleted (handed to ctx_->complete).
  enum class PartState : uint8_t { kInFlight, kFinished, kCompleted };
  std::vector<PartState> part_state_;
  AlignedBuffer bounce_;
  uint64_t tick_ = 0;
  uint64_t epoch_ = 0;
};

}  // namespace sealvol::io
