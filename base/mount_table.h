// The mount table of this process's mount namespace (/proc/self/mountinfo),
// parsed in one place for every caller (the node's mount checks, `sealvol
// close`, the FUSE connection of a dead server). Stateless, thread-safe.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sealvol {

// One line of mountinfo (proc(5)), with the octal escapes of paths (\040
// for a space, \011, \012, \134) undone.
struct MountEntry {
  unsigned major = 0;       // Of the mounted device (0: no device, e.g. FUSE).
  unsigned minor = 0;
  std::string root;         // The mounted directory of its file system.
  std::string mount_point;
  std::string fs_type;      // "ext4", "fuse.sealvol", ...
  std::string source;       // "/dev/loop3", or what the file system says.
};

// The entries of mountinfo `text`, in table order (a later entry for a mount
// point is mounted on top of an earlier one). Lines that do not have the
// fields of mountinfo are skipped.
std::vector<MountEntry> ParseMountInfo(const std::string& text);

// ParseMountInfo of /proc/self/mountinfo; an error names the file.
absl::StatusOr<std::vector<MountEntry>> ReadMountTable();

}  // namespace sealvol
