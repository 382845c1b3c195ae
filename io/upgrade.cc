#include "io/upgrade.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/durable_file.h"
#include "base/status_macros.h"

namespace sealvol::io {
namespace {

constexpr uint64_t kChunk = 1 << 20;

}  // namespace

absl::StatusOr<FormatId> ReplaceImageByCopy(
    const std::string& path, uint64_t size_bytes, const VolumeId& volume_id,
    const crypto::SecretBytes& dek, const FillImage& fill, VolumeState* state) {
  const std::string temp = path + ".upgrade";
  if (unlink(temp.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "remove stale", temp);
  }
  bool renamed = false;
  absl::Cleanup remove_temp = [&] {
    if (!renamed) unlink(temp.c_str());
  };
  FormatOptions format;
  format.path = temp;
  format.size_bytes = size_bytes;
  format.volume_id = volume_id;
  ASSIGN_OR_RETURN(auto engine,
                   SealedVolume::FormatFile(format, dek, EngineOptions{}));
  const FormatId format_id = engine->format_id();
  RETURN_IF_ERROR(fill(*engine, temp));
  RETURN_IF_ERROR(engine->Close());
  *state = engine->state();
  engine.reset();
  // After a failure past the rename the cleanup's unlink finds no temp.
  RETURN_IF_ERROR(ReplaceFileDurably(temp, path));
  renamed = true;
  return format_id;
}

absl::StatusOr<UpgradeResult> UpgradePreStateRootImage(
    const std::string& path, const crypto::SecretBytes& dek) {
  ASSIGN_OR_RETURN(VolumeHeaderInfo header, ReadHeader(path));
  if (header.has_state_root) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": already has a state root"));
  }
  EngineOptions eo;
  eo.read_only = true;
  eo.allow_pre_state_root = true;
  ASSIGN_OR_RETURN(auto old, SealedVolume::OpenFile(path, dek, eo));
  UpgradeResult result;
  result.volume_id = header.volume_id;
  auto fill = [&](SealedVolume& engine,
                  const std::string& temp) -> absl::Status {
    std::vector<uint8_t> buf(kChunk);
    absl::Cleanup wipe = [&] { std::fill(buf.begin(), buf.end(), 0); };
    for (uint64_t off = 0; off < header.size_bytes; off += kChunk) {
      const uint64_t len = std::min<uint64_t>(kChunk, header.size_bytes - off);
      std::span<uint8_t> chunk(buf.data(), len);
      const int r = old->Io(IoOp::kRead, off, chunk);
      if (r != 0) {
        return absl::DataLossError(absl::StrCat(
            path, ": bytes ", off, "+", len,
            " fail authentication; nothing was changed (`sealvol check` "
            "lists the blocks)"));
      }
      // Zeros need not be written: the new image reads zeros there anyway.
      if (std::all_of(chunk.begin(), chunk.end(),
                      [](uint8_t b) { return b == 0; })) {
        continue;
      }
      const int w = engine.Io(IoOp::kWrite, off, chunk);
      if (w != 0) return ErrnoStatus(-w, "write", temp);
      result.blocks_copied += len / kBlockSize;
    }
    return old->Close();
  };
  ASSIGN_OR_RETURN(result.format_id,
                   ReplaceImageByCopy(path, header.size_bytes, header.volume_id,
                                      dek, fill, &result.state));
  return result;
}

}  // namespace sealvol::io
