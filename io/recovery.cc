#include "io/recovery.h"

#include <algorithm>
#include <cstring>

#include "base/status_macros.h"
#include "io/tag_table.h"

namespace sealvol::io {
namespace {

absl::Status Check(const StoreOp& op, const char* what) {
  if (op.result == 0) return absl::OkStatus();
  return ErrnoStatus(-op.result, what, "image (recovery)");
}

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<RecoveryStats> RecoverDirtyGroups(const RecoveryInput& in) {
  const Layout& l = in.layout;
  RecoveryStats stats;
  const uint64_t groups = l.groups_for(in.volume_blocks);
  AlignedBuffer tags(size_t{l.tag_blocks_per_group} * 4096);
  AlignedBuffer data(size_t{l.data_blocks_per_group} * 4096, /*zero=*/false);
  AlignedBuffer plain(4096);
  std::vector<StoreOp> ops;
  bool wrote = false;
  for (uint64_t g = 0; g < groups; ++g) {
    if (((in.bitmap[g / 8] >> (g % 8)) & 1) == 0) continue;
    ++stats.groups_scanned;
    StoreOp read_tags{StoreOp::Kind::kRead, l.tag_start(g) * 4096,
                      tags.size(), tags.data()};
    in.queue->Execute({&read_tags, 1});
    RETURN_IF_ERROR(Check(read_tags, "read tags"));
    GroupTags t(tags.data());
    const uint64_t first_block = g * l.data_blocks_per_group;
    const uint32_t count = static_cast<uint32_t>(std::min<uint64_t>(
        l.data_blocks_per_group, in.volume_blocks - first_block));
    // Read the data of every written block, in contiguous runs.
    ops.clear();
    uint32_t k = 0;
    while (k < count) {
      if (t.newer_slot(k) < 0) {
        ++k;
        continue;
      }
      uint32_t run = k;
      while (run < count && t.newer_slot(run) >= 0) ++run;
      ops.push_back(StoreOp{StoreOp::Kind::kRead,
                            l.data_position(first_block + k) * 4096,
                            uint64_t{run - k} * 4096,
                            data.data() + size_t{k} * 4096});
      k = run;
    }
    if (!ops.empty()) in.queue->Execute(ops);
    for (const StoreOp& op : ops) RETURN_IF_ERROR(Check(op, "read data"));

    bool changed = false;
    for (uint32_t i = 0; i < count; ++i) {
      const int newer = t.newer_slot(i);
      if (newer < 0) continue;
      ++stats.blocks_checked;
      const uint64_t block = first_block + i;
      const uint8_t* cipher = data.data() + size_t{i} * 4096;
      int verified = -1;
      for (int s : {newer, 1 - newer}) {
        if (!t.present(i, s)) continue;
        if (in.slots->Open(block, t.slot(i, s), cipher, plain.data())) {
          verified = s;
          break;
        }
      }
      if (verified >= 0) {
        const int other = 1 - verified;
        if (t.present(i, other)) {
          t.clear_slot(i, other);
          ++stats.slots_cleared;
          changed = true;
        }
        continue;
      }
      const bool lone = !t.present(i, 1 - newer);
      if (lone && (!in.holes_read_zero || AllZero(cipher, 4096))) {
        t.clear_slot(i, newer);
        ++stats.slots_cleared;
        changed = true;
        continue;
      }
      stats.unrecoverable.push_back(block);
    }
    std::memset(plain.data(), 0, plain.size());
    if (changed) {
      StoreOp write{StoreOp::Kind::kWrite, l.tag_start(g) * 4096, tags.size(),
                    tags.data()};
      in.queue->Execute({&write, 1});
      RETURN_IF_ERROR(Check(write, "write tags"));
      wrote = true;
    }
    if (in.on_group) in.on_group(g, tags.span());
    // A discard's punch may not have survived the crash, leaving old
    // ciphertext under empty slots; a later first write that then fails to
    // land would find non-zero data. Punch every empty block again.
    ops.clear();
    k = 0;
    while (k < count) {
      if (t.newer_slot(k) >= 0) {
        ++k;
        continue;
      }
      uint32_t run = k;
      while (run < count && t.newer_slot(run) < 0) ++run;
      ops.push_back(StoreOp{StoreOp::Kind::kPunch,
                            l.data_position(first_block + k) * 4096,
                            uint64_t{run - k} * 4096, nullptr});
      k = run;
    }
    if (!ops.empty()) {
      in.queue->Execute(ops);
      for (const StoreOp& op : ops) RETURN_IF_ERROR(Check(op, "punch"));
      wrote = true;
    }
  }
  if (wrote) {
    StoreOp sync{StoreOp::Kind::kSync};
    in.queue->Execute({&sync, 1});
    RETURN_IF_ERROR(Check(sync, "fdatasync"));
  }
  return stats;
}

}  // namespace sealvol::io
