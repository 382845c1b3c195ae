#include "io/metadata_writer.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace sealvol::io {
namespace {

absl::Status OpStatus(const StoreOp& op, const char* what) {
  if (op.result == 0) return absl::OkStatus();
  return ErrnoStatus(-op.result, what, "image metadata");
}

}  // namespace

MetadataWriter::MetadataWriter(std::unique_ptr<StoreQueue> queue,
                               Superblock sb, crypto::SecretBytes header_mac_key,
                               std::vector<uint8_t> bitmap)
    : queue_(std::move(queue)),
      sb_(sb),
      header_mac_key_(std::move(header_mac_key)),
      memory_(bitmap),
      disk_(std::move(bitmap)),
      io_buffer_(sb.layout.bitmap_blocks * 4096) {
  for (uint8_t b : memory_) dirty_count_ += static_cast<uint64_t>(__builtin_popcount(b));
}

uint64_t MetadataWriter::dirty_groups() const {
  MutexLock l(&mu_);
  return dirty_count_;
}

Superblock MetadataWriter::superblock() const {
  MutexLock l(&mu_);
  return sb_;
}

absl::Status MetadataWriter::WriteSuperblockLocked(const Superblock& edited) {
  Superblock next = edited;
  next.generation = sb_.generation + 1;
  ASSIGN_OR_RETURN(SuperblockBytes bytes,
                   EncodeSuperblock(next, header_mac_key_));
  std::memcpy(io_buffer_.data(), bytes.data(), bytes.size());
  StoreOp write{StoreOp::Kind::kWrite, next.copy() * 4096, 4096,
                io_buffer_.data()};
  queue_->Execute({&write, 1});
  RETURN_IF_ERROR(OpStatus(write, "write superblock"));
  StoreOp sync{StoreOp::Kind::kSync};
  queue_->Execute({&sync, 1});
  RETURN_IF_ERROR(OpStatus(sync, "fdatasync superblock"));
  sb_ = next;
  return absl::OkStatus();
}

bool MetadataWriter::bit(uint64_t group) const {
  MutexLock l(&mu_);
  return (memory_[group / 8] >> (group % 8)) & 1;
}

absl::Status MetadataWriter::MarkDirty(std::span<const uint64_t> groups) {
  MutexLock l(&mu_);
  bool need_write = false;
  for (uint64_t g : groups) {
    if (((memory_[g / 8] >> (g % 8)) & 1) == 0) ++dirty_count_;
    memory_[g / 8] |= static_cast<uint8_t>(1u << (g % 8));
    if (((disk_[g / 8] >> (g % 8)) & 1) == 0) need_write = true;
  }
  if (!need_write) return absl::OkStatus();
  return WriteBitmapBlocksLocked(/*only_changed=*/true, /*sync=*/true);
}

absl::Status MetadataWriter::ClearAll() {
  MutexLock l(&mu_);
  std::fill(memory_.begin(), memory_.end(), 0);
  dirty_count_ = 0;
  return WriteBitmapBlocksLocked(/*only_changed=*/true, /*sync=*/true);
}

absl::Status MetadataWriter::WriteDigestTable(
    int copy, std::span<const uint8_t> table) {
  MutexLock l(&mu_);
  if (table.empty()) return absl::OkStatus();
  AlignedBuffer buf(table.size());
  std::memcpy(buf.data(), table.data(), table.size());
  StoreOp write{StoreOp::Kind::kWrite, sb_.layout.digest_table(copy) * 4096,
                table.size(), buf.data()};
  queue_->Execute({&write, 1});
  RETURN_IF_ERROR(OpStatus(write, "write digest table"));
  StoreOp sync{StoreOp::Kind::kSync};
  queue_->Execute({&sync, 1});
  return OpStatus(sync, "fdatasync digest table");
}

absl::Status MetadataWriter::WriteBitmapBlocksLocked(bool only_changed,
                                                     bool sync) {
  StoreOp ops[64];
  size_t n = 0;
  const uint64_t blocks = sb_.layout.bitmap_blocks;
  auto flush_ops = [&]() -> absl::Status {
    mu_.AssertHeld();  // Called only below, under the caller's lock.
    queue_->Execute({ops, n});
    for (size_t i = 0; i < n; ++i) {
      RETURN_IF_ERROR(OpStatus(ops[i], "write bitmap"));
    }
    n = 0;
    return absl::OkStatus();
  };
  bool wrote = false;
  for (uint64_t b = 0; b < blocks; ++b) {
    const size_t off = b * 4096;
    if (only_changed &&
        std::memcmp(&memory_[off], &disk_[off], 4096) == 0) {
      continue;
    }
    std::memcpy(io_buffer_.data() + off, &memory_[off], 4096);
    ops[n++] = StoreOp{StoreOp::Kind::kWrite,
                       (sb_.layout.bitmap_start + b) * 4096, 4096,
                       io_buffer_.data() + off};
    wrote = true;
    if (n == 64) RETURN_IF_ERROR(flush_ops());
  }
  if (n > 0) RETURN_IF_ERROR(flush_ops());
  if (wrote && sync) {
    StoreOp s{StoreOp::Kind::kSync};
    queue_->Execute({&s, 1});
    RETURN_IF_ERROR(OpStatus(s, "fdatasync bitmap"));
  }
  if (wrote) {
    // Only now is the disk known to hold it (a clear written without a sync
    // may or may not be durable; either is safe).
    disk_ = memory_;
  }
  return absl::OkStatus();
}

}  // namespace sealvol::io
