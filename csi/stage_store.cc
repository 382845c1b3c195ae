#include "csi/stage_store.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <sstream>
#include <utility>

#include "base/durable_file.h"
#include "base/status_macros.h"
#include "base/volume_id.h"
#include "nlohmann/json.hpp"

namespace sealvol::csi {

namespace {

constexpr char kStageRecordName[] = "stage.json";
constexpr size_t kMaxStageRecordSize = 1 << 20;

absl::Status MakeDirs(const std::string& path, mode_t mode) {
  std::string partial;
  std::stringstream parts(path);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    partial += "/" + part;
    if (mkdir(partial.c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, "mkdir", partial);
    }
  }
  return absl::OkStatus();
}

}  // namespace

StageStore::StageStore(std::string state_dir)
    : state_dir_(std::move(state_dir)) {}

std::string StageStore::VolumeDir(const std::string& volume_id) const {
  return state_dir_ + "/volumes/" + volume_id;
}
std::string StageStore::ImagePath(const std::string& volume_id) const {
  return VolumeDir(volume_id) + "/image";
}
std::string StageStore::CutPath(const std::string& target_id) const {
  return VolumeDir(target_id) + "/cut";
}
std::string StageStore::WorkDir(const std::string& volume_id) const {
  return VolumeDir(volume_id) + "/fuse";
}
std::string StageStore::RecordPath(const std::string& volume_id) const {
  return VolumeDir(volume_id) + "/" + kStageRecordName;
}

absl::Status StageStore::CreateRoot() const {
  return MakeDirs(state_dir_ + "/volumes", 0700);
}

absl::Status StageStore::CreateVolumeDir(const std::string& volume_id) const {
  return MakeDirs(VolumeDir(volume_id), 0700);
}

absl::StatusOr<StageRecord> StageStore::Load(const std::string& volume_id) const {
  const std::string path = RecordPath(volume_id);
  auto text = ReadSmallFile(path, kMaxStageRecordSize);
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError("volume " + volume_id + " is not staged");
  }
  if (!text.ok()) return text.status();
  const auto json = nlohmann::json::parse(*text, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::DataLossError("parse " + path + ": not a stage record");
  }
  StageRecord record;
  record.volume_id = json.value("volume_id", "");
  record.staging_path = json.value("staging_path", "");
  record.block = json.value("block", false);
  record.fs_type = json.value("fs_type", "");
  record.mount_flags = json.value("mount_flags", std::vector<std::string>{});
  record.size_bytes = json.value("size_bytes", uint64_t{0});
  record.targets = json.value("targets", std::map<std::string, bool>{});
  record.device = json.value("device", "");
  if (record.volume_id != volume_id) {
    return absl::DataLossError("read " + path + ": record names volume " +
                               record.volume_id);
  }
  return record;
}

absl::Status StageStore::Save(const StageRecord& record) const {
  nlohmann::json json = {
      {"volume_id", record.volume_id}, {"staging_path", record.staging_path},
      {"block", record.block},         {"fs_type", record.fs_type},
      {"mount_flags", record.mount_flags}, {"size_bytes", record.size_bytes},
      {"targets", record.targets},     {"device", record.device}};
  // Durably replaced (fsync of the file and the directory): after a crash
  // the record is the old or the new one, never empty or lost.
  return WriteFileAtomically(VolumeDir(record.volume_id), kStageRecordName,
                             json.dump(2) + "\n", 0600);
}

absl::Status StageStore::Remove(const std::string& volume_id) const {
  const std::string path = RecordPath(volume_id);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "remove", path);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> StageStore::VolumeIds() const {
  const std::string dir = state_dir_ + "/volumes";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "open", dir);
  std::vector<std::string> ids;
  while (dirent* entry = readdir(d)) {
    if (IsWellFormedVolumeId(entry->d_name)) ids.push_back(entry->d_name);
  }
  closedir(d);
  return ids;
}

absl::StatusOr<int64_t> StageStore::RemoveVolume(
    const std::string& volume_id) const {
  const std::string dir = VolumeDir(volume_id);
  struct stat st {};
  const std::string image = ImagePath(volume_id);
  const bool had_image = lstat(image.c_str(), &st) == 0;
  // The image holds only ciphertext whose key is gone: unlinking returns the
  // space; nothing needs overwriting.
  if (unlink(image.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "remove", image);
  }
  // Whatever else the volume left: the (unmounted, empty) FUSE work
  // directory and a stage record's temporary file.
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "open", dir);
  absl::Status status;
  while (dirent* entry = readdir(d)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = dir + "/" + name;
    struct stat est {};
    if (lstat(path.c_str(), &est) != 0) continue;
    const int rc = S_ISDIR(est.st_mode) ? rmdir(path.c_str()) : unlink(path.c_str());
    if (rc != 0 && errno != ENOENT) {
      status = ErrnoStatus(errno, "remove", path);
      break;
    }
  }
  closedir(d);
  RETURN_IF_ERROR(status);
  if (rmdir(dir.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "remove", dir);
  }
  return had_image ? static_cast<int64_t>(st.st_blocks) * 512 : int64_t{-1};
}

}  // namespace sealvol::csi
