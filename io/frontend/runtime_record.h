// RuntimeRecord is what `sealvol open` leaves behind for `status` and
// `close`: one small JSON file per open volume in <state-dir>/run/. Holds no
// secret. Free functions; thread-compatible.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sealvol::io {

struct RuntimeRecord {
  pid_t pid = 0;            // The serving process.
  std::string volume_id;    // "sv-..."
  std::string image;        // Absolute path of the image.
  std::string loop_device;  // "/dev/loopN"
  std::string mountpoint;   // Empty in block mode.
  std::string fuse_dir;     // The private FUSE mount.
  std::string transport;    // "uring" or "dev".
  std::string fs;           // "ext4", "xfs", or "" in block mode.
  bool block = false;
  int64_t started_unix = 0;
};

std::string RuntimeDir(const std::string& state_dir);

// Writes <state-dir>/run/<volume-id>.json atomically and durably (temp
// file, fsync, rename, fsync of the directory: base/durable_file.h).
absl::Status WriteRuntimeRecord(const std::string& state_dir,
                                const RuntimeRecord& record);
absl::Status RemoveRuntimeRecord(const std::string& state_dir,
                                 const std::string& volume_id);
// Every record in the directory (an absent directory is an empty list).
absl::StatusOr<std::vector<RuntimeRecord>> ListRuntimeRecords(
    const std::string& state_dir);

// True when `pid` is alive and is a sealvol process (not a reused pid).
bool ServerAlive(pid_t pid);

// Clears what a server that died (kill -9) left behind: unmounts the file
// system, detaches the loop device, unmounts the FUSE directory, removes the
// record. Safe to call on a partly cleaned state.
absl::Status CleanUpStale(const std::string& state_dir,
                          const RuntimeRecord& record);

}  // namespace sealvol::io
