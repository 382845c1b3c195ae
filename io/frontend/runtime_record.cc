#include "io/frontend/runtime_record.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/durable_file.h"
#include "base/status_macros.h"
#include "io/frontend/fuse_mount.h"
#include "io/frontend/loop_device.h"
#include "nlohmann/json.hpp"

namespace sealvol::io {

namespace {
constexpr size_t kMaxRecordSize = 1 << 20;
std::string RecordName(const std::string& volume_id) {
  return absl::StrCat(volume_id, ".json");
}
}  // namespace

std::string RuntimeDir(const std::string& state_dir) {
  return absl::StrCat(state_dir, "/run");
}

absl::Status WriteRuntimeRecord(const std::string& state_dir,
                                const RuntimeRecord& r) {
  const std::string dir = RuntimeDir(state_dir);
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "mkdir", state_dir);
  RETURN_IF_ERROR(MakeDirectoryDurably(dir, 0755));
  nlohmann::json j = {{"pid", r.pid},
                      {"volume_id", r.volume_id},
                      {"image", r.image},
                      {"loop_device", r.loop_device},
                      {"mountpoint", r.mountpoint},
                      {"fuse_dir", r.fuse_dir},
                      {"transport", r.transport},
                      {"fs", r.fs},
                      {"block", r.block},
                      {"started_unix", r.started_unix}};
  // Durably replaced: after a crash `close` and `status` find the old or
  // the new record, never an empty one.
  return WriteFileAtomically(dir, RecordName(r.volume_id), j.dump(2) + "\n",
                             0644);
}

absl::Status RemoveRuntimeRecord(const std::string& state_dir,
                                 const std::string& volume_id) {
  absl::Status s =
      RemoveFileDurably(RuntimeDir(state_dir), RecordName(volume_id));
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

absl::StatusOr<std::vector<RuntimeRecord>> ListRuntimeRecords(
    const std::string& state_dir) {
  std::vector<RuntimeRecord> records;
  const std::string dir = RuntimeDir(state_dir);
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return records;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".json" ||
        entry.path().filename().string().rfind(kTempFilePrefix, 0) == 0) {
      continue;
    }
    auto text = ReadSmallFile(entry.path().string(), kMaxRecordSize);
    if (!text.ok()) continue;  // Removed by its server meanwhile.
    nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    RuntimeRecord r;
    r.pid = j.value("pid", 0);
    r.volume_id = j.value("volume_id", "");
    r.image = j.value("image", "");
    r.loop_device = j.value("loop_device", "");
    r.mountpoint = j.value("mountpoint", "");
    r.fuse_dir = j.value("fuse_dir", "");
    r.transport = j.value("transport", "");
    r.fs = j.value("fs", "");
    r.block = j.value("block", false);
    r.started_unix = j.value("started_unix", int64_t{0});
    records.push_back(std::move(r));
  }
  if (ec) return ErrnoStatus(ec.value(), "list", dir);
  return records;
}

bool ServerAlive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream comm(absl::StrCat("/proc/", pid, "/comm"));
  std::string name;
  comm >> name;
  if (name != "sealvol") return false;
  // A killed server that nobody reaped yet (a zombie) is not serving.
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(stat)),
                   std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  return paren == std::string::npos || paren + 2 >= text.size() ||
         text[paren + 2] != 'Z';
}

absl::Status CleanUpStale(const std::string& state_dir,
                          const RuntimeRecord& record) {
  absl::Status first;
  auto keep = [&first](absl::Status s) {
    if (first.ok() && !s.ok()) first = s;
  };
  // The dead server's FUSE connection ended with its fds, so the file system
  // only sees I/O errors now; unmounting it lets autoclear free the loop.
  if (!record.mountpoint.empty()) keep(UnmountRetrying(record.mountpoint));
  // Only while the device still serves our file: autoclear may have freed
  // it, and someone else may have taken it since.
  if (!record.loop_device.empty() && !record.fuse_dir.empty()) {
    std::ifstream backing(absl::StrCat(
        "/sys/block/", std::filesystem::path(record.loop_device).filename().string(),
        "/loop/backing_file"));
    std::string file;
    std::getline(backing, file);
    if (file.rfind(record.fuse_dir, 0) == 0) {
      keep(DetachLoopDevice(record.loop_device));
    }
  }
  if (!record.fuse_dir.empty()) {
    keep(UnmountRetrying(record.fuse_dir));
    ::rmdir(record.fuse_dir.c_str());
  }
  if (first.ok()) keep(RemoveRuntimeRecord(state_dir, record.volume_id));
  return first;
}

}  // namespace sealvol::io
