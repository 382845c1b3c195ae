// StageStore keeps what the node remembers of its volumes, under
// STATE_DIR/volumes/ID/: the stage record (stage.json, replaced durably so
// that a restarted node finds the old or the new one), the backing image and
// the data path's work directory. Holds no lock: calls for one volume are
// serialized by the caller (VolumeLocks); calls for different volumes may
// run concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sealvol::csi {

// What the node remembers about a staged volume (stage.json).
struct StageRecord {
  std::string volume_id;
  std::string staging_path;
  bool block = false;
  std::string fs_type;
  std::vector<std::string> mount_flags;
  uint64_t size_bytes = 0;
  std::map<std::string, bool> targets;  // Published target -> read-only.
  std::string device;                   // Last device it was served on.
};

class StageStore {
 public:
  explicit StageStore(std::string state_dir);

  std::string VolumeDir(const std::string& volume_id) const;
  // Where a volume's backing image lives.
  std::string ImagePath(const std::string& volume_id) const;
  // A copy job's raw cut of its source, in the target's directory
  // (csi/copy_job_runner.h).
  std::string CutPath(const std::string& target_id) const;
  // The data path's private directory (FUSE mount) of a volume.
  std::string WorkDir(const std::string& volume_id) const;

  // Creates STATE_DIR/volumes (mode 0700) and its parents.
  absl::Status CreateRoot() const;
  // Creates the volume's directory (mode 0700).
  absl::Status CreateVolumeDir(const std::string& volume_id) const;

  // NotFound "volume ID is not staged" when it has no record; DataLoss when
  // the record does not parse or names another volume.
  absl::StatusOr<StageRecord> Load(const std::string& volume_id) const;
  // Replaces the record durably (fsync of the file and the directory).
  absl::Status Save(const StageRecord& record) const;
  // Removes the record (unstaged); OK when there is none.
  absl::Status Remove(const std::string& volume_id) const;

  // The well-formed volume ids under STATE_DIR/volumes/.
  absl::StatusOr<std::vector<std::string>> VolumeIds() const;

  // Removes an unstaged volume's image and directory (its subdirectories
  // are only rmdir'ed, never descended into). Returns the bytes the image
  // held on disk, -1 when there was no image.
  absl::StatusOr<int64_t> RemoveVolume(const std::string& volume_id) const;

 private:
  std::string RecordPath(const std::string& volume_id) const;

  const std::string state_dir_;
};

}  // namespace sealvol::csi
