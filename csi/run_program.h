// Runs the programs the node and `sealvol open` need (mkfs, blkid,
// resize2fs, xfs_growfs): the one place that spawns a child process. A
// child dies with its parent (PR_SET_PDEATHSIG), so a killed node never
// leaves one holding a loop device. Thread-safe.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sealvol::csi {

// What a program did: its exit status (-1 when it did not exit normally or
// could not start), its stdout (when captured) and its stderr.
struct ProgramResult {
  int exit_status = -1;
  std::string out;
  std::string err;
};

// Runs argv[0] (looked up in PATH) with argv and waits. Its stdin is
// /dev/null; its stdout is captured when `capture_out` (for short outputs:
// it is read to the end before stderr), else discarded. Failing to start
// is exit status -1 (or 127 from the child) with the reason in `err`.
ProgramResult RunProgramFor(const std::vector<std::string>& argv,
                            bool capture_out);

// Runs argv and waits: OK on exit status 0, otherwise an Internal error
// naming the command, its exit status and the last line it wrote to stderr.
absl::Status RunProgram(const std::vector<std::string>& argv);

// The last non-empty line of `text`, without its line end.
std::string LastLine(std::string text);

}  // namespace sealvol::csi
