// CopyProgress is the durable record of a copy into a sealed image that can
// be resumed after a crash: `sealvol import` (TARGET.import) and the
// snapshot/clone copy (TARGET.copy) keep one next to their target
// (docs/format.md, "Copies"). It is replaced atomically (base/durable_file),
// and only ever after the target was flushed up to `next_offset`.
// Thread-compatible: one copy owns its record.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/volume_state.h"

namespace sealvol::io {

// What identifies the source of a copy, so that a resumed copy refuses a
// source that is not the one it began with (its result would mix two).
struct CopySourceIdentity {
  uint64_t device = 0;  // st_dev, or st_rdev of a block device.
  uint64_t inode = 0;
  uint64_t size = 0;     // Bytes the copy reads (a volume's usable size).
  int64_t mtime_ns = 0;  // 0 where it is not compared (a sealed source).
  // A sealed source: "<volume id>/<format id>"; empty for a plain one.
  std::string sealed;
  bool operator==(const CopySourceIdentity&) const = default;
};

struct CopyProgress {
  enum class Phase {
    kFormatting,  // The target is being formatted: not usable yet.
    kCopying,     // Everything below next_offset is durable in the target.
    kDone,        // Copied and closed; `final_state` is what to commit.
  };
  Phase phase = Phase::kFormatting;
  std::string volume_id;  // The target's.
  std::string format_id;  // The target's, once formatted ("" before).
  bool created = false;   // The copy formatted the target (a fresh image).
  std::string source;     // The source's path, for messages.
  CopySourceIdentity identity;
  uint64_t next_offset = 0;
  std::optional<VolumeState> final_state;  // kDone only.
};

// Where a target's record lives: "<target><suffix>" in the target's
// directory. `what` names the operation in messages ("import", "copy").
class CopyProgressFile {
 public:
  CopyProgressFile(const std::string& target, const std::string& suffix,
                   const std::string& what);

  const std::string& target() const { return target_; }
  const std::string& dir() const { return dir_; }
  const std::string& name() const { return name_; }
  std::string path() const { return dir_ + "/" + name_; }

  // Replaces the record durably.
  absl::Status Save(const CopyProgress& progress) const;
  // NotFound when there is none; DataLoss naming the file and what to
  // remove when it is damaged.
  absl::StatusOr<CopyProgress> Load() const;
  // Removes the record durably; OK when there is none.
  absl::Status Remove() const;

 private:
  std::string target_, dir_, name_, what_;
};

}  // namespace sealvol::io
