// Formatting a new image: refuse one that already holds a volume, make the
// metadata read as zeros, write both superblock copies, then open it.
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "crypto/key_schedule.h"
#include "io/sealed_volume.h"
#include "io/state_table.h"
#include "io/superblock.h"
#include "io/volume_image.h"

namespace sealvol::io {

absl::StatusOr<std::unique_ptr<SealedVolume>> SealedVolume::FormatOn(
    std::unique_ptr<BackingStore> store, const FormatOptions& options,
    const crypto::SecretBytes& dek, const EngineOptions& engine) {
  const Layout layout = engine.format_layout;
  if (!layout.Valid()) {
    return absl::InvalidArgumentError("format: invalid layout");
  }
  RETURN_IF_ERROR(CheckSize(options.size_bytes, layout));
  ASSIGN_OR_RETURN(auto queue, store->CreateQueue());
  ASSIGN_OR_RETURN(SuperblockCopies copies,
                   ReadSuperblockCopies(*store, *queue));
  for (const auto& c : copies.decoded) {
    if (!absl::IsInvalidArgument(c.status())) {
      return absl::AlreadyExistsError(
          absl::StrCat(store->name(), ": already holds a sealvol image"));
    }
  }
  const uint64_t blocks = options.size_bytes / kBlockSize;
  const uint64_t need = layout.image_bytes(blocks);
  std::vector<StoreOp> ops;
  if (store->needs_zeroing()) {
    // A block device: zero the metadata the engine relies on reading as
    // zeros (bitmap and every tag block that fits on the device).
    if (store->size_bytes() < need) {
      return absl::OutOfRangeError(absl::StrCat(
          store->name(), ": device has ", store->size_bytes(),
          " bytes, the volume needs ", need));
    }
    ops.push_back(StoreOp{StoreOp::Kind::kPunch, 0,
                          layout.groups_start * 4096, nullptr});
    for (uint64_t g = 0; layout.tag_start(g) * 4096 < store->size_bytes();
         ++g) {
      ops.push_back(StoreOp{StoreOp::Kind::kPunch, layout.tag_start(g) * 4096,
                            uint64_t{layout.tag_blocks_per_group} * 4096,
                            nullptr});
    }
  } else if (store->size_bytes() > 0) {
    // A reused file: make it all holes so tags and data read as zeros.
    ops.push_back(StoreOp{StoreOp::Kind::kPunch, 0,
                          store->size_bytes() / 4096 * 4096, nullptr});
  }
  for (size_t i = 0; i < ops.size(); i += 256) {
    const size_t n = std::min<size_t>(256, ops.size() - i);
    queue->Execute({ops.data() + i, n});
    for (size_t j = i; j < i + n; ++j) {
      RETURN_IF_ERROR(StoreOpStatus(ops[j], "zero metadata", store->name()));
    }
  }
  RETURN_IF_ERROR(store->Resize(need));
  FormatId format_id = options.format_id;
  while (std::all_of(format_id.begin(), format_id.end(),
                     [](uint8_t b) { return b == 0; })) {
    if (RAND_bytes(format_id.data(), static_cast<int>(format_id.size())) != 1) {
      return absl::InternalError("format: RAND_bytes failed for the format id");
    }
  }
  ASSIGN_OR_RETURN(crypto::VolumeKeys keys,
                   crypto::DeriveVolumeKeys(dek, options.volume_id, format_id));
  Superblock sb;
  sb.volume_id = options.volume_id;
  sb.format_id = format_id;
  sb.size_bytes = options.size_bytes;
  sb.layout = layout;
  sb.key_check = keys.key_check;
  sb.flags = kSuperblockFlagClean;
  if (layout.has_digest_table()) {
    // Every group starts never written: all-zero digests (the table copies
    // are holes or were zeroed above).
    sb.state_groups = layout.groups_for(blocks);
    AlignedBuffer zeros(DigestTable::BlocksFor(sb.state_groups) * 4096);
    sb.state_root = ComputeStateRoot(options.volume_id, format_id,
                                     sb.state_groups, zeros.span());
  }
  AlignedBuffer buf(8192);
  for (uint64_t gen = 0; gen < 2; ++gen) {
    sb.generation = gen;
    ASSIGN_OR_RETURN(SuperblockBytes bytes,
                     EncodeSuperblock(sb, keys.header_mac_key));
    std::memcpy(buf.data() + gen * 4096, bytes.data(), 4096);
  }
  StoreOp write{StoreOp::Kind::kWrite, 0, 8192, buf.data()};
  queue->Execute({&write, 1});
  RETURN_IF_ERROR(StoreOpStatus(write, "write superblock", store->name()));
  StoreOp sync{StoreOp::Kind::kSync};
  queue->Execute({&sync, 1});
  RETURN_IF_ERROR(StoreOpStatus(sync, "fdatasync", store->name()));
  queue.reset();
  return OpenOn(std::move(store), dek, engine);
}

absl::StatusOr<std::unique_ptr<SealedVolume>> SealedVolume::FormatFile(
    const FormatOptions& options, const crypto::SecretBytes& dek,
    const EngineOptions& engine) {
  RETURN_IF_ERROR(CheckSize(options.size_bytes, engine.format_layout));
  FileStoreOptions fo;
  fo.path = options.path;
  fo.create = true;
  ASSIGN_OR_RETURN(auto store, OpenFileStore(fo));
  return FormatOn(std::move(store), options, dek, engine);
}

}  // namespace sealvol::io
