// The sealed-volume engine: open (with crash recovery), request routing to
// workers, checkpoints, grow and close. The data path is in worker.cc;
// formatting a new image in volume_format.cc.
#include "io/sealed_volume.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/error_kind.h"
#include "base/mutex.h"
#include "base/status_macros.h"
#include "crypto/key_schedule.h"
#include "io/metadata_writer.h"
#include "io/state_table.h"
#include "io/superblock.h"
#include "io/volume_image.h"
#include "io/worker.h"
#include "io/write_gate.h"

namespace sealvol::io {
namespace {

constexpr size_t kTrackers = 4096;

// A request whose submitter waits for it (Io, and the final flush of Close).
struct BlockingRequest {
  IoRequest req;
  Mutex mu;
  CondVar cv;
  bool done ABSL_GUARDED_BY(mu) = false;
  int result ABSL_GUARDED_BY(mu) = 0;

  BlockingRequest() {
    req.context = this;
    req.done = [](IoRequest* r, int result) {
      auto* self = static_cast<BlockingRequest*>(r->context);
      MutexLock l(&self->mu);
      self->result = result;
      self->done = true;
      self->cv.SignalAll();
    };
  }
  // Returns 0 or a negative errno.
  int Wait() {
    MutexLock l(&mu);
    while (!done) cv.Wait(&mu);
    return result;
  }
};

}  // namespace

class SealedVolume::Impl {
 public:
  Impl(std::unique_ptr<BackingStore> store, EngineOptions options)
      : store_(std::move(store)), options_(std::move(options)),
        trackers_(kTrackers) {
    for (size_t i = 0; i + 1 < trackers_.size(); ++i) {
      trackers_[i].next_free = &trackers_[i + 1];
    }
    free_trackers_ = &trackers_[0];
  }

  ~Impl() { (void)Close(); }

  absl::Status Init(const crypto::SecretBytes& dek);

  uint64_t size_bytes() const { return size_bytes_.load(); }
  void Submit(IoRequest* request) { Dispatch(request, false); }
  void SubmitInline(IoRequest* request) {
    Dispatch(request, !options_.manual);
  }
  absl::Status Grow(uint64_t new_size_bytes);
  absl::Status Close();
  bool failed() const { return failed_.load(); }
  const VolumeId& volume_id() const { return ctx_.volume_id; }
  const FormatId& format_id() const { return format_id_; }
  VolumeState state() const {
    MutexLock l(&close_mu_state_);
    return state_;
  }

  void RunPending() {
    // A part may complete a request whose callback submits more, possibly
    // to a worker that already ran: loop until every queue is empty.
    for (bool again = true; again;) {
      for (auto& w : workers_) w->RunPending();
      again = false;
      for (auto& w : workers_) again |= w->HasPending();
    }
  }
  int Io(IoOp op, uint64_t offset, std::span<uint8_t> buffer, bool fua);
  const RecoveryStats& recovery_stats() const { return recovery_; }
  uint64_t sessions_started() const {
    uint64_t n = sessions_started_at_close_;
    for (const auto& w : workers_) n += w->sessions_started();
    return n;
  }
  BackingStore& store() { return *store_; }
  const Layout& layout() const { return ctx_.layout; }
  absl::Status CheckpointNow();
  absl::Status HoldWrites(std::chrono::milliseconds timeout);
  // Runs the writes the hold kept, in order; none when nothing is held.
  void ReleaseWrites() {
    for (IoRequest* r : gate_.Open()) Dispatch(r, false);
  }
  absl::Status NotHeld(const char* what) const {
    if (!gate_.shut()) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat(
        store_->name(), ": ", what, ": writes are held for a cut; retry"));
  }
  uint64_t checkpoints() const { return checkpoints_.load(); }
  std::vector<uint64_t> mismatched_groups() const {
    MutexLock l(&mismatch_mu_);
    return {mismatched_.begin(), mismatched_.end()};
  }

 private:
  // The steps of Init, in order.
  absl::StatusOr<Superblock> ReadNewestSuperblock(
      StoreQueue& queue, const crypto::SecretBytes& dek);
  absl::Status CheckImage(const Superblock& sb) const;
  absl::Status LoadDigestTable(const Superblock& sb, StoreQueue& queue);
  absl::StatusOr<std::vector<uint8_t>> ReadBitmap(const Superblock& sb,
                                                  StoreQueue& queue);
  void SetUpContext(const Superblock& sb, const std::vector<uint8_t>& dirty);
  absl::StatusOr<RecoveryStats> Recover(const Superblock& sb,
                                        const std::vector<uint8_t>& dirty,
                                        StoreQueue& queue);
  absl::Status StartEpoch(const Superblock& sb);
  absl::Status StartWorkers();
  // Writes every group's digest to the inactive table copy, commits it with
  // the superblock, then clears the write-intent bits; with `clean`, marks
  // the image clean last. Workers are stopped.
  absl::Status Checkpoint(bool clean);
  // The checkpoint thread (threaded writable opens): polls the trigger.
  void CheckpointLoop();
  void StopCheckpointThread();
  RequestTracker* AcquireTracker();
  void ReleaseTracker(RequestTracker* t);
  void CompletePart(Part& part, int result);
  void Enqueue(const Part& part, size_t worker);
  // Splits a request into parts for the workers. With `run_inline`, a part
  // whose worker is idle runs on this thread (Worker::TryRunInline).
  void Dispatch(IoRequest* request, bool run_inline);
  void Route(const Part& part, size_t worker, bool run_inline) {
    if (run_inline && workers_[worker]->TryRunInline(part)) return;
    Enqueue(part, worker);
  }
  static void Finish(IoRequest* r, int result) { r->done(r, result); }
  void SetState(const VolumeState& state) {
    MutexLock l(&close_mu_state_);
    state_ = state;
  }

  std::unique_ptr<BackingStore> store_;
  EngineOptions options_;
  crypto::VolumeKeys keys_;
  std::unique_ptr<MetadataWriter> metadata_;
  EngineContext ctx_;
  FormatId format_id_{};
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<uint64_t> size_bytes_{0};
  std::atomic<bool> failed_{false};
  std::atomic<bool> closed_{false};
  std::atomic<int> active_submits_{0};
  RecoveryStats recovery_;
  std::unique_ptr<DigestTable> digests_;
  mutable Mutex mismatch_mu_;
  std::set<uint64_t> mismatched_ ABSL_GUARDED_BY(mismatch_mu_);
  uint64_t sessions_started_at_close_ = 0;
  std::atomic<uint64_t> checkpoints_{0};
  Mutex checkpoint_mu_;  // One checkpoint at a time; Close takes it.
  Mutex checkpoint_thread_mu_;
  CondVar checkpoint_cv_;
  bool checkpoint_stop_ ABSL_GUARDED_BY(checkpoint_thread_mu_) = false;
  std::thread checkpoint_thread_;
  Mutex grow_mu_;
  Mutex close_mu_;
  mutable Mutex close_mu_state_;
  VolumeState state_ ABSL_GUARDED_BY(close_mu_state_);

  Mutex tracker_mu_;
  CondVar tracker_cv_;
  std::vector<RequestTracker> trackers_;
  RequestTracker* free_trackers_ ABSL_GUARDED_BY(tracker_mu_) = nullptr;
  // Writes and discards in flight, and the hold that parks new ones.
  WriteGate gate_;
};

// Opening, step by step: the newest authentic superblock, the checks on
// the image it describes, the digest table and the write-intent bitmap,
// recovery of the groups marked dirty, a new epoch, then the workers.
absl::Status SealedVolume::Impl::Init(const crypto::SecretBytes& dek) {
  ASSIGN_OR_RETURN(auto queue, store_->CreateQueue());
  ASSIGN_OR_RETURN(const Superblock sb, ReadNewestSuperblock(*queue, dek));
  RETURN_IF_ERROR(CheckImage(sb));
  size_bytes_.store(sb.size_bytes);
  if (sb.layout.has_digest_table()) {
    RETURN_IF_ERROR(LoadDigestTable(sb, *queue));
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> bitmap, ReadBitmap(sb, *queue));
  // A clean image has no write-intent bit set (Checkpoint clears them before
  // it marks the image clean): bits found there were not set by the engine,
  // and honouring them would accept those groups as found.
  std::vector<uint8_t> dirty = bitmap;
  if (sb.clean()) std::fill(dirty.begin(), dirty.end(), 0);
  SetUpContext(sb, dirty);
  if (!options_.read_only) {
    ASSIGN_OR_RETURN(recovery_, Recover(sb, dirty, *queue));
  }
  ASSIGN_OR_RETURN(auto header_key, keys_.header_mac_key.Clone());
  metadata_ = std::make_unique<MetadataWriter>(std::move(queue), sb,
                                               std::move(header_key), bitmap);
  SetState(VolumeState{sb.state_epoch, sb.state_root, !sb.clean()});
  if (!options_.read_only) RETURN_IF_ERROR(StartEpoch(sb));
  ctx_.metadata = metadata_.get();
  return StartWorkers();
}

// Derives the keys for the image's ids and returns the newest superblock
// copy whose MAC verifies (the other may be torn). Nothing in the
// superblock matters for nonce uniqueness: every open starts fresh random
// nonce sessions.
absl::StatusOr<Superblock> SealedVolume::Impl::ReadNewestSuperblock(
    StoreQueue& queue, const crypto::SecretBytes& dek) {
  ASSIGN_OR_RETURN(SuperblockCopies copies,
                   ReadSuperblockCopies(*store_, queue));
  ASSIGN_OR_RETURN(Superblock newest,
                   NewestSuperblock(copies.decoded[0], copies.decoded[1]));
  ASSIGN_OR_RETURN(keys_, crypto::DeriveVolumeKeys(dek, newest.volume_id,
                                                    newest.format_id));
  if (!crypto::ConstantTimeEquals(keys_.key_check, newest.key_check)) {
    return SetErrorKind(absl::PermissionDeniedError(absl::StrCat(
                            store_->name(), ": wrong key for volume ",
                            VolumeIdString(newest.volume_id))),
                        ErrorKind::kWrongKey);
  }
  int chosen = -1;
  for (int i = 0; i < 2; ++i) {
    const bool ok = copies.decoded[i].ok() &&
                    SuperblockMacValid(copies.copy(i), keys_.header_mac_key);
    if (!ok) continue;
    if (chosen < 0 ||
        copies.decoded[i]->generation > copies.decoded[chosen]->generation) {
      chosen = i;
    }
  }
  if (chosen < 0) {
    return absl::DataLossError(absl::StrCat(
        store_->name(), ": superblock authentication failed (both copies)"));
  }
  return *copies.decoded[chosen];
}

// The image holds what its superblock describes, has a state root (unless
// an upgrade reads it), and is the state the registry expects.
absl::Status SealedVolume::Impl::CheckImage(const Superblock& sb) const {
  const uint64_t need = sb.layout.image_bytes(sb.size_bytes / kBlockSize);
  if (store_->size_bytes() < need) {
    return SetErrorKind(absl::OutOfRangeError(absl::StrCat(
                            store_->name(), ": truncated: image is ",
                            store_->size_bytes(), " bytes, header needs ",
                            need)),
                        ErrorKind::kTruncated);
  }
  if (!sb.layout.has_digest_table() && !options_.allow_pre_state_root) {
    return SetErrorKind(
        absl::FailedPreconditionError(absl::StrCat(
            store_->name(),
            ": the image predates state roots (format 2 without the group "
            "digest table), so a rolled-back copy could not be told apart; "
            "convert it with `sealvol upgrade IMAGE` (docs/format.md)")),
        ErrorKind::kBadVersion);
  }
  if (options_.expected_state.has_value()) {
    return CheckExpectedState(sb, *options_.expected_state, store_->name());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> SealedVolume::Impl::ReadBitmap(
    const Superblock& sb, StoreQueue& queue) {
  AlignedBuffer buf(sb.layout.bitmap_blocks * 4096);
  StoreOp read{StoreOp::Kind::kRead, sb.layout.bitmap_start * 4096,
               buf.size(), buf.data()};
  queue.Execute({&read, 1});
  RETURN_IF_ERROR(StoreOpStatus(read, "read bitmap", store_->name()));
  return std::vector<uint8_t>(buf.data(), buf.data() + buf.size());
}

// What the workers share; a read-only open accepts the groups marked dirty
// as it finds them (it cannot repair them).
void SealedVolume::Impl::SetUpContext(const Superblock& sb,
                                      const std::vector<uint8_t>& dirty) {
  ctx_.store = store_.get();
  ctx_.layout = sb.layout;
  ctx_.volume_id = sb.volume_id;
  format_id_ = sb.format_id;
  ctx_.session_root = &keys_.session_root;
  ctx_.failed = &failed_;
  ctx_.workers = options_.worker_threads <= 0 ? 2 : options_.worker_threads;
  if (options_.manual) ctx_.workers = std::max(1, options_.worker_threads);
  ctx_.cache_groups = std::max<size_t>(options_.cache_groups, 2);
  ctx_.seal_observer = options_.seal_observer;
  ctx_.batch_blocks = std::max<uint64_t>(options_.batch_blocks,
                                         sb.layout.data_blocks_per_group);
  ctx_.complete = [this](Part& p, int r) { CompletePart(p, r); };
  ctx_.digests = digests_.get();
  ctx_.on_digest_mismatch = [this](uint64_t g) {
    MutexLock l(&mismatch_mu_);
    if (mismatched_.size() < 4096) mismatched_.insert(g);
  };
  if (options_.read_only) ctx_.accept_as_found = dirty;
}

// Crash recovery over the groups marked dirty (recovery.h); their repaired
// digests go into the table.
absl::StatusOr<RecoveryStats> SealedVolume::Impl::Recover(
    const Superblock& sb, const std::vector<uint8_t>& dirty,
    StoreQueue& queue) {
  ASSIGN_OR_RETURN(auto slots,
                   SlotCodec::Create(keys_.session_root, sb.volume_id));
  RecoveryInput in;
  in.queue = &queue;
  in.slots = slots.get();
  in.layout = sb.layout;
  in.volume_blocks = sb.size_bytes / kBlockSize;
  in.bitmap = dirty;
  in.holes_read_zero = !store_->needs_zeroing();
  if (digests_) {
    in.on_group = [this, &sb](uint64_t g, std::span<const uint8_t> tags) {
      digests_->set(g, DigestGroupTags(sb.volume_id, g, tags));
    };
  }
  return RecoverDirtyGroups(in);
}

// Writable opens: drops stray bits of a clean image, then makes a new epoch
// durable before anything is written and commits it outside the image.
absl::Status SealedVolume::Impl::StartEpoch(const Superblock& sb) {
  if (sb.clean()) {
    // Stray bits on a clean image go (see `dirty` in Init).
    RETURN_IF_ERROR(metadata_->ClearAll());
  }
  // The dirty groups' bits stay set: their repaired digests reach the
  // table at the next checkpoint.
  const uint64_t epoch = std::max(sb.state_epoch, options_.min_epoch) + 1;
  RETURN_IF_ERROR(metadata_->UpdateSuperblock([epoch](Superblock& s) {
    s.flags &= ~kSuperblockFlagClean;
    s.state_epoch = epoch;
  }));
  const VolumeState started{epoch, sb.state_root, true};
  SetState(started);
  if (!options_.commit_open) return absl::OkStatus();
  absl::Status committed = options_.commit_open(started);
  if (committed.ok()) return absl::OkStatus();
  return absl::Status(
      committed.code(),
      absl::StrCat(store_->name(), ": could not commit the start of epoch ",
                   epoch, ": ", committed.message()));
}

absl::Status SealedVolume::Impl::StartWorkers() {
  for (int i = 0; i < ctx_.workers; ++i) {
    ASSIGN_OR_RETURN(auto w, Worker::Create(&ctx_));
    workers_.push_back(std::move(w));
  }
  if (options_.manual) return absl::OkStatus();
  for (auto& w : workers_) w->Start();
  if (!options_.read_only && digests_ &&
      (options_.checkpoint_dirty_groups > 0 ||
       options_.checkpoint_seconds > 0)) {
    checkpoint_thread_ = std::thread([this] { CheckpointLoop(); });
  }
  return absl::OkStatus();
}

void SealedVolume::Impl::CheckpointLoop() {
  using Clock = std::chrono::steady_clock;
  Clock::time_point last = Clock::now();
  for (;;) {
    {
      MutexLock l(&checkpoint_thread_mu_);
      if (!checkpoint_stop_) {
        checkpoint_cv_.WaitFor(&checkpoint_thread_mu_,
                               std::chrono::milliseconds(200));
      }
      if (checkpoint_stop_) return;
    }
    const uint64_t dirty = metadata_->dirty_groups();
    const bool many = options_.checkpoint_dirty_groups > 0 &&
                      dirty >= options_.checkpoint_dirty_groups;
    const bool due = options_.checkpoint_seconds > 0 && dirty > 0 &&
                     Clock::now() - last >=
                         std::chrono::seconds(options_.checkpoint_seconds);
    if (!many && !due) continue;
    // A failure marks the volume failed (read-only); Close reports it.
    (void)CheckpointNow();
    last = Clock::now();
  }
}

void SealedVolume::Impl::StopCheckpointThread() {
  {
    MutexLock l(&checkpoint_thread_mu_);
    checkpoint_stop_ = true;
  }
  checkpoint_cv_.SignalAll();
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
}

absl::Status SealedVolume::Impl::CheckpointNow() {
  MutexLock c(&checkpoint_mu_);
  MutexLock g(&grow_mu_);
  if (closed_.load() || options_.read_only || !digests_) {
    return absl::FailedPreconditionError(absl::StrCat(
        store_ ? store_->name() : "volume",
        ": checkpoint: volume is closed or read-only"));
  }
  RETURN_IF_ERROR(NotHeld("checkpoint"));
  if (failed_.load()) {
    return absl::DataLossError(
        absl::StrCat(store_->name(), ": checkpoint: backing store failed"));
  }
  for (auto& w : workers_) w->Quiesce();
  absl::Status status;
  for (auto& w : workers_) {
    if (!w->SyncAndSettle()) {
      status = absl::DataLossError(
          absl::StrCat(store_->name(), ": checkpoint: fdatasync failed"));
    }
  }
  if (status.ok()) status = Checkpoint(/*clean=*/false);
  if (!status.ok()) failed_.store(true);
  for (auto& w : workers_) w->Resume();
  if (status.ok()) checkpoints_.fetch_add(1);
  return status;
}

// A running checkpoint or grow finishes first (their locks); none starts
// while the gate is shut, so the image stays as the flush leaves it.
absl::Status SealedVolume::Impl::HoldWrites(std::chrono::milliseconds timeout) {
  MutexLock c(&checkpoint_mu_);
  MutexLock g(&grow_mu_);
  if (closed_.load() || options_.read_only || options_.manual) {
    return absl::FailedPreconditionError(absl::StrCat(
        store_ ? store_->name() : "volume",
        ": hold writes: volume is closed, read-only or in manual mode"));
  }
  absl::Status held = gate_.Shut(timeout, store_->name());
  if (absl::IsFailedPrecondition(held)) return held;  // Another hold's.
  const int r = held.ok() ? Io(IoOp::kFlush, 0, {}, false) : 0;
  if (r != 0) held = ErrnoStatus(-r, "hold writes: flush", store_->name());
  if (!held.ok()) ReleaseWrites();
  return held;
}

absl::Status SealedVolume::Impl::LoadDigestTable(const Superblock& sb,
                                                 StoreQueue& queue) {
  const uint64_t groups = sb.layout.groups_for(sb.size_bytes / kBlockSize);
  digests_ = std::make_unique<DigestTable>(sb.layout.max_groups());
  digests_->Ensure(std::max(groups, sb.state_groups));
  const uint64_t blocks = DigestTable::BlocksFor(sb.state_groups);
  AlignedBuffer table(std::max<uint64_t>(blocks, 1) * 4096);
  if (blocks > 0) {
    StoreOp read{StoreOp::Kind::kRead,
                 sb.layout.digest_table(static_cast<int>(sb.digest_copy)) * 4096,
                 blocks * 4096, table.data()};
    queue.Execute({&read, 1});
    RETURN_IF_ERROR(StoreOpStatus(read, "read digest table", store_->name()));
  }
  const StateRoot root = ComputeStateRoot(sb.volume_id, sb.format_id,
                                          sb.state_groups, table.span());
  if (root != sb.state_root) {
    return absl::DataLossError(absl::StrCat(
        store_->name(),
        ": the group digest table does not match the state root in the "
        "superblock (the image's metadata was altered)"));
  }
  for (uint64_t g = 0; g < sb.state_groups; ++g) {
    GroupDigest d;
    std::memcpy(d.data(), table.data() + g * kDigestBytes, kDigestBytes);
    digests_->set(g, d);
  }
  return absl::OkStatus();
}

absl::Status SealedVolume::Impl::Checkpoint(bool clean) {
  const Superblock sb = metadata_->superblock();
  const uint64_t groups =
      sb.layout.groups_for(size_bytes_.load() / kBlockSize);
  StateRoot root = sb.state_root;
  if (digests_) {
    for (auto& w : workers_) w->SettleDigests();
    AlignedBuffer table(DigestTable::BlocksFor(groups) * 4096);
    digests_->Serialize(groups, table.span());
    const int copy = 1 - static_cast<int>(sb.digest_copy);
    RETURN_IF_ERROR(metadata_->WriteDigestTable(copy, table.span()));
    root = ComputeStateRoot(sb.volume_id, sb.format_id, groups, table.span());
    RETURN_IF_ERROR(metadata_->UpdateSuperblock([&](Superblock& s) {
      s.state_root = root;
      s.state_groups = groups;
      s.digest_copy = static_cast<uint32_t>(copy);
    }));
  }
  // Every digest is in the committed table: the bits may go.
  RETURN_IF_ERROR(metadata_->ClearAll());
  if (clean) {
    RETURN_IF_ERROR(metadata_->UpdateSuperblock(
        [](Superblock& s) { s.flags |= kSuperblockFlagClean; }));
  }
  SetState(VolumeState{sb.state_epoch, root, !clean});
  return absl::OkStatus();
}

RequestTracker* SealedVolume::Impl::AcquireTracker() {
  for (;;) {
    {
      MutexLock l(&tracker_mu_);
      if (!options_.manual) {
        while (free_trackers_ == nullptr) tracker_cv_.Wait(&tracker_mu_);
      }
      if (RequestTracker* t = free_trackers_; t != nullptr) {
        free_trackers_ = t->next_free;
        return t;
      }
    }
    // Manual mode: running the queued requests releases their trackers.
    RunPending();
  }
}

void SealedVolume::Impl::ReleaseTracker(RequestTracker* t) {
  {
    MutexLock l(&tracker_mu_);
    t->next_free = free_trackers_;
    free_trackers_ = t;
  }
  tracker_cv_.Signal();
}

void SealedVolume::Impl::CompletePart(Part& part, int result) {
  RequestTracker* t = part.tracker;
  if (result != 0) {
    int expected = 0;
    t->error.compare_exchange_strong(expected, result);
  }
  if (t->remaining.fetch_sub(1) != 1) return;
  IoRequest* r = t->request;
  const int err = t->error.load();
  ReleaseTracker(t);
  if (err != 0 && r->op == IoOp::kRead) {
    // No unauthenticated byte escapes: the whole buffer is zeroed.
    std::memset(r->buffer.data(), 0, r->length);
  }
  const bool mutation = r->op == IoOp::kWrite || r->op == IoOp::kDiscard;
  Finish(r, err);
  if (mutation) gate_.Leave();  // After `done`: a hold waits for the ack.
}

void SealedVolume::Impl::Enqueue(const Part& part, size_t worker) {
  while (!workers_[worker]->Enqueue(part, !options_.manual)) {
    workers_[worker]->RunPending();
  }
}

void SealedVolume::Impl::Dispatch(IoRequest* r, bool run_inline) {
  active_submits_.fetch_add(1);
  struct Leave {
    std::atomic<int>* n;
    ~Leave() { n->fetch_sub(1); }
  } leave{&active_submits_};
  if (closed_.load()) return Finish(r, -EROFS);
  const bool mutation = r->op == IoOp::kWrite || r->op == IoOp::kDiscard;
  if (mutation && (options_.read_only || failed_.load())) {
    return Finish(r, -EROFS);
  }
  const size_t nworkers = workers_.size();
  if (r->op == IoOp::kFlush) {
    if (options_.read_only) return Finish(r, 0);
    RequestTracker* t = AcquireTracker();
    t->request = r;
    t->error.store(0);
    t->remaining.store(static_cast<int>(nworkers));
    for (size_t w = 0; w < nworkers; ++w) {
      Part p;
      p.tracker = t;
      p.op = IoOp::kFlush;
      Route(p, w, run_inline);
    }
    return;
  }
  const uint64_t size = size_bytes_.load();
  if (r->offset % kBlockSize != 0 || r->length % kBlockSize != 0 ||
      r->length == 0 || r->offset > size || r->length > size - r->offset ||
      (r->op != IoOp::kDiscard && r->buffer.size() < r->length)) {
    return Finish(r, -EINVAL);
  }
  if (mutation && !gate_.Enter(r)) return;  // Held: ReleaseWrites runs it.
  const Layout& l = ctx_.layout;
  const uint64_t first = r->offset / kBlockSize;
  const uint64_t end = first + r->length / kBlockSize;
  const uint64_t groups = l.group_of(end - 1) - l.group_of(first) + 1;
  RequestTracker* t = AcquireTracker();
  t->request = r;
  t->error.store(0);
  t->remaining.store(static_cast<int>(groups));
  uint64_t b = first;
  while (b < end) {
    const uint64_t g = l.group_of(b);
    const uint64_t stop =
        std::min<uint64_t>(end, (g + 1) * l.data_blocks_per_group);
    Part p;
    p.tracker = t;
    p.op = r->op;
    p.fua = r->fua;
    p.first_block = b;
    p.blocks = static_cast<uint32_t>(stop - b);
    p.data = r->op == IoOp::kDiscard
                 ? nullptr
                 : r->buffer.data() + (b - first) * kBlockSize;
    Route(p, g % nworkers, run_inline);
    b = stop;
  }
}

int SealedVolume::Impl::Io(IoOp op, uint64_t offset, std::span<uint8_t> buffer,
                           bool fua) {
  BlockingRequest w;
  w.req.op = op;
  w.req.fua = fua;
  w.req.offset = offset;
  w.req.length = op == IoOp::kFlush ? 0 : buffer.size();
  w.req.buffer = buffer;
  Submit(&w.req);
  if (options_.manual) RunPending();
  return w.Wait();
}

absl::Status SealedVolume::Impl::Grow(uint64_t new_size) {
  MutexLock l(&grow_mu_);
  if (closed_.load() || options_.read_only) {
    return absl::FailedPreconditionError(
        absl::StrCat(store_->name(), ": grow: volume is closed or read-only"));
  }
  RETURN_IF_ERROR(NotHeld("grow"));
  const uint64_t old = size_bytes_.load();
  RETURN_IF_ERROR(CheckSize(new_size, ctx_.layout));
  if (new_size < old) {
    return absl::InvalidArgumentError(absl::StrCat(
        store_->name(), ": grow: ", new_size, " is smaller than ", old,
        " (volumes never shrink)"));
  }
  if (new_size == old) return absl::OkStatus();
  // The new groups' tag blocks are holes in the grown file (zeros); on a
  // block device format zeroed the metadata of the whole device.
  RETURN_IF_ERROR(
      store_->Resize(ctx_.layout.image_bytes(new_size / kBlockSize)));
  // New groups have all-zero digests (never written) until a write.
  if (digests_) digests_->Ensure(ctx_.layout.groups_for(new_size / kBlockSize));
  RETURN_IF_ERROR(metadata_->UpdateSuperblock(
      [new_size](Superblock& s) { s.size_bytes = new_size; }));
  size_bytes_.store(new_size);
  return absl::OkStatus();
}

absl::Status SealedVolume::Impl::Close() {
  MutexLock l(&close_mu_);
  StopCheckpointThread();
  MutexLock c(&checkpoint_mu_);
  if (!closed_.load()) ReleaseWrites();  // Held writes before the flush.
  if (closed_.exchange(true)) return absl::OkStatus();
  while (active_submits_.load() != 0) std::this_thread::yield();
  absl::Status status;
  if (!workers_.empty() && !options_.read_only) {
    // The final flush goes behind everything queued.
    BlockingRequest w;
    w.req.op = IoOp::kFlush;
    RequestTracker* t = AcquireTracker();
    t->request = &w.req;
    t->error.store(0);
    t->remaining.store(static_cast<int>(workers_.size()));
    for (size_t i = 0; i < workers_.size(); ++i) {
      Part p;
      p.tracker = t;
      p.op = IoOp::kFlush;
      Enqueue(p, i);
    }
    if (options_.manual) RunPending();
    if (const int rc = w.Wait(); rc != 0) {
      status = ErrnoStatus(-rc, "close: flush", store_->name());
    }
  }
  for (auto& w : workers_) w->Stop();
  if (status.ok() && !options_.read_only && metadata_ && !failed_.load()) {
    status = Checkpoint(/*clean=*/true);
  }
  sessions_started_at_close_ = sessions_started();
  workers_.clear();
  if (failed_.load() && status.ok()) {
    status = absl::DataLossError(
        absl::StrCat(store_->name(), ": backing store failed; not clean"));
  }
  if (!options_.keep_store_after_close) {
    // Release the image (and its lock) so it can be opened again.
    metadata_.reset();
    store_.reset();
  }
  keys_.session_root.Wipe();
  keys_.metadata_mac_key.Wipe();
  keys_.header_mac_key.Wipe();
  return status;
}

SealedVolume::SealedVolume(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
SealedVolume::~SealedVolume() = default;

uint64_t SealedVolume::size_bytes() const { return impl_->size_bytes(); }
void SealedVolume::Submit(IoRequest* r) { impl_->Submit(r); }
void SealedVolume::SubmitInline(IoRequest* r) { impl_->SubmitInline(r); }
int SealedVolume::Io(IoOp op, uint64_t offset, std::span<uint8_t> buffer,
                     bool fua) {
  return impl_->Io(op, offset, buffer, fua);
}
void SealedVolume::RunPending() { impl_->RunPending(); }
absl::Status SealedVolume::Grow(uint64_t n) { return impl_->Grow(n); }
absl::Status SealedVolume::CheckpointNow() { return impl_->CheckpointNow(); }
absl::StatusOr<WriteHold> SealedVolume::HoldWrites(
    std::chrono::milliseconds timeout) {
  RETURN_IF_ERROR(impl_->HoldWrites(timeout));
  return WriteHold(this);
}
void SealedVolume::ReleaseWrites() { impl_->ReleaseWrites(); }

absl::Status SealedVolume::Close() { return impl_->Close(); }
bool SealedVolume::failed() const { return impl_->failed(); }
const VolumeId& SealedVolume::volume_id() const { return impl_->volume_id(); }
const FormatId& SealedVolume::format_id() const { return impl_->format_id(); }
const Layout& SealedVolume::layout() const { return impl_->layout(); }
VolumeState SealedVolume::state() const { return impl_->state(); }
const RecoveryStats& SealedVolume::recovery_stats() const {
  return impl_->recovery_stats();
}
uint64_t SealedVolume::sessions_started() const {
  return impl_->sessions_started();
}
std::vector<uint64_t> SealedVolume::mismatched_groups() const {
  return impl_->mismatched_groups();
}
uint64_t SealedVolume::checkpoints() const { return impl_->checkpoints(); }
BackingStore& SealedVolume::store() { return impl_->store(); }

absl::StatusOr<std::unique_ptr<SealedVolume>> SealedVolume::OpenOn(
    std::unique_ptr<BackingStore> store, const crypto::SecretBytes& dek,
    const EngineOptions& engine) {
  auto impl = std::make_unique<Impl>(std::move(store), engine);
  // On failure nothing was started that Close must flush; drop quietly.
  RETURN_IF_ERROR(impl->Init(dek));
  return absl::WrapUnique(new SealedVolume(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<SealedVolume>> SealedVolume::OpenFile(
    const std::string& path, const crypto::SecretBytes& dek,
    const EngineOptions& engine) {
  FileStoreOptions fo;
  fo.path = path;
  fo.read_only = engine.read_only;
  ASSIGN_OR_RETURN(auto store, OpenFileStore(fo));
  return OpenOn(std::move(store), dek, engine);
}

absl::StatusOr<std::unique_ptr<SealedVolume>> SealedVolume::Format(
    const FormatOptions& options, const crypto::SecretBytes& dek) {
  return FormatFile(options, dek, EngineOptions{});
}

absl::StatusOr<std::unique_ptr<SealedVolume>> SealedVolume::Open(
    const OpenOptions& options, const crypto::SecretBytes& dek) {
  EngineOptions eo;
  eo.read_only = options.read_only;
  if (options.worker_threads > 0) eo.worker_threads = options.worker_threads;
  eo.expected_state = options.expected_state;
  eo.commit_open = options.commit_open;
  eo.min_epoch = options.min_epoch;
  return OpenFile(options.path, dek, eo);
}

}  // namespace sealvol::io
