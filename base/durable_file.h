// Crash-safe small-file operations, for every layer that keeps state in
// files (the embedded key provider's directory, the node's stage records,
// `sealvol open`'s runtime records): a file is replaced atomically (temp
// file, fsync, rename, fsync of the directory) so that after a crash at any
// point a reader sees either the old or the new content, never a mix or an
// empty file; removals are made durable the same way.
// Thread-safe: stateless (callers serialise writers to the same name).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sealvol {

// Prefix of temporary files; readers skip names that start with it.
inline constexpr char kTempFilePrefix[] = ".tmp-";

// Creates `path` with `mode` if missing (parents must exist) and fsyncs its
// parent. OK if it exists and is a directory.
absl::Status MakeDirectoryDurably(const std::string& path, mode_t mode);

// fsyncs a directory so that renames and unlinks in it survive power loss.
absl::Status SyncDirectory(const std::string& dir);

// The directory that holds `path`: "." for a bare name, "/" for "/name".
std::string ParentDirectory(const std::string& path);

// fsyncs the file at `path` (written by another layer, the engine for one).
absl::Status SyncFile(const std::string& path);

// Puts the complete file `from` in place of `to`, durably: fsync of `from`,
// rename(2) (same file system; replaces `to`), fsync of `to`'s directory.
// For large files written in place (a copied image); small contents go
// through WriteFileAtomically.
absl::Status ReplaceFileDurably(const std::string& from,
                                const std::string& to);

// Writes `content` to dir/name atomically with `mode`.
absl::Status WriteFileAtomically(const std::string& dir,
                                 const std::string& name,
                                 std::span<const uint8_t> content,
                                 mode_t mode);
absl::Status WriteFileAtomically(const std::string& dir,
                                 const std::string& name,
                                 std::string_view content, mode_t mode);

// Like WriteFileAtomically, but fails with AlreadyExists instead of
// replacing an existing file (link(2) of the synced temp file).
absl::Status CreateFileAtomically(const std::string& dir,
                                  const std::string& name,
                                  std::span<const uint8_t> content,
                                  mode_t mode);

// Reads a whole file of at most `max_size` bytes. NotFound if absent,
// FailedPrecondition if larger.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          size_t max_size);

// Unlinks dir/name and fsyncs dir. NotFound if absent.
absl::Status RemoveFileDurably(const std::string& dir,
                               const std::string& name);

// Removes leftover temporary files of interrupted writes in `dir`.
absl::Status RemoveStaleTempFiles(const std::string& dir);

// The seam for crash tests: each step above that decides what survives a
// crash (a write, an fsync, a rename, a link, an unlink) is reported, after
// it succeeded, to the observer; a test replays the steps and checks every
// crash point (tests/fakes/durable_step_log.h). No observer by default.
struct DurableStep {
  enum class Kind { kWrite, kSyncFile, kRename, kLink, kUnlink, kSyncDir };
  Kind kind;
  std::string path;  // The file or directory; the source of kRename/kLink.
  std::string to;    // The target of kRename/kLink.
};
class DurableStepObserver {
 public:
  virtual ~DurableStepObserver() = default;
  virtual void Observe(const DurableStep& step) = 0;
};
// Installs `observer` (nullptr: none) and returns the previous one. The
// observer must outlive its installation and be thread-safe.
DurableStepObserver* SetDurableStepObserver(DurableStepObserver* observer);

}  // namespace sealvol
