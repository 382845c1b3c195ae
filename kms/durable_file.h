// Crash-safe small-file operations for the embedded provider's directory:
// a file is replaced atomically (temp file, fsync, rename, fsync of the
// directory) so that after a crash at any point a reader sees either the old
// or the new content, never a mix; removals are made durable the same way.
// Thread-safe: stateless (callers serialise writers to the same name).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace sealvol::kms {

// Prefix of temporary files; readers skip names that start with it.
inline constexpr char kTempFilePrefix[] = ".tmp-";

// Creates `path` with `mode` if missing (parents must exist) and fsyncs its
// parent. OK if it exists and is a directory.
absl::Status MakeDirectoryDurably(const std::string& path, mode_t mode);

// fsyncs a directory so that renames and unlinks in it survive power loss.
absl::Status SyncDirectory(const std::string& dir);

// Writes `content` to dir/name atomically with `mode`.
absl::Status WriteFileAtomically(const std::string& dir,
                                 const std::string& name,
                                 std::span<const uint8_t> content,
                                 mode_t mode);

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

// Reads a file of exactly `size` bytes into locked memory. Refuses a file
// whose mode grants any access to group or others (PermissionDenied), so a
// key file someone loosened is noticed rather than used.
absl::StatusOr<crypto::SecretBytes> ReadSecretFile(const std::string& path,
                                                   size_t size);

// Unlinks dir/name and fsyncs dir. NotFound if absent.
absl::Status RemoveFileDurably(const std::string& dir,
                               const std::string& name);

// Removes leftover temporary files of interrupted writes in `dir`.
absl::Status RemoveStaleTempFiles(const std::string& dir);

}  // namespace sealvol::kms
