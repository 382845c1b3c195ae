#include "io/worker.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "base/check.h"
#include "io/tag_table.h"

namespace sealvol::io {
namespace {

constexpr size_t kQueueCapacity = 1024;  // Parts waiting per worker.
constexpr size_t kMaxBatch = 128;        // Parts taken per drain.
// Blocks per backing read op: small enough that a piece is decrypted while
// it is still in cache and while the next pieces are being copied.
constexpr uint32_t kReadOpBlocks = 64;

bool IsMutation(IoOp op) { return op == IoOp::kWrite || op == IoOp::kDiscard; }

bool TestBit(const std::vector<uint64_t>& bits, uint32_t i) {
  return (bits[i / 64] >> (i % 64)) & 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(
    const EngineContext* ctx) {
  auto queue = ctx->store->CreateQueue();
  if (!queue.ok()) return queue.status();
  auto slots =
      SlotCodec::Create(*ctx->session_root, ctx->volume_id, ctx->seal_observer);
  if (!slots.ok()) return slots.status();
  return std::unique_ptr<Worker>(
      new Worker(ctx, std::move(queue).value(), std::move(slots).value()));
}

Worker::Worker(const EngineContext* ctx, std::unique_ptr<StoreQueue> queue,
               std::unique_ptr<SlotCodec> slots)
    : ctx_(ctx),
      queue_(std::move(queue)),
      slots_(std::move(slots)),
      ring_(kQueueCapacity),
      batch_(kMaxBatch),
      cache_(ctx->cache_groups),
      bounce_(ctx->batch_blocks * 4096, /*zero=*/false) {
  const Layout& l = ctx_->layout;
  for (GroupEntry& e : cache_) {
    e.tags = AlignedBuffer(size_t{l.tag_blocks_per_group} * 4096);
    e.unflushed.assign((l.data_blocks_per_group + 63) / 64, 0);
  }
  CHECK_LE(l.tag_blocks_per_group, 64u);
  ops_.reserve(kMaxBatch * 4 + ctx->batch_blocks + cache_.size());
  groups_scratch_.reserve(cache_.size() + kMaxBatch);
  part_result_.reserve(kMaxBatch);
  part_bounce_.reserve(kMaxBatch);
  op_part_.reserve(ops_.capacity());
  part_pending_.reserve(kMaxBatch);
  part_state_.reserve(kMaxBatch);
}

Worker::~Worker() { Stop(); }

bool Worker::Enqueue(const Part& part, bool may_block) {
  {
    MutexLock l(&mu_);
    while (count_ == ring_.size()) {
      if (!may_block) return false;
      not_full_.Wait(&mu_);
    }
    ring_[(head_ + count_) % ring_.size()] = part;
    ++count_;
  }
  not_empty_.Signal();
  return true;
}

void Worker::Start() { thread_ = std::thread([this] { Loop(); }); }

void Worker::Stop() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  not_empty_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void Worker::Loop() {
  for (;;) {
    size_t n = 0;
    {
      MutexLock l(&mu_);
      while (driving_ || (count_ == 0 && !stop_)) not_empty_.Wait(&mu_);
      if (count_ == 0) return;
      n = std::min(count_, kMaxBatch);
      for (size_t i = 0; i < n; ++i) batch_[i] = ring_[(head_ + i) % ring_.size()];
      head_ = (head_ + n) % ring_.size();
      count_ -= n;
      driving_ = true;
    }
    not_full_.SignalAll();
    ProcessBatch({batch_.data(), n});
    {
      MutexLock l(&mu_);
      driving_ = false;
    }
    quiesce_cv_.SignalAll();
  }
}

bool Worker::TryRunInline(const Part& part) {
  {
    MutexLock l(&mu_);
    if (driving_ || count_ > 0 || stop_) return false;
    driving_ = true;
  }
  inline_part_ = part;
  ProcessBatch({&inline_part_, 1});
  bool queued;
  {
    MutexLock l(&mu_);
    driving_ = false;
    queued = count_ > 0 || stop_;
  }
  quiesce_cv_.SignalAll();
  // Parts queued meanwhile waited for this batch: hand them to the thread.
  if (queued) not_empty_.SignalAll();
  return true;
}

bool Worker::HasPending() {
  MutexLock l(&mu_);
  return count_ > 0;
}

void Worker::RunPending() {
  for (;;) {
    size_t n = 0;
    {
      MutexLock l(&mu_);
      if (count_ == 0) return;
      n = std::min(count_, kMaxBatch);
      for (size_t i = 0; i < n; ++i) batch_[i] = ring_[(head_ + i) % ring_.size()];
      head_ = (head_ + n) % ring_.size();
      count_ -= n;
    }
    not_full_.SignalAll();
    ProcessBatch({batch_.data(), n});
  }
}

bool Worker::Conflicts(std::span<Part> taken, const Part& p) const {
  for (const Part& q : taken) {
    if (q.op == IoOp::kFlush) continue;
    if (!IsMutation(p.op) && !IsMutation(q.op)) continue;
    if (p.first_block < q.first_block + q.blocks &&
        q.first_block < p.first_block + p.blocks) {
      return true;
    }
  }
  return false;
}

// Splits the drained parts into sub-batches in which no block is touched by
// a write and by any other part, so each sub-batch can run its phases
// (tags, sync, data) with everything in flight at once. A flush ends a
// sub-batch: it must follow everything before it.
void Worker::ProcessBatch(std::span<Part> parts) {
  size_t i = 0;
  while (i < parts.size()) {
    size_t end = i;
    uint64_t bounce_used = 0;
    while (end < parts.size()) {
      const Part& p = parts[end];
      if (p.op == IoOp::kFlush) {
        ++end;
        break;
      }
      const uint64_t need = p.op == IoOp::kDiscard ? 0 : p.blocks;
      if (end > i &&
          (bounce_used + need > ctx_->batch_blocks ||
           end - i >= cache_.size() ||
           Conflicts(parts.subspan(i, end - i), p))) {
        break;
      }
      bounce_used += need;
      ++end;
    }
    RunSubBatch(parts.subspan(i, end - i));
    i = end;
  }
}

Worker::GroupEntry* Worker::Lookup(uint64_t group) {
  if (group >= entry_of_group_.size()) return nullptr;
  const int32_t idx = entry_of_group_[group];
  return idx < 0 ? nullptr : &cache_[idx];
}

// Makes every group the parts touch resident, evicting the least recently
// used groups that have no unflushed writes (a sync makes more evictable).
bool Worker::LoadGroups(std::span<Part> parts) {
  const Layout& l = ctx_->layout;
  ops_.clear();
  groups_scratch_.clear();
  for (size_t i = 0; i < parts.size(); ++i) {
    const Part& p = parts[i];
    if (p.op == IoOp::kFlush) continue;
    const uint64_t g = l.group_of(p.first_block);
    if (g >= entry_of_group_.size()) entry_of_group_.resize(g + 1, -1);
    GroupEntry* e = Lookup(g);
    if (e != nullptr) {
      e->pinned_in = epoch_;
      e->last_use = ++tick_;
      continue;
    }
    GroupEntry* victim = nullptr;
    for (int attempt = 0; attempt < 2 && victim == nullptr; ++attempt) {
      for (GroupEntry& c : cache_) {
        if (c.pinned_in == epoch_ || c.unflushed_count > 0) continue;
        if (victim == nullptr || c.group == ~uint64_t{0} ||
            (victim->group != ~uint64_t{0} && c.last_use < victim->last_use)) {
          victim = &c;
        }
      }
      if (victim == nullptr && !Sync()) return false;
    }
    CHECK(victim != nullptr);  // ProcessBatch keeps parts <= cache size.
    if (victim->group != ~uint64_t{0}) {
      // Its bit stays set until the next checkpoint writes its digest.
      SettleDigest(*victim);
      entry_of_group_[victim->group] = -1;
    }
    victim->group = g;
    victim->marked = ctx_->metadata->bit(g);
    victim->digest_stale = false;
    victim->dirty_tag_blocks = 0;
    victim->unflushed_count = 0;
    std::fill(victim->unflushed.begin(), victim->unflushed.end(), 0);
    victim->pinned_in = epoch_;
    victim->last_use = ++tick_;
    victim->load_failed = false;
    entry_of_group_[g] = static_cast<int32_t>(victim - cache_.data());
    ops_.push_back(StoreOp{StoreOp::Kind::kRead, l.tag_start(g) * 4096,
                           uint64_t{l.tag_blocks_per_group} * 4096,
                           victim->tags.data()});
    groups_scratch_.push_back(g);
  }
  if (ops_.empty()) return true;
  queue_->Execute(ops_);
  for (size_t i = 0; i < ops_.size(); ++i) {
    GroupEntry* e = Lookup(groups_scratch_[i]);
    if (ops_[i].result == 0) {
      if (TagsMatchDigest(*e)) continue;
      ctx_->on_digest_mismatch(e->group);
    }
    e->load_failed = true;
    entry_of_group_[e->group] = -1;
    e->group = ~uint64_t{0};
  }
  return true;
}

bool Worker::TagsMatchDigest(const GroupEntry& e) const {
  if (ctx_->digests == nullptr) return true;
  const uint64_t g = e.group;
  if (g / 8 < ctx_->accept_as_found.size() &&
      ((ctx_->accept_as_found[g / 8] >> (g % 8)) & 1) != 0) {
    return true;
  }
  const GroupDigest d = DigestGroupTags(ctx_->volume_id, g, e.tags.span());
  return d == ctx_->digests->get(g);
}

void Worker::SettleDigest(GroupEntry& e) {
  if (!e.digest_stale || ctx_->digests == nullptr) return;
  ctx_->digests->set(e.group,
                     DigestGroupTags(ctx_->volume_id, e.group, e.tags.span()));
  e.digest_stale = false;
}

void Worker::Quiesce() {
  MutexLock l(&mu_);
  while (driving_) quiesce_cv_.Wait(&mu_);
  driving_ = true;
}

bool Worker::SyncAndSettle() {
  if (!Sync()) return false;
  SettleDigests();
  for (GroupEntry& e : cache_) e.marked = false;
  return true;
}

void Worker::Resume() {
  {
    MutexLock l(&mu_);
    driving_ = false;
  }
  not_empty_.SignalAll();
}

void Worker::SettleDigests() {
  for (GroupEntry& e : cache_) {
    if (e.group != ~uint64_t{0}) SettleDigest(e);
  }
}

bool Worker::Sync() {
  StoreOp sync{StoreOp::Kind::kSync};
  queue_->Execute({&sync, 1});
  if (sync.result != 0) {
    ctx_->failed->store(true);
    return false;
  }
  AfterSync();
  return true;
}

void Worker::AfterSync() {
  for (GroupEntry& e : cache_) {
    if (e.unflushed_count == 0) continue;
    std::fill(e.unflushed.begin(), e.unflushed.end(), 0);
    e.unflushed_count = 0;
  }
}

int Worker::Seal(GroupEntry& e, uint64_t block, const uint8_t* in,
                 uint8_t* out) {
  const uint32_t idx = block % ctx_->layout.data_blocks_per_group;
  GroupTags tags(e.tags.data());
  // Fill the slot that does not match the data on disk: the newer slot
  // matches it once the block has no unflushed write (checked by the caller).
  const int newer = tags.newer_slot(idx);
  const int target = newer < 0 ? 0 : 1 - newer;
  const uint8_t seq =
      newer < 0 ? 0 : static_cast<uint8_t>(tags.seq(idx, newer) + 1);
  TagSlot slot;
  if (!slots_->Seal(block, seq, in, out, slot)) return -EIO;
  tags.set_slot(idx, target, slot);
  e.digest_stale = true;
  e.dirty_tag_blocks |= uint64_t{1} << GroupTags::tag_block_of(idx);
  return 0;
}

int Worker::OpenBlock(GroupEntry& e, uint64_t block, const uint8_t* in,
                      uint8_t* out) {
  const uint32_t idx = block % ctx_->layout.data_blocks_per_group;
  GroupTags tags(e.tags.data());
  const int newer = tags.newer_slot(idx);
  for (int s : {newer, 1 - newer}) {
    if (!tags.present(idx, s)) continue;
    if (slots_->Open(block, tags.slot(idx, s), in, out)) return 0;
  }
  return -EIO;
}

void Worker::FailWrites(std::span<Part> parts, int err) {
  for (size_t i = 0; i < parts.size(); ++i) {
    if (IsMutation(parts[i].op) && part_result_[i] == 0) part_result_[i] = err;
  }
}

// One group commit. Order: (a) sync if a block written here still has an
// unflushed write; (b) set the groups' write-intent bits durably; (c) write
// the new tags; (d) one fdatasync; (e) data writes, punches and reads, all
// in flight together; (f) for FUA and flush, fdatasync before completing.
void Worker::RunSubBatch(std::span<Part> parts) {
  ++epoch_;
  part_result_.assign(parts.size(), 0);
  PlaceInBounce(parts);
  LoadGroups(parts);
  const SubBatchPlan plan = Plan(parts);
  if (plan.has_mutation) {
    MarkIntent(parts, plan);  // (a), (b)
    SealMutations(parts);
    WriteTags(parts);         // (c), (d)
  }
  RunDataOps(parts);                           // (e)
  if (plan.need_final_sync) FinalSync(parts);  // (f)
  for (size_t i = 0; i < parts.size(); ++i) {
    if (part_state_[i] != PartState::kCompleted) {
      ctx_->complete(parts[i], part_result_[i]);
    }
  }
}

// Gives every part that carries data its blocks in the bounce buffer.
void Worker::PlaceInBounce(std::span<const Part> parts) {
  part_bounce_.resize(parts.size());
  uint64_t bounce_next = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    part_bounce_[i] = bounce_next;
    bounce_next += (parts[i].op == IoOp::kFlush || parts[i].op == IoOp::kDiscard)
                       ? 0
                       : parts[i].blocks;
  }
}

// What the sub-batch needs: fails the parts whose group could not be loaded
// (EIO) and mutations of a failed volume (EROFS); leaves in groups_scratch_
// the groups whose write-intent bit must be set first.
Worker::SubBatchPlan Worker::Plan(std::span<const Part> parts) {
  const Layout& l = ctx_->layout;
  SubBatchPlan plan;
  groups_scratch_.clear();
  for (size_t i = 0; i < parts.size(); ++i) {
    const Part& p = parts[i];
    if (p.op == IoOp::kFlush) {
      plan.need_final_sync = true;
      continue;
    }
    GroupEntry* e = Lookup(l.group_of(p.first_block));
    if (e == nullptr) {
      part_result_[i] = -EIO;
      continue;
    }
    if (!IsMutation(p.op)) continue;
    if (ctx_->failed->load(std::memory_order_relaxed)) {
      part_result_[i] = -EROFS;
      continue;
    }
    plan.has_mutation = true;
    if (p.op == IoOp::kWrite) plan.write_blocks += p.blocks;
    if (p.fua) plan.need_final_sync = true;
    const uint32_t first = p.first_block % l.data_blocks_per_group;
    for (uint32_t k = 0; k < p.blocks && !plan.need_presync; ++k) {
      plan.need_presync = TestBit(e->unflushed, first + k);
    }
    if (!e->marked) {
      bool seen = false;
      for (uint64_t g : groups_scratch_) seen |= g == e->group;
      if (!seen) groups_scratch_.push_back(e->group);
    }
  }
  return plan;
}

// (a) and (b), then the nonce counters for the writes; any failure fails
// every mutation of the sub-batch.
void Worker::MarkIntent(std::span<Part> parts, const SubBatchPlan& plan) {
  int err = 0;
  if (plan.need_presync && !Sync()) err = -EIO;
  if (err == 0 && !groups_scratch_.empty()) {
    if (ctx_->metadata->MarkDirty(groups_scratch_).ok()) {
      for (uint64_t g : groups_scratch_) Lookup(g)->marked = true;
    } else {
      ctx_->failed->store(true);
      err = -EIO;
    }
  }
  if (err == 0 && plan.write_blocks > 0 &&
      !slots_->Reserve(plan.write_blocks).ok()) {
    ctx_->failed->store(true);
    err = -EIO;
  }
  if (err != 0) FailWrites(parts, err);
}

// Seals the writes into the bounce buffer and updates the cached slots;
// a discard clears its blocks' slots.
void Worker::SealMutations(std::span<Part> parts) {
  const Layout& l = ctx_->layout;
  for (size_t i = 0; i < parts.size(); ++i) {
    Part& p = parts[i];
    if (!IsMutation(p.op) || part_result_[i] != 0) continue;
    GroupEntry* e = Lookup(l.group_of(p.first_block));
    if (p.op == IoOp::kDiscard) {
      GroupTags tags(e->tags.data());
      for (uint32_t k = 0; k < p.blocks; ++k) {
        const uint32_t idx = (p.first_block + k) % l.data_blocks_per_group;
        tags.clear_slot(idx, 0);
        tags.clear_slot(idx, 1);
        e->digest_stale = true;
        e->dirty_tag_blocks |= uint64_t{1} << GroupTags::tag_block_of(idx);
      }
      continue;
    }
    for (uint32_t k = 0; k < p.blocks; ++k) {
      if (Seal(*e, p.first_block + k, p.data + size_t{k} * 4096,
               bounce_.data() + (part_bounce_[i] + k) * 4096) != 0) {
        part_result_[i] = -EIO;
      }
    }
  }
}

// (c) + (d): every changed run of tag blocks, then one sync for the whole
// sub-batch. A failure fails the volume and every mutation.
void Worker::WriteTags(std::span<Part> parts) {
  const Layout& l = ctx_->layout;
  ops_.clear();
  for (GroupEntry& e : cache_) {
    if (e.dirty_tag_blocks == 0 || e.group == ~uint64_t{0}) continue;
    uint32_t t = 0;
    while (t < l.tag_blocks_per_group) {
      if (((e.dirty_tag_blocks >> t) & 1) == 0) {
        ++t;
        continue;
      }
      uint32_t run = t;
      while (run < l.tag_blocks_per_group && ((e.dirty_tag_blocks >> run) & 1)) {
        ++run;
      }
      ops_.push_back(StoreOp{StoreOp::Kind::kWrite,
                             (l.tag_start(e.group) + t) * 4096,
                             uint64_t{run - t} * 4096,
                             e.tags.data() + size_t{t} * 4096});
      t = run;
    }
    e.dirty_tag_blocks = 0;
  }
  if (ops_.empty()) return;
  queue_->Execute(ops_);
  bool ok = true;
  for (const StoreOp& op : ops_) ok &= op.result == 0;
  if (!ok || !Sync()) {
    ctx_->failed->store(true);
    FailWrites(parts, -EIO);
  }
}

// (e) Data writes, punches and reads together. A part finishes as soon as
// its last op has its result: a read is decrypted while later reads are
// still being copied, and a write that needs no final sync completes then,
// so the submitter can refill the queue while the rest is in flight.
void Worker::RunDataOps(std::span<Part> parts) {
  const Layout& l = ctx_->layout;
  QueueDataOps(parts);
  if (!ops_.empty()) {
    queue_->ExecuteEach(ops_, [&](size_t j) {
      const size_t i = op_part_[j];
      Part& p = parts[i];
      if (ops_[j].result != 0) {
        part_result_[i] = -EIO;
        if (IsMutation(p.op)) ctx_->failed->store(true);
      } else if (p.op == IoOp::kRead && part_result_[i] == 0) {
        const uint64_t k =
            ops_[j].offset / 4096 - l.data_position(p.first_block);
        part_result_[i] = OpenRange(p, i, static_cast<uint32_t>(k),
                                    static_cast<uint32_t>(ops_[j].length / 4096));
      }
      if (--part_pending_[i] == 0) FinishPart(p, i);
    });
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    if (part_state_[i] == PartState::kInFlight) FinishPart(parts[i], i);
  }
}

// The store operations of (e), in ops_, with op_part_ naming each one's part
// and part_pending_ counting each part's. A read of blocks never written
// (or discarded) yields zeros without touching the disk.
void Worker::QueueDataOps(std::span<Part> parts) {
  const Layout& l = ctx_->layout;
  ops_.clear();
  op_part_.clear();
  part_pending_.assign(parts.size(), 0);
  part_state_.assign(parts.size(), PartState::kInFlight);
  for (size_t i = 0; i < parts.size(); ++i) {
    Part& p = parts[i];
    if (p.op == IoOp::kFlush || part_result_[i] != 0) continue;
    const uint64_t pos = l.data_position(p.first_block) * 4096;
    if (p.op == IoOp::kWrite) {
      ops_.push_back(StoreOp{StoreOp::Kind::kWrite, pos,
                             uint64_t{p.blocks} * 4096,
                             bounce_.data() + part_bounce_[i] * 4096});
      op_part_.push_back(i);
      ++part_pending_[i];
      continue;
    }
    if (p.op == IoOp::kDiscard) {
      ops_.push_back(StoreOp{StoreOp::Kind::kPunch, pos,
                             uint64_t{p.blocks} * 4096, nullptr});
      op_part_.push_back(i);
      ++part_pending_[i];
      continue;
    }
    GroupEntry* e = Lookup(l.group_of(p.first_block));
    GroupTags tags(e->tags.data());
    const uint32_t first = p.first_block % l.data_blocks_per_group;
    uint8_t* const dest = bounce_.data() + part_bounce_[i] * 4096;
    uint32_t k = 0;
    while (k < p.blocks) {
      if (tags.newer_slot(first + k) < 0) {
        std::memset(p.data + size_t{k} * 4096, 0, 4096);
        ++k;
        continue;
      }
      uint32_t run = k;
      while (run < p.blocks && run - k < kReadOpBlocks &&
             tags.newer_slot(first + run) >= 0) {
        ++run;
      }
      ops_.push_back(StoreOp{StoreOp::Kind::kRead, pos + uint64_t{k} * 4096,
                             uint64_t{run - k} * 4096,
                             dest + size_t{k} * 4096});
      op_part_.push_back(i);
      ++part_pending_[i];
      k = run;
    }
  }
}

// (f) FUA writes and flushes are durable before they complete. Write-intent
// bits stay set until the next checkpoint (close) has written the groups'
// digests: recovery recomputes them after a crash.
void Worker::FinalSync(std::span<Part> parts) {
  if (Sync()) return;
  for (size_t i = 0; i < parts.size(); ++i) {
    if ((parts[i].op == IoOp::kFlush || parts[i].fua) && part_result_[i] == 0) {
      part_result_[i] = -EIO;
    }
  }
}

// Decrypts `count` blocks of read part `i` from `k` on, as soon as their
// backing read has landed. From the bounce buffer into the request's buffer,
// never in place: if the newer slot fails, the older one needs the
// ciphertext intact. Returns 0 or -EIO.
int Worker::OpenRange(Part& p, size_t i, uint32_t k, uint32_t count) {
  const Layout& l = ctx_->layout;
  GroupEntry* e = Lookup(l.group_of(p.first_block));
  const uint8_t* src = bounce_.data() + part_bounce_[i] * 4096;
  for (uint32_t n = k; n < k + count; ++n) {
    if (OpenBlock(*e, p.first_block + n, src + size_t{n} * 4096,
                  p.data + size_t{n} * 4096) != 0) {
      return -EIO;
    }
  }
  return 0;
}

// Called once per part when all its data ops have their results (reads are
// decrypted by then): book-keeping for writes; completes the part unless it
// must wait for the sub-batch's final sync (FUA, flush).
void Worker::FinishPart(Part& p, size_t i) {
  const Layout& l = ctx_->layout;
  part_state_[i] = PartState::kFinished;
  if (p.op == IoOp::kFlush) return;
  GroupEntry* e = Lookup(l.group_of(p.first_block));
  const uint32_t first = p.first_block % l.data_blocks_per_group;
  if (IsMutation(p.op)) {
    if ((part_result_[i] == 0 || part_result_[i] == -EIO) && e != nullptr) {
      // Even a failed data write may have landed: treat it as unflushed.
      for (uint32_t k = 0; k < p.blocks; ++k) {
        const uint32_t idx = first + k;
        if (!TestBit(e->unflushed, idx)) {
          e->unflushed[idx / 64] |= uint64_t{1} << (idx % 64);
          ++e->unflushed_count;
        }
      }
    }
    if (p.fua) return;
  }
  part_state_[i] = PartState::kCompleted;
  ctx_->complete(p, part_result_[i]);
}

}  // namespace sealvol::io
