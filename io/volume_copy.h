// The copy engine of snapshots, restores and clones (docs/format.md,
// "Copies"): CutImage takes a raw ciphertext copy of an image at a point in
// time (the "cut"; the caller holds the volume's writes meanwhile), and
// CopySealed re-encrypts a sealed image into a new image under another key,
// block by block (plaintext only in memory), resumable after a crash.
// Thread-safe: stateless; two copies must not share a target.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "io/sealed_volume.h"
#include "io/volume_state.h"

namespace sealvol::io {

// Copies the image file `source` to `cut` (a new file in the same file
// system for a reflink): FICLONE where the file system shares extents,
// else a sparse copy (SEEK_DATA/SEEK_HOLE, copy_file_range, holes kept);
// then fsyncs the cut and its directory. The caller holds the volume's
// writes meanwhile (SealedVolume::HoldWrites); the cut is then a
// crash-consistent image of the volume with every acknowledged write. Errors: AlreadyExists when `cut` exists (nothing is
// touched), NotFound for a missing source, InvalidArgument when the source
// is not a regular file; any other failure removes the partial cut.
absl::Status CutImage(const std::string& source, const std::string& cut);

// True when CutImage(source, ...) into `dir` would share extents (FICLONE)
// rather than copy: for benchmarks and logs. False on any error.
bool CutSharesExtents(const std::string& source, const std::string& dir);

struct CopyOptions {
  enum class SourceKind {
    // A cut of a live volume (CutImage): a private copy of a possibly
    // unclean image, opened writable so crash recovery runs, with no
    // registry check (it is never served). The copy leaves it closed
    // cleanly; the caller deletes it afterwards.
    kCut,
    // A snapshot image: opened read-only and checked against
    // `source_expected_state` (what its registry record commits to).
    kSnapshotImage,
  };
  std::string source_path;
  SourceKind source_kind = SourceKind::kCut;
  std::optional<VolumeState> source_expected_state;  // kSnapshotImage only.
  // The keys are borrowed for the call; the caller owns and wipes them.
  const crypto::SecretBytes* source_dek = nullptr;
  const crypto::SecretBytes* target_dek = nullptr;

  // A new image (or one this copy began: see below).
  std::string target_path;
  VolumeId target_volume_id{};
  // The target's usable size: 0 = the source's; else a multiple of 4096 at
  // least the source's (a restore may be larger: the rest reads as zeros).
  uint64_t target_size_bytes = 0;

  int worker_threads = 2;  // Per image.
  // Bytes between two durable progress records (and progress calls).
  uint64_t progress_interval_bytes = uint64_t{64} << 20;
  // Called after each durable record and once at the end, from the
  // calling thread.
  std::function<void(uint64_t bytes_done, uint64_t bytes_total)> on_progress;
};

struct CopyResult {
  FormatId format_id{};  // The target's: for the registry's format claim.
  VolumeState state;     // The target's closing state, to commit.
  uint64_t bytes_total = 0;   // The source's size.
  uint64_t bytes_sealed = 0;  // Data written into the target by this call.
  bool resumed = false;       // A progress record was found.
  uint64_t resumed_from = 0;
};

// Copies the source's contents into the target under the target's key, as
// a new volume `target_volume_id` with a fresh format id, writing only the
// blocks that hold data; flushes and closes both. Crash-safe and resumable:
// the record TARGET.copy (copy_progress.h) is written before the target is
// created and after every progress_interval_bytes, each after a flush; a
// call with the same options after a crash or kill resumes from it (a
// target whose format was interrupted is formatted again, under a new
// format id), and a call after completion returns the same result without
// copying (until ForgetCopyProgress). Errors: InvalidArgument naming the
// field; AlreadyExists when the target exists without a record of this
// copy; FailedPrecondition when the record names another target volume or
// another source; the source's open errors (PermissionDenied "wrong key",
// FailedPrecondition kind kRolledBack, ...); DataLoss for a failed read or
// write. On failure the record and the partial target stay for a resume;
// the caller removes both to give up.
absl::StatusOr<CopyResult> CopySealed(const CopyOptions& options);

// Removes TARGET.copy once the result is committed; OK when absent.
absl::Status ForgetCopyProgress(const std::string& target_path);

}  // namespace sealvol::io
